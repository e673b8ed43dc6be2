"""Hostile and damaged files cost bounded memory (issue 19 item 8).

Each file is built with the codec's own `encode_stored` and opened in a child
process whose address space is capped (`RLIMIT_AS`) well below what reading
or inflating it whole would take: before the fix the child dies of
MemoryError, after it the file is refused or read in bounded windows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings, strategies as st

import logq
from logq import CorruptionError, InvalidArgument, Log, Queue, RecordTooLargeError
from logq.core.records import max_record_size
from logq.log import segment as segment_module
from logq.log.checkpoint import NAME as CHECKPOINT
from logq.log.codec import (
    FLAG_CONTINUED, FLAG_FIRST, FLAG_ZSTD, MAX_STORED, TYPE_SEAL, Encoder, encode_segment_header, encode_stored,
    read_record,
)
from logq.log.segment import nonzero_end, scan, scan_file, segment_name

from .helpers import segment_paths

AS_LIMIT = 512 << 20  # the child's address space: far below a 4 GiB frame or a 1 GiB sparse file
SALT = 0x0123456789ABCDEF
BIG = 1 << 30  # bytes of a sparse file's apparent size


def zeros_frame(n: int, *, declare: int | None = None) -> bytes:
    """A zstd frame of `n` zero bytes, declaring `declare` (default `n`) as its content size
    (-1: none), built a chunk at a time: a 4 GiB frame is 131 KB."""
    size = n if declare is None else declare
    if size < 0:
        return zstandard.ZstdCompressor(write_content_size=False).compress(bytes(n))
    out = zstandard.ZstdCompressor(level=1).compressobj(size=size)
    chunk, parts, left = bytes(4 << 20), [], n
    while left:
        k = min(left, len(chunk))
        parts.append(out.compress(chunk if k == len(chunk) else chunk[:k]))
        left -= k
    return b"".join(parts) + out.flush()


def write_segment(directory, base: int, records: list[bytes]) -> str:
    path = os.path.join(directory, segment_name(base))
    with open(path, "wb") as f:
        f.write(encode_segment_header(SALT, base) + b"".join(records))
    return path


def zstd_record(seq: int, frame: bytes, raw_len: int) -> bytes:
    return encode_stored(SALT, seq, 16, FLAG_FIRST | FLAG_ZSTD, frame, raw_len)


def seal(seq: int) -> bytes:
    return encode_stored(SALT, seq, TYPE_SEAL, FLAG_FIRST, b"", 0)


def run_capped(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a child Python whose address space is capped at AS_LIMIT bytes."""
    prelude = f"import resource, sys\nresource.setrlimit(resource.RLIMIT_AS, ({AS_LIMIT}, {AS_LIMIT}))\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=600)


OPEN = """
    import logq
    try:
        q = logq.Queue(sys.argv[1], salvage=sys.argv[2:] == ["salvage"])
    except logq.CorruptionError as exc:
        print(type(exc).__name__, exc.offset)
    else:
        print("opened", q.stats().pending, len(q.recovery.torn), len(q.recovery.lost))
        q.close()
"""

VERIFY = """
    from logq.cli.main import main
    sys.exit(main(["inspect", "--verify", *sys.argv[1:]]))
"""


def assert_no_memory_error(done: subprocess.CompletedProcess[str]) -> None:
    assert "MemoryError" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]


# ------------------------------------------------------------- a 4 GiB frame

@pytest.fixture(scope="module")
def frame_4g() -> bytes:
    return zeros_frame((1 << 32) - 1)


def test_a_4_gib_frame_in_a_sealed_segment_is_refused_in_bounded_memory(tmp_path, frame_4g):
    write_segment(tmp_path, 1, [zstd_record(1, frame_4g, (1 << 32) - 1), seal(2)])
    write_segment(tmp_path, 3, [])
    done = run_capped(OPEN, str(tmp_path))
    assert_no_memory_error(done)
    assert done.stdout.split() == ["CorruptionError", "40"]  # raw length over MAX_STORED: damage


def test_inspect_verify_reports_a_4_gib_frame_in_the_last_segment(tmp_path, frame_4g):
    """The 131 KB segment of the issue: --verify called it ok (after inflating 4 GiB)."""
    path = write_segment(tmp_path, 1, [zstd_record(1, frame_4g, (1 << 32) - 1)])
    assert os.path.getsize(path) < 140_000
    done = run_capped(VERIFY, str(tmp_path))
    assert_no_memory_error(done)
    assert done.returncode == 1 and "invalid fields" in done.stdout


