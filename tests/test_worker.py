"""The worker runtime with real threads, processes and event loops.

Contract suite: tests that take `q` or `queue_factory` run on every backend
(tests/conftest.py); a restart or a killed process needs the local one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import logq
from logq import Backoff, Queue, TaskFailed, TaskTimeout, WaitTimeout
from logq.testing import FakeClock


def start(worker) -> threading.Thread:
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    return t


@pytest.fixture
def q(queue_factory):
    queue = queue_factory(backoff=Backoff(base=0.01, factor=1, max=0.01, jitter=0))
    yield queue
    queue.close()


@pytest.mark.parametrize("kind", ["thread", "process", "async"])
def test_task_result_and_failure_in_every_kind(q, kind):
    @q.task()
    def add(a, b=0):
        return a + b

    @q.task(max_attempts=2)
    def broken(x):
        raise ValueError(f"bad {x}")

    ok, bad = add.enqueue(2, b=40), broken.enqueue("input")
    worker = q.worker(concurrency=2, kind=kind)
    t = start(worker)
    try:
        assert ok.result(timeout=30) == 42 and ok.status() == "done"
        with pytest.raises(TaskFailed, match="ValueError: bad input") as info:
            bad.result(timeout=30)
        assert info.value.job_id == bad.id and q.get(bad.id).attempts == 2  # retried once, then dead
    finally:
        worker.stop()
        t.join(30)
    m = q.metrics.snapshot()
    assert m[add.name].succeeded == 1 and m[broken.name].failed == 1 and m[broken.name].dead == 1


def test_async_task_is_awaited(q):
    @q.task()
    async def double(x):
        await asyncio.sleep(0)
        return x * 2

    h = double.enqueue(21)
    worker = q.worker(concurrency=3, kind="async")
    t = start(worker)
    try:
        assert h.result(timeout=30) == 42
    finally:
        worker.stop()
        t.join(30)


def test_retry_waits_for_the_backoff(queue_factory):
    clock = FakeClock()
    q = queue_factory(clock=clock, backoff=Backoff(base=60, factor=1, jitter=0))
    calls = []

    @q.task(max_attempts=3)
    def flaky():
        calls.append(clock.time())
        raise RuntimeError("try again")

    h = flaky.enqueue()
    failed = threading.Event()
    w = q.worker(concurrency=1, poll=0.01, on_failure=lambda job, exc: failed.set())
    t = start(w)
    try:
        assert failed.wait(30)  # the failure is recorded before the hook runs
        info = q.get(h.id)
        assert info.run_at == calls[0] + 60 and len(calls) == 1  # not before the backoff
        clock.advance(60)
        with pytest.raises(WaitTimeout):
            h.result(timeout=0.05)
    finally:
        w.stop()
        t.join(30)
    q.close()


@pytest.mark.parametrize("kind", ["thread", "process", "async"])
def test_timeout_fails_the_attempt(q, kind):
    release = threading.Event()

    if kind == "async":
        @q.task(timeout=0.2, max_attempts=1)
        async def slow():
            await asyncio.sleep(60)
    else:
        @q.task(timeout=0.2, max_attempts=1)
        def slow():
            if kind == "thread":
                release.wait(60)
            else:
                time.sleep(60)

    h = slow.enqueue()
    worker = q.worker(concurrency=1, kind=kind)
    t = start(worker)
    try:
        with pytest.raises(TaskFailed, match="TaskTimeout") as info:
            h.result(timeout=30)
        assert "timeout" in info.value.error
        assert q.metrics.snapshot()[slow.name].timeouts == 1
    finally:
        release.set()
        worker.stop()
        t.join(30)


def test_graceful_stop_releases_unfinished_jobs(q):
    started, release = threading.Event(), threading.Event()

    @q.task()
    def stuck():
        started.set()
        release.wait(60)

    h = stuck.enqueue()
    worker = q.worker(concurrency=1, grace=0.1)
    t = start(worker)
    assert started.wait(30)
    worker.stop()
    t.join(30)
    info = q.get(h.id)
    assert (info.state, info.attempts) == ("pending", 0)  # released, attempt not counted
    release.set()


def test_graceful_stop_lets_running_tasks_finish(q):
    started, release = threading.Event(), threading.Event()

    @q.task()
    def short():
        started.set()
        release.wait(60)
        return "finished"

    h = short.enqueue()
    worker = q.worker(concurrency=1, grace=60)
    t = start(worker)
    assert started.wait(30)
    worker.stop()
    release.set()
    t.join(30)
    assert h.result(timeout=1) == "finished"


def test_heartbeat_keeps_the_lease_of_a_long_task(queue_factory):
    q = queue_factory(lease_time=0.3)
    release = threading.Event()
    beats = []

    @q.task()
    def long():
        deadline = time.monotonic() + 30
        while len(beats) < 3 and time.monotonic() < deadline:  # outlive the lease three times over
            info = q.get(h.id)
            if info.lease_expires_at not in beats:
                beats.append(info.lease_expires_at)
            release.wait(0.05)
        return "ok"

    h = long.enqueue()
    worker = q.worker(concurrency=1)
    t = start(worker)
    try:
        assert h.result(timeout=30) == "ok"
        assert q.get(h.id).attempts == 1 and len(beats) >= 3
    finally:
        worker.stop()
        t.join(30)
        q.close()


def test_hooks_are_called(q):
    seen = []

    @q.task(max_attempts=1)
    def fine():
        return 1

    @q.task(max_attempts=1)
    def bad():
        raise KeyError("k")

    a, b = fine.enqueue(), bad.enqueue()
    worker = q.worker(concurrency=1, on_success=lambda job, v: seen.append(("ok", job.id, v)),
                      on_dead=lambda job, exc: seen.append(("dead", job.id, type(exc).__name__)))
    t = start(worker)
    try:
        a.result(timeout=30)
        with pytest.raises(TaskFailed):
            b.result(timeout=30)
    finally:
        worker.stop()
        t.join(30)
    assert ("ok", a.id, 1) in seen and ("dead", b.id, "KeyError") in seen


def test_raw_registered_function_gets_bytes(q):
    q.register("upper", lambda payload: payload.upper())
    jid = q.enqueue("upper", b"shout")
    worker = q.worker(concurrency=1)
    t = start(worker)
    try:
        assert q.wait(jid, timeout=30).result == b"SHOUT"
    finally:
        worker.stop()
        t.join(30)


def test_bad_task_registrations_are_refused(q):
    @q.task(name="x")
    def x():
        pass
    with pytest.raises(logq.InvalidArgument, match="already registered"):
        q.register("x", lambda p: p)
    with pytest.raises(logq.InvalidArgument):
        q.task(timeout=-1)(lambda: None)
    with pytest.raises(logq.InvalidArgument):
        x.enqueue(object())  # not JSON-serializable
    with pytest.raises(logq.InvalidArgument):
        q.worker(kind="fiber")
    assert q.stats().last_seq == 0


def test_periodic_run_queues_the_next_on_its_grid(queue_factory):
    clock = FakeClock()
    ran = threading.Semaphore(0)
    q = queue_factory(clock=clock)
    q.every(60, lambda: None, name="minutely", run_now=True)
    start_time = clock.time()
    w = q.worker(concurrency=1, poll=0.01, on_success=lambda job, value: ran.release())  # once recorded
    t = start(w)
    try:
        assert ran.acquire(timeout=30)
        clock.advance(130)  # two slots missed: one run for them, then back on the grid
        assert ran.acquire(timeout=30)
    finally:
        w.stop()
        t.join(30)
    done = q.jobs(state="done", name="minutely")
    pending = q.jobs(state="pending", name="minutely")
    assert len(done) == 2 and [p.run_at for p in pending] == [start_time + 180]
    q.close()


def test_periodic_job_survives_restart_without_doubling(qdir):
    clock = FakeClock()
    runs: list[float] = []
    ran = threading.Condition()

    def hourly():
        with ran:
            runs.append(clock.time())
            ran.notify_all()

    def open_queue():
        q = Queue(qdir, clock=clock)
        q.every(3600, hourly, name="hourly", run_now=True)
        return q

    def run_until(q, n):
        w = q.worker(concurrency=1, poll=0.01)
        t = start(w)
        with ran:
            assert ran.wait_for(lambda: len(runs) >= n, timeout=30)
        w.stop()
        t.join(30)

    q = open_queue()
    start_time = clock.time()
    run_until(q, 1)
    q.close()
    q = open_queue()  # restart: the next run is already in the log
    q._registry.schedule_periodic()
    pending = q.jobs(state="pending", name="hourly")
    assert len(pending) == 1 and pending[0].run_at == start_time + 3600
    clock.advance(3 * 3600 + 10)  # three runs missed while stopped
    run_until(q, 2)
    pending = q.jobs(state="pending", name="hourly")
    assert len(runs) == 2 and len(pending) == 1
    assert pending[0].run_at == start_time + 4 * 3600  # back on the grid, not a burst
    q.close()


def test_a_periodic_task_run_by_hand_is_a_one_off_and_leaves_the_schedule(qdir):
    clock = FakeClock()
    q = Queue(qdir, clock=clock)
    runs: list[float] = []
    ran = threading.Condition()

    def hourly():
        with ran:
            runs.append(clock.time())
            ran.notify_all()

    task = q.every(3600, hourly, name="hourly")
    with pytest.raises(logq.InvalidArgument, match="takes no arguments"):
        task.enqueue(1)  # it would run without them
    q._registry.schedule_periodic()
    [scheduled] = q.jobs(state="pending", name="hourly")
    by_hand = task.enqueue()
    raw = q.enqueue("hourly", b"any payload")  # a job under a periodic task's name, not its schedule's
    w = q.worker(concurrency=1, poll=0.01)
    t = start(w)
    try:
        assert by_hand.result(timeout=10) is None
        assert q.wait(raw, timeout=10).state == "done"
        pending = q.jobs(state="pending", name="hourly")
        assert [(j.id, j.run_at) for j in pending] == [(scheduled.id, scheduled.run_at)]
        clock.advance(3601)  # the scheduled run: its next run is queued on the grid, as before
        assert q.wait(scheduled.id, timeout=10).state == "done"
        [nxt] = q.jobs(state="pending", name="hourly")
        assert nxt.run_at == scheduled.run_at + 3600 and nxt.key == "logq.every:hourly"
    finally:
        w.stop()
        t.join(30)
        q.close()
    assert len(runs) == 3


SCRIPT = textwrap.dedent("""
    import os, sys, time, logq
    q = logq.Queue(sys.argv[1], sync="always")
    @q.task(name="victim")
    def victim():
        print("started", flush=True)
        time.sleep(60)
        return "never"
    if sys.argv[3] == "enqueue":
        victim.enqueue()
    q.run_worker(concurrency=1, grace=0.2)
