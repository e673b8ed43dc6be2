"""Compaction: swept jobs go, live jobs stay exactly as they were, a crash anywhere is safe."""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from logq import Queue
from logq.testing import FakeClock

from .helpers import Crash, CrashingFS, abandon, segment_paths


def workload(q: Queue, n: int = 300, finish: int = 200) -> list[int]:
    ids = [q.enqueue("t", b"payload-%d" % i, key=f"k{i}" if i % 7 == 0 else None) for i in range(n)]
    for i in range(finish):
        job = q.lease()
        if i % 10 == 0:
            q.fail(job, "bad", retry=False)
        elif i % 10 == 1:
            q.release(job, delay=5)
        else:
            q.ack(job, b"r%d" % i)
    q.cancel(q.jobs(state="pending", limit=1)[0].id)
    return ids


def live(q: Queue) -> dict[int, object]:
    return {j.id: j for j in q.jobs(limit=None) if j.state in ("pending", "active")}


@pytest.fixture
def clock():
    return FakeClock()


def open_q(path, clock, **kw) -> Queue:
    kw.setdefault("segment_size", 4096)
    kw.setdefault("compact_threshold", None)
    return Queue(path, clock=clock, **kw)


def test_compaction_keeps_live_jobs_exactly_and_sweeps_after_retention(qdir, clock):
    q = open_q(qdir, clock, retain_done=100, retain_dead=1000)
    workload(q)
    before_live, before_all = live(q), q.jobs(limit=None)
    first = q.compact()
    assert first.jobs_swept == 0 and q.jobs(limit=None) == before_all  # all within retention
    clock.advance(101)
    report = q.compact()
    states = {j.state for j in q.jobs(limit=None)}
    assert report.jobs_swept > 0 and report.bytes_out < report.bytes_in
    assert live(q) == before_live
    assert "dead" in states  # dead jobs have a longer retention
    clock.advance(1000)
    q.compact()
    assert live(q) == before_live
    swept = q.stats()
    q.close()
    q = open_q(qdir, clock)
    assert live(q) == before_live and q.stats().counts == swept.counts
    q.close()


def test_compaction_shrinks_the_disk_and_the_queue_keeps_working(qdir, clock):
    q = open_q(qdir, clock, retain_done=0)
    workload(q, n=400, finish=390)
    before = q.stats()
    q.compact()
    after = q.stats()
    assert after.bytes_on_disk < before.bytes_on_disk / 2 and after.segments < before.segments
    new = q.enqueue("t", b"after compaction")
    got = [q.lease() for _ in range(after.pending + 1)]
    assert new in [j.id for j in got if j]
    q.close()


def test_final_record_outside_the_prefix_keeps_the_job(qdir, clock):
    """The ack is in the active segment: dropping the enqueue would resurrect nothing,
    but dropping it while the ack stays would break replay. The job must stay whole."""
    q = open_q(qdir, clock, retain_done=0)
    jid = q.enqueue("t", b"x")
    job = q.lease()
    for i in range(200):
        q.enqueue("filler", b"f" * 40)
    q.ack(job)  # lands in the active segment
    q.compact()
    assert q.get(jid).state == "done"
    q.close()
    q = open_q(qdir, clock)
    assert q.get(jid).state == "done"
    q.close()


def test_a_swept_job_never_comes_back(qdir, clock):
    q = open_q(qdir, clock, retain_done=0)
    jid = q.enqueue("t", b"x", key="once")
    q.ack(q.lease())
    for i in range(200):
        q.ack(q.lease()) if i % 2 else q.enqueue("t", b"f" * 40)
    q.compact()
    assert q.get(jid) is None
    q.close()
    q = open_q(qdir, clock)
    assert q.get(jid) is None and jid not in [j.id for j in q.jobs(limit=None)]
    assert q.enqueue("t", b"y", key="once") != jid
    q.close()


def test_retry_during_compaction_aborts_the_swap(qdir, clock):
    q = open_q(qdir, clock, retain_dead=0)
    jid = q.enqueue("t", b"x")
    q.fail(q.lease(), "x", retry=False)
    for i in range(150):
        q.enqueue("filler", b"f" * 40)
    real = q._backend.log.write_compacted

    def compact_then_retry(bases, drop):
        out = real(bases, drop)
        q.retry(jid)  # the job was to be swept; now it is live again
        return out

    q._backend.log.write_compacted = compact_then_retry
    report = q.compact()
    assert report.aborted and q.get(jid).state == "pending"
    assert not [n for n in os.listdir(qdir) if n.endswith((".compacting", ".swap"))]
    q.close()
    q = open_q(qdir, clock)
    assert q.get(jid).state == "pending"
    q.close()


def prepared(tmp_path, clock):
    src = str(tmp_path / "src")
    q = open_q(src, clock, retain_done=0, retain_dead=0)
    workload(q)
    expected = live(q)
    doomed = {j.id for j in q.jobs(limit=None) if j.state not in ("pending", "active")}
    q.close()
    return src, expected, doomed