def test_opening_a_4_gib_frame_in_the_last_segment_never_inflates_it(tmp_path, frame_4g):
    write_segment(tmp_path, 1, [zstd_record(1, frame_4g, (1 << 32) - 1)])
    done = run_capped(OPEN, str(tmp_path))
    assert_no_memory_error(done)
    assert done.stdout.split()[:2] in (["CorruptionError", "40"], ["opened", "0"])  # refused, or cut aside


def test_a_frame_that_declares_another_size_than_its_record_is_damage_before_it_is_inflated(tmp_path):
    frame = zeros_frame(BIG)  # declares 2 GiB; the record says 100 bytes
    write_segment(tmp_path, 1, [zstd_record(1, frame, 100), seal(2)])
    write_segment(tmp_path, 3, [])
    done = run_capped(OPEN, str(tmp_path))
    assert_no_memory_error(done)
    assert done.stdout.split() == ["CorruptionError", "40"]


def test_a_frame_without_a_size_is_inflated_no_further_than_its_raw_length(tmp_path):
    frame = zeros_frame(64 << 20, declare=-1)
    with pytest.raises(CorruptionError, match="wrong length"):
        read_record(zstd_record(1, frame, 100), 0, SALT)
    frame = zeros_frame(1000, declare=-1)  # one that fits is read
    assert read_record(zstd_record(1, frame, 1000), 0, SALT).payload == bytes(1000)


def test_a_raw_length_over_max_stored_is_damage_even_when_every_check_passes():
    stored = b"x" * 16
    with pytest.raises(CorruptionError, match="invalid fields"):
        read_record(encode_stored(SALT, 1, 16, FLAG_FIRST | FLAG_ZSTD, stored, MAX_STORED + 1), 0, SALT)


def test_encode_stored_writes_what_the_encoder_writes():
    enc = Encoder(SALT)
    for payload in (b"", b"abc", b"x" * 1000):
        assert enc.encode(7, 20, payload, FLAG_FIRST) == encode_stored(SALT, 7, 20, FLAG_FIRST, payload, len(payload))


# ------------------------------------------------------- the queue's bound

def test_a_record_over_the_queues_bound_is_refused_not_cut(tmp_path):
    with Queue(tmp_path) as q:  # written with the default max_payload
        q.enqueue("big", b"p" * 300_000)
    os.unlink(tmp_path / CHECKPOINT)  # replay reads every record (a restored checkpoint skips them)
    seg = segment_paths(tmp_path)[-1]
    before = open(seg, "rb").read()
    with pytest.raises(RecordTooLargeError, match="max_payload") as info:
        Queue(tmp_path, max_payload=1024, max_result=1024)
    assert info.value.path == seg and info.value.offset == 40
    assert open(seg, "rb").read() == before and not [n for n in os.listdir(tmp_path) if n.endswith(".torn")]
    with Queue(tmp_path) as q:  # the max_payload it was written with opens it
        assert q.stats().pending == 1
    os.unlink(tmp_path / CHECKPOINT)
    with Queue(tmp_path, max_payload=1024, max_result=1024, salvage=True) as q:  # salvage skips it and says where
        assert q.stats().pending == 0
        assert [(r.start, r.end) for r in q.recovery.lost] == [(40, 40 + 32 + 300_032)]
        assert f"{seg} at byte 40" in q.recovery.lost[0].reason


def test_the_log_refuses_to_write_what_it_would_refuse_to_read(tmp_path):
    with Log(tmp_path, max_record=1000) as log:
        with pytest.raises(InvalidArgument, match="1000-byte limit"):
            log.append([(16, b"x" * 1001)])
        log.append([(16, b"x" * 1000)])
    with pytest.raises(RecordTooLargeError):
        Log(tmp_path, max_record=999)


def test_the_queues_bound_leaves_room_for_every_field_of_an_enqueue(tmp_path):
    name, key = "n" * 1000, "k" * 1000
    with Queue(tmp_path, max_payload=10, max_result=10) as q:
        q.enqueue(name, b"p" * 10, key=key, backoff=logq.Backoff(1, 2, 3, 0.1))
    os.unlink(tmp_path / CHECKPOINT)
    with Queue(tmp_path, max_payload=10, max_result=10) as q:
        assert q.lease().payload == b"p" * 10
    assert max_record_size(1 << 28) == MAX_STORED and max_record_size(10, 1 << 20) > 1 << 20


