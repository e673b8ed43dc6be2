"""The read-only verifier agrees with what opening the log would do."""

from __future__ import annotations

import os
import shutil

from logq import Log, Queue
from logq.log.verify import segment_files, verify

from .helpers import flip_bit, segment_paths


def fill(path, n=300):
    with Log(path, sync="none", segment_size=4096) as log:
        for i in range(n):
            log.append([(16, b"p%d" % i)])


def test_healthy_directory_verifies(tmp_path):
    fill(tmp_path)
    assert verify(str(tmp_path)).ok


def test_partial_header_of_a_new_segment_is_not_damage(tmp_path):
    fill(tmp_path)
    with open(segment_paths(tmp_path)[-1], "wb") as f:
        f.write(b"\x89LOGQSG\n\x01\x00\x28")  # rollover stopped 11 bytes into the header
    assert verify(str(tmp_path)).ok
    Log(tmp_path).close()  # and the log agrees: it opens


def test_preallocated_zeros_of_a_crashed_writer_are_not_a_torn_tail(tmp_path):
    log = Log(tmp_path, sync="always")
    log.append([(16, b"only")])
    log._abandon()  # a crash: no close, so the zeros after the record stay
    seg = segment_paths(tmp_path)[0]
    assert os.path.getsize(seg) > log.segments()[-1][1]
    v = verify(str(tmp_path))
    assert v.ok and v.tail is None
    with open(seg, "r+b") as f:  # a stray byte among the zeros is a torn tail again
        f.seek(log.segments()[-1][1] + 100)
        f.write(b"\x01")
    assert verify(str(tmp_path)).tail is not None


def test_damage_is_reported_once_without_a_false_missing_segment(tmp_path):
    fill(tmp_path)
    first = segment_paths(tmp_path)[0]
    flip_bit(first, 200)
    problems = verify(str(tmp_path)).problems
    assert [p.path for p in problems] == [first]


def test_a_committed_swap_stands_for_the_segments_it_replaces(tmp_path):
    from logq.testing import FakeClock
    clock = FakeClock()
    q = Queue(tmp_path / "q", clock=clock, segment_size=4096, retain_done=0, compact_threshold=None)
    for i in range(300):
        q.enqueue("t", b"x" * 20)
        q.ack(q.lease())
    real = q._backend.log.install

    def freeze_after_commit(out, bases):  # copy the directory just after step C2
        from logq.log import compact as _compact
        swap = os.path.join(q.path, os.path.basename(out.tmp_path).replace(_compact.COMPACTING, _compact.SWAP))
        q._backend.log.fs.rename(out.tmp_path, swap)
        shutil.copytree(q.path, tmp_path / "mid", ignore=shutil.ignore_patterns("logq.lock"))
        q._backend.log.fs.rename(swap, out.tmp_path)
        real(out, bases)

    q._backend.log.install = freeze_after_commit
    q.compact()
    q.close()
    mid = str(tmp_path / "mid")
    files = segment_files(mid)
    assert files[0][1].endswith(".swap") and verify(mid).ok
    with Queue(mid, compact_threshold=None) as reopened:  # opening rolls the swap forward
        assert reopened.stats().counts["pending"] == 0
    assert not [n for n in os.listdir(mid) if n.endswith(".swap")] and verify(mid).ok


def test_zeros_after_the_last_segments_seal_are_a_crash_in_a_rollover_not_damage(tmp_path):
    """A rollover that wrote its SEAL but died before cutting the preallocated zeros after it
    (found by the soak): verify reports no damage, and the next open cuts the zeros."""
    from logq.log.codec import FLAG_FIRST, SEGMENT_HEADER_SIZE, TYPE_SEAL, Encoder, decode_segment_header

    path = str(tmp_path / "q")
    with Log(path) as log:
        log.append([(16, b"one")])
        last = log.last_seq
    seg = segment_paths(path)[-1]
    with open(seg, "r+b") as f:
        salt = decode_segment_header(f.read(SEGMENT_HEADER_SIZE), seg).salt
        end = f.seek(0, os.SEEK_END)
        seal = Encoder(0).with_salt(salt).encode(last + 1, TYPE_SEAL, b"", FLAG_FIRST)
        f.write(seal + bytes(4096))
    assert verify(path).ok, verify(path).problems
    with Log(path) as log:
        assert log.last_seq == last + 1  # the SEAL stands: the next records go to a new segment
    assert os.path.getsize(seg) == end + len(seal) and verify(path).ok
