"""The Queue: one test per guarantee in spec/semantics.md, and bad input.

Contract suite: each test runs on every backend (`queue_factory`, tests/conftest.py);
those marked `needs("durable")` (reopen, a crash, the records on disk) where it applies.
"""

from __future__ import annotations

import os
import threading

import pytest

import logq
from logq import Backoff, ClosedError, InvalidArgument, InvalidTransition, JobNotFound, LeaseLostError, Queue
from logq.core.records import ACK, LEASE
from logq.log.codec import FLAG_CONTINUED, FLAG_FIRST
from logq.log.segment import scan
from logq.testing import FakeClock

from .helpers import abandon, segment_paths


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def q(queue_factory, clock):
    queue = queue_factory(clock=clock, backoff=Backoff(base=1, factor=2, max=60, jitter=0))
    yield queue
    queue.close()


def records_of_type(q: Queue, rtype: int) -> list:
    """The records of type `rtype` in the queue's segments, in log order, after a sync."""
    q.sync()
    records: list = []
    for path in segment_paths(q.path):
        with open(path, "rb") as f:
            scan(f.read(), path, records.append)
    return [r for r in records if r.type == rtype]


def reopen(q: Queue, clock: FakeClock, **kw) -> Queue:
    q.close()
    return Queue(q.path, clock=clock, backoff=Backoff(base=1, factor=2, max=60, jitter=0), **kw)


# -------------------------------------------------------------------- enqueue