""")


def run_child(qdir):
    """Start the worker script and return once its task has started."""
    child = subprocess.Popen([sys.executable, "-c", SCRIPT, qdir, "-", "enqueue"],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "started"
    return child


def test_job_killed_with_sigkill_runs_again_after_restart(qdir):
    child = run_child(qdir)
    child.send_signal(signal.SIGKILL)
    child.wait()
    with Queue(qdir) as q:
        (info,) = q.jobs()
        assert (info.state, info.attempts, info.last_error) == ("pending", 1, "lease lost")
        q.register("victim", lambda payload: b"second time")
        w = q.worker(concurrency=1)
        t = start(w)
        assert q.wait(info.id, timeout=30).result == b"second time"
        w.stop()
        t.join(30)


def test_sigterm_stops_the_worker_and_releases_the_job(qdir):
    child = run_child(qdir)
    child.send_signal(signal.SIGTERM)
    assert child.wait(30) == 0
    with Queue(qdir) as q:
        (info,) = q.jobs()
        assert (info.state, info.attempts) == ("pending", 0)  # released: attempt not counted


def test_an_unexpected_error_in_a_slot_does_not_kill_it(q):
    q.register("job", lambda payload: b"ok")
    real, calls = q.lease, [0]

    def flaky(*args, **kw):
        calls[0] += 1
        if calls[0] <= 2:
            raise KeyError("boom")
        return real(*args, **kw)

    q.lease = flaky
    jid = q.enqueue("job", b"z")
    worker = q.worker(concurrency=1, poll=0.01)
    t = start(worker)
    try:
        assert q.wait(jid, timeout=30).result == b"ok"
    finally:
        worker.stop()
        t.join(30)


def test_stopping_gives_back_the_jobs_a_slot_leased_ahead(q):
    worker = q.worker(concurrency=1)
    batch_sizes: list[int] = []
    source = q._registry.source
    lease_many = source.lease_many

    def spying_lease_many(n, *args, **kwargs):
        batch_sizes.append(n)
        return lease_many(n, *args, **kwargs)
    source.lease_many = spying_lease_many
    calls: list[int] = []

    @q.task()
    def quick(i):
        calls.append(i)
        if len(calls) == 10:
            worker.stop()

    ids = [quick.enqueue(i).id for i in range(40)]
    worker.run()
    assert len(calls) == 10 and max(batch_sizes) > 1  # fast tasks: the slot leased ahead
    states = [(q.get(i).state, q.get(i).attempts) for i in ids]
    assert states.count(("done", 1)) == 10
    assert states.count(("pending", 0)) == 30  # given back with the attempt not counted


def test_a_slow_task_gives_back_what_its_slot_leased_ahead_and_each_job_runs_once(q):
    calls: list[int] = []

    @q.task()
    def job(i):
        calls.append(i)
        if i % 10 == 9:
            time.sleep(0.005)  # the workload: slower than a fast task

    handles = [job.enqueue(i) for i in range(40)]
    worker = q.worker(concurrency=2)
    t = start(worker)
    try:
        for h in handles:
            h.result(timeout=30)
    finally:
        worker.stop()
        t.join(30)
    assert sorted(calls) == list(range(40))  # exactly once each
    assert all(q.get(h.id).attempts == 1 for h in handles)  # a give-back does not count an attempt


def test_give_back_releases_once_even_after_a_hard_stop_released(q):
    @q.task()
    def noop():
        return None

    ids = [noop.enqueue().id for _ in range(3)]
    worker = q.worker(concurrency=1)
    jobs = worker._lease(3)
    assert [j.id for j in jobs] == ids and all(q.get(i).state == "active" for i in ids)
    worker._release_running("hard stop")  # what a second signal does
    worker._give_back(jobs, "slot exits")  # nothing left to give back: no error, no second release
    assert [(q.get(i).state, q.get(i).attempts) for i in ids] == [("pending", 0)] * 3
    assert q.metrics.snapshot()[noop.name].released == 3


def _spy_batches(q) -> list[int]:
    sizes: list[int] = []
    source = q._registry.source
    complete_many = source.complete_many

    def spying(outcomes, schedules):
        sizes.append(len(outcomes))
        return complete_many(outcomes, schedules)
    source.complete_many = spying
    return sizes


def test_fast_tasks_are_recorded_in_batches_and_each_exactly_once(q):
    sizes = _spy_batches(q)
    seen: list[int] = []

    @q.task()
    def quick(i):
        seen.append(i)
        return i * 2

    handles = [quick.enqueue(i) for i in range(60)]
    worker = q.worker(concurrency=1)
    t = start(worker)
    try:
        assert [h.result(timeout=30) for h in handles] == [i * 2 for i in range(60)]
    finally:
        worker.stop()
        t.join(30)
    assert sorted(seen) == list(range(60)) and sum(sizes) == 60 and max(sizes) > 1
    assert q.metrics.snapshot()[quick.name].succeeded == 60


def test_slow_tasks_are_recorded_one_at_a_time(q):
    sizes = _spy_batches(q)

    @q.task()
    def slow(i):
        time.sleep(0.003)  # the workload: slower than a fast task
        if i == 2:
            raise ValueError("two")

    handles = [slow.enqueue(i) for i in range(5)]
    worker = q.worker(concurrency=1)
    t = start(worker)
    try:
        for h in handles[:2] + handles[3:]:
            h.result(timeout=30)
        with pytest.raises(TaskFailed):
            handles[2].result(timeout=30)
    finally:
        worker.stop()
        t.join(30)
    assert sizes and set(sizes) == {1}
