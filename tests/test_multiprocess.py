"""Several processes on one queue directory (issue 20, spec/format.md §14), with real processes.

Children are started through a forkserver (cheap forks of a clean process) and
report over pipes what their calls returned: a producer the ids each enqueue
gave it, a consumer the ids it acked. The parent judges only what was reported
(a call whose report a kill cut off may or may not have happened) and waits
on pipes with deadlines, never on sleeps. Kills are real SIGKILLs, at random
moments from a seeded generator; a failing seed is in the assertion message.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from logq import Backoff, LeaseLostError, Queue
from logq.log.fs import OsFileSystem
from logq.log.verify import verify
from logq.testing import FakeClock

CTX = multiprocessing.get_context("forkserver")
DEADLINE = 30.0  # seconds any one wait for a child may take before the test fails
# Background compaction on (the default threshold): an opener that is not alone holds the
# compaction lock shared while it reads (test_an_open_that_races_a_compaction_elsewhere_opens).
OPTIONS: dict[str, Any] = dict(lease_time=600.0, segment_size=64 << 10, backoff=Backoff(base=1, jitter=0))


# ------------------------------------------------------------------ the children
# (module level, so the forkserver can find them by name)


def producer(path: str, tag: str, count: int, batch: int, size: int, priority: int, stop: Any, conn: Any) -> None:
    """Enqueue `count` batches (of `batch` jobs, `size`-byte payloads), reporting each
    batch's ids once it returned; stop early once `stop` (a `Flag`) is set."""
    with Queue(path, **OPTIONS) as q:
        conn.send(("open", os.getpid()))
        for i in range(count):
            if stop.value:
                break
            items = [("t", f"{tag}:{i}:{k}:".encode().ljust(size, b"x")) for k in range(batch)]
            if batch == 1:
                ids = [q.enqueue(*items[0], priority=priority)]
            else:
                ids = q.enqueue_many(items, priority=priority)
            conn.send(("enq", ids))
    conn.send(("done", None))


def consumer(path: str, stop: Any, conn: Any) -> None:
    """Lease and ack until `stop` (a `Flag`) is set and nothing is due, reporting each acked id."""
    with Queue(path, **OPTIONS) as q:
        conn.send(("open", os.getpid()))
        while True:
            job = q.lease(wait=0.02)
            if job is None:
                if stop.value:
                    break
                continue
            q.ack(job, str(os.getpid()).encode())
            conn.send(("ack", job.id))
    conn.send(("done", None))


def keyed(path: str, keys: list[str], go: Any, conn: Any) -> None:
    """Enqueue one job per key (after `go`), reporting key -> id."""
    with Queue(path, **OPTIONS) as q:
        conn.send(("open", os.getpid()))
        go.wait(DEADLINE)
        conn.send(("keys", {k: q.enqueue("t", k.encode(), key=k) for k in keys}))
    conn.send(("done", None))


def lease_then_ack(path: str, conn: Any) -> None:
    """Lease one job, report it, ack it when told and report what the ack did."""
    with Queue(path, **OPTIONS) as q:
        job = q.lease(lease_time=5)
        conn.send(("leased", None if job is None else job.id))
        conn.recv()
        try:
            q.ack(job)
            conn.send(("ack", "acked"))
        except LeaseLostError as exc:
            conn.send(("ack", type(exc).__name__))


def ack_one(path: str, job_id: int, conn: Any) -> None:
    """Lease the job `job_id` (the only one due) and ack it with a result."""
    with Queue(path, **OPTIONS) as q:
        job = q.lease(wait=DEADLINE)
        assert job is not None and job.id == job_id, job
        q.ack(job, b'"from another process"')
        conn.send(("acked", job.id))


def enqueue_one(path: str, go: Any, conn: Any) -> None:
    with Queue(path, **OPTIONS) as q:
        go.wait(DEADLINE)
        conn.send(("enq", [q.enqueue("t", b"from another process")]))


def keep_lock(path: str, conn: Any) -> None:
    """Open the queue alone (it then keeps the writer lock between calls), enqueue, and wait."""
    q = Queue(path, **OPTIONS)
    conn.send(("enq", [q.enqueue("t", b"kept")]))
    conn.recv()  # killed while waiting here


