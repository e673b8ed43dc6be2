"""Results are bounded by `max_result` and, like payloads, not held in memory (issue 19 item 13):
a result longer than INLINE_RESULT bytes is read back from its ACK record when asked for."""

from __future__ import annotations

import gc
import os
import tracemalloc

import pytest

import logq
from logq.core.index import INLINE_RESULT
from logq.log import checkpoint as _checkpoint
from logq.queue import _Source
from logq.testing import FakeClock

MiB = 1 << 20


def held_result_bytes(q: logq.Queue) -> int:
    """The result bytes the queue's index holds in memory."""
    return sum(len(e.extra.result or b"") for e in q._backend._index.jobs.values() if e.extra is not None)


def test_a_result_above_max_result_is_refused_and_the_job_stays_leased(queue_factory):
    q = queue_factory(max_result=100)
    try:
        jid = q.enqueue("t")
        job = q.lease()
        with pytest.raises(logq.ResultTooLargeError, match="max_result=100"):
            q.ack(job, b"x" * 101)
        assert isinstance(logq.ResultTooLargeError("x"), logq.InvalidArgument)
        assert q.get(jid).state == "active"
        q.ack(job, b"x" * 100)  # at the limit
        assert q.get(jid).result == b"x" * 100
    finally:
        q.close()


def test_the_result_limit_defaults_to_that_of_payloads_and_is_checked(tmp_path):
    with logq.Queue(str(tmp_path / "q")) as q:
        assert q.max_result == q.max_payload == 16 * MiB
    for bad in (-1, 1 << 29, 1.5, "10"):
        with pytest.raises(logq.InvalidArgument):
            logq.Queue(str(tmp_path / "bad"), max_result=bad)


def test_a_task_result_above_max_result_fails_its_attempt_and_the_others_in_the_batch_count(queue_factory):
    q = queue_factory(max_result=10, max_attempts=2)
    try:
        big, small = q.enqueue("t"), q.enqueue("t")
        jobs = q.lease_many(2)
        errors = _Source(q).complete_many([(jobs[0], b"y" * 11, None), (jobs[1], b"ok", None)], {})
        assert errors == [None, None]
        info = q.get(big)
        assert info.state == "pending" and info.attempts == 1 and "ResultTooLargeError" in info.last_error
        assert q.get(small).result == b"ok"
    finally:
        q.close()


def test_large_results_are_read_back_from_the_log_not_held(tmp_path):
    """Before: every result stayed in the index (40 MiB of heap for 40 results of 1 MiB),
    and in the checkpoint, so a reopen held them again."""
    path, clock = str(tmp_path / "q"), FakeClock()
    n = 40
    q = logq.Queue(path, clock=clock, compact_threshold=None, max_result=2 * MiB)
    ids = q.enqueue_many([("t", b"")] * n)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n // 2):
            q.ack(q.lease(), bytes([i]) * MiB)
        outcomes = [(job, bytes([n // 2 + i]) * MiB, None) for i, job in enumerate(q.lease_many(n // 2))]
        assert _Source(q).complete_many(outcomes, {}) == [None] * (n // 2)
        del outcomes
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 8 * MiB, held  # without the results: n MiB
    assert held_result_bytes(q) <= INLINE_RESULT * n
    expected = {jid: bytes([i]) * MiB for i, jid in enumerate(ids)}
    assert {jid: q.get(jid).result for jid in ids} == expected
    small = q.enqueue("t")
    q.ack(q.lease(), b"s" * INLINE_RESULT)  # a short result stays in the index
    assert q._backend._index.jobs[small].extra.result == b"s" * INLINE_RESULT
    q.close()
    for replay in (False, True):  # from the checkpoint, then by a full replay
        if replay:
            os.unlink(os.path.join(path, _checkpoint.NAME))
        with logq.Queue(path, clock=clock, compact_threshold=None) as q:
            assert (q.recovery.restored_seq is None) == replay
            assert held_result_bytes(q) <= INLINE_RESULT * (n + 1)
            assert {jid: q.get(jid).result for jid in ids} == expected
            assert q.wait(ids[-1], timeout=0).result == expected[ids[-1]]


def test_results_read_back_follow_their_ack_records_through_compaction(tmp_path):
    path, clock = str(tmp_path / "q"), FakeClock()
    with logq.Queue(path, clock=clock, segment_size=64 << 10, compact_threshold=None, retain_done=5.0) as q:
        swept = q.enqueue_many([("t", b"")] * 20)
        for jid in swept:
            q.ack(q.lease(), b"gone" * 100)
        clock.advance(10.0)
        kept = q.enqueue("t")
        q.ack(q.lease(), b"kept" * 100)  # within retention: compaction keeps (and moves) its records
        report = q.compact(include_active=True)
        assert report.jobs_swept == len(swept) and q.get(swept[0]) is None
        assert q.get(kept).result == b"kept" * 100
    with logq.Queue(path, clock=clock, compact_threshold=None) as q:
        assert q.get(kept).result == b"kept" * 100
