"""The checkpoint a clean close leaves (spec/semantics.md §11): opening from it must give the
very index that replaying the whole log gives, and anything doubtful must fall back to replay."""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import logq
from logq.log import checkpoint as _checkpoint
from logq.core import snapshot as _snapshot
from logq.core.index import Index
from logq.testing import FakeClock

from .helpers import FaultyFS, abandon, flip_bit, segment_paths, truncate

CKPT = _checkpoint.NAME


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def canonical(index: Index, now: float) -> dict[str, Any]:
    """Everything the index holds that replay defines, in a comparable form: the jobs
    with every field, the live heap slots, the keys, the counts. Due jobs are promoted
    first, as every lease and stats call does: a live queue may have promoted a job
    that replay leaves delayed until then (the clock is not in the log)."""
    index.timetable.promote(now)
    jobs = []
    for e in index.jobs.values():
        x = e.extra
        jobs.append((e.id, e.name, e.state, e.priority, e.run_at, e.attempts, e.max_attempts, e.key,
                     e.expires, e.segment, e.loc, e.slot, e.last,
                     None if x is None else (x.last_error, x.result, x.backoff, x.finished_at,
                                             getattr(x, "result_at", None))))

    def live(heap: list) -> list:  # type: ignore[type-arg]
        return sorted(item for item in heap if (e := index.jobs.get(item[-1])) is not None and e.slot is item)
    ready = {name: live([*r.run, *r.heap]) for name, r in index.timetable._ready.items() if live([*r.run, *r.heap])}
    return dict(jobs=jobs, ready=ready, delayed=live(index.timetable._delayed), leases=live(index.timetable._leases),
                keys=index.keys, co_holders=getattr(index, "_co_holders", None), counts=index.counts, live_bytes=index.live_bytes, n_ready=index.n_ready)


def open_state(path: str, clock: FakeClock, **kw: Any) -> tuple[dict[str, Any], logq.RecoveryReport]:
    q = logq.Queue(path, clock=clock, compact_threshold=None, **kw)
    try:
        return canonical(q._backend._index, clock.time()), q.recovery
    finally:
        abandon(q)  # no close: it would write a new checkpoint


def replayed_state(path: str, clock: FakeClock, tmp: str, **kw: Any) -> dict[str, Any]:
    """The state a full replay of a copy of `path` (without its checkpoint) gives."""
    copy = os.path.join(tmp, "replayed")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns("logq.lock"))
    os.unlink(os.path.join(copy, CKPT))
    state, report = open_state(copy, clock, **kw)
    assert report.restored_seq is None
    return state


