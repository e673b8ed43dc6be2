"""Compaction while other openers share the directory (spec/format.md §14): the compacting
process publishes a new epoch before its swap; every other opener, at its next turn, reads
the compacted segment, points its jobs at their new places, drops the jobs the compaction
swept, and reads any record it had not seen yet from there."""

from __future__ import annotations

from logq import Queue

OPTS = dict(segment_size=4096, retain_done=0, compact_threshold=None)


def states(q: Queue) -> dict[int, str]:
    return {info.id: info.state for info in q.jobs()}


def test_a_second_opener_follows_a_compaction_and_reads_its_jobs_from_their_new_places(tmp_path):
    path = str(tmp_path / "q")
    with Queue(path, **OPTS) as a, Queue(path, **OPTS) as b:
        ids = [a.enqueue("t", b"payload %d" % i + b"x" * 100) for i in range(60)]
        for _ in range(40):  # b finishes most of them, so that compaction has jobs to sweep
            job = b.lease("t")
            assert job is not None
            b.ack(job)
        report = a.compact(include_active=True)
        assert not report.aborted and report.jobs_swept == 40 and report.records_dropped > 0
        assert states(b) == states(a) == {i: "pending" for i in ids[40:]}
        for i in ids[40:]:  # b reads the payloads from the compacted segment
            job = b.lease("t")
            assert job is not None and job.id == i and job.payload == b"payload %d" % ids.index(i) + b"x" * 100
            b.ack(job)
        assert a.stats().counts["done"] == 20 and b.stats().counts["pending"] == 0
    with Queue(path) as again:  # alone: a full replay agrees
        assert states(again) == {i: "done" for i in ids[40:]}


def test_an_opener_that_lagged_behind_a_compaction_still_sees_every_change(tmp_path):
    """b takes no turn while a enqueues, finishes and compacts: the records b never read are
    partly swept (jobs b last saw pending) and partly only in the compacted segment."""
    path = str(tmp_path / "q")
    with Queue(path, **OPTS) as a, Queue(path, **OPTS) as b:
        first = [b.enqueue("t", b"y" * 100) for _ in range(10)]
        later = [a.enqueue("t", b"z" * 100) for _ in range(30)]
        for _ in range(25):
            job = a.lease("t")
            assert job is not None
            a.ack(job)
        active = a.lease("t")
        assert active is not None
        assert not a.compact(include_active=True).aborted
        expected = states(a)
        assert len(expected) == 15 and expected[active.id] == "active"
        assert states(b) == expected  # b's first turn since it enqueued
        assert b.get(first[0]) is None  # swept: b last saw it pending
        left = b.lease("t")
        assert left is not None and left.id == later[-14] and left.payload == b"z" * 100
        a.ack(active)
        b.ack(left)
        assert states(a) == states(b)


def test_one_compaction_at_a_time_among_the_openers(tmp_path):
    """The compaction lock: while one opener compacts, another's compaction does nothing."""
    path = str(tmp_path / "q")
    with Queue(path, **OPTS) as a, Queue(path, **OPTS) as b:
        a.enqueue("t", b"x")
        b.ack(b.lease("t"))
        held = a._backend.log.compaction_lock()  # as a compaction in progress in a holds it
        assert held is not None
        try:
            assert b.compact(include_active=True).aborted
            assert b.get(1).state == "done"  # nothing was rewritten
        finally:
            held.close()
        assert not b.compact(include_active=True).aborted
        assert a.get(1) is None and b.get(1) is None