def test_crash_at_every_step_of_compaction_loses_and_resurrects_nothing(tmp_path, clock):
    src, expected, doomed = prepared(tmp_path, clock)
    probe = tmp_path / "probe"
    shutil.copytree(src, probe)
    fs = CrashingFS()
    q = open_q(str(probe), clock, fs=fs, retain_done=0, retain_dead=0)
    start = fs.ops
    q.compact()
    steps = fs.log[start:]
    kept = {j.id for j in q.jobs(limit=None)} & doomed  # final, but with a record past the prefix
    q.close()
    assert any(s.startswith("rename") for s in steps) and any(s.startswith("unlink") for s in steps)
    assert kept != doomed
    for n in range(1, len(steps) + 1):
        d = str(tmp_path / f"crash{n}")
        shutil.copytree(src, d)
        fs = CrashingFS()
        q = open_q(d, clock, fs=fs, retain_done=0, retain_dead=0)
        fs.at = fs.ops + n
        with pytest.raises(Crash):
            q.compact()
        abandon(q)
        q = open_q(d, clock)
        survivors = {j.id for j in q.jobs(limit=None)} & doomed
        assert live(q) == expected, steps[n - 1]
        committed = n - 1 > steps.index(next(s for s in steps if s.startswith("rename")))  # it ran
        assert survivors == (kept if committed else doomed), f"after a crash at {steps[n - 1]}"
        assert not [x for x in os.listdir(d) if x.endswith((".compacting", ".swap"))]
        q.compact()  # and compaction still works after recovery
        assert live(q) == expected
        q.close()


def test_crash_during_recovery_of_a_swap_is_safe(tmp_path, clock):
    src, expected, doomed = prepared(tmp_path, clock)
    d = str(tmp_path / "d")
    shutil.copytree(src, d)
    fs = CrashingFS()
    q = open_q(d, clock, fs=fs, retain_done=0, retain_dead=0)
    start = fs.ops
    q.compact()
    steps = fs.log[start:]
    kept = {j.id for j in q.jobs(limit=None)} & doomed
    q.close()
    first_unlink = next(i for i, s in enumerate(steps) if s.startswith("unlink"))
    for m in range(1, 4):
        d = str(tmp_path / f"r{m}")
        shutil.copytree(src, d)
        fs = CrashingFS()
        q = open_q(d, clock, fs=fs, retain_done=0, retain_dead=0)
        fs.at = fs.ops + first_unlink + 1  # crash right after the commit point
        with pytest.raises(Crash):
            q.compact()
        abandon(q)
        fs = CrashingFS(at=m)  # and crash again while recovery rolls forward
        with pytest.raises(Crash):
            open_q(d, clock, fs=fs)
        q = open_q(d, clock)
        assert live(q) == expected and {j.id for j in q.jobs(limit=None)} & doomed == kept
        q.close()


def test_compaction_runs_while_producers_and_consumers_work(qdir):
    q = Queue(qdir, segment_size=8192, retain_done=0, compact_threshold=None)
    stop = threading.Event()
    acked: list[int] = []
    errors: list[BaseException] = []

    def produce():
        for i in range(1500):
            q.enqueue("t", b"x" * 30)

    def consume():
        while not stop.is_set() or q.stats().pending:
            job = q.lease(wait=0.05)
            if job:
                q.ack(job)
                acked.append(job.id)

    def compact():
        try:
            while not stop.is_set():
                q.compact()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (produce, consume, consume, compact)]
    for t in threads:
        t.start()
    threads[0].join()
    stop.set()
    for t in threads[1:]:
        t.join()
    assert not errors and len(acked) == len(set(acked)) == 1500
    q.compact()
    assert q.stats().counts["done"] < 1500  # swept
    q.close()


def test_auto_compaction_after_rollover_keeps_the_disk_bounded(qdir, clock):
    q = Queue(qdir, clock=clock, segment_size=4096, retain_done=0, compact_threshold=0.5)
    for i in range(2000):
        q.enqueue("t", b"x" * 40)
        q.ack(q.lease())
    assert q._wait_compactions(1, timeout=30)
    q.close()
    q = Queue(qdir, clock=clock, segment_size=4096, retain_done=0, compact_threshold=None)
    q.compact()  # whatever the background did (it may be a compaction behind), the result is consistent
    assert q.stats().bytes_on_disk < 3 * 4096 and q.stats().counts["pending"] == 0
    q.close()


def test_lease_after_compaction_skips_swept_jobs_left_in_the_heaps(qdir, clock):
    q = open_q(qdir, clock, retain_done=0)
    first = q.enqueue("t", b"first")
    second = q.enqueue("t", b"second", delay=1)
    q.ack(q.lease())  # the first job's ready-heap entry is now stale, still at the top
    for i in range(150):
        q.enqueue("filler", b"f" * 40)
    q.compact()
    assert q.get(first) is None
    clock.advance(1)
    assert q.lease("t").id == second
    q.close()


def test_reads_after_compaction_see_the_new_segment_not_bytes_read_ahead_before(qdir, clock):
    """Records of one size: the compacted segment has records where the old one had
    others, so bytes of the old one kept from a read-ahead would pass the checks."""
    q = open_q(qdir, clock, retain_done=0)
    ids = [q.enqueue("t", b"job %03d" % i * 8) for i in range(300)]
    for jid in ids[::2]:
        q.cancel(jid)
    first = [j.payload for j in q.jobs("pending", limit=3)]  # reads walking forward in the first segment
    assert q.compact().jobs_swept > 0
    pending = ids[1::2]
    order = pending[3:] + pending[:3]  # the first read after it falls inside the span read before
    assert [q.get(jid).payload for jid in order] == [b"job %03d" % (ids.index(jid)) * 8 for jid in order]
    assert first == [b"job %03d" % i * 8 for i in (1, 3, 5)]
    q.close()