# ------------------------------------------------------------ sparse files

def sparse(path: str, size: int = BIG) -> None:
    os.truncate(path, size)
    assert os.stat(path).st_blocks * 512 < 1 << 20  # holes: no disk taken


def queue_with_jobs(path, n: int = 5) -> None:
    with Queue(path) as q:
        for i in range(n):
            q.enqueue("job", b"%d" % i)


def test_a_sparse_last_segment_opens_in_bounded_memory(tmp_path):
    queue_with_jobs(tmp_path)
    os.unlink(tmp_path / CHECKPOINT)
    sparse(segment_paths(tmp_path)[-1])  # what a crash leaves, at its largest: zeros after the records
    done = run_capped(OPEN, str(tmp_path))
    assert_no_memory_error(done)
    assert done.stdout.split() == ["opened", "5", "0", "0"]


def test_inspect_verify_reads_a_sparse_segment_in_bounded_memory(tmp_path):
    queue_with_jobs(tmp_path)
    sparse(segment_paths(tmp_path)[-1])
    done = run_capped(VERIFY, str(tmp_path))
    assert_no_memory_error(done)
    assert done.returncode == 0


def test_salvage_reads_a_sparse_segment_in_bounded_memory(tmp_path):
    queue_with_jobs(tmp_path)
    os.unlink(tmp_path / CHECKPOINT)
    seg = segment_paths(tmp_path)[-1]
    sparse(seg)
    with open(seg, "r+b") as f:  # damage in the middle of the last record: salvage probes every byte after it
        f.seek(100)
        f.write(b"\xff")
    done = run_capped(OPEN, str(tmp_path), "salvage")
    assert_no_memory_error(done)
    assert done.stdout.split()[:2] == ["opened", "4"] and done.stdout.split()[3] != "0"


def test_a_sparse_sealed_segment_is_damage_found_in_bounded_memory(tmp_path):
    with Queue(tmp_path, segment_size=4096) as q:
        for i in range(100):
            q.enqueue("job", b"x" * 100)
    os.unlink(tmp_path / CHECKPOINT)
    first = segment_paths(tmp_path)[0]
    end = os.path.getsize(first)  # it ends with its SEAL: the zeros after it are damage
    sparse(first)
    done = run_capped(OPEN, str(tmp_path))
    assert_no_memory_error(done)
    assert done.stdout.split() == ["CorruptionError", str(end)]


def test_a_sparse_checkpoint_is_skipped_in_bounded_memory(tmp_path):
    queue_with_jobs(tmp_path)
    sparse(str(tmp_path / CHECKPOINT))
    done = run_capped(OPEN.replace("q.close()", "print(q.recovery.checkpoint_skipped)"), str(tmp_path))
    assert_no_memory_error(done)
    assert done.stdout.split()[:2] == ["opened", "5"] and "checkpoint" in done.stdout


def test_a_sparse_compaction_file_is_refused_in_bounded_memory(tmp_path):
    queue_with_jobs(tmp_path)
    swap = str(tmp_path / (segment_name(1) + ".swap"))
    with open(swap, "wb") as f:
        f.write(encode_segment_header(SALT, 1))
    sparse(swap)
    done = run_capped(OPEN, str(tmp_path))
    assert_no_memory_error(done)
    assert done.stdout.split()[0] == "CorruptionError"


def test_a_torn_tail_is_kept_aside_a_chunk_at_a_time(tmp_path):
    """A tail of 300 MiB (sparse, one byte at its end) is copied aside without being read whole."""
    queue_with_jobs(tmp_path)
    os.unlink(tmp_path / CHECKPOINT)
    seg = segment_paths(tmp_path)[-1]
    end = os.path.getsize(seg)
    sparse(seg, 300 << 20)
    with open(seg, "r+b") as f:
        f.seek((300 << 20) - 1)
        f.write(b"\x01")
    done = run_capped(OPEN + "\n    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)", str(tmp_path))
    assert_no_memory_error(done)
    assert done.stdout.split()[:4] == ["opened", "5", "1", "0"]
    assert int(done.stdout.split()[-1]) < 200 << 10  # KiB: far less than the tail
    side = f"{seg}.{end}.torn"
    assert os.path.getsize(side) == (300 << 20) - end and open(side, "rb").read(1) == b"\0"
    assert os.stat(side).st_blocks * 512 <= 2 << 20  # chunks of zeros are holes: only the last chunk takes disk


