"""The log: appends, rollover, recovery of torn tails, corruption, locking, poisoning."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

import pytest
from hypothesis import given, settings, strategies as st

from logq import (
    ClosedError, CorruptionError, InvalidArgument, LockedError, Log, NotALogqDirectory,
    UnsupportedVersionError, WriterFailedError,
)
from logq.log import group_commit, mark, reader as reader_module, recovery, segment as segment_module, writer as writer_module
from logq.log.segment import segment_name
from logq.log.fs import OsFileSystem
from logq.log.codec import SEGMENT_HEADER_SIZE

from .helpers import CrashingFS, FaultyFS, flip_bit, segment_paths, truncate


def replayed(path, **kw):
    got = []
    log = Log(path, replay=lambda rec, base: got.append((rec.seq, rec.type, rec.payload)), **kw)
    return log, got


def fill(path, n, *, segment_size=64 << 20, sync="none", payload=b"p%d"):
    with Log(path, sync=sync, segment_size=segment_size) as log:
        return [log.append([(16, payload % i)]).last_seq for i in range(n)]


def test_appended_records_are_replayed_in_order(tmp_path):
    seqs = fill(tmp_path, 50)
    log, got = replayed(tmp_path)
    log.close()
    assert [s for s, _, _ in got] == seqs == sorted(seqs)
    assert [p for _, _, p in got] == [b"p%d" % i for i in range(50)]


def test_batch_gets_consecutive_sequence_numbers_and_is_read_back(tmp_path):
    with Log(tmp_path) as log:
        a = log.append([(16, b"a"), (17, b"b"), (18, b"c")])
        assert (a.first_seq, a.last_seq) == (1, 3)
        assert [log.read(a.segment, off).payload for off in a.offsets] == [b"a", b"b", b"c"]


def test_read_sees_records_still_pending_in_always_mode(tmp_path):
    with Log(tmp_path, sync="always") as log:
        a = log.write([(16, b"not yet written")])
        assert log.read(a.segment, a.offsets[0]).payload == b"not yet written"
        log.commit(a)
        assert log.durable_seq >= a.last_seq


def test_read_many_equals_read_near_far_and_pending(tmp_path, monkeypatch):
    monkeypatch.setattr(reader_module, "READ_SPAN", 4096)
    with Log(tmp_path, sync="always", segment_size=1 << 20) as log:
        written = [log.append([(16, b"%d" % i * (i + 1))]) for i in range(40)]  # ~10 KiB in all
        pending = log.write([(17, b"pending one")])
        places = [(a.offsets[0], a.sizes[0]) for a in written + [pending]]
        for chosen in (places[:5], places[10:12] + places[30:31], places[-3:]):  # near, far, pending
            got = log.read_many(pending.segment, chosen)
            assert got == [log.read(pending.segment, o, n) for o, n in chosen]
            assert [r.offset for r in got] == [o for o, _ in chosen]
        log.commit(pending)


def test_read_many_reports_damage_like_read(tmp_path):
    with Log(tmp_path, sync="always") as log:
        appended = [log.append([(16, b"payload %d" % i)]) for i in range(3)]
        places = [(a.offsets[0], a.sizes[0]) for a in appended]
        path = segment_paths(tmp_path)[0]
        flip_bit(path, places[1][0] + 40)  # inside the second record's payload, under the open log
        with pytest.raises(CorruptionError) as info:
            log.read_many(appended[0].segment, places)
        assert info.value.path == path and info.value.offset == places[1][0]
        flip_bit(path, places[1][0] + 40)  # put it back, so that the log closes healthy


def test_rollover_seals_segments_and_sequence_numbers_are_never_reused(tmp_path):
    seqs = fill(tmp_path, 300, segment_size=4096)
    paths = segment_paths(tmp_path)
    assert len(paths) > 2
    with Log(tmp_path, segment_size=4096) as log:
        more = [log.append([(16, b"x")]).last_seq for _ in range(300)]
        segs = log.segments()
    assert all(sealed for _, _, sealed in segs[:-1]) and not segs[-1][2]
    assert min(more) > max(seqs)
    log, got = replayed(tmp_path)
    log.close()
    numbers = [s for s, _, _ in got]
    assert numbers == sorted(set(numbers)) and len(numbers) == 600


def test_segment_names_follow_their_seal(tmp_path):
    fill(tmp_path, 200, segment_size=4096)
    bases = [int(os.path.basename(p)[:20]) for p in segment_paths(tmp_path)]
    with Log(tmp_path) as log:
        segs = log.segments()
    assert [b for b, _, _ in segs] == bases and bases[0] == 1


def test_truncated_trailing_record_is_dropped_at_every_offset(tmp_path):
    src = tmp_path / "src"
    fill(src, 5)
    seg = segment_paths(src)[0]
    whole = open(seg, "rb").read()
    last_start = len(whole) - 40  # each record b"p%d" is 32 + 8 bytes
    for cut in range(last_start, len(whole)):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(src, d)
        truncate(segment_paths(d)[0], cut)
        log, got = replayed(d)
        assert [p for _, _, p in got] == [b"p%d" % i for i in range(4)]
        kept = whole[last_start:cut].rstrip(b"\0")  # trailing zeros are not kept aside
        if kept:
            [torn] = log.report.torn
            assert (torn.offset, torn.length) == (last_start, len(kept))
            assert open(torn.saved_to, "rb").read() == kept
            assert os.path.getsize(segment_paths(d)[0]) == last_start  # cut made durable at open
        else:  # nothing, or only zero bytes (a check can begin with 0): unwritten space, kept
            assert log.report.torn == [] and os.path.getsize(segment_paths(d)[0]) == cut
        assert log.append([(16, b"after")]).last_seq == 5  # sequence continues after the cut
        log.close()
        log, got = replayed(d)
        log.close()
        assert got[-1][2] == b"after"


def test_torn_batch_is_dropped_whole(tmp_path):
    with Log(tmp_path) as log:
        log.append([(16, b"alone")])
        log.append([(16, b"b1"), (16, b"b2"), (16, b"b3")])
    seg = segment_paths(tmp_path)[0]
    truncate(seg, os.path.getsize(seg) - 8)  # last record of the batch torn
    log, got = replayed(tmp_path)
    log.close()
    assert [p for _, _, p in got] == [b"alone"]


def test_checksum_mismatch_in_last_segment_cuts_there(tmp_path):
    fill(tmp_path, 10)
    seg = segment_paths(tmp_path)[0]
    flip_bit(seg, SEGMENT_HEADER_SIZE + 40 * 6 + 35)  # payload of the 7th record
    log, got = replayed(tmp_path)
    log.close()
    assert len(got) == 6 and log.report.torn[0].offset == SEGMENT_HEADER_SIZE + 40 * 6


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_checksum_mismatch_in_sealed_segment_is_reported(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("flip")
    fill(d, 150, segment_size=4096)
    sealed = segment_paths(d)[0]
    size = os.path.getsize(sealed)
    offset = data.draw(st.integers(0, size - 1))
    flip_bit(sealed, offset, data.draw(st.integers(0, 7)))
    with pytest.raises(CorruptionError) as info:
        Log(d)
    assert info.value.path == sealed and info.value.offset is not None


def test_salvage_skips_damage_and_reports_the_lost_range(tmp_path):
    fill(tmp_path, 150, segment_size=4096)
    sealed = segment_paths(tmp_path)[0]
    flip_bit(sealed, SEGMENT_HEADER_SIZE + 40 * 3 + 36)
    log, got = replayed(tmp_path, salvage=True)
    log.close()
    payloads = [p for _, _, p in got]
    assert b"p3" not in payloads and len(payloads) == 149
    lost = log.report.lost
    assert len(lost) == 1 and lost[0].path == sealed
    assert (lost[0].start, lost[0].end) == (SEGMENT_HEADER_SIZE + 120, SEGMENT_HEADER_SIZE + 160)


def test_missing_segment_is_corruption_naming_the_file(tmp_path):
    fill(tmp_path, 300, segment_size=4096)
    paths = segment_paths(tmp_path)
    os.unlink(paths[1])
    with pytest.raises(CorruptionError, match="missing segment") as info:
        Log(tmp_path)
    assert info.value.path == paths[2]
    log, got = replayed(tmp_path, salvage=True)
    log.close()
    assert got and any("missing segment" in r.reason for r in log.report.lost)


def test_unsealed_middle_segment_is_corruption(tmp_path):
    fill(tmp_path, 300, segment_size=4096)
    first = segment_paths(tmp_path)[0]
    truncate(first, os.path.getsize(first) - 32)  # drop the SEAL record
    with pytest.raises(CorruptionError, match="SEAL"):
        Log(tmp_path)


def test_crash_after_seal_before_next_segment_continues(tmp_path):
    fill(tmp_path, 300, segment_size=4096)
    paths = segment_paths(tmp_path)
    os.unlink(paths[-1])  # the newest segment was never created (R3 not done)
    with Log(tmp_path, segment_size=4096) as log:
        n = log.append([(16, b"next")]).last_seq
    base = int(os.path.basename(paths[-1])[:20])
    assert n == base and os.path.basename(segment_paths(tmp_path)[-1]) == os.path.basename(paths[-1])


@pytest.mark.parametrize("size", [0, 10, SEGMENT_HEADER_SIZE])
def test_unborn_last_segment_is_recreated(tmp_path, size):
    fill(tmp_path, 300, segment_size=4096)
    last = segment_paths(tmp_path)[-1]
    with open(last, "wb") as f:
        f.write(bytes(size))
    seqs = []
    log, got = replayed(tmp_path)
    seqs.append(log.append([(16, b"x")]).last_seq)
    log.close()
    assert seqs[0] > max(s for s, _, _ in got)


def test_concurrent_appenders_in_always_mode_all_survive_reopen(tmp_path):
    log = Log(tmp_path, sync="always", segment_size=64 << 10)
    acked: list[int] = []
    start = threading.Barrier(8)

    def producer(t: int) -> None:
        start.wait()
        for i in range(150):
            acked.append(log.append([(16, b"%d-%d" % (t, i))]).last_seq)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert log.durable_seq >= max(acked)
    log.close()
    log, got = replayed(tmp_path)
    log.close()
    assert sorted(acked) == [s for s, _, _ in got] and len(got) == 1200
    assert len({p for _, _, p in got}) == 1200


def leader_inside_fsync(tmp_path):
    """An `always` log whose first fsync blocks until `release` is set: (log, fs, release,
    leader), the leader a thread appending b"first", returned once it is inside that fsync."""
    fs = FaultyFS()
    log = Log(tmp_path, sync="always", fs=fs)
    release, entered = threading.Event(), threading.Event()
    real_hit = fs.hit

    def hit(op: str, path: str = "") -> None:
        real_hit(op, path)
        if op == "fsync" and not release.is_set():
            entered.set()
            release.wait()

    fs.hit = hit  # type: ignore[method-assign]
    leader = threading.Thread(target=log.append, args=([(16, b"first")],))
    leader.start()
    assert entered.wait(10)
    return log, fs, release, leader


def test_group_commit_shares_one_write_and_one_fsync(tmp_path):
    log, fs, release, leader = leader_inside_fsync(tmp_path)
    queued = [log.write([(16, b"%d" % i)]) for i in range(7)]  # followers' records pile up
    writes, fsyncs = fs.calls["write"], fs.calls["fsync"]
    release.set()
    leader.join()
    for a in queued:
        log.commit(a)
    assert (fs.calls["write"] - writes, fs.calls["fsync"] - fsyncs) == (1, 1)
    assert log.durable_seq == 8
    log.close()


def test_callers_parked_during_a_sync_are_synced_together_even_if_their_cohort_never_fills(
        tmp_path, monkeypatch):
    """Seven callers park while the leader's fsync runs, so the next sync expects a
    cohort of eight; the eighth never comes, so those present lead themselves after
    their wait (`_gather`): one write and one fsync for the seven, and nobody hangs."""
    log, fs, release, leader = leader_inside_fsync(tmp_path)
    all_parked, real_allocate, gates = threading.Event(), group_commit._allocate_lock, []

    def allocate():  # a caller takes a gate just before it parks
        gates.append(real_allocate())
        if len(gates) == 7:
            all_parked.set()
        return gates[-1]

    monkeypatch.setattr(group_commit, "_allocate_lock", allocate)
    writes, fsyncs = fs.calls["write"], fs.calls["fsync"]
    followers = [threading.Thread(target=log.append, args=([(16, b"%d" % i)],)) for i in range(7)]
    for th in followers:
        th.start()
    assert all_parked.wait(10)
    release.set()
    for th in [leader] + followers:
        th.join(10)
        assert not th.is_alive()
    assert (fs.calls["write"] - writes, fs.calls["fsync"] - fsyncs) == (1, 1)
    assert log.durable_seq == 8
    log.close()


def test_cohort_wait_follows_how_fast_the_last_cohort_filled(tmp_path, monkeypatch):
    """A parked caller waits for its cohort three times as long as the last one took to
    fill (within GATHER_SECONDS), so one that joined a sync once does not hold a
    steady caller back for the longest wait each time."""
    now = [100.0]
    monkeypatch.setattr(group_commit, "_monotonic", lambda: now[0])
    shortest, longest = group_commit.GATHER_SECONDS
    with Log(tmp_path, sync="always") as log:
        log.append([(16, b"a")])  # the first fill is measured from no sync at all: capped
        assert log._commits._gather == longest
        now[0] += 0.0001  # the caller is back 100 us after its sync ended
        log.append([(16, b"b")])
        assert log._commits._gather == pytest.approx(0.0003)
        now[0] += 0.000001
        log.append([(16, b"c")])
        assert log._commits._gather == shortest


def test_callers_behind_a_slow_fsync_wait_the_longest_not_the_learned_wait(tmp_path, monkeypatch):
    """Parked behind a sync in flight, a caller wakes at most once per GATHER_SECONDS[1],
    even when cohorts have been filling fast (the learned wait is 50 us)."""
    import time

    log, fs, release, leader = leader_inside_fsync(tmp_path)
    parks, real_allocate = [], group_commit._allocate_lock
    monkeypatch.setattr(group_commit, "_allocate_lock", lambda: parks.append(1) or real_allocate())
    log._commits._gather = group_commit.GATHER_SECONDS[0]  # as after cohorts that filled at once
    followers = [threading.Thread(target=log.append, args=([(16, b"%d" % i)],)) for i in range(3)]
    for th in followers:
        th.start()
    time.sleep(0.05)  # the slow fsync: it takes 50 ms
    release.set()
    for th in [leader] + followers:
        th.join(10)
    assert log.durable_seq == 4
    assert len(parks) <= 3 * (50 + 10)  # at most once a millisecond each; the 50 us wait: about 3,000
    log.close()


def test_batch_mode_syncs_in_the_background(tmp_path):
    fs = FaultyFS()
    with Log(tmp_path, sync="batch", sync_interval=0.001, fs=fs) as log:
        fs.synced.clear()
        a = log.append([(16, b"x")])
        assert fs.synced.wait(10)
        log.sync_through(a.last_seq)
        assert log.durable_seq >= a.last_seq


@pytest.mark.parametrize("op", ["write", "fsync"])
def test_failed_io_poisons_the_log_until_reopen(tmp_path, op):
    fs = FaultyFS()
    log = Log(tmp_path, sync="always", fs=fs)
    log.append([(16, b"durable")])
    fs.fail_on(op)
    with pytest.raises(WriterFailedError, match="reopen"):
        log.append([(16, b"lost")])
    for _ in range(2):  # and it stays failed; fsync is never retried
        with pytest.raises(WriterFailedError):
            log.append([(16, b"later")])
    with pytest.raises(WriterFailedError):
        log.sync()
    with pytest.raises(WriterFailedError):  # close cannot promise durability either
        log.close()
    log.close()  # but it did release the directory, and repeating it is harmless
    log, got = replayed(tmp_path)
    log.append([(16, b"after reopen")])
    log.close()
    assert got[0][2] == b"durable" and b"later" not in [p for _, _, p in got]


def test_failed_fsync_wakes_every_waiting_appender(tmp_path):
    fs = FaultyFS()
    log = Log(tmp_path, sync="always", fs=fs)
    fs.fail_on("fsync")
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            for _ in range(20):
                log.append([(16, b"x")])
        except WriterFailedError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=producer) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(errors) == 4
    with pytest.raises(WriterFailedError):
        log.close()


def test_failed_rollover_poisons_the_log(tmp_path):
    fs = FaultyFS()
    log = Log(tmp_path, sync="none", segment_size=4096, fs=fs)
    fs.fail_on("fsync_dir")
    with pytest.raises(WriterFailedError):
        for _ in range(200):
            log.append([(16, b"x" * 40)])
    with pytest.raises(WriterFailedError):
        log.append([(16, b"x")])
    with pytest.raises(WriterFailedError):
        log.close()
    Log(tmp_path).close()


def test_directory_that_is_not_a_queue_is_refused_and_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(NotALogqDirectory, match="not empty"):
        Log(tmp_path)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_a_file_path_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotALogqDirectory):
        Log(tmp_path / "f")


def test_newer_format_version_is_refused_and_untouched(tmp_path):
    fill(tmp_path, 3)
    (tmp_path / "logq.meta").write_text("logq 3\n")
    before = {n: os.path.getsize(tmp_path / n) for n in os.listdir(tmp_path)}
    with pytest.raises(UnsupportedVersionError, match="upgrade logq"):
        Log(tmp_path)
    assert {n: os.path.getsize(tmp_path / n) for n in os.listdir(tmp_path)} == before


def test_compressed_log_round_trips_and_is_smaller(tmp_path):
    big = b"compress me " * 200
    with Log(tmp_path / "z", compression="zstd", compress_threshold=64) as log:
        for _ in range(20):
            log.append([(16, big)])
    fill(tmp_path / "raw", 0)
    log, got = replayed(tmp_path / "z")
    log.close()
    assert [p for _, _, p in got] == [big] * 20
    assert os.path.getsize(segment_paths(tmp_path / "z")[0]) < 20 * len(big) // 10


def test_closed_log_refuses_appends_and_close_is_repeatable(tmp_path):
    log = Log(tmp_path)
    log.close()
    log.close()
    with pytest.raises(ClosedError, match="open it again"):
        log.append([(16, b"x")])


@pytest.mark.parametrize("kw", [dict(sync="sometimes"), dict(sync_interval=0), dict(segment_size=10),
                                dict(compression="lz4"), dict(compress_threshold=-1)])
def test_bad_options_are_refused_before_touching_disk(tmp_path, kw):
    with pytest.raises(InvalidArgument):
        Log(tmp_path / "q", **kw)
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("items", [[], [(1, b"x")], [(16, "text")], [(300, b"x")], [(16, b"x"), (15, b"y")],
                                   [(16, b"x"), (16, "text")], [(256, b"x"), (16, b"y")]])
def test_bad_records_are_refused_and_nothing_is_written(tmp_path, items):
    with Log(tmp_path) as log:
        with pytest.raises(InvalidArgument):
            log.append(items)
        assert log.last_seq == 0


def test_a_batch_takes_bytes_like_payloads(tmp_path):
    with Log(tmp_path) as log:
        class Tagged(bytes):
            pass
        first = log.append([(16, bytearray(b"ab")), (17, memoryview(b"cde")), (18, Tagged(b"f"))]).first_seq
    log, got = replayed(tmp_path)
    log.close()
    assert got == [(first, 16, b"ab"), (first + 1, 17, b"cde"), (first + 2, 18, b"f")]


# ------------------------------------------------------- structure of batches

def _rewrite(path, offset, record_bytes):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(record_bytes)


def _salt(path):
    from logq.log.codec import decode_segment_header
    return decode_segment_header(open(path, "rb").read(40)).salt


@pytest.mark.parametrize("flags, message", [(0, "never began"), (0x04 | 0x02, "before the previous")])
def test_broken_batch_structure_is_corruption(tmp_path, flags, message):
    from logq.log.codec import Encoder
    fill(tmp_path, 150, segment_size=4096)
    sealed = segment_paths(tmp_path)[0]
    if flags == 0:  # a lone record without FIRST
        offset, seq = SEGMENT_HEADER_SIZE, 1
    else:  # record 2 claims to begin a batch while record 1 is made to continue
        _rewrite(sealed, SEGMENT_HEADER_SIZE, Encoder(_salt(sealed)).encode(1, 16, b"p0", 0x04 | 0x02))
        offset, seq = SEGMENT_HEADER_SIZE + 40, 2
    _rewrite(sealed, offset, Encoder(_salt(sealed)).encode(seq, 16, b"p%d" % (seq - 1), flags))
    with pytest.raises(CorruptionError, match=message):
        Log(tmp_path)


def test_reserved_record_type_is_corruption(tmp_path):
    from logq.log.codec import FLAG_FIRST, Encoder
    fill(tmp_path, 150, segment_size=4096)
    sealed = segment_paths(tmp_path)[0]
    _rewrite(sealed, SEGMENT_HEADER_SIZE, Encoder(_salt(sealed)).encode(1, 5, b"p0", FLAG_FIRST))
    with pytest.raises(CorruptionError, match="reserved record type"):
        Log(tmp_path)


def test_segment_renamed_away_from_its_base_is_corruption(tmp_path):
    fill(tmp_path, 150, segment_size=4096)
    last = segment_paths(tmp_path)[-1]
    os.rename(last, os.path.join(tmp_path, "%020d.seg" % (int(os.path.basename(last)[:20]) + 0)))
    first = segment_paths(tmp_path)[0]
    os.rename(first, os.path.join(tmp_path, "%020d.seg" % 0))
    with pytest.raises(CorruptionError, match="file name"):
        Log(tmp_path)


def test_torn_header_of_a_new_segment_is_an_unfinished_rollover(tmp_path):
    fill(tmp_path, 150, segment_size=4096)
    last = segment_paths(tmp_path)[-1]
    with open(last, "wb") as f:
        f.write(b"\x89LOGQSG\n" + bytes(20) + b"\x07" * 12)  # 40 bytes, header half written
    base = int(os.path.basename(last)[:20])  # as if the crash hit while R3 wrote this header
    log, got = replayed(tmp_path)
    log.append([(16, b"after")])
    log.close()
    assert [s for s, _, _ in got] == [s for s in range(1, base - 1) if s % 100 != 0]  # SEALs at 100
    assert log.report.torn[0].offset == 0


def test_bad_header_on_a_segment_with_records_is_corruption(tmp_path):
    fill(tmp_path, 150, segment_size=4096)
    flip_bit(segment_paths(tmp_path)[-1], 20)
    with pytest.raises(CorruptionError):
        Log(tmp_path)


def test_salvage_resumes_at_the_next_batch_and_drops_the_damaged_one(tmp_path):
    with Log(tmp_path, segment_size=4096) as log:
        log.append([(16, b"before")])
        log.append([(16, b"b1"), (16, b"b2"), (16, b"b3")])
        for i in range(120):
            log.append([(16, b"after%d" % i)])
    sealed = segment_paths(tmp_path)[0]
    flip_bit(sealed, SEGMENT_HEADER_SIZE + 40 + 36)  # payload of b1, the batch's first record
    log, got = replayed(tmp_path, salvage=True)
    log.close()
    payloads = [p for _, _, p in got]
    assert payloads[0] == b"before" and payloads[1] == b"after0"
    assert not {b"b1", b"b2", b"b3"} & set(payloads)
    assert (log.report.lost[0].start, log.report.lost[0].end) == (SEGMENT_HEADER_SIZE + 40, SEGMENT_HEADER_SIZE + 160)


def test_salvage_in_the_last_segment_reports_and_seals_instead_of_cutting(tmp_path):
    fill(tmp_path, 10)
    seg = segment_paths(tmp_path)[0]
    flip_bit(seg, SEGMENT_HEADER_SIZE + 40 * 3 + 36)
    log, got = replayed(tmp_path, salvage=True)
    n = log.append([(16, b"new")]).last_seq
    log.close()
    assert len(got) == 9 and log.report.lost and log.report.lost[0].path == seg
    assert n > 10  # no sequence number replayed by salvage is handed out again
    with pytest.raises(CorruptionError):  # a normal open reports the damage, it does not cut
        Log(tmp_path)
    log, again = replayed(tmp_path, salvage=True)
    log.close()
    assert [p for _, _, p in again] == [p for _, _, p in got] + [b"new"]


# ------------------------------------------------------- replay in windows

@pytest.fixture(params=[48, 700])
def small_window(request, monkeypatch):
    """Replay reads segments a few bytes at a time: every boundary case is hit."""
    monkeypatch.setattr(segment_module, "SCAN_WINDOW", request.param)
    return request.param


def _mixed_log(path):
    with Log(path, segment_size=8192) as log:
        for i in range(60):
            log.append([(16, b"single %d" % i)])
            log.append([(17, b"b%d-%d" % (i, j) * (j + 1)) for j in range(4)])
        log.append([(18, b"z" * 3000)])  # larger than the window


def test_windowed_replay_equals_whole_replay(tmp_path, small_window):
    _mixed_log(tmp_path)
    log, got = replayed(tmp_path)
    log.close()
    segment_module.SCAN_WINDOW = 1 << 30
    whole, all_at_once = replayed(tmp_path)
    whole.close()
    assert got == all_at_once and len(got) == 301


def test_windowed_replay_reads_payloads_back_at_the_right_offsets(tmp_path, small_window):
    _mixed_log(tmp_path)
    seen = []
    log = Log(tmp_path, replay=lambda rec, base: seen.append((base, rec)))
    assert all(log.read(base, rec.offset).payload == rec.payload for base, rec in seen)
    log.close()


def test_windowed_replay_cuts_a_torn_tail_at_its_file_offset(tmp_path, small_window):
    _mixed_log(tmp_path)
    last = segment_paths(tmp_path)[-1]
    size = os.path.getsize(last)
    truncate(last, size - 100)  # inside the 3000-byte record
    log, got = replayed(tmp_path)
    log.close()
    assert log.report.torn[0].offset + log.report.torn[0].length == size - 100
    assert got[-1][2] != b"z" * 3000 and os.path.getsize(last) == log.report.torn[0].offset


def test_windowed_replay_names_the_file_offset_of_damage(tmp_path, small_window):
    _mixed_log(tmp_path)
    first = segment_paths(tmp_path)[0]
    flip_bit(first, 5000)
    with pytest.raises(CorruptionError) as info:
        Log(tmp_path)
    assert info.value.path == first and 4000 < info.value.offset <= 5000


# ------------------------------------------------------------ preallocated space


def crashed(log: Log) -> None:
    """What a crash leaves: no close, so no final fsync and no trim of preallocated zeros."""
    log._abandon()


def test_appends_overwrite_preallocated_zeros_instead_of_growing_the_file(tmp_path):
    log = Log(tmp_path, sync="always")
    log.append([(16, b"first")])
    seg = segment_paths(tmp_path)[0]
    grown = os.path.getsize(seg)
    for i in range(100):
        log.append([(16, b"x" * 100)])
    assert grown == os.path.getsize(seg) == writer_module.PREALLOCATE  # the file did not grow
    assert grown > log.segments()[-1][1]  # the log's own end is short of it
    log.close()
    assert os.path.getsize(seg) == log.segments()[-1][1]  # close trims the zeros


def test_preallocated_zeros_left_by_a_crash_are_kept_not_cut(tmp_path):
    log = Log(tmp_path, sync="always")
    for i in range(10):
        log.append([(16, b"r%d" % i)])
    end = log.segments()[-1][1]
    crashed(log)
    seg = segment_paths(tmp_path)[0]
    assert os.path.getsize(seg) > end
    log, got = replayed(tmp_path, sync="always")
    assert [p for _, _, p in got] == [b"r%d" % i for i in range(10)]
    assert log.report.torn == [] and log.report.lost == []
    assert os.path.getsize(seg) > end  # the space is still there to write into
    assert log.append([(16, b"next")]).last_seq == 11
    log.close()
    log, got = replayed(tmp_path)
    log.close()
    assert got[-1] == (11, 16, b"next") and len(got) == 11


def test_torn_record_before_preallocated_zeros_is_kept_aside_without_them(tmp_path):
    log = Log(tmp_path, sync="always")
    for i in range(3):
        log.append([(16, b"r%d" % i)])
    last = log.append([(16, b"y" * 64)])
    crashed(log)
    seg = segment_paths(tmp_path)[0]
    start = last.offsets[0]
    with open(seg, "r+b") as f:  # a write torn in the middle of the last record
        f.seek(start + 40)
        f.write(bytes(last.sizes[0] - 40))
        f.seek(start)
        torn = f.read(40)
    log, got = replayed(tmp_path)
    assert [p for _, _, p in got] == [b"r0", b"r1", b"r2"]
    [cut] = log.report.torn
    assert (cut.offset, open(cut.saved_to, "rb").read()) == (start, torn.rstrip(b"\0"))
    assert os.path.getsize(seg) == start
    log.close()


def test_zeros_after_a_seal_are_trimmed_without_a_torn_report(tmp_path):
    d, plain = tmp_path / "log", tmp_path / "plain"
    fill(d, 300, segment_size=4096)
    paths = segment_paths(d)
    os.unlink(paths[-1])  # a crash after sealing, before the next segment
    sealed_size = os.path.getsize(paths[-2])
    shutil.copytree(d, plain)
    log, expected = replayed(plain, segment_size=4096)
    log.close()
    with open(paths[-2], "ab") as f:  # ... and before the zeros after the SEAL were cut
        f.write(bytes(1000))
    log, got = replayed(d, segment_size=4096)
    assert log.report.torn == [] and got == expected
    assert os.path.getsize(paths[-2]) == sealed_size
    log.close()
    log, got = replayed(d, segment_size=4096)  # and it is a well-formed sealed segment
    log.close()
    assert got == expected


def test_sealed_segments_end_at_their_seal(tmp_path):
    with Log(tmp_path, sync="batch", segment_size=64 << 10) as log:
        for i in range(2000):
            log.append([(16, b"z" * 100)])
        sizes = {base: size for base, size, sealed in log.segments() if sealed}
    assert len(sizes) >= 2
    for path in segment_paths(tmp_path)[:-1]:
        assert os.path.getsize(path) == sizes[int(os.path.basename(path)[:20])]


# ------------------------------------------------------------ writes through a map


def counting(monkeypatch, call, arg):
    """Record argument `arg` (by position) of every call of os.`call` (pwrite, pread)."""
    calls = []
    real = getattr(os, call)
    monkeypatch.setattr(os, call, lambda *args: calls.append(args[arg]) or real(*args))
    return calls


def counting_pwrites(monkeypatch):
    return counting(monkeypatch, "pwrite", 2)  # offsets


def test_writes_and_reads_inside_the_mapped_stretch_take_no_system_call(tmp_path, monkeypatch):
    path = str(tmp_path / "f")
    fs = OsFileSystem(map_writes=True)
    f, reader = fs.open(path, create=True), None
    f.pwrite(bytes(8192), 0)
    f.map_through(8192)
    calls = counting_pwrites(monkeypatch)
    f.pwrite(b"abc", 4000)
    assert calls == []  # stored through the map
    reader = fs.open(path, readonly=True)
    assert reader.pread(3, 4000) == b"abc" and reader.size() == 8192
    monkeypatch.setattr(os, "pread", None)  # and the writer reads its mapped stretch back from the map
    assert f.pread(3, 4000) == b"abc"
    monkeypatch.undo()
    calls = counting_pwrites(monkeypatch)
    f.pwrite(b"tail", 8190)  # reaches past the map: a real pwrite, and the file grows
    assert calls == [8190] and reader.size() == 8194 and reader.pread(4, 8190) == b"tail"
    f.truncate(100)  # ends the map: a store past the end of the file would be a SIGBUS
    f.pwrite(b"z", 5000)
    assert calls == [8190, 5000] and reader.pread(5001, 0) == b"\0" * 100 + bytes(4900) + b"z"
    f.close()
    reader.close()


def test_map_writes_off_keeps_to_pwrite(tmp_path, monkeypatch):
    f = OsFileSystem(map_writes=False).open(str(tmp_path / "f"), create=True)
    f.pwrite(bytes(4096), 0)
    f.map_through(4096)
    calls = counting_pwrites(monkeypatch)
    f.pwrite(b"abc", 10)
    assert calls == [10]
    f.close()


def test_the_log_writes_records_through_the_map_and_reads_them_back(tmp_path, monkeypatch):
    log = Log(tmp_path, sync="batch", fs=OsFileSystem(map_writes=True))
    log.append([(16, b"first")])  # grows the segment with zeros (a pwrite) and maps them
    calls = counting_pwrites(monkeypatch)
    places = [log.append([(16, b"r%d" % i)]) for i in range(100)]
    assert calls == []
    assert [log.read(a.segment, a.offsets[0], a.sizes[0]).payload for a in places] == [b"r%d" % i for i in range(100)]
    log.close()
    monkeypatch.undo()
    log, got = replayed(tmp_path)
    log.close()
    assert [p for _, _, p in got] == [b"first"] + [b"r%d" % i for i in range(100)]


def test_records_written_through_the_map_survive_a_sigkill_without_any_fsync(tmp_path):
    code = ("import logq, os, signal, sys\n"
            "log = logq.Log(sys.argv[1], sync='none')\n"
            "for i in range(5000):\n"
            "    log.append([(16, b'k%d' % i)])\n"
            "assert log._writer.active._mapped > 0, 'not written through a map'\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == -9, out.stderr
    log, got = replayed(tmp_path)
    log.close()
    assert [p for _, _, p in got] == [b"k%d" % i for i in range(5000)]
    assert log.report.torn == []


def rec(i):
    return b"rec %04d" % i * 5


def sealed_records(tmp_path, n=200):
    """A log with `n` records of one size in sealed segments (`rec(i)`); returns it and
    their (segment, offset, size)."""
    log = Log(tmp_path, sync="none", segment_size=16 << 10)
    places = [(a.segment, a.offsets[0], a.sizes[0]) for a in (log.append([(16, rec(i))]) for i in range(n))]
    log.roll()
    return log, places


def counting_preads(monkeypatch):
    return counting(monkeypatch, "pread", 1)  # sizes


def test_reads_walking_forward_take_one_pread_per_read_ahead_span(tmp_path, monkeypatch):
    monkeypatch.setattr(reader_module, "READ_AHEAD", 2048)
    log, places = sealed_records(tmp_path, 600)
    calls = counting_preads(monkeypatch)
    forward = [log.read(*place).payload for place in places]
    assert forward == [rec(i) for i in range(len(places))]
    segments = len({s for s, _, _ in places})
    assert segments > 1 and len(calls) <= len(places) // 16  # records of 64 bytes, in spans of 2 KiB
    assert max(calls) == 2048
    calls.clear()
    backward = [log.read(*place).payload for place in reversed(places)]
    monkeypatch.undo()
    assert backward == forward[::-1]
    assert len(calls) > len(places) // 2 and max(calls) == max(size for _, _, size in places)  # no read-ahead
    log.close()


@pytest.mark.parametrize("where", [10, 40], ids=["header", "payload"])
def test_damage_inside_a_read_ahead_span_is_reported_for_its_record_only(tmp_path, where):
    log, places = sealed_records(tmp_path, 50)
    path = os.path.join(tmp_path, segment_name(places[0][0]))
    segment, offset, size = places[5]
    flip_bit(path, offset + where)
    got = [log.read(*place).payload for place in places[:5]]  # reading forward: the span holds record 5
    with pytest.raises(CorruptionError) as info:
        log.read(segment, offset, size)
    assert info.value.path == path and info.value.offset == offset
    assert got == [rec(i) for i in range(5)]
    assert log.read(*places[6]).payload == rec(6)
    flip_bit(path, offset + where)
    log.close()


def test_a_span_kept_from_one_segment_never_answers_for_another(tmp_path):
    log, places = sealed_records(tmp_path, 600)
    first, second = sorted({s for s, _, _ in places})[:2]
    in_first = [p for p in places if p[0] == first]
    log.read(*in_first[0])
    log.read(*in_first[1])  # forward: the span kept starts here and covers the rest of the segment
    i, place = next((i, p) for i, p in enumerate(places) if p[0] == second and p[1] > in_first[1][1])
    assert log.read(*place).payload == rec(i)  # records of one size: the first segment has one at this offset
    log.close()


def test_reads_walking_forward_through_the_active_segment_read_ahead_too(tmp_path, monkeypatch):
    monkeypatch.setattr(reader_module, "READ_AHEAD", 2048)
    log = Log(tmp_path, sync="always")  # no map in this mode: reads are preads
    places = [(a.segment, a.offsets[0], a.sizes[0]) for a in (log.append([(16, b"act %d" % i * 5)])
                                                              for i in range(300))]
    pending = log.write([(16, b"not written yet")])
    calls = counting_preads(monkeypatch)
    got = [log.read(*place).payload for place in places]
    assert got == [b"act %d" % i * 5 for i in range(300)] and len(calls) <= len(places) // 16
    assert log.read(pending.segment, pending.offsets[0], pending.sizes[0]).payload == b"not written yet"
    monkeypatch.undo()
    log.commit(pending)
    log.close()


def test_a_record_larger_than_the_read_ahead_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(reader_module, "READ_AHEAD", 256)
    with Log(tmp_path, sync="none") as log:
        small, big = log.append([(16, b"s")]), log.append([(16, b"B" * 5000)])
        log.read(small.segment, small.offsets[0], small.sizes[0])
        assert log.read(big.segment, big.offsets[0], big.sizes[0]).payload == b"B" * 5000
        assert log._reader._ahead is not None and len(log._reader._ahead[2]) <= 256  # its place only, not a copy of it


# ------------------------------------------- lost segments, lost durable records (issue 19 items 2, 3)


@pytest.fixture
def mark_every_sync(monkeypatch):
    """Each group-commit leader moves the durable mark (by default every MARK_BYTES)."""
    monkeypatch.setattr(mark, "MARK_BYTES", 1)


def _synced_log(path, n=300, **kw):
    """A log whose records were fsynced and marked durable, then a crash (no close)."""
    log = Log(path, sync="always", segment_size=kw.pop("segment_size", 4096), **kw)
    for i in range(n):
        log.append([(16, b"p%d" % i)])
    log._abandon()


def _untouched(path):
    return {n: open(os.path.join(path, n), "rb").read() for n in sorted(os.listdir(path))
            if n != "logq.lock" and os.path.isfile(os.path.join(path, n))}


def test_missing_first_segment_is_refused(tmp_path):
    fill(tmp_path, 300, segment_size=4096)
    os.unlink(segment_paths(tmp_path)[0])
    with pytest.raises(CorruptionError, match=r"segments holding 1\.\.\d+ are missing") as info:
        Log(tmp_path)
    assert info.value.path == segment_paths(tmp_path)[0]
    log, got = replayed(tmp_path, salvage=True)  # salvage opens, and says what is missing
    log.close()
    assert got and any("missing" in r.reason for r in log.report.lost)


def test_missing_every_segment_is_refused(tmp_path):
    fill(tmp_path, 10)
    for p in segment_paths(tmp_path):
        os.unlink(p)
    with pytest.raises(CorruptionError, match="every segment is missing"):
        Log(tmp_path)


def test_a_new_log_writes_its_marker_after_its_first_segment(tmp_path):
    """So that a marker without segments can only mean lost segments (§7 rule 0)."""
    fs = CrashingFS()
    Log(tmp_path / "q", fs=fs).close()
    meta = fs.log.index("rename logq.meta.tmp")
    files = [op for op in fs.log if "logq.control" not in op]  # (the control file is no evidence: §14)
    assert files[:3] == ["write 00000000000000000001.seg", "fsync 00000000000000000001.seg", "fsync_dir q"]
    assert meta > 2


def test_missing_last_segment_is_refused(tmp_path, mark_every_sync):
    _synced_log(tmp_path)
    last = segment_paths(tmp_path)[-1]
    os.unlink(last)
    with pytest.raises(CorruptionError, match="were durable .* a segment or its end is missing"):
        Log(tmp_path)


def test_last_segment_cut_back_to_its_header_is_refused(tmp_path, mark_every_sync):
    _synced_log(tmp_path)
    last = segment_paths(tmp_path)[-1]
    truncate(last, SEGMENT_HEADER_SIZE)
    before = _untouched(tmp_path)
    with pytest.raises(CorruptionError, match="valid only up to byte 40") as info:
        Log(tmp_path)
    assert (info.value.path, info.value.offset) == (last, SEGMENT_HEADER_SIZE)
    assert _untouched(tmp_path) == before  # refused before anything was cut or kept aside


def test_flipped_bit_before_the_durable_mark_is_refused(tmp_path, mark_every_sync):
    _synced_log(tmp_path, 50, segment_size=1 << 20)
    seg = segment_paths(tmp_path)[0]
    flip_bit(seg, SEGMENT_HEADER_SIZE + 40 * 3 + 35)  # payload of the 4th of 50 fsynced records
    before = _untouched(tmp_path)
    with pytest.raises(CorruptionError, match="not a torn write") as info:
        Log(tmp_path)
    assert (info.value.path, info.value.offset) == (seg, SEGMENT_HEADER_SIZE + 40 * 3)
    assert _untouched(tmp_path) == before  # nothing cut, nothing kept aside


def test_flipped_bit_in_records_an_earlier_open_adopted_is_refused(tmp_path):
    """Without a mark from the writer (the default marks every MARK_BYTES), an open
    marks everything it recovered: damage in those bytes is never a torn tail."""
    fill(tmp_path, 50)
    Log(tmp_path).close()
    seg = segment_paths(tmp_path)[0]
    flip_bit(seg, SEGMENT_HEADER_SIZE + 40 * 3 + 35)
    with pytest.raises(CorruptionError) as info:
        Log(tmp_path)
    assert (info.value.path, info.value.offset) == (seg, SEGMENT_HEADER_SIZE + 40 * 3)


def test_flipped_bit_before_the_durable_mark_is_skipped_by_salvage(tmp_path, mark_every_sync):
    _synced_log(tmp_path, 50, segment_size=1 << 20)
    seg = segment_paths(tmp_path)[0]
    flip_bit(seg, SEGMENT_HEADER_SIZE + 40 * 3 + 35)
    log, got = replayed(tmp_path, salvage=True)
    assert [p for _, _, p in got] == [b"p%d" % i for i in range(50) if i != 3]
    assert [(r.path, r.start) for r in log.report.lost] == [(seg, SEGMENT_HEADER_SIZE + 40 * 3)]
    assert log.append([(16, b"after")]).last_seq > 50
    log.close()


def test_torn_tail_past_the_durable_mark_is_still_cut(tmp_path):
    """A crash tears only what no fsync covered: past the mark, a tail is cut as before."""
    log = Log(tmp_path, sync="always")
    for i in range(5):
        log.append([(16, b"p%d" % i)])
    log._abandon()
    seg = segment_paths(tmp_path)[0]
    flip_bit(seg, SEGMENT_HEADER_SIZE + 40 * 4 + 35)  # the last record, written after the open's mark
    log, got = replayed(tmp_path)
    log.close()
    assert len(got) == 4 and log.report.torn[0].offset == SEGMENT_HEADER_SIZE + 40 * 4