def die_mid_append(path: str, conn: Any) -> None:
    """Enqueue (reported), then take a turn, write a batch past the published end (of a record
    type no replay accepts) and die by SIGKILL holding the writer lock, before publishing."""
    q = Queue(path, **OPTIONS)
    conn.send(("enq", q.enqueue_many([("t", b"kept %d" % i) for i in range(5)])))
    log = q.backend.log  # type: ignore[attr-defined]
    log.turn.acquire()
    with log._writer.lock:
        log._writer._write_batch_locked([(250, b"never published " * 20)] * 3, "batch")
    os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------- the parent


@dataclass
class Child:
    """One child process and what it reported."""

    role: str
    proc: Any
    conn: Any
    enqueued: list[list[int]] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    other: list[tuple[str, Any]] = field(default_factory=list)
    done: bool = False
    killed: bool = False

    def take(self) -> None:
        """Read every message waiting on the pipe."""
        while not self.done and self.conn.poll():
            try:
                tag, body = self.conn.recv()
            except (EOFError, OSError):
                self.done = True
                return
            if tag == "enq":
                self.enqueued.append(body)
            elif tag == "ack":
                self.acked.append(body)
            elif tag == "done":
                self.done = True
            else:
                self.other.append((tag, body))

    def expect(self, tag: str) -> Any:
        """The next message tagged `tag` (within DEADLINE)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            for i, (t, body) in enumerate(self.other):
                if t == tag:
                    del self.other[i]
                    return body
            assert not self.done, f"{self.role} ended before saying {tag!r}"
            left = deadline - time.monotonic()
            assert left > 0 and self.conn.poll(left), f"{self.role} did not say {tag!r} within {DEADLINE}s"
            self.take()

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL (nothing if it has already ended)
        self.proc.join(DEADLINE)
        self.take()
        assert self.proc.exitcode == -signal.SIGKILL, f"{self.role} ended by itself: exit {self.proc.exitcode}"
        self.killed = self.done = True


def flag() -> Any:
    """A flag the parent sets (`.value = 1`) and children read, in shared memory without a lock:
    a child SIGKILLed while it reads leaves nothing locked (an Event's lock it would, for good).
    The parent keeps it until the children have ended."""
    return CTX.RawValue("b", 0)


def start(role: str, target: Any, *args: Any) -> Child:
    parent, child = CTX.Pipe(duplex=True)
    proc = CTX.Process(target=target, args=args + (child,), daemon=True)
    proc.start()
    child.close()
    return Child(role, proc, parent)


def finish(children: list[Child]) -> None:
    """Read from every child until each said done (or died), then join them; fail past DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while True:
        for c in children:
            c.take()
        live = [c for c in children if not c.done]
        if not live:
            break
        left = deadline - time.monotonic()
        assert left > 0, f"children still running after {DEADLINE}s: {[c.role for c in live]}"
        multiprocessing.connection.wait([c.conn for c in live] + [c.proc.sentinel for c in live], left)
        for c in live:
            if not c.proc.is_alive() and not c.conn.poll():
                c.done = True
    for c in children:
        c.proc.join(DEADLINE)
        assert c.killed or c.proc.exitcode == 0, f"{c.role} exited with {c.proc.exitcode}"


def pump(children: list[Child], seconds: float) -> None:
    """Read what the children report for `seconds` (the random moments of the kill tests)."""
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        live = [c.conn for c in children if not c.done]
        if not live:
            return
        multiprocessing.connection.wait(live, left)
        for c in children:
            c.take()


def check_acks(children: list[Child]) -> dict[int, str]:
    """No job was acked by two processes (or twice by one); return id -> the consumer."""
    by: dict[int, str] = {}
    for c in children:
        for jid in c.acked:
            assert jid not in by, f"job {jid} acked by {by[jid]} and by {c.role}"
            by[jid] = c.role
    return by


def check_ids(children: list[Child]) -> set[int]:
    """Each producer's ids increase; no id was handed out twice. Return them all."""
    seen: set[int] = set()
    for c in children:
        ids = [i for batch in c.enqueued for i in batch]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), f"{c.role}'s ids do not increase: {ids[:20]}"
        assert not seen & set(ids), f"ids handed out twice: {sorted(seen & set(ids))[:10]}"
        seen |= set(ids)
    return seen


