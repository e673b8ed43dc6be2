"""`salvage=True` opens after any damage to the segments and reports every job it could not
recover (issue 19 item 4): records that cannot be applied are skipped and their jobs listed
in `q.recovery.unrecovered`; what was lost with damaged bytes is bounded by sequence numbers
in `q.recovery.lost`, and a cut tail is in `q.recovery.torn`."""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from typing import Any

import pytest

import logq
from logq.core.records import ENQUEUE, job_id_of
from logq.log.segment import scan
from logq.testing import FakeClock

from .helpers import segment_paths

# No jitter in retry delays: the history a seed builds is the same on every run, so a
# failure replays exactly.
KW: dict[str, Any] = dict(segment_size=4096, compact_threshold=None, retain_done=0.0, retain_dead=0.0,
                          backoff=logq.Backoff(jitter=0.0))


@dataclass(frozen=True)
class Rec:
    seq: int
    job: int
    path: str  # the segment's file name
    offset: int


def build(path: str, clock: FakeClock, seed: int) -> None:
    """A history with every kind of record, unique keys, a compaction, several segments,
    and leases still held at the close."""
    rng = random.Random(seed)
    with logq.Queue(path, clock=clock, max_attempts=2, **KW) as q:
        leased: list[logq.Job] = []
        for step in range(600):
            op = rng.random()
            if op < 0.35:
                q.enqueue(rng.choice("ab"), b"p" * rng.randrange(80), key=rng.choice([None, None, "k1", "k2"]),
                          delay=rng.choice([0.0, 0.0, 5.0]))
            elif op < 0.4:
                q.enqueue_many([("a", b"m%d" % i) for i in range(rng.randrange(1, 4))])
            elif op < 0.6:
                leased += q.lease_many(rng.randrange(1, 3), lease_time=rng.choice([2.0, 100.0]))
            elif op < 0.9 and leased:
                job = leased.pop(rng.randrange(len(leased)))
                info = q.get(job.id)
                if info is None or info.state != "active" or info.attempts != job.attempts:
                    continue
                how = rng.random()
                if how < 0.4:
                    q.ack(job, b"r%d" % job.id)
                elif how < 0.7:
                    q.fail(job, "boom", retry=rng.random() < 0.7)
                elif how < 0.85:
                    q.release(job, delay=rng.choice([0.0, 3.0]))
                else:
                    q.extend(job, lease_time=50.0)
                    leased.append(job)
            elif op < 0.93:
                pending = q.jobs(state="pending", limit=5)
                if pending:
                    q.cancel(rng.choice(pending).id)
            elif op < 0.96:
                dead = q.jobs(state="dead", limit=5)
                if dead:
                    q.retry(rng.choice(dead).id)
            else:
                clock.advance(rng.choice([1.0, 4.0]))
            if step == 350:
                q.compact(include_active=True)


def records(path: str) -> list[Rec]:
    """Every record of the (undamaged) log at `path`, with the job it belongs to."""
    out: list[Rec] = []
    for seg in segment_paths(path):
        with open(seg, "rb") as f:
            data = f.read()
        name = os.path.basename(seg)
        scan(data, seg, lambda r: out.append(Rec(r.seq, r.seq if r.type == ENQUEUE else job_id_of(r.type, bytes(r.payload)),
                                                 name, r.offset)))
    return out


def jobs_of(q: logq.Queue) -> dict[int, tuple[Any, ...]]:
    return {j.id: (j.state, j.attempts, j.name, j.payload, j.key, j.result, j.last_error, j.run_at, j.priority)
            for j in q.jobs(limit=None)}


def covered(report: logq.RecoveryReport, recs: list[Rec]) -> set[int]:
    """The jobs the report says may not be recovered: named as unrecovered, or with a record
    in a lost range (by sequence number) or in a cut tail (by place)."""
    out = {u.job for u in report.unrecovered if u.job is not None}
    for lost in report.lost:
        assert lost.after_seq is not None, lost  # every lost range is bounded from below
        out |= {r.job for r in recs
                if lost.after_seq < r.seq and (lost.before_seq is None or r.seq < lost.before_seq)}
    for torn in report.torn:
        out |= {r.job for r in recs if r.path == os.path.basename(torn.path) and r.offset >= torn.offset}
    return out


def damage(path: str, rng: random.Random, kind: str) -> tuple[str, str, int]:
    """Damage a random segment of `path`; return what was done, the segment's name and where."""
    seg = rng.choice(segment_paths(path))
    with open(seg, "rb") as f:
        data = bytearray(f.read())
    if kind == "flip":
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
        what = f"bit flipped at {at}"
    elif kind == "header":
        at = rng.randrange(48)
        data[at] ^= 1 << rng.randrange(8)
        what = f"header bit flipped at {at}"
    else:
        at = rng.randrange(len(data))
        del data[at:]
        what = f"cut at {at}"
    with open(seg, "wb") as f:
        f.write(data)
    return f"{os.path.basename(seg)}: {what}", os.path.basename(seg), at


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, FakeClock, list[Rec], dict[int, tuple[Any, ...]]]:
    root = tmp_path_factory.mktemp("salvage")
    path, clock = str(root / "orig"), FakeClock()
    build(path, clock, seed=19)
    assert len(segment_paths(path)) >= 5
    recs = records(path)
    truth_dir = str(root / "truth")
    shutil.copytree(path, truth_dir)
    q = logq.Queue(truth_dir, clock=FakeClock(clock.time()), **KW)
    try:
        truth = jobs_of(q)
    finally:
        q.close()
    return path, clock, recs, truth


