"""The worker under faults and misuse: errors contained in slots, stop signals, wrong task kinds."""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading

import pytest

import logq
from logq import Backoff, Queue
from logq.testing import FakeClock


def start(worker) -> threading.Thread:
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    return t


@pytest.fixture
def q(qdir):
    queue = Queue(qdir, backoff=Backoff(base=0.01, factor=1, max=0.01, jitter=0))
    yield queue
    queue.close()


def test_a_failing_completion_is_contained_and_its_batch_is_recorded(q, caplog):
    source = q._registry.source
    complete_many = source.complete_many
    failed_batches: list[int] = []
    poisoned: set[int] = set()

    def failing(outcomes, schedules):  # the first two recordings that hold the poisoned job raise
        if len(failed_batches) < 2 and any(job.id in poisoned for job, _, _ in outcomes):
            failed_batches.append(len(outcomes))
            raise RuntimeError("injected failure")
        return complete_many(outcomes, schedules)
    source.complete_many = failing
    runs: collections.Counter[int] = collections.Counter()

    @q.task()
    def quick(i):
        runs[i] += 1

    ids = [quick.enqueue(i).id for i in range(40)]
    poisoned.add(ids[5])
    worker = q.worker(concurrency=1, poll=0.01)
    caplog.set_level(logging.WARNING, logger="logq")
    t = start(worker)
    try:
        assert [q.wait(i, timeout=10).state for i in ids] == ["done"] * 40  # the slot lives on
    finally:
        worker.stop()
        t.join(30)
    assert not t.is_alive()
    assert failed_batches[0] > 1 and failed_batches[1] == 1  # a batch, then the job alone
    assert runs[5] == 2  # released when even its own recording failed, then run again
    assert all(runs[i] == 1 for i in range(40) if i != 5)  # its batch's outcomes were not lost
    assert "recording a batch" in caplog.text and "injected failure" in caplog.text


def test_an_unexpected_error_in_the_slot_loop_is_logged_and_the_slot_goes_on(q, caplog):
    worker = q.worker(concurrency=1, poll=0.01)
    run = worker._run
    calls = [0]

    def failing_once(job, call):  # a bug in the slot's bookkeeping, before the job runs
        calls[0] += 1
        if calls[0] == 2:
            raise KeyError("injected")
        return run(job, call)
    worker._run = failing_once

    @q.task()
    def quick(i):
        return i

    handles = [quick.enqueue(i) for i in range(5)]
    t = start(worker)
    try:
        assert [h.result(timeout=10) for h in handles] == list(range(5))  # the job was given back
    finally:
        worker.stop()
        t.join(30)
    assert "unexpected error" in caplog.text and "injected" in caplog.text
    assert q.metrics.snapshot()[quick.name].released >= 1


def test_the_first_stop_signal_ends_leasing_even_for_slots_waiting_in_lease(qdir):
    clock = FakeClock()
    q = Queue(qdir, clock=clock)

    @q.task(name="later")
    def later():
        return None

    later.enqueue(delay=10)
    worker = q.worker(concurrency=4, poll=30)
    source = q._registry.source
    lease_many = source.lease_many
    entered = threading.Semaphore(0)

    def counting(*args, **kwargs):
        entered.release()
        return lease_many(*args, **kwargs)
    source.lease_many = counting

    def signal_then_make_due():
        for _ in range(4):  # every slot is in a lease call
            assert entered.acquire(timeout=30)
        os.kill(os.getpid(), signal.SIGINT)  # the first signal: the handler sets `stopping`
        worker.stopping.wait(30)
        clock.advance(20)  # the job is due, and an enqueue wakes the waiting leases
        later.enqueue(delay=0)

    helper = threading.Thread(target=signal_then_make_due)
    helper.start()
    try:
        worker.run()  # in the main thread: it handles SIGINT
    finally:
        helper.join(30)
    try:
        assert [(j.state, j.attempts) for j in q.jobs()] == [("pending", 0), ("pending", 0)]
        assert q.stats().last_seq == 2  # the two ENQUEUEs: no LEASE, no RELEASE
        assert q.metrics.snapshot().get("later") is None
    finally:
        q.close()


def test_an_async_task_is_refused_by_thread_and_process_workers(q):
    @q.task()
    async def fetch(url):
        return url

    for kind in ("thread", "process"):
        with pytest.raises(logq.InvalidArgument, match='kind="async"'):
            q.worker(kind=kind)
        with pytest.raises(logq.InvalidArgument, match='kind="async"'):
            q.run_worker(kind=kind)
    q.worker(kind="async")  # the kind that runs it
    q.worker(kind="thread", names=["other"])  # a worker that does not serve it


def test_an_async_task_registered_after_the_worker_is_refused_when_it_starts(q):
    worker = q.worker(kind="thread")

    @q.task()
    async def fetch(url):
        return url

    with pytest.raises(logq.InvalidArgument, match='kind="async"'):
        worker.run()
    assert q.stats().last_seq == 0