@pytest.mark.needs("durable")
def test_ids_increase_and_survive_reopen(q, clock):
    ids = [q.enqueue("t", b"%d" % i) for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    q2 = reopen(q, clock)
    assert q2.enqueue("t", b"x") > max(ids)
    assert [j.payload for j in q2.jobs(state="pending")] == [b"0", b"1", b"2", b"3", b"4", b"x"]
    q2.close()


def test_enqueue_many_returns_consecutive_ids_and_is_one_batch(q):
    ids = q.enqueue_many([("a", b"1"), ("b", b"2"), ("a", b"3")])
    assert ids == list(range(ids[0], ids[0] + 3))
    assert [q.get(i).name for i in ids] == ["a", "b", "a"]
    assert q.enqueue_many([]) == []


def test_enqueue_many_shares_options_and_one_enqueue_time(q, clock):
    ids = q.enqueue_many([("a", b"1"), ("b", bytearray(b"2")), ("a", memoryview(b"3"))],
                         delay=5, priority=3, max_attempts=7)
    infos = [q.get(i) for i in ids]
    assert [i.payload for i in infos] == [b"1", b"2", b"3"] and [i.name for i in infos] == ["a", "b", "a"]
    assert {(i.priority, i.max_attempts, i.run_at, i.enqueued_at) for i in infos} == {
        (3, 7, clock.time() + 5, clock.time())}


@pytest.mark.parametrize("bad", [
    [("a", b"1"), ("", b"2")],
    [("a", b"1"), (["a"], b"2")],
    [("a", b"1"), ("a", "text")],
    [("a", b"1"), ("a", b"x" * 2000)],
    [("a", b"1"), ("a", b"2", b"3")],
    [("a", b"1"), ["a", b"2"]],
])
def test_enqueue_many_with_one_bad_item_writes_nothing(queue_factory, bad):
    q = queue_factory(max_payload=1000)
    with pytest.raises(InvalidArgument):
        q.enqueue_many(bad)
    for kw in ({"delay": -1}, {"priority": 2**40}, {"max_attempts": 0}):
        with pytest.raises(InvalidArgument):
            q.enqueue_many([("a", b"1")], **kw)
    assert q.stats().counts["pending"] == 0 and q.stats().last_seq == 0
    q.close()


def test_unique_key_returns_live_job_and_writes_nothing(q):
    first = q.enqueue("mail", b"a", key="order-42")
    before = q.stats().last_seq
    assert q.enqueue("mail", b"b", key="order-42") == first
    assert q.stats().last_seq == before
    q.ack(q.lease())
    assert q.enqueue("mail", b"c", key="order-42") != first  # key freed once the job is final


@pytest.mark.needs("durable")
def test_unique_key_is_held_across_reopen(q, clock):
    first = q.enqueue("mail", b"a", key="k")
    q2 = reopen(q, clock)
    assert q2.enqueue("mail", b"b", key="k") == first
    q2.close()


# ---------------------------------------------------------------------- order

def test_order_is_priority_then_run_at_then_id(q, clock):
    low = q.enqueue("t", b"low", priority=0)
    high_late = q.enqueue("t", b"high-late", priority=5, delay=1)
    high = q.enqueue("t", b"high", priority=5)
    low2 = q.enqueue("t", b"low2", priority=0)
    clock.advance(2)
    got = [q.lease().id for _ in range(4)]
    assert got == [high, high_late, low, low2]
    assert q.lease() is None


def test_delayed_job_is_not_due_before_its_time(q, clock):
    jid = q.enqueue("t", b"later", delay=300)
    assert q.lease() is None
    assert q.stats().due == 0 and q.stats().pending == 1
    clock.advance(299.9)
    assert q.lease() is None
    clock.advance(0.2)
    assert q.lease().id == jid


def test_lease_filters_by_task_name(q):
    a = q.enqueue("a", b"1")
    b = q.enqueue("b", b"2")
    assert q.lease("b").id == b
    assert q.lease(["x", "y"]) is None
    assert q.lease(names={"a"}).id == a


def test_lease_wait_returns_when_a_job_arrives(q):
    got = []
    started = threading.Event()

    def consumer():
        started.set()
        got.append(q.lease(wait=30))

    t = threading.Thread(target=consumer)
    t.start()
    started.wait()
    jid = q.enqueue("t", b"hello")
    t.join(30)
    assert not t.is_alive() and got[0].id == jid


def _waiting_spy(q, expected: int) -> threading.Event:
    """An event set once `expected` threads are inside Queue.wait's wait for a final state."""
    entered, inside = threading.Event(), [0]
    real_wait = q._backend._finished.wait

    def wait(timeout=None):
        inside[0] += 1  # the queue lock is held here
        if inside[0] >= expected:
            entered.set()
        return real_wait(timeout)
    q._backend._finished.wait = wait
    return entered


@pytest.mark.needs("engine")
def test_wait_wakes_when_the_job_is_final_and_only_then(q):
    jid, other = q.enqueue("t", b"mine"), q.enqueue("t", b"other", priority=1)
    entered = _waiting_spy(q, 2)
    got: list = []
    waiters = [threading.Thread(target=lambda: got.append(q.wait(jid, timeout=30))) for _ in range(2)]
    for t in waiters:
        t.start()
    assert entered.wait(30)
    notified = []
    real_notify = q._backend._finished.notify_all
    q._backend._finished.notify_all = lambda: (notified.append(1), real_notify())[1]
    q.ack(q.lease())  # `other`: a change, but not of the watched job
    assert not notified and q._backend._watched == {jid: 2}
    q.ack(q.lease())
    for t in waiters:
        t.join(30)
    assert [(i.id, i.state, i.payload) for i in got] == [(jid, "done", b"mine")] * 2
    assert notified == [1] and q._backend._watched == {} and q.get(other).state == "done"


@pytest.mark.needs("engine")
def test_wait_times_out_and_a_close_wakes_it(q):
    jid = q.enqueue("t", b"x")
    with pytest.raises(logq.WaitTimeout):
        q.wait(jid, timeout=0.01)
    assert q._backend._watched == {}
    entered = _waiting_spy(q, 1)
    errors: list = []

    def waiter():
        try:
            q.wait(jid)
        except ClosedError as exc:
            errors.append(exc)
    t = threading.Thread(target=waiter)
    t.start()
    assert entered.wait(30)
    q.close()
    t.join(30)
    assert not t.is_alive() and len(errors) == 1


def test_lease_wait_gives_up_with_none(queue_factory):
    with queue_factory() as q:
        assert q.lease(wait=0.01) is None


def test_lease_returns_the_whole_job(q, clock):
    jid = q.enqueue("send", b"payload", priority=3, max_attempts=7)
    job = q.lease(lease_time=10)
    assert (job.id, job.name, job.payload, job.attempts, job.priority, job.max_attempts) == \
        (jid, "send", b"payload", 1, 3, 7)
    assert job.enqueued_at == clock.time() and job.lease_expires_at == clock.time() + 10


# ------------------------------------------------------------------ lifecycle

@pytest.mark.needs("durable")
def test_ack_is_final_and_survives_reopen(q, clock):
    jid = q.enqueue("t", b"x")
    q.ack(q.lease(), result=b"ok")
    assert q.lease() is None
    q2 = reopen(q, clock)
    info = q2.get(jid)
    assert (info.state, info.result) == ("done", b"ok")
    assert q2.lease() is None
    with pytest.raises(InvalidTransition, match="done"):
        q2.ack(jid)
    q2.close()


def test_fail_retries_with_backoff_then_dies(q, clock):
    jid = q.enqueue("t", b"x", max_attempts=3)
    for attempt, wait in [(1, 1.0), (2, 2.0)]:
        job = q.lease()
        assert job.attempts == attempt
        q.fail(job, "boom %d" % attempt)
        info = q.get(jid)
        assert (info.state, info.last_error, info.run_at) == ("pending", "boom %d" % attempt, clock.time() + wait)
        assert q.lease() is None
        clock.advance(wait)
    q.fail(q.lease(), ValueError("last"))
    info = q.get(jid)
    assert (info.state, info.attempts, info.last_error) == ("dead", 3, "ValueError: last")


def test_fail_without_retry_is_dead_at_once(q):
    jid = q.enqueue("t", b"x", max_attempts=10)
    q.fail(q.lease(), "fatal", retry=False)
    assert q.get(jid).state == "dead"


def test_per_job_backoff_overrides_the_queue(q, clock):
    jid = q.enqueue("t", b"x", backoff=Backoff(base=100, factor=1, jitter=0))
    q.fail(q.lease(), "e")
    assert q.get(jid).run_at == clock.time() + 100


def test_backoff_jitter_stays_in_its_band():
    b = Backoff(base=10, factor=2, max=1000, jitter=0.25)
    delays = [b.delay(3) for _ in range(200)]
    assert all(30 <= d <= 50 for d in delays) and len(set(delays)) > 1


def test_release_gives_back_without_counting_the_attempt(q, clock):
    jid = q.enqueue("t", b"x")
    q.release(q.lease(), delay=5)
    info = q.get(jid)
    assert (info.state, info.attempts, info.run_at) == ("pending", 0, clock.time() + 5)
    assert q.lease() is None
    clock.advance(5)
    assert q.lease().attempts == 1


def test_expired_lease_is_pending_again_with_the_attempt_counted(q, clock):
    jid = q.enqueue("t", b"x", max_attempts=2)
    q.lease(lease_time=10)
    clock.advance(10)
    job = q.lease(lease_time=10)
    assert (job.id, job.attempts) == (jid, 2)
    assert q.get(jid).last_error == "lease expired"
    clock.advance(11)
    assert q.expire_leases() == 1
    assert q.get(jid).state == "dead"


def test_extend_keeps_the_lease(q, clock):
    jid = q.enqueue("t", b"x")
    job = q.lease(lease_time=10)
    clock.advance(8)
    assert q.extend(job, lease_time=10) == clock.time() + 10
    clock.advance(8)
    assert q.expire_leases() == 0 and q.get(jid).state == "active"
    q.ack(job)


def test_ack_with_a_lost_lease_raises_and_changes_nothing(q, clock):
    q.enqueue("t", b"x")
    mine = q.lease(lease_time=5)
    clock.advance(6)
    theirs = q.lease(lease_time=5)
    before = q.stats().last_seq
    with pytest.raises(LeaseLostError, match="lost"):
        q.ack(mine)
    with pytest.raises(LeaseLostError):
        q.fail(mine, "x")
    assert q.stats().last_seq == before
    q.ack(theirs)


def test_lease_many_takes_due_jobs_in_lease_order(q, clock):
    low = q.enqueue("t", b"low")
    high = q.enqueue("t", b"high", priority=5)
    later = q.enqueue("t", b"later", delay=10)
    other = q.enqueue("u", b"other")
    jobs = q.lease_many(10, "t", lease_time=70)
    assert [(j.id, j.attempts, j.lease_expires_at) for j in jobs] == [(high, 1, clock.time() + 70),
                                                                      (low, 1, clock.time() + 70)]
    assert [q.get(i).state for i in (high, low, later, other)] == ["active", "active", "pending", "pending"]
    assert q.lease_many(10, "t") == []  # `later` is not due, `other` is not wanted
    clock.advance(10)
    assert [j.id for j in q.lease_many(1)] == [other]  # n caps the batch; ids break the run_at tie
    assert [j.id for j in q.lease_many(5)] == [later]


@pytest.mark.needs("durable")
def test_lease_many_is_one_atomic_batch_of_leases(q, clock):
    ids = q.enqueue_many([("t", b"%d" % i) for i in range(4)])
    jobs = q.lease_many(3)
    assert [j.id for j in jobs] == ids[:3] and [j.payload for j in jobs] == [b"0", b"1", b"2"]
    leases = records_of_type(q, LEASE)
    assert len(leases) == 3  # one batch: the first opens it, the others continue it
    assert [bool(r.flags & FLAG_FIRST) for r in leases] == [True, False, False]
    assert [bool(r.flags & FLAG_CONTINUED) for r in leases] == [True, True, False]
    q2 = reopen(q, clock)  # the holder of the leases is gone: every lease of the batch counted
    assert [(q2.get(i).state, q2.get(i).attempts) for i in ids] == [("pending", 1)] * 3 + [("pending", 0)]
    q2.close()


def test_lease_many_refuses_a_bad_count_and_changes_nothing(q):
    q.enqueue("t", b"x")
    for bad in (0, -1, True, 1.5, "2", 10**9):
        with pytest.raises(InvalidArgument, match="n must be an int"):
            q.lease_many(bad)  # type: ignore[arg-type]
    assert q.stats().counts["pending"] == 1


def test_lease_many_reclaims_expired_leases_first(q, clock):
    jid = q.enqueue("t", b"x")
    q.lease(lease_time=1)
    clock.advance(2)
    [job] = q.lease_many(4)
    assert (job.id, job.attempts) == (jid, 2)


def test_complete_many_records_every_outcome_but_a_lost_lease_in_one_batch(q, clock):
    ids = q.enqueue_many([("t", b"%d" % i) for i in range(3)])
    first = q.lease_many(3, lease_time=1)
    clock.advance(2)
    again = q.lease_many(3)  # the first leases expired: these are attempt 2
    before = q.stats().last_seq
    errors = q._complete_many([(again[0], b"ok", None), (first[1], b"", None), (again[2], b"", "boom")])
    assert errors[0] is None and isinstance(errors[1], LeaseLostError) and errors[2] is None
    assert q.stats().last_seq == before + 2  # the two that held their lease, one batch
    assert (q.get(ids[0]).state, q.get(ids[0]).result) == ("done", b"ok")
    assert q.get(ids[1]).state == "active"  # the lost lease changed nothing
    assert (q.get(ids[2]).state, q.get(ids[2]).last_error) == ("pending", "boom")


@pytest.mark.needs("durable")
def test_complete_many_takes_a_job_given_twice_once(q, clock):
    jid = q.enqueue("t", b"x")
    job = q.lease()
    before = q.stats().last_seq
    errors = q._complete_many([(job, b"first", None), (job, b"second", "boom")])
    assert errors[0] is None and isinstance(errors[1], LeaseLostError) and "twice" in str(errors[1])
    assert q.stats().last_seq == before + 1  # one ACK, and no second record that replay would refuse
    assert (q.get(jid).state, q.get(jid).result) == ("done", b"first")
    q2 = reopen(q, clock)
    assert (q2.get(jid).state, q2.get(jid).result) == ("done", b"first")
    q2.close()


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.needs("engine")
def test_a_lease_whose_write_fails_leaves_its_jobs_due(q, clock, monkeypatch, n):
    ids = q.enqueue_many([("t", b"%d" % i) for i in range(3)])
    before = q.stats()

    def refuse(*args, **kwargs):
        raise InvalidArgument("refused by the test")
    with monkeypatch.context() as m:
        m.setattr(q._backend._log, "write_one", refuse)
        m.setattr(q._backend._log, "write", refuse)
        with pytest.raises(InvalidArgument, match="refused"):
            q.lease_many(n)
    after = q.stats()
    assert (after.counts, after.due, after.last_seq) == (before.counts, before.due, before.last_seq)
    assert [j.id for j in q.lease_many(3)] == ids  # taken back into their ready queue, in order


@pytest.mark.needs("durable")
def test_ack_many_finishes_jobs_in_one_atomic_batch(q, clock):
    ids = q.enqueue_many([("t", b"%d" % i) for i in range(4)])
    jobs = q.lease_many(3)
    before = q.stats().last_seq
    q.ack_many([jobs[0], jobs[1].id, jobs[2]])  # jobs or ids, as ack takes
    assert q.stats().last_seq == before + 3
    acks = records_of_type(q, ACK)
    assert [bool(r.flags & FLAG_CONTINUED) for r in acks] == [True, True, False]  # one batch
    q2 = reopen(q, clock)
    assert [(q2.get(i).state, q2.get(i).result) for i in ids] == [("done", b"")] * 3 + [("pending", None)]
    q2.ack_many([])  # nothing to do, nothing written
    assert q2.stats().last_seq == before + 3
    q2.close()


def test_ack_many_with_one_bad_job_acks_none(q, clock):
    q.enqueue_many([("t", b"%d" % i) for i in range(3)])
    first = q.lease_many(2, lease_time=1)
    clock.advance(2)
    again = q.lease_many(3)  # the first leases expired
    before = q.stats().last_seq
    for bad, error in (([again[0], first[1]], LeaseLostError), ([again[0], again[0]], InvalidTransition),
                       ([again[0], 999], JobNotFound), ([again[0], "x"], InvalidArgument)):
        with pytest.raises(error):
            q.ack_many(bad)  # type: ignore[list-item]
        assert q.stats().last_seq == before and q.stats().counts["active"] == 3
    with pytest.raises(InvalidArgument, match="use ack for one job"):
        q.ack_many(again[0])  # type: ignore[arg-type]
    q.ack_many(again)
    assert q.stats().counts["done"] == 3
    q.close()
    with pytest.raises(ClosedError):
        q.ack_many(again)


def test_ack_many_takes_an_iterable_that_calls_the_queue(queue_factory):
    queue = queue_factory()
    queue.enqueue_many([("t", b"%d" % i) for i in range(3)])
    jobs = queue.lease_many(3)
    still_active = (j for j in jobs if queue.get(j.id).state == "active")  # calls the queue as it goes
    caller = threading.Thread(target=queue.ack_many, args=(still_active,), daemon=True)
    caller.start()
    caller.join(timeout=30)  # a deadlock fails the test instead of hanging the run
    if caller.is_alive():
        abandon(queue)  # its lock is held for good: do not wait for it in close
        pytest.fail("ack_many deadlocked on an iterable that calls the queue")
    assert queue.stats().counts["done"] == 3
    queue.close()


@pytest.mark.needs("durable")
def test_lease_lost_in_a_crash_counts_the_attempt(q, clock):
    jid = q.enqueue("t", b"x", max_attempts=2)
    q.lease()
    q2 = reopen(q, clock)  # the holder of the lease is gone
    info = q2.get(jid)
    assert (info.state, info.attempts, info.last_error) == ("pending", 1, "lease lost")
    q2.lease()
    q3 = reopen(q2, clock)
    assert (q3.get(jid).state, q3.get(jid).last_error) == ("dead", "lease lost")  # a poison job stops
    assert q3.lease() is None
    q3.close()


def test_cancel_pending_job(q):
    jid = q.enqueue("t", b"x")
    q.cancel(jid)
    assert q.get(jid).state == "cancelled" and q.lease() is None
    with pytest.raises(InvalidTransition):
        q.cancel(jid)


def test_cancel_active_job_is_refused(q):
    jid = q.enqueue("t", b"x")
    q.lease()
    with pytest.raises(InvalidTransition, match="active"):
        q.cancel(jid)


def test_retry_requeues_a_dead_job(q):
    jid = q.enqueue("t", b"x", max_attempts=1)
    q.fail(q.lease(), "e")
    assert q.get(jid).state == "dead"
    q.retry(jid)
    job = q.lease()
    assert (job.id, job.attempts) == (jid, 1)
    with pytest.raises(InvalidTransition):
        q.retry(jid)


def test_jobs_filters_and_limits(q):
    ids = [q.enqueue("a" if i % 2 else "b", b"%d" % i) for i in range(10)]
    q.cancel(ids[0])
    assert [j.id for j in q.jobs(state="cancelled")] == [ids[0]]
    assert [j.id for j in q.jobs(name="a", limit=2)] == [ids[1], ids[3]]
    assert len(q.jobs(limit=None)) == 10


@pytest.mark.needs("durable")
def test_stats_reports_counts_due_age_and_disk(q, clock):
    q.enqueue("t", b"x")
    clock.advance(7)
    q.enqueue("t", b"y", delay=60)
    s = q.stats()
    assert (s.pending, s.due, s.oldest_pending_age) == (2, 1, 7.0)
    assert s.segments == 1 and s.bytes_on_disk > s.live_bytes > 0
    q.sync()
    assert q.stats().durable_seq == q.stats().last_seq


def test_get_unknown_job_is_none_and_ack_unknown_raises(q):
    assert q.get(999) is None
    with pytest.raises(JobNotFound, match="999"):
        q.ack(999)


# ----------------------------------------------------------------- bad input

@pytest.mark.parametrize("args, kw", [
    (("", b"x"), {}), ((None, b"x"), {}), (("t", "text"), {}), (("t", 5), {}),
    (("t", b"x"), {"delay": -1}), (("t", b"x"), {"delay": float("nan")}),
    (("t", b"x"), {"priority": 1.5}), (("t", b"x"), {"priority": 2**40}),
    (("t", b"x"), {"max_attempts": 0}), (("t", b"x"), {"key": ""}),
    (("t", b"x"), {"sync": "sometimes"}), (("x" * 1001, b"x"), {}),
    (("t", b"x" * 1025), {}),
])
def test_bad_enqueue_raises_and_writes_nothing(queue_factory, args, kw):
    with queue_factory(max_payload=1024) as q:
        with pytest.raises(InvalidArgument) as info:
            q.enqueue(*args, **kw)
        assert isinstance(info.value, (ValueError, TypeError))
        assert q.stats().last_seq == 0


@pytest.mark.parametrize("kw", [dict(max_attempts=0), dict(lease_time=0), dict(max_payload=-1),
                                dict(backoff=5), dict(sync="x")])
def test_bad_queue_options_are_refused(queue_factory, kw):
    with pytest.raises(InvalidArgument):
        queue_factory(**kw)


def test_bad_ids_and_arguments_are_refused(q):
    for bad in ("1", 0, -3, True, None):
        with pytest.raises(InvalidArgument):
            q.cancel(bad)
    jid = q.enqueue("t", b"x")
    job = q.lease()
    with pytest.raises(InvalidArgument):
        q.ack(job, result="text")
    with pytest.raises(InvalidArgument):
        q.fail(job, 42)
    with pytest.raises(InvalidArgument):
        q.jobs(state="running")
    with pytest.raises(InvalidArgument):
        q.lease(lease_time=-1)
    assert q.get(jid).state == "active"


def test_every_call_on_a_closed_queue_raises(q):
    jid = q.enqueue("t", b"x")
    q.close()
    q.close()  # repeatable
    for call in (lambda: q.enqueue("t", b"x"), lambda: q.lease(), lambda: q.ack(jid),
                 lambda: q.get(jid), lambda: q.jobs(), lambda: q.stats(), lambda: q.sync(),
                 lambda: q.cancel(jid)):
        with pytest.raises(ClosedError, match="closed"):
            call()


@pytest.mark.needs("durable")
def test_a_second_queue_on_a_directory_shares_it(q):
    """Two Queue objects on one directory behave like two processes (spec/format.md §14)."""
    first = q.enqueue("t", b"one")
    with Queue(q.path) as other:
        assert other.get(first).state == "pending"
        second = other.enqueue("t", b"two")
        assert second > first
        job = q.lease("t")
        assert job is not None and job.id == first
        assert other.get(first).state == "active"
        q.ack(job)
        assert other.get(first).state == "done" and q.get(second).state == "pending"


def test_all_errors_share_one_root():
    for name in ("InvalidArgument", "ClosedError", "LockedError", "WriterFailedError", "CorruptionError",
                 "ChecksumError", "UnsupportedVersionError", "InvalidTransition", "JobNotFound",
                 "LeaseLostError", "NotALogqDirectory"):
        assert issubclass(getattr(logq, name), logq.LogqError)


def test_import_has_no_optional_dependencies():
    import subprocess
    import sys
    code = "import sys, logq; bad = [m for m in ('prometheus_client',) if m in sys.modules]; print(bad)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_a_closed_directory_queue_and_its_index_are_freed(tmp_path):
    """Closed queues are freed with their index (an open of a large log freezes the index
    out of the collector's reach: close gives it back)."""
    import gc
    import weakref

    import logq

    refs = []
    for i in range(3):
        q = logq.Queue(str(tmp_path / f"q{i}"))
        q.enqueue("t", b"x")
        refs.append((weakref.ref(q), weakref.ref(q._backend), weakref.ref(q._backend._index)))
        q.close()
        del q
    gc.collect()
    assert all(r() is None for each in refs for r in each)


def test_opening_a_small_queue_freezes_nothing(tmp_path):
    """gc.freeze is process-wide: a program that opens many small queues (a test suite) must
    not have its own garbage frozen by each open."""
    import gc

    import logq

    before = gc.get_freeze_count()
    q = logq.Queue(str(tmp_path / "q"))
    q.enqueue("t", b"x")
    q.close()
    q = logq.Queue(str(tmp_path / "q"))
    assert gc.get_freeze_count() == before
    q.close()


def test_a_large_open_freezes_and_close_gives_everything_back(tmp_path, monkeypatch):
    """An open that replays a large log freezes what is in memory; close unfreezes it, so
    that cyclic garbage that was pending at the open is collected after close."""
    import gc
    import weakref

    import logq
    from logq.backends import local

    class Node:
        pass

    q = logq.Queue(str(tmp_path / "q"))
    q.enqueue_many([("t", b"x")] * 5)
    q.close()
    monkeypatch.setattr(local, "LARGE_REPLAY", 5)
    garbage = Node()
    garbage.me = garbage  # a cycle: only the collector frees it
    dead = weakref.ref(garbage)
    del garbage
    collecting = gc.isenabled()
    gc.disable()
    try:
        q = logq.Queue(str(tmp_path / "q"))
    finally:
        if collecting:
            gc.enable()
    assert gc.get_freeze_count() > 0
    q.close()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert dead() is None


def test_a_queue_dropped_without_close_and_its_index_are_freed(tmp_path):
    """No reference cycle holds a queue that open froze with its index: a queue its
    program drops without closing is freed as it was before the backends split."""
    import gc
    import weakref

    import logq

    q = logq.Queue(str(tmp_path / "q"), compact_threshold=0.5)
    q.enqueue("t", b"x")
    refs = [weakref.ref(q), weakref.ref(q._backend), weakref.ref(q._backend._index)]
    del q
    gc.collect()
    assert all(r() is None for r in refs)


def test_a_worker_keeps_the_queue_that_made_it(tmp_path):
    import gc

    import logq

    q = logq.Queue(str(tmp_path / "q"))

    @q.task(name="t")
    def t():  # type: ignore[no-untyped-def]
        return 7

    handle = t.enqueue()
    worker = q.worker(concurrency=1)
    del q, t
    gc.collect()
    assert worker.source.get(handle.id) is not None  # the queue is alive for its worker