def states(q: Queue) -> dict[int, tuple[str, int]]:
    return {j.id: (j.state, j.attempts) for j in q.jobs(limit=None)}


def drain(q: Queue) -> None:
    while (job := q.lease()) is not None:
        q.ack(job)


# ------------------------------------------------------------------------ tests


def test_producers_and_consumers_in_several_processes_finish_every_job(qdir):
    """Three producers (one enqueuing batches) and two consumers, all in processes of their own:
    every enqueue that returned ends done, each by one consumer, and ids increase per producer."""
    stop, never = flag(), flag()
    producers = [start(f"producer{i}", producer, qdir, f"p{i}", 60, batch, 100, 0, never)
                 for i, batch in enumerate((1, 1, 10))]
    consumers = [start(f"consumer{i}", consumer, qdir, stop) for i in range(2)]
    finish(producers)
    stop.value = 1
    finish(consumers)
    enqueued = check_ids(producers)
    assert len(enqueued) == 60 + 60 + 600
    acked = check_acks(consumers)
    assert set(acked) == enqueued
    with Queue(qdir, **OPTIONS) as q:
        jobs = {j.id: j for j in q.jobs(limit=None)}
    assert {i: j.state for i, j in jobs.items()} == {i: "done" for i in enqueued}
    assert all(jobs[i].result == str(c.proc.pid).encode() for c in consumers for i in c.acked)


def test_a_unique_key_is_held_once_across_processes(qdir):
    """Three processes enqueue the same keys at once: each key makes one job, and every
    process is told that job's id."""
    go = CTX.Event()
    keys = [f"k{i}" for i in range(30)]
    children = [start(f"keyed{i}", keyed, qdir, keys[::1 if i % 2 == 0 else -1], go) for i in range(3)]
    for c in children:
        c.expect("open")
    go.set()
    answers = [c.expect("keys") for c in children]
    finish(children)
    assert answers[0] == answers[1] == answers[2]
    with Queue(qdir, **OPTIONS) as q:
        jobs = q.jobs(limit=None)
    assert sorted((j.key, j.id) for j in jobs) == sorted(answers[0].items())


def test_priority_and_order_hold_across_processes(qdir):
    """Jobs two processes enqueued (one at priority 5, one at 0) are leased by a third in
    order: priority, then run_at, then id."""
    stop = flag()
    low = start("low", producer, qdir, "low", 20, 1, 10, 0, stop)
    high = start("high", producer, qdir, "high", 20, 1, 10, 5, stop)
    finish([low, high])
    with Queue(qdir, **OPTIONS) as q:
        expected = [j.id for j in sorted(q.jobs(limit=None), key=lambda j: (-j.priority, j.run_at, j.id))]
    stop.value = 1
    reader = start("consumer", consumer, qdir, stop)
    finish([reader])
    assert reader.acked == expected
    assert set(expected[:20]) == {i for b in high.enqueued for i in b}


def test_two_queue_objects_in_one_process_fence_leases(qdir):
    """Two Queue objects on one directory are two openers: a lease the other took over
    (its clock past the first's lease) fences the first's ack with LeaseLostError."""
    first_clock, second_clock = FakeClock(), FakeClock()
    with Queue(qdir, clock=first_clock, **OPTIONS) as a, Queue(qdir, clock=second_clock, **OPTIONS) as b:
        jid = a.enqueue("t", b"x")
        job = a.lease(lease_time=5)
        assert job is not None and job.id == jid
        assert b.lease() is None  # b sees the lease: nothing due
        second_clock.advance(10)
        taken = b.lease()
        assert taken is not None and taken.id == jid and taken.attempts == 2
        with pytest.raises(LeaseLostError):
            a.ack(job)
        b.ack(taken, b"b")
        assert a.get(jid).state == "done" and a.get(jid).result == b"b"
        with pytest.raises(LeaseLostError):
            a.ack(job)


def test_an_ack_after_another_process_took_the_lease_raises_lease_lost(qdir):
    """A child leases a job for 5 s; this process, its clock an hour on, takes the job over;
    the child's ack then raises LeaseLostError and this process's ack is the one that counts."""
    with Queue(qdir, clock=FakeClock(time.time() + 3600), **OPTIONS) as q:
        jid = q.enqueue("t", b"x")
        child = start("lease_then_ack", lease_then_ack, qdir)
        assert child.expect("leased") == jid
        taken = q.lease()
        assert taken is not None and taken.id == jid
        child.conn.send("ack now")
        finish([child])
        assert child.acked == ["LeaseLostError"]
        q.ack(taken, b"here")
        assert q.get(jid).state == "done" and q.get(jid).result == b"here"