def test_nonzero_end_finds_the_last_written_byte():
    data = b"ab" + bytes(5000) + b"c" + bytes(3000)
    read = lambda n, offset: data[offset:offset + n]  # noqa: E731
    assert nonzero_end(read, 0, len(data)) == 5003
    assert nonzero_end(read, 5003, len(data)) == 5003
    assert nonzero_end(read, 2, 5002) == 2


# --------------------------------------------- salvage a window at a time

def _damaged_log(path, cuts):
    with Log(path, segment_size=1 << 20) as log:
        for i in range(40):
            log.append([(16, b"single %d" % i)])
            log.append([(17, b"b%d-%d" % (i, j) * (j + 1)) for j in range(3)])
        log.append([(18, bytes(range(256)) * 12)])
    seg = segment_paths(path)[-1]
    data = bytearray(open(seg, "rb").read())
    for at, length, byte in cuts:
        at %= len(data) - 40
        data[40 + at:40 + at + length] = bytes([byte]) * len(data[40 + at:40 + at + length])
    return seg, bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 600), st.sampled_from([0, 0xFF, 0x5A])),
                     min_size=1, max_size=3),
       window=st.sampled_from([48, 64, 200, 700, 4096]))
def test_salvage_in_windows_finds_what_salvage_of_the_whole_file_finds(tmp_path_factory, cuts, window):
    path = tmp_path_factory.mktemp("salvage")
    seg, data = _damaged_log(path, cuts)
    whole, windowed = [], []
    expected = scan(data, seg, whole.append, salvage=True)
    old = segment_module.SCAN_WINDOW
    segment_module.SCAN_WINDOW = window
    try:
        got = scan_file(lambda n, offset: data[offset:offset + n], len(data), seg, windowed.append, salvage=True)
    finally:
        segment_module.SCAN_WINDOW = old
    assert windowed == whole
    assert (got.end, got.last_seq, got.records, got.sealed) == \
        (expected.end, expected.last_seq, expected.records, expected.sealed)
    assert _joined(got.lost) == _joined(expected.lost)
    assert _bounds(got.lost) == _bounds(expected.lost)


def _bounds(lost) -> list[tuple[int | None, int | None]]:
    """The sequence numbers around each run of adjacent lost ranges."""
    out: list[list[int | None]] = []
    for i, r in enumerate(lost):
        if i and lost[i - 1].end == r.start:
            out[-1][1] = r.before_seq
        else:
            out.append([r.after_seq, r.before_seq])
    return [tuple(b) for b in out]


def _joined(lost) -> list[tuple[int, int]]:
    """The lost ranges, adjacent ones as one: the bytes they cover."""
    out: list[tuple[int, int]] = []
    for r in lost:
        if out and out[-1][1] == r.start:
            out[-1] = (out[-1][0], r.end)
        else:
            out.append((r.start, r.end))
    return out


def test_a_batch_cut_by_a_window_is_read_whole_from_the_next(tmp_path):
    seg, data = _damaged_log(tmp_path, [(0, 0, 0)])
    old, segment_module.SCAN_WINDOW = segment_module.SCAN_WINDOW, 48
    try:
        got = []
        result = scan_file(lambda n, offset: data[offset:offset + n], len(data), seg, got.append)
    finally:
        segment_module.SCAN_WINDOW = old
    assert result.records == len(got) == 161 and result.damage is None
    assert [r.flags & FLAG_CONTINUED for r in got[1:4]] == [FLAG_CONTINUED, FLAG_CONTINUED, 0]


def test_an_error_text_the_log_would_refuse_to_read_is_refused_and_changes_nothing(tmp_path):
    """spec/semantics.md guarantee 9: what replay with these options would refuse is never written."""
    with Queue(tmp_path, max_payload=10, max_result=10) as q:
        q.enqueue("a", b"x")
        job = q.lease()
        last = q.stats().last_seq
        with pytest.raises(InvalidArgument, match="max_payload"):
            q.fail(job, error="e" * (max_record_size(10, 10) + 1))
        assert q.stats().last_seq == last and q.stats().counts["active"] == 1
        q.fail(job, error="short")
    os.unlink(tmp_path / CHECKPOINT)
    with Queue(tmp_path, max_payload=10, max_result=10) as q:
        assert q.stats().last_seq == last + 1