@pytest.mark.parametrize("kind", ["flip", "cut", "header"])
def test_salvage_opens_after_random_damage_and_reports_every_job_it_could_not_recover(tmp_path, history, kind):
    path, clock, recs, truth = history
    for trial in range(40):
        rng = random.Random(f"{kind}{trial}")
        copy = str(tmp_path / f"t{trial}")
        shutil.copytree(path, copy)
        last = os.path.basename(segment_paths(copy)[-1])
        what, seg, at = damage(copy, rng, kind)
        q = logq.Queue(copy, clock=FakeClock(clock.time()), salvage=True, **KW)  # must open
        try:
            got, report = jobs_of(q), q.recovery
        finally:
            q.close()
        assert set(got) <= set(truth), (what, "a job that was never written")
        if kind == "cut" and seg == last and any(r.path == seg and r.offset == at for r in recs):
            continue  # the last segment cut between records looks like a log never longer: telling
            # the two apart needs a durable end the format does not record yet (issue 19 items 2, 3)
        wrong = {jid for jid, want in truth.items() if got.get(jid) != want}
        missed = wrong - covered(report, recs)
        assert not missed, (what, {jid: (truth[jid], got.get(jid)) for jid in sorted(missed)[:3]}, report)
        shutil.rmtree(copy)


def test_a_missing_middle_segment_is_skipped_and_its_jobs_reported(tmp_path, history):
    path, clock, recs, truth = history
    copy = str(tmp_path / "q")
    shutil.copytree(path, copy)
    gone = segment_paths(copy)[2]
    os.unlink(gone)
    with pytest.raises(logq.CorruptionError):
        logq.Queue(copy, clock=FakeClock(clock.time()), **KW)
    with logq.Queue(copy, clock=FakeClock(clock.time()), salvage=True, **KW) as q:
        got, report = jobs_of(q), q.recovery
    (lost,) = [r for r in report.lost if "missing" in r.reason]
    in_gone = {r.seq for r in recs if r.path == os.path.basename(gone)}
    assert in_gone and lost.after_seq < min(in_gone) and max(in_gone) < lost.before_seq
    wrong = {jid for jid, want in truth.items() if got.get(jid) != want}
    assert wrong and wrong <= covered(report, recs)
    assert report.unrecovered and all(u.reason for u in report.unrecovered)


def test_a_job_whose_enqueue_was_lost_is_reported_and_its_later_records_skipped(tmp_path):
    path, clock = str(tmp_path / "q"), FakeClock()
    with logq.Queue(path, clock=clock, **KW) as q:
        doomed = q.enqueue("a", b"first segment")
        q.enqueue_many([("filler", b"f" * 200)] * 30)  # the log rolls over
        kept = q.enqueue("a", b"kept")
        job = q.lease("a")
        assert job.id == doomed
        q.ack(job, b"done")
    first = segment_paths(path)[0]
    with open(first, "r+b") as f:
        f.seek(60)  # inside the first record: doomed's ENQUEUE
        byte = f.read(1)
        f.seek(60)
        f.write(bytes([byte[0] ^ 0x10]))
    with pytest.raises(logq.CorruptionError):
        logq.Queue(path, clock=clock, **KW)
    with logq.Queue(path, clock=clock, salvage=True, **KW) as q:
        assert q.get(doomed) is None and q.get(kept).state == "pending"
        (u,) = q.recovery.unrecovered
        assert u.job == doomed and "enqueue record was lost" in u.reason
        assert any(lost.after_seq is not None and lost.after_seq < doomed < (lost.before_seq or 1 << 62)
                   for lost in q.recovery.lost)


def test_a_cut_sealed_segment_before_an_unfinished_last_one_gives_out_no_number_again(tmp_path):
    """Found by the fuzz harness: the first segment cut (its SEAL lost) and the last one an
    unfinished creation (removed at open) left the first segment's end as the log's end, so
    salvage tried to create a segment named like the first ('file exists'). The numbers up to
    the next segment's base belong to the cut one."""
    path, clock = str(tmp_path / "q"), FakeClock()
    with logq.Queue(path, clock=clock, **KW) as q:
        q.enqueue_many([("a", b"x" * 300)] * 10)
        q.enqueue_many([("a", b"x" * 300)] * 10)  # a rollover: a second segment
        ids = q.enqueue_many([("a", b"y")] * 3)
    first, last = segment_paths(path)[-2:]
    second_base = int(os.path.basename(last)[:20])
    with open(last, "r+b") as f:
        f.truncate(10)  # an unfinished creation: no valid header
    with open(first, "r+b") as f:
        f.truncate(600)
    with logq.Queue(path, clock=clock, salvage=True, **KW) as q:
        assert all(q.get(jid) is None for jid in ids)
        assert q.enqueue("a", b"new") >= second_base
        assert any(lost.reason == "segment not sealed" for lost in q.recovery.lost)