def test_wait_and_result_see_a_job_another_process_finished(qdir):
    """`wait(id)` and `Handle.result(timeout)` here return once a child acked the job."""
    with Queue(qdir, **OPTIONS) as q:
        task = q.task(name="t")(lambda: None)
        handle = task.enqueue()
        child = start("ack_one", ack_one, qdir, handle.id)
        assert q.wait(handle.id, timeout=DEADLINE).state == "done"
        assert handle.result(timeout=DEADLINE) == "from another process"
        finish([child])


def test_lease_with_wait_returns_a_job_another_process_enqueued(qdir):
    """`lease(wait=...)` here returns a job a child enqueued while this process waited."""
    with Queue(qdir, **OPTIONS) as q:
        go = CTX.Event()
        child = start("enqueue_one", enqueue_one, qdir, go)
        assert q.lease(wait=0.01) is None  # (the child has not enqueued: it waits for go)
        go.set()
        job = q.lease(wait=DEADLINE)
        finish([child])
        assert job is not None and job.payload == b"from another process"
        assert [job.id] == child.enqueued[0]


def test_a_process_killed_while_keeping_the_writer_lock_does_not_block_others(qdir):
    """A child alone on the queue keeps the writer lock between calls; killed, it blocks no
    one: a new opener gets in, sees its job, and changes the queue."""
    child = start("keeper", keep_lock, qdir)
    deadline = time.monotonic() + DEADLINE
    while not child.enqueued:
        assert time.monotonic() < deadline and child.conn.poll(DEADLINE)
        child.take()
    child.kill()
    with Queue(qdir, **OPTIONS) as q:
        assert [j.id for j in q.jobs(limit=None)] == child.enqueued[0]
        assert q.enqueue("t", b"after") > child.enqueued[0][0]


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_of_random_processes_loses_nothing_acknowledged(qdir, seed):
    """Producers (one enqueuing large batches, so that it is often killed holding the writer
    lock mid-append) and consumers are SIGKILLed at random moments and restarted, while this
    process keeps the queue open. Then: every enqueue that returned exists, no job was acked
    twice, every reported ack is done, the jobs left active are at most the killed consumers'
    leases; the directory verifies; reopening alone gives the same states (leases lost), and
    draining it finishes every job."""
    rng, stop = random.Random(seed), flag()
    roles = {"small": (producer, qdir, "small", 10**6, 1, 200, 0, stop),
             "batch": (producer, qdir, "batch", 10**6, 40, 1500, 0, stop),
             "consumer0": (consumer, qdir, stop), "consumer1": (consumer, qdir, stop)}
    everyone: list[Child] = []
    with Queue(qdir, **OPTIONS) as watcher:
        live = {name: start(f"{name}#0", *args) for name, args in roles.items()}
        everyone += live.values()
        for kill in range(12):
            pump(everyone, rng.uniform(0.05, 0.4))
            name = rng.choice(sorted(live))
            live[name].kill()
            live[name] = start(f"{name}#{kill + 1}", *roles[name])
            everyone.append(live[name])
        pump(everyone, 0.2)
        stop.value = 1
        finish(everyone)
        seen = states(watcher)
    info = f"(seed {seed})"
    enqueued = check_ids([c for c in everyone if c.role.startswith(("small", "batch"))])
    acked = check_acks([c for c in everyone if c.role.startswith("consumer")])
    assert enqueued <= set(seen), f"acknowledged enqueues lost {info}: {sorted(enqueued - set(seen))[:10]}"
    assert all(seen[i][0] == "done" for i in acked), info
    active = [i for i, (s, _) in seen.items() if s == "active"]
    killed_consumers = sum(c.killed for c in everyone if c.role.startswith("consumer"))
    assert len(active) <= killed_consumers, f"{len(active)} jobs still active {info}"
    assert {s for s, _ in seen.values()} <= {"done", "active"}, info
    found = verify(qdir)
    assert found.ok, (info, found.problems)
    with Queue(qdir, **OPTIONS) as q:
        after = states(q)
        assert after == {i: ("pending", a) if s == "active" else (s, a) for i, (s, a) in seen.items()}, info
        drain(q)
        assert all(s == "done" for s, _ in states(q).values()), info