# ---------------------------------------- item 11: maps over allocated space only

CRASH = """
    import os, sys, logq
    q = logq.Queue(sys.argv[1])
    for i in range(10):
        q.enqueue("t", b"x" * 100)
    os._exit(0)  # a crash: the segment keeps its preallocated zeros
"""

FILL = """
    import sys, logq
    q = logq.Queue(sys.argv[1])
    try:
        for i in range(100_000):
            q.enqueue("t", b"y" * 1000)
    except logq.WriterFailedError as exc:
        print("WriterFailedError", "No space left" in str(exc))
"""


def crashed_sparse_copy(src, dst) -> str:
    """A queue left by a crash (64 KiB segment, mostly zeros), copied with holes for its zeros."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH), str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    subprocess.run(["cp", "-r", "--sparse=always", str(src), str(dst)], check=True)
    seg = segment_paths(dst)[-1]
    st = os.stat(seg)
    assert st.st_size == 64 << 10 and st.st_blocks * 512 < st.st_size  # holes
    return seg


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs: a disk that fills (needs the right to mount; skipped without it)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + done.stderr.decode(errors="replace").strip())
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_up(directory, leave: int = 0) -> None:
    """Fill the file system of `directory` with a file, to `leave` bytes short of full."""
    path = os.path.join(directory, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, bytes(4096)):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)
    if leave:
        os.truncate(path, os.path.getsize(path) - leave)


@pytest.mark.parametrize("room", [0, 16 << 10], ids=["full", "16KiB-left"])
def test_a_sparse_copy_on_a_full_disk_gets_writer_failed_not_sigbus(tmp_path, small_tmpfs, room):
    """Issue 19 item 11: stores into the holes of a sparse copy on a full disk were a SIGBUS (exit 135)."""
    crashed_sparse_copy(tmp_path / "src", small_tmpfs / "q")
    fill_up(small_tmpfs, leave=room)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(FILL), str(small_tmpfs / "q")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # -7 (SIGBUS) before
    assert done.stdout.split() == ["WriterFailedError", "True"]


def test_a_sparse_segment_adopted_at_open_is_allocated_before_it_is_mapped(tmp_path):
    seg = crashed_sparse_copy(tmp_path / "src", tmp_path / "copy")
    with Queue(tmp_path / "copy") as q:
        assert q._backend.log._writer.map is not None  # the default: writes through a map
        st = os.stat(seg)
        assert st.st_blocks * 512 >= st.st_size  # every byte the map covers has its block
        q.enqueue("t", b"z")


def test_zeros_past_the_next_preallocation_step_are_cut_not_allocated(tmp_path):
    """A sparse 2 GiB last segment: the writer keeps the zeros preallocation would have
    left (to the next 64 KiB step), so it neither allocates 2 GiB of disk nor maps them."""
    queue_with_jobs(tmp_path)
    os.unlink(tmp_path / CHECKPOINT)
    seg = segment_paths(tmp_path)[-1]
    end = os.path.getsize(seg)
    sparse(seg)
    with Queue(tmp_path) as q:
        assert os.path.getsize(seg) == 64 << 10 and os.stat(seg).st_blocks * 512 <= 64 << 10
        assert q._backend.log._writer.map is not None and q.stats().pending == 5
        q.enqueue("t", b"after")
    assert os.path.getsize(seg) > end


def test_a_stretch_that_cannot_be_allocated_is_written_with_pwrite(tmp_path, monkeypatch):
    """The fallback, through the seam: where posix_fallocate fails (ENOSPC), nothing is mapped."""
    import errno

    from logq.log import fs as fs_module

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fs_module, "_fallocate", no_space)
    with Log(tmp_path, fs=fs_module.OsFileSystem(map_writes=True)) as log:
        for i in range(2000):  # past several 64 KiB steps of preallocation
            log.append([(16, b"r%d" % i * 20)])
        assert log._writer.map is None
    with Log(tmp_path, replay=lambda rec, base: None) as log:
        assert log.last_seq == 2000