OPS = st.lists(st.tuples(st.sampled_from(
    ["enqueue", "delayed", "keyed", "backoff", "many", "lease", "ack", "fail", "dead", "release",
     "cancel", "retry", "extend", "advance", "compact", "reopen", "crash"]),
    st.integers(0, 7)), min_size=1, max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_opening_from_the_checkpoint_gives_the_index_a_full_replay_gives(tmp_path, ops):
    path, clock = str(tmp_path / "q"), FakeClock()
    shutil.rmtree(path, ignore_errors=True)
    kw = dict(segment_size=4096, retain_done=5.0, max_attempts=2)
    q = logq.Queue(path, clock=clock, compact_threshold=None, **kw)
    leased: list[logq.Job] = []
    for op, n in ops:
        if op == "enqueue":
            q.enqueue(f"t{n % 3}", b"p" * (n * 40), priority=n % 2)
        elif op == "delayed":
            q.enqueue("t0", b"d", delay=float(n + 1))
        elif op == "keyed":
            q.enqueue("t1", b"k", key=f"k{n % 2}")
        elif op == "backoff":
            q.enqueue("t2", b"b", backoff=logq.Backoff(base=1.0, factor=2.0, max=60.0, jitter=0.0))
        elif op == "many":
            q.enqueue_many([("t0", bytes([i]) * 30) for i in range(n + 1)])
        elif op == "lease":
            names = None if n < 4 else [f"t{n % 3}"]  # by name, a lease promotes jobs it does not take
            leased += q.lease_many(n % 4 + 1, names, lease_time=3.0)
        elif op in ("ack", "fail", "dead", "release", "extend") and leased:
            job = leased.pop(n % len(leased))
            if q.get(job.id).state != "active" or q.get(job.id).attempts != job.attempts:
                continue
            if op == "ack":
                q.ack(job, b"r" * (n * 20))  # over 64 bytes, a result is read back from its ACK
            elif op == "fail":
                q.fail(job, f"error {n}")
            elif op == "dead":
                q.fail(job, "fatal", retry=False)
            elif op == "release":
                q.release(job, delay=float(n))
            else:
                q.extend(job, lease_time=9.0)
                leased.append(job)
        elif op == "cancel":
            pending = q.jobs(state="pending", limit=8)
            if pending:
                q.cancel(pending[n % len(pending)].id)
        elif op == "retry":
            dead = q.jobs(state="dead", limit=8)
            if dead:
                q.retry(dead[n % len(dead)].id)
        elif op == "advance":
            clock.advance(float(n))
        elif op == "compact":
            q.compact(include_active=True)
        elif op in ("reopen", "crash"):
            q.close() if op == "reopen" else abandon(q)
            q, leased = logq.Queue(path, clock=clock, compact_threshold=None, **kw), []
    q.close()
    assert os.path.exists(os.path.join(path, CKPT))
    restored, report = open_state(path, clock, **kw)
    assert report.restored_seq is not None and report.checkpoint_skipped is None
    assert restored == replayed_state(path, clock, str(tmp_path), **kw)


@pytest.mark.parametrize("end", ["close", "crash"])
def test_a_retried_job_whose_key_another_job_took_holds_it_after_compaction_and_reopen(tmp_path, clock, end):
    """Issue 19 item 5: a dead job retried while a second job held its key; the second job
    done and swept. The live index, its checkpoint and a replay of the compacted log (which
    has no record of the second job left) must agree on who holds the key: the retried job,
    which is live and has it."""
    path, kw = str(tmp_path / "q"), dict(retain_done=0.0, retain_dead=0.0)
    q = logq.Queue(path, clock=clock, compact_threshold=None, **kw)
    first = q.enqueue("t", b"1", key="k", max_attempts=1)
    q.fail(q.lease(), "boom")  # dead: the key is free
    second = q.enqueue("t", b"2", key="k")
    job = q.lease()
    assert job.id == second
    q.retry(first)  # pending again while `second` holds the key
    q.ack(job)
    assert q.compact(include_active=True).jobs_swept == 1 and q.get(second) is None
    live = canonical(q._backend._index, clock.time())
    q.close()
    if end == "crash":  # the checkpoint of that close, then a record after it, and a crash
        q = logq.Queue(path, clock=clock, compact_threshold=None, **kw)
        q.enqueue("t", b"after")
        live = canonical(q._backend._index, clock.time())
        abandon(q)
    opened, report = open_state(path, clock, **kw)
    assert report.restored_seq is not None and report.records == (end == "crash")
    assert opened["keys"] == live["keys"] == replayed_state(path, clock, str(tmp_path), **kw)["keys"] == {"k": first}
    with logq.Queue(path, clock=clock, compact_threshold=None, **kw) as q:
        assert q.enqueue("t", b"4", key="k") == first  # held by the live job that has it


def test_a_job_promoted_before_the_close_is_leased_in_the_same_order_after_it(tmp_path, clock):
    path = str(tmp_path / "q")
    with logq.Queue(path, clock=clock) as q:
        late = q.enqueue("a", b"late", delay=1.0)
        clock.advance(2.0)
        assert q.lease("b") is None  # promotes `late` to the ready jobs
        early = q.enqueue("a", b"early", priority=-1)
        assert q.stats().due == 2
    restored, _ = open_state(path, clock)
    assert restored == replayed_state(path, clock, str(tmp_path))
    with logq.Queue(path, clock=clock) as q:
        assert q.stats().due == 2 and [q.lease().id, q.lease().id] == [late, early]


def test_a_checkpoint_is_used_and_only_later_records_are_replayed(tmp_path, clock):
    path = str(tmp_path / "q")
    with logq.Queue(path, clock=clock, segment_size=4096) as q:
        first = q.enqueue_many([("a", b"x" * 100)] * 100)
        q.ack(q.lease())
    q = logq.Queue(path, clock=clock, segment_size=4096)
    assert q.recovery.restored_seq == q._backend.log.last_seq and q.recovery.records == 0
    later = q.enqueue("b", b"after the checkpoint")
    abandon(q)  # a crash: the checkpoint on disk is the one from the first close
    q = logq.Queue(path, clock=clock, segment_size=4096)
    try:
        assert q.recovery.restored_seq is not None and q.recovery.records == 1
        assert q.get(later).state == "pending" and q.get(first[0]).state == "done"
        assert q.stats().counts["pending"] == 100
    finally:
        q.close()


def test_jobs_leased_at_a_clean_close_count_their_attempt_after_reopen(tmp_path, clock):
    path = str(tmp_path / "q")
    with logq.Queue(path, clock=clock, max_attempts=1) as q:
        one, two = q.enqueue("a", b"1"), q.enqueue("a", b"2", max_attempts=3)
        q.lease_many(2)
    with logq.Queue(path, clock=clock) as q:
        assert q.recovery.restored_seq is not None
        assert q.get(one).state == "dead" and q.get(one).last_error == "lease lost"
        assert (q.get(two).state, q.get(two).attempts) == ("pending", 1)


def test_a_flipped_bit_in_a_covered_segment_is_still_found_with_file_and_offset(tmp_path, clock):
    path = str(tmp_path / "q")
    with logq.Queue(path, clock=clock, segment_size=4096) as q:
        for _ in range(60):
            q.enqueue("a", b"y" * 200)
    sealed = segment_paths(path)[0]
    assert len(segment_paths(path)) > 2
    flip_bit(sealed, 1000, 3)
    with pytest.raises(logq.CorruptionError) as err:
        logq.Queue(path, clock=clock, segment_size=4096)
    assert err.value.path == sealed and err.value.offset is not None and err.value.offset <= 1000


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_checkpoint_is_skipped_and_the_log_replayed(tmp_path, clock, damage):
    path = str(tmp_path / "q")
    with logq.Queue(path, clock=clock) as q:
        ids = q.enqueue_many([("a", b"z")] * 10)
        q.ack(q.lease(), b"ok")
    ckpt = os.path.join(path, CKPT)
    if damage == "flip":
        flip_bit(ckpt, os.path.getsize(ckpt) // 2)
    else:
        truncate(ckpt, 0 if damage == "empty" else os.path.getsize(ckpt) - 1)
    with logq.Queue(path, clock=clock) as q:
        assert q.recovery.restored_seq is None and "replayed the whole log" in q.recovery.checkpoint_skipped
        assert q.get(ids[0]).result == b"ok" and q.stats().counts["pending"] == 9


def test_a_checkpoint_of_segments_since_compacted_is_skipped(tmp_path, clock):
    path = str(tmp_path / "q")
    with logq.Queue(path, clock=clock, segment_size=4096, retain_done=0.0, compact_threshold=None) as q:
        for _ in range(40):
            q.enqueue("a", b"w" * 100)
            q.ack(q.lease())
        keep = q.enqueue("a", b"survivor")
    old = open(os.path.join(path, CKPT), "rb").read()
    with logq.Queue(path, clock=clock, segment_size=4096, retain_done=0.0, compact_threshold=None) as q:
        assert q.compact(include_active=True).jobs_swept == 40
    with open(os.path.join(path, CKPT), "wb") as f:
        f.write(old)  # the checkpoint from before the compaction
    with logq.Queue(path, clock=clock, segment_size=4096) as q:
        assert "other segments" in q.recovery.checkpoint_skipped
        assert q.get(keep).state == "pending" and q.stats().counts["done"] == 0


def test_an_unfinished_checkpoint_file_is_removed_at_open(tmp_path, clock):
    path = str(tmp_path / "q")
    with logq.Queue(path, clock=clock) as q:
        q.enqueue("a")
    tmp = os.path.join(path, CKPT + ".tmp")
    with open(tmp, "wb") as f:
        f.write(b"half a checkpoint")
    with logq.Queue(path, clock=clock) as q:
        assert not os.path.exists(tmp) and q.recovery.restored_seq is not None


def test_failing_to_write_the_checkpoint_loses_nothing(tmp_path, clock, caplog):
    path, fs = str(tmp_path / "q"), FaultyFS()
    q = logq.Queue(path, clock=clock, fs=fs)
    jid = q.enqueue("a", b"kept")
    fs.fail_on("rename")  # the only rename of a close is the checkpoint's
    with caplog.at_level(logging.WARNING, logger="logq"):
        q.close()
    assert "could not write the checkpoint" in caplog.text
    assert not os.path.exists(os.path.join(path, CKPT))
    with logq.Queue(path, clock=clock) as q:
        assert q.recovery.restored_seq is None and q.get(jid).payload == b"kept"


def test_a_malformed_snapshot_leaves_the_index_empty():
    index = Index()
    blob = _snapshot.encode(index)
    with pytest.raises(logq.CorruptionError):
        _snapshot.restore(index, blob + b"\0")
    with pytest.raises(logq.CorruptionError):
        _snapshot.restore(index, blob[:-1])
    assert index.jobs == {}


def test_the_checkpoint_codec_rejects_every_truncation_and_flipped_bit():
    cp = _checkpoint.Checkpoint(7, [_checkpoint.Covered(1, 100, 7, 12345, False)], b"state")
    data = _checkpoint.encode(cp)
    assert _checkpoint.decode(data) == cp
    for cut in range(len(data)):
        with pytest.raises(logq.CorruptionError):
            _checkpoint.decode(data[:cut])
    for i in range(len(data) * 8):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(logq.CorruptionError):
            _checkpoint.decode(bytes(bad))


def test_a_salvage_that_skipped_damage_leaves_no_checkpoint(tmp_path, clock):
    path = str(tmp_path / "q")
    with logq.Queue(path, clock=clock, segment_size=4096) as q:
        for _ in range(40):
            q.enqueue("a", b"s" * 200)
    os.unlink(os.path.join(path, CKPT))
    flip_bit(segment_paths(path)[0], 1000)
    with logq.Queue(path, clock=clock, segment_size=4096, salvage=True) as q:
        assert q.recovery.lost
    assert not os.path.exists(os.path.join(path, CKPT))
    with pytest.raises(logq.CorruptionError):  # the damage is still reported, not accepted
        logq.Queue(path, clock=clock, segment_size=4096)


def test_a_checkpoint_holding_a_version_1_snapshot_is_skipped_and_the_log_replayed(tmp_path, clock):
    """Snapshot version 2 may keep a result as the place of its ACK record; a version 1
    snapshot (every result inline) is of another version: the log is replayed instead."""
    path = str(tmp_path / "q")
    with logq.Queue(path, clock=clock) as q:
        jid = q.enqueue("a")
        q.ack(q.lease(), b"R" * 500)
    ckpt = os.path.join(path, CKPT)
    cp = _checkpoint.decode(open(ckpt, "rb").read())
    assert bytes(cp.state[:4]) == (2).to_bytes(4, "little")
    old = _checkpoint.Checkpoint(cp.last_seq, cp.segments, (1).to_bytes(4, "little") + bytes(cp.state[4:]))
    with open(ckpt, "wb") as f:
        f.write(_checkpoint.encode(old))
    with logq.Queue(path, clock=clock) as q:
        assert q.recovery.restored_seq is None and "version 1" in q.recovery.checkpoint_skipped
        assert q.get(jid).result == b"R" * 500