def test_a_writer_dead_after_cutting_its_seal_loses_no_later_append(qdir):
    """Found by the SIGKILL test above: a writer died mid-rollover, after writing its SEAL
    and cutting the active segment's preallocated zeros at it, before publishing. The next
    writer sets the SEAL aside, but still had the segment mapped as far as its zeros went
    before the cut: its record went into the map past the end of the file and was lost
    (a reopen cut it as a torn tail), or, a page further, the store was a SIGBUS. It must
    write no further than the file goes."""
    from logq.log.log import Log

    first = Log(qdir)  # alone: it preallocates the segment, and keeps the writer lock
    first.append([(16, b"x" * 100)])
    second = Log(qdir)  # not alone: it maps the segment's zeros; both take turns from now on
    first.turn.acquire()
    with first._writer.lock:
        first._writer.rollover_locked()  # SEAL written, zeros cut, the next segment created
    first._abandon()  # dies holding the writer lock, before publishing any of it
    with second.turn:
        second.append([(16, b"y" * 100)])
    with second.turn:
        second.close()
    replayed: list[bytes] = []
    again = Log(qdir, replay=lambda rec, base: replayed.append(rec.payload))
    again.close()
    assert replayed == [b"x" * 100, b"y" * 100]
    assert not again.report.torn


class _CompactsBeforeFirstSegmentRead(OsFileSystem):
    """The real file system, which runs `trigger` once, just before the first segment is
    opened for reading: the moment a compaction elsewhere races an open that reads alone."""

    def __init__(self, trigger: Any) -> None:
        super().__init__()
        self.trigger = trigger

    def open(self, path: str, **options: Any) -> Any:
        if options.get("readonly") and path.endswith(".seg") and self.trigger is not None:
            trigger, self.trigger = self.trigger, None
            trigger()
        return super().open(path, **options)


def test_an_open_that_races_a_compaction_elsewhere_opens(qdir):
    """An opener that is not alone reads up to the published state while another opener
    compacts (and removes the segments it compacted): the open still succeeds and sees the
    other's jobs, less those the compaction swept (issue 20 item 5: no stale file is an error)."""
    options = dict(segment_size=4096, retain_done=0.0, compact_threshold=None)
    with Queue(qdir, **options) as a:
        ids = [a.enqueue("t", b"x" * 200) for _ in range(60)]
        for _ in range(40):
            job = a.lease()
            assert job is not None
            a.ack(job)
        a.enqueue("t", b"last")  # the done jobs' records are in sealed segments now
        with Queue(qdir, fs=_CompactsBeforeFirstSegmentRead(lambda: a.compact()), **options) as b:
            assert {j.id: j.state for j in b.jobs(limit=None)} == {j.id: j.state for j in a.jobs(limit=None)}
            assert set(ids[40:]) <= {j.id for j in b.jobs(limit=None)}


def test_a_process_killed_holding_the_writer_lock_mid_append_loses_nothing_published(qdir):
    """A child sharing the queue dies by SIGKILL inside its turn, a batch written past the
    published end: the next writer here gets the lock, sets the batch aside (in a .torn
    file), and nothing the child was told is lost; the directory verifies and a reopen
    alone agrees."""
    with Queue(qdir, **OPTIONS) as q:
        child = start("dies", die_mid_append, qdir)
        child.proc.join(DEADLINE)
        child.take()
        assert child.proc.exitcode == -signal.SIGKILL and len(child.enqueued) == 1
        after = q.enqueue("t", b"after")
        seen = {j.id: j.payload for j in q.jobs(limit=None)}
    assert seen == {**{i: b"kept %d" % k for k, i in enumerate(child.enqueued[0])}, after: b"after"}
    assert [n for n in os.listdir(qdir) if n.endswith(".torn")]
    found = verify(qdir)
    assert found.ok, found.problems
    with Queue(qdir, **OPTIONS) as again:
        assert {j.id: j.payload for j in again.jobs(limit=None)} == seen
