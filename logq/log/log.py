"""The log: segment files on disk, group commit, replay and torn-tail repair.

Theory of operation
-------------------
A log is a directory holding `logq.meta` (format marker), `logq.lock` (the
writer's pid under an exclusive flock) and segment files. Opening it replays
every segment in order through `scan`, hands each record of a complete batch
to the caller's `replay` callback, repairs a torn tail, and then accepts
appends. Every file operation goes through the `FileSystem` seam.

A clean close may leave `logq.checkpoint` (`_checkpoint`): a state blob of
the caller's and a digest of every segment. When the segments still hash to
their digests, opening hands the blob to the caller's `restore` callback and
replays only the records after it; otherwise it replays everything.

Append protocol (the numbers name the steps that the fault tests target):
  1. Under the lock, assign sequence numbers and encode the batch into the
     pending buffer; if it would overflow the active segment, roll over first.
  2. Modes `batch` and `none`: write the pending buffer to the file before
     returning, so the records survive a crash of the process. Writes go at
     the log's end over zeros the file already has: the active segment grows
     PREALLOCATE bytes of zeros at a time, so an append changes no file size
     and fdatasync has only data to flush.
  3. Mode `always`: the caller waits until a fdatasync covers its last record.
     Callers form cohorts: a caller parks on a gate of its own while a sync
     is in flight or while its cohort is still filling (as many callers as
     the last sync covered; for at most three times as long as the last
     cohort took to fill, within GATHER_SECONDS). The caller that fills
     the cohort leads: it writes everything pending in one write, notes the
     last written sequence number, fdatasyncs outside the lock and wakes the
     callers the sync covered, one after another (group commit).
  4. Mode `batch`: a background thread does step 3 at most every
     `sync_interval` seconds while there are unsynced records.
A failed write or fsync poisons the log: the error is kept, every waiting and
later call raises `WriterFailedError`, and fsync is never retried, because
the kernel may already have dropped the dirty pages. Reopening replays from
what is really on disk.

Rollover protocol:
  R1. wait until no sync is in flight; write the pending buffer;
  R2. append a SEAL record, cut the zeros after it, fsync the segment (it is
      now sealed);
  R3. create the next segment, named by the SEAL's sequence number + 1, write
      its header and fsync it;
  R4. fsync the directory so the new name is durable.
A crash between R2 and R4 leaves a sealed last segment, or a next segment
with a missing or torn header; recovery creates or recreates it.

Recovery rules:
  * every segment but the last must verify completely and end with SEAL;
    damage there, or a gap between one segment's SEAL and the next base, is a
    `CorruptionError` naming file and offset (`salvage=True` skips the damage
    and reports the lost ranges instead);
  * the last segment is cut after its last complete batch; the cut bytes are
    first saved to `<segment>.<offset>.torn` (fsynced, directory fsynced), then
    the file is truncated and fsynced, before any new append;
  * zeros after the last complete batch are preallocated space, not a torn
    tail: they are kept (after a SEAL, cut) and nothing is reported.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
from collections import deque
from time import monotonic as _monotonic
from _thread import LockType, allocate_lock as _allocate_lock
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Callable, NamedTuple, Sequence, TypeVar

from ..tuples import new_tuple as _new_tuple
from ..errors import (
    ClosedError, CorruptionError, InvalidArgument, LockedError, NotALogqDirectory,
    UnsupportedVersionError, WriterFailedError,
)
from .fs import File, FileSystem, Lock, OsFileSystem, read_lock_holder
from .codec import (
    ALIGN, FIRST_USER_TYPE, FLAG_CONTINUED, FLAG_FIRST, FORMAT_VERSION, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE,
    TYPE_SEAL, Encoder, Record, decode_segment_header, encode_segment_header, padded, read_record,
)
from . import checkpoint as _checkpoint, compact as _compact
from .segment import LostRange, ScanResult, is_unborn, is_unwritten, parse_segment_name, scan, segment_name

META_NAME = "logq.meta"
LOCK_NAME = "logq.lock"
TORN_SUFFIX = ".torn"
TMP_SUFFIX = ".tmp"  # `_replace_file` writes `final` + this first
CHECKPOINT_TMP = _checkpoint.NAME + TMP_SUFFIX
SYNC_MODES = ("none", "batch", "always")
_STRENGTH = {m: i for i, m in enumerate(SYNC_MODES)}
DEFAULT_SEGMENT_SIZE = 64 << 20
GATHER_SECONDS = (0.00005, 0.001)  # bounds of how long a parked caller waits for its cohort to fill

ReplayCallback = Callable[[Record, int], None]  # called as replay(record, segment base)
RestoreCallback = Callable[[bytes | memoryview], None]  # called with the state blob of a usable checkpoint


@dataclass(frozen=True)
class TornTail:
    """Bytes cut from the end of the last segment at open, and where they were kept."""

    path: str
    offset: int
    length: int
    saved_to: str


@dataclass
class RecoveryReport:
    """What opening the log found and did."""

    segments: int = 0
    records: int = 0
    last_seq: int = 0
    torn: list[TornTail] = field(default_factory=list)
    lost: list[LostRange] = field(default_factory=list)
    restored_seq: int | None = None  # the checkpoint's last sequence number, when one was restored
    checkpoint_skipped: str | None = None  # why a checkpoint that exists was not used


class Appended(NamedTuple):
    """Where an appended batch landed: sequence numbers, segment base and offsets."""

    first_seq: int
    last_seq: int
    segment: int
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    sync: str


@dataclass
class _Segment:
    base: int
    size: int
    sealed: bool
    last_seq: int


def stronger(a: str, b: str | None) -> str:
    """The stronger of two durability modes (None means "no preference")."""
    if b is None:
        return a
    if b not in _STRENGTH:
        raise InvalidArgument(f"sync must be one of {SYNC_MODES}, not {b!r}")
    return a if _STRENGTH[a] >= _STRENGTH[b] else b


_C = TypeVar("_C", bound="ClosesOnExit")


class ClosesOnExit:
    """`with` support: close on exit. A close that fails (WriterFailedError) is raised,
    unless an exception is already on its way out, which it would hide."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            self.close()
        except WriterFailedError:
            if exc_type is None:
                raise


class Log(ClosesOnExit):
    """An open, locked log directory. Thread-safe.

    Records are appended in batches; a batch is atomic (after a crash either
    all its records are replayed or none) and its records get consecutive,
    increasing sequence numbers that are never reused.
    """

    def __init__(self, path: str | os.PathLike[str], *, replay: ReplayCallback | None = None,
                 sync: str = "batch", sync_interval: float = 0.005,
                 segment_size: int = DEFAULT_SEGMENT_SIZE, compression: str | None = None,
                 compress_threshold: int = 512, salvage: bool = False,
                 fs: FileSystem | None = None, on_rollover: Callable[[], None] | None = None,
                 restore: RestoreCallback | None = None) -> None:
        _check_options(sync, sync_interval, segment_size, compression, compress_threshold)
        self.path = os.fspath(path)
        self.sync_mode = sync
        self.sync_interval = sync_interval
        self.segment_size = segment_size
        self.fs: FileSystem = fs or OsFileSystem()
        self._template = Encoder(0, compression=compression, threshold=compress_threshold)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._syncing = False  # a leader is between flushing and the end of its lead
        self._waiters: list[tuple[int, LockType]] = []  # (sequence number, gate) parked in sync_through
        self._chain: deque[LockType] = deque()  # gates of synced callers not yet woken
        self._cohort = 1  # callers the next sync waits for: as many as the last one covered
        self._gather = GATHER_SECONDS[1]  # how long they wait: 3x the time the last cohort took to fill
        self._lead_ended = 0.0  # time.monotonic() when the last sync woke its callers
        self._failed: BaseException | None = None
        self._closed = False
        self._readers: dict[int, File] = {}
        self._ahead: tuple[int, int, bytes, int] | None = None  # `read`'s last span: segment, start, bytes, salt
        self._salts: dict[int, int] = {}
        self._seal_at_open = False  # salvage found damage inside the last segment
        self._digests: dict[int, tuple[int, int]] = {}  # base -> (end, digest) known this session
        self._lockfile: Lock | None = None
        self._syncer: threading.Thread | None = None
        self._stop = threading.Event()
        self._on_rollover = on_rollover
        self._lockfile = self._prepare_directory()
        try:
            self.report = self._recover(replay, salvage, None if salvage else restore)
        except BaseException:
            self._release_files()
            raise
        if sync == "batch":
            self._syncer = threading.Thread(target=self._sync_loop, name="logq-sync", daemon=True)
            self._syncer.start()

    # ----------------------------------------------------------------- opening

    def _prepare_directory(self) -> Lock:
        fs, path = self.fs, self.path
        if fs.exists(path) and not fs.isdir(path):
            raise NotALogqDirectory(f"{path} is a file, not a logq directory: pass a directory path")
        fresh = not fs.exists(path) or not set(fs.listdir(path)) - {LOCK_NAME, META_NAME + TMP_SUFFIX}
        if not fresh:
            self._check_meta()
        fs.makedirs(path)
        lock = fs.lock(os.path.join(path, LOCK_NAME))
        if lock is None:
            pid = read_lock_holder(os.path.join(path, LOCK_NAME))
            raise LockedError(f"{path} is already open by process {pid}: close that queue first, "
                              "or open another directory", path=path, pid=pid)
        if fresh or not fs.exists(os.path.join(path, META_NAME)):
            try:
                self._write_meta()
            except BaseException:
                lock.release()
                raise
        return lock

    def _check_meta(self) -> None:
        meta = os.path.join(self.path, META_NAME)
        if not self.fs.exists(meta):
            names = self.fs.listdir(self.path)
            if not any(parse_segment_name(n) is not None for n in names):
                raise NotALogqDirectory(
                    f"{self.path} is not empty and holds no logq queue: pass an empty or new directory")
            return
        f = self.fs.open(meta, readonly=True)
        try:
            text = f.pread(64, 0)
        finally:
            f.close()
        parts = text.split()
        if len(parts) != 2 or parts[0] != b"logq" or not parts[1].isdigit():
            raise NotALogqDirectory(f"{meta} is not a logq marker file: is this the right directory?")
        if int(parts[1]) > FORMAT_VERSION:
            raise UnsupportedVersionError(
                f"queue was written by format version {int(parts[1])}; this logq reads up to "
                f"{FORMAT_VERSION}: upgrade logq", path=meta)

    def _write_meta(self) -> None:
        self._replace_file(os.path.join(self.path, META_NAME), f"logq {FORMAT_VERSION}\n".encode())

    def _replace_file(self, final: str, data: bytes) -> None:
        """Make `final` hold `data`, whole or not at all, durably: write `final`.tmp,
        fsync it, rename it over `final`, fsync the directory."""
        tmp = final + TMP_SUFFIX
        f = self.fs.open(tmp, create=True)
        try:
            f.truncate(0)
            f.pwrite(data, 0)
            f.fsync()
        finally:
            f.close()
        self.fs.rename(tmp, final)
        self.fs.fsync_dir(self.path)

    def _recover(self, replay: ReplayCallback | None, salvage: bool,
                 restore: RestoreCallback | None) -> RecoveryReport:
        report = RecoveryReport()
        _compact.recover(self.fs, self.path, self.fs.listdir(self.path), parse_segment_name)
        names = self.fs.listdir(self.path)
        if CHECKPOINT_TMP in names:  # a close that did not finish writing its checkpoint
            self.fs.unlink(os.path.join(self.path, CHECKPOINT_TMP))
        bases = sorted(b for b in map(parse_segment_name, names) if b is not None)
        covered = [] if restore is None else self._restore_checkpoint(bases, restore, report)
        self._segments = [_Segment(c.base, c.end, c.sealed, c.last_seq) for c in covered]
        last_seq, resume = covered[-1].last_seq if covered else 0, SEGMENT_HEADER_SIZE
        if covered and not covered[-1].sealed:  # replay what was appended after the checkpoint
            self._segments.pop()
            bases, resume = bases[len(covered) - 1:], covered[-1].end
        else:
            bases = bases[len(covered):]
        for i, base in enumerate(bases):
            is_last = i == len(bases) - 1
            deliver = _no_replay if replay is None else _delivering(replay, base)
            last_seq = self._recover_segment(base, is_last, last_seq, deliver, salvage, report,
                                             resume if i == 0 else SEGMENT_HEADER_SIZE)
        if self._segments:
            self._adopt(self._segments[-1].base)
        if not self._segments or self._segments[-1].sealed:
            self._create_segment(last_seq + 1)
        active = self._segments[-1]
        self._active = self.fs.open(self._seg_path(active.base))
        self._encoder = self._template.with_salt(self._read_salt(active.base))
        self._next_seq = max(last_seq + 1, active.base)
        self._written_seq = self._synced_seq = self._next_seq - 1
        self._end = active.size
        self._allocated = self._active.size()  # the file's size: `_end` plus preallocated zeros
        self._map: mmap.mmap | None = None  # its first `_allocated` bytes, mapped (`_map_zeros`)
        if self._allocated > self._end:
            self._map_zeros()
        if self._seal_at_open:  # salvaged damage must not be cut by a later normal open
            with self._lock:
                self._rollover_locked()
        report.segments, report.last_seq = len(self._segments), self._next_seq - 1
        return report

    def _recover_segment(self, base: int, is_last: bool, last_seq: int, deliver: Callable[[Record], None],
                         salvage: bool, report: RecoveryReport, start: int) -> int:
        """Replay segment `base` from `start` (past its header, or where a checkpoint ended)."""
        path = self._seg_path(base)
        f = self.fs.open(path, readonly=True)
        try:
            size = f.size()
            head = f.pread(min(size, SEGMENT_HEADER_SIZE), 0)
            if is_last and is_unborn(head, path) and size <= SEGMENT_HEADER_SIZE:
                self._keep_aside(path, 0, head, report)
                self.fs.unlink(path)
                self.fs.fsync_dir(self.path)
                return last_seq
            return self._recover_scanned(f, size, path, base, is_last, last_seq, deliver, salvage, report, start)
        finally:
            f.close()

    def _recover_scanned(self, f: File, size: int, path: str, base: int, is_last: bool, last_seq: int,
                         deliver: Callable[[Record], None], salvage: bool, report: RecoveryReport,
                         start: int) -> int:
        if last_seq and base != last_seq + 1 and start == SEGMENT_HEADER_SIZE:
            msg = f"segment sequence broken: expected base {last_seq + 1}, found {base} (missing segment?)"
            if not salvage:
                raise CorruptionError(msg, path=path, offset=0)
            report.lost.append(LostRange(path, 0, 0, msg))
        result = _scan_windows(f, size, path, deliver, after_seq=last_seq, salvage=salvage, base=base,
                               start=start)
        report.records += result.records - (1 if result.sealed else 0)
        if salvage:
            report.lost.extend(result.lost)
            self._seal_at_open = self._seal_at_open or (is_last and any(r.start < result.end for r in result.lost))
        if not is_last:
            if result.damage is not None and not salvage:
                raise result.damage
            if not result.sealed:
                if not salvage:
                    raise CorruptionError("sealed segment does not end with a SEAL record",
                                          path=path, offset=result.end)
                report.lost.append(LostRange(path, result.end, size, "segment not sealed"))
        elif result.end < size:
            tail = f.pread(size - result.end, result.end)
            if is_unwritten(tail):  # preallocated space, not a torn write
                report.lost[:] = [r for r in report.lost if r.path != path or r.start < result.end]
                if result.sealed:  # a sealed segment ends at its SEAL
                    self._cut_tail(path, result.end, b"", report)
            else:
                self._cut_tail(path, result.end, tail.rstrip(b"\0"), report)
        seg_last = result.last_seq if result.last_seq is not None else max(last_seq, base - 1)
        self._segments.append(_Segment(base, result.end, result.sealed or not is_last, seg_last))
        return seg_last

    def _restore_checkpoint(self, bases: list[int], restore: RestoreCallback,
                            report: RecoveryReport) -> list[_checkpoint.Covered]:
        """The segments a usable checkpoint covers, after handing its state to `restore`;
        [] (and the reason in the report) when there is none or it cannot be trusted."""
        path = os.path.join(self.path, _checkpoint.NAME)
        if not self.fs.exists(path):
            return []
        f = self.fs.open(path, readonly=True)
        try:
            data = f.pread(f.size(), 0)
        finally:
            f.close()
        try:
            cp = _checkpoint.decode(data)
            _checkpoint.verify(cp, bases, lambda base: self.fs.open(self._seg_path(base), readonly=True))
            restore(cp.state)
        except CorruptionError as exc:
            report.checkpoint_skipped = f"{path}: {exc.reason}; replayed the whole log instead"
            return []
        self._digests = {c.base: (c.end, c.digest) for c in cp.segments}
        report.restored_seq = cp.last_seq
        return cp.segments

    def _adopt(self, base: int) -> None:
        """Make the last segment and the directory durable before anything is appended.

        A crashed process may have left the last segment's tail, its SEAL or
        its very name only in the page cache. Recovery replayed those records,
        so it reports them durable: fsync first, so a power loss cannot take
        back what this open accepted (nor drop a SEAL the next segment relies on).
        """
        f = self.fs.open(self._seg_path(base))
        try:
            f.fsync()
        finally:
            f.close()
        self.fs.fsync_dir(self.path)

    def _read_salt(self, base: int) -> int:
        salt = self._salts.get(base)
        if salt is None:
            head = self._reader(base).pread(SEGMENT_HEADER_SIZE, 0)
            salt = self._salts[base] = decode_segment_header(head, self._seg_path(base)).salt
        return salt

    def _keep_aside(self, path: str, offset: int, tail: bytes, report: RecoveryReport) -> None:
        """Save the bytes cut from a segment at `offset` in a side file before cutting them."""
        side = f"{path}.{offset}{TORN_SUFFIX}"
        self._replace_file(side, tail)
        report.torn.append(TornTail(path, offset, len(tail), side))

    def _cut_tail(self, path: str, end: int, tail: bytes, report: RecoveryReport) -> None:
        """Cut the file at `end`; keep the cut bytes aside (`tail`, zeros dropped) first."""
        if tail:
            self._keep_aside(path, end, tail, report)
        f = self.fs.open(path)
        try:
            f.truncate(end)
            f.fsync()
        finally:
            f.close()

    def _create_segment(self, base: int) -> None:
        """Rollover steps R3 and R4: a new segment with its header, durable with its name."""
        salt = int.from_bytes(os.urandom(8), "little")
        path = self._seg_path(base)
        f = self.fs.open(path, create=True, exclusive=True)
        try:
            f.write(encode_segment_header(salt, base))
            f.fsync()
        finally:
            f.close()
        self.fs.fsync_dir(self.path)
        self._segments.append(_Segment(base, SEGMENT_HEADER_SIZE, False, base - 1))

    def _seg_path(self, base: int) -> str:
        return os.path.join(self.path, segment_name(base))

    # ---------------------------------------------------------------- appending

    def append(self, items: Sequence[tuple[int, bytes]], *, sync: str | None = None) -> Appended:
        """Append `items` (record type, payload) as one atomic batch and wait per `sync`."""
        appended = self.write(items, sync=sync)
        self.commit(appended)
        return appended

    def write(self, items: Sequence[tuple[int, bytes]], *, sync: str | None = None) -> Appended:
        """Steps 1-2: sequence, encode and (unless `always`) write; do not wait for fsync.

        Call `commit` with the result to wait for the durability it asked for.
        """
        if len(items) == 1:
            rtype, payload = items[0]
            if FIRST_USER_TYPE <= rtype <= 255 and type(payload) is bytes:
                return self.write_one(rtype, payload, sync=sync)
        mode = self.sync_mode if sync is None else stronger(self.sync_mode, sync)
        if not items:
            raise InvalidArgument("append needs at least one record")
        with self._lock:
            if self._failed is not None or self._closed:
                self.check_usable()
            return self._write_batch_locked(items, mode)

    def write_one(self, rtype: int, payload: bytes, *, sync: str | None = None) -> Appended:
        """`write` of a single record, the common case, kept short: the caller (`write`,
        the queue) passes a valid `rtype` (16..255) and `payload` (bytes). Unless a
        rollover is due or the record waits behind others (batch and none modes), it
        is written at once (batch, none) or queued for the next sync (always)."""
        mode = self.sync_mode if sync is None else stronger(self.sync_mode, sync)
        with self._lock:
            if self._failed is not None or self._closed:
                self.check_usable()
            end = self._end
            if (end + len(payload) <= self.segment_size - ROOM_AFTER_RECORD
                    and (mode == "always" or not self._pending)):
                seq = self._next_seq
                chunk = self._encoder.encode(seq, rtype, payload, FLAG_FIRST)
                stop = end + len(chunk)
                if mode == "always":
                    self._pending.append(chunk)
                    self._pending_size += stop - end
                else:
                    self._put_locked(chunk, end)
                    self._written_seq = seq
                self._end, self._next_seq = stop, seq + 1
                return _new_tuple(Appended, (seq, seq, self._segments[-1].base, (end,), (stop - end,), mode))
            return self._write_batch_locked(((rtype, payload),), mode)

    def _write_batch_locked(self, items: Sequence[tuple[int, bytes]], mode: str) -> Appended:
        chunks, offsets, sizes, first = self._encode_batch(items)
        self._pending.extend(chunks)
        size = sum(sizes)
        self._pending_size += size
        self._end += size
        if mode != "always":
            self._flush_locked()
        return Appended(first, self._next_seq - 1, self._segments[-1].base, offsets, sizes, mode)

    def commit(self, appended: Appended) -> None:
        """Step 3: return once `appended` is as durable as its mode promised."""
        if appended.sync == "always":
            self.sync_through(appended.last_seq)
        elif self._failed is not None:
            raise self._failure()

    def _encode_batch(self, items: Sequence[tuple[int, bytes]]
                      ) -> tuple[list[bytes], tuple[int, ...], tuple[int, ...], int]:
        """Check and encode `items` as the next records (after a rollover if they do not
        fit): their bytes, offsets, sizes and first sequence number. Raises before
        any change but the rollover."""
        types = [rtype for rtype, _ in items]
        if not FIRST_USER_TYPE <= min(types) <= max(types) <= 255:
            raise InvalidArgument("records are (type 16..255, bytes) pairs")
        payloads = [payload if type(payload) is bytes else _record_bytes(payload) for _, payload in items]
        n = len(items)
        if self._end > SEGMENT_HEADER_SIZE and self._end + sum(map(len, payloads)) + n * (RECORD_HEADER_SIZE + 8) \
                + 64 > self.segment_size:
            self._rollover_locked()
        flags = [FLAG_CONTINUED] * n  # every record but the last says another follows
        flags[0] |= FLAG_FIRST
        flags[-1] &= ~FLAG_CONTINUED
        seq = self._next_seq
        chunks = list(map(self._encoder.encode, range(seq, seq + n), types, payloads, flags))
        sizes = tuple(map(len, chunks))
        offsets = tuple(accumulate(sizes[:-1], initial=self._end))
        self._next_seq = seq + n
        return chunks, offsets, sizes, seq

    def _flush_locked(self) -> None:
        """Write everything pending to the active segment (one write)."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._put_locked(data, self._end - self._pending_size)
        self._pending.clear()
        self._pending_size = 0
        self._written_seq = self._next_seq - 1

    def _put_locked(self, data: bytes, offset: int) -> None:
        """Write `data` at `offset` of the active segment, over preallocated zeros: a
        store into the map where it reaches, else a pwrite; a failure poisons the log."""
        stop = offset + len(data)
        if stop <= self._allocated and self._map is not None:
            self._map[offset:stop] = data
            return
        try:
            if offset + len(data) > self._allocated:
                self._preallocate(offset + len(data))
            self._active.pwrite(data, offset)
        except OSError as exc:
            self._poison(exc)
            raise self._failure() from exc

    def _cut_zeros_locked(self, end: int) -> None:
        """Truncate the active segment's preallocated zeros after `end` (a SEAL, a close)."""
        if self._allocated > end:
            self._map = None
            self._active.truncate(end)
            self._allocated = end

    def _preallocate(self, needed: int) -> None:
        """Grow the active segment with zeros to at least `needed` bytes: to the next
        multiple of PREALLOCATE, at most the segment size. Appends then overwrite
        bytes the file already has, and fdatasync need not commit a new file size."""
        new = max(needed, min((self._allocated // PREALLOCATE + 1) * PREALLOCATE, self.segment_size))
        self._active.pwrite(bytes(new - self._allocated), self._allocated)
        self._allocated = new
        self._map_zeros()

    def _map_zeros(self) -> None:
        """Let writes into the preallocated zeros skip the system call (`File.map_through`),
        unless every write is fsynced at once: in `always` mode stores through a map
        measured a quarter slower than pwrite (each fsync write-protects the pages again)."""
        if self.sync_mode != "always":
            self._map = self._active.map_through(self._allocated)

    def sync_through(self, seq: int) -> None:
        """Return once every record up to `seq` is fsynced (group commit).

        Callers gather into cohorts: each parks on a gate of its own until a
        sync covers it, and the caller that completes the cohort (as many
        callers as the last sync covered) leads the next sync. A cohort that
        does not fill in time (`_gather`) shrinks to the callers present, so a
        caller that joined once does not hold the others back for long.
        """
        lock = self._lock
        lock.acquire()
        while True:
            if self._synced_seq >= seq:
                lock.release()
                return
            if self._failed is not None or self._closed:
                lock.release()
                self.check_usable()
            if not self._syncing and len(self._waiters) + 1 >= self._cohort:
                took = 3 * (_monotonic() - self._lead_ended)  # the cohort filled: learn how fast
                self._gather = min(max(took, GATHER_SECONDS[0]), GATHER_SECONDS[1])
                break
            gate = _allocate_lock()
            gate.acquire()
            waiter = (seq, gate)
            self._waiters.append(waiter)
            # behind a sync in flight, the longest wait: a slow fsync should not wake it often
            wait = GATHER_SECONDS[1] if self._syncing else self._gather
            lock.release()
            woken = gate.acquire(True, wait)
            lock.acquire()
            if not woken and gate in self._chain:  # covered just as it timed out: not a link now
                self._chain.remove(gate)
            if self._chain:  # every caller that wakes passes the wake-up on
                self._wake_next_locked()
            if not woken and waiter in self._waiters:  # the cohort did not fill: lead those present
                self._waiters.remove(waiter)
                if not self._syncing:
                    self._cohort = len(self._waiters) + 1
        self._syncing = True
        self._lead()

    def _lead(self) -> None:
        """Step 3 as leader: entered holding the lock with `_syncing` claimed; returns
        without the lock once the sync is done and the callers it covered are woken."""
        lock = self._lock
        try:
            self._flush_locked()
        except BaseException:
            self._end_lead_locked()
            lock.release()
            raise
        target, f = self._written_seq, self._active
        lock.release()
        try:
            f.fdatasync()
        except OSError as exc:
            with lock:
                self._poison(exc)
                self._end_lead_locked()
            raise self._failure() from exc
        with lock:
            if target > self._synced_seq:
                self._synced_seq = target
            covered = self._wake_covered_locked()
            self._cohort = covered + 1 + len(self._waiters)
            self._lead_ended = _monotonic()
            self._end_lead_locked()

    def _end_lead_locked(self) -> None:
        self._syncing = False
        self._cond.notify_all()  # rollover and close wait for the sync in flight

    def _wake_covered_locked(self) -> int:
        """Wake the parked callers whose records are synced; return how many.

        They are woken one after another: each, once running, wakes the next
        (`_wake_next_locked`), so they do not all wake at once only to queue
        for the interpreter lock.
        """
        synced, keep, chain = self._synced_seq, [], self._chain
        for waiter in self._waiters:
            if waiter[0] <= synced:
                chain.append(waiter[1])
            else:
                keep.append(waiter)
        woken = len(self._waiters) - len(keep)
        self._waiters = keep
        if chain:
            self._wake_next_locked()
        return woken

    def _wake_next_locked(self) -> None:
        """Release the next gate of the wake-up chain. (A caller's own gate is never in
        it: a woken gate was taken off before its release, and one that timed out is
        removed by its caller.)"""
        if self._chain:
            self._chain.popleft().release()

    def _wake_all_locked(self) -> None:
        for _, gate in self._waiters:
            gate.release()
        self._waiters = []
        while self._chain:
            self._chain.popleft().release()

    def sync(self) -> None:
        """Make every record appended so far durable."""
        with self._lock:
            self.check_usable()
            last = self._next_seq - 1
        self.sync_through(last)

    def _sync_loop(self) -> None:
        """Step 4: the background fsync of `batch` mode."""
        while not self._stop.wait(self.sync_interval):
            with self._lock:
                dirty = self._written_seq > self._synced_seq and self._failed is None
                last = self._written_seq
            if dirty:
                try:
                    self.sync_through(last)
                except (WriterFailedError, ClosedError):
                    return

    def _rollover_locked(self) -> None:
        while self._syncing:  # R1: never close a file another thread is syncing
            self._cond.wait()
        self.check_usable()
        self._flush_locked()
        seal_seq = self._next_seq
        try:
            seal = self._encoder.encode(seal_seq, TYPE_SEAL, b"", FLAG_FIRST)  # R2
            self._active.pwrite(seal, self._end)
            self._cut_zeros_locked(self._end + len(seal))  # a sealed segment ends at its SEAL
            self._active.fsync()
        except OSError as exc:
            self._poison(exc)
            raise self._failure() from exc
        self._next_seq = self._written_seq = self._synced_seq = seal_seq
        self._next_seq += 1
        self._wake_covered_locked()
        old = self._segments[-1]
        old.sealed, old.last_seq = True, seal_seq
        old.size = self._end + RECORD_HEADER_SIZE
        self._map = None
        self._active.close()
        try:
            self._create_segment(seal_seq + 1)  # R3, R4
            new = self._segments[-1]
            self._active = self.fs.open(self._seg_path(new.base))
            self._encoder = self._template.with_salt(self._read_salt(new.base))
        except OSError as exc:
            self._poison(exc)
            raise self._failure() from exc
        self._end = self._allocated = SEGMENT_HEADER_SIZE
        if self._on_rollover is not None:
            self._on_rollover()

    # --------------------------------------------------------------- compaction

    def roll(self) -> None:
        """Seal the active segment now (if it holds records) and start a new one."""
        with self._lock:
            self.check_usable()
            if self._end > SEGMENT_HEADER_SIZE:
                self._rollover_locked()

    def sealed_prefix(self) -> list[tuple[int, int]]:
        """(base, SEAL sequence number) of every sealed segment, oldest first."""
        with self._lock:
            self.check_usable()
            return [(s.base, s.last_seq) for s in self._segments[:-1]]

    def compact(self, bases: list[int], drop: Callable[[Record], bool]) -> _compact.Output:
        """Step C1 for the sealed prefix `bases`: write the survivors, outside any lock."""
        return _compact.write_compacted(self.fs, self.path, bases, self._template, drop)

    def install(self, out: _compact.Output, bases: list[int]) -> None:
        """Steps C2-C4: swap the compacted segment in. A failure after the commit
        point poisons the log (reopening rolls the swap forward)."""
        with self._lock:
            self.check_usable()
            if [s.base for s in self._segments[:len(bases)]] != bases or len(bases) >= len(self._segments):
                raise InvalidArgument("the compacted segments are no longer the sealed prefix")
            try:
                _compact.commit(self.fs, self.path, out, bases)
            except OSError as exc:
                self._poison(exc)
                raise self._failure() from exc
            for base in bases:
                reader = self._readers.pop(base, None)
                if reader is not None:
                    reader.close()
                self._salts.pop(base, None)
                self._digests.pop(base, None)
            self._segments[:len(bases)] = [_Segment(out.base, out.size, True, out.seal_seq)]
            self._ahead = None  # it may hold bytes of a replaced segment

    def discard(self, out: _compact.Output) -> None:
        """Remove an uncommitted compaction file."""
        if self.fs.exists(out.tmp_path):
            self.fs.unlink(out.tmp_path)

    # ------------------------------------------------------------------ reading

    def read(self, segment: int, offset: int, size: int | None = None) -> Record:
        """Read back and verify the record that `Appended` placed at (`segment`, `offset`).

        With the record's `size` (from `Appended.sizes`) it reads the record alone
        or not at all: reads that walk forward through a segment (a consumer
        leasing jobs in the order they were enqueued) read READ_AHEAD bytes at a
        time and keep them, and a record that lies in the bytes kept is checked
        from them. (A record that does not check out is read again, header first,
        to say what is wrong with it.)
        """
        if size is None:
            return self._read_alone(segment, offset)
        if self._failed is not None or self._closed:
            self.check_usable()
        ahead = self._ahead
        if ahead is None or ahead[0] != segment or not ahead[1] <= offset <= ahead[1] + len(ahead[2]) - size:
            span, start, salt = self._read_ahead(segment, offset, size)
        else:
            _, start, span, salt = ahead
        return self._checked(span, start, salt, segment, offset, size)

    def _read_ahead(self, segment: int, offset: int, size: int) -> tuple[bytes | None, int, int]:
        """The span that `read` checks the record at `offset` from (bytes, their offset,
        the segment's salt), kept for the next read: READ_AHEAD bytes (as many as are
        written) if the span kept before starts at an earlier place of the same
        segment, else the record alone. No bytes if the record is not written yet.
        A span longer than READ_AHEAD (a large record) is not kept, only its place."""
        last = self._ahead
        forward = last is not None and last[0] == segment and last[1] < offset
        with self._lock:
            self.check_usable()
            end = offset + max(size, READ_AHEAD) if forward else offset + size
            if segment == self._segments[-1].base:
                end = max(offset + size, min(end, self._end - self._pending_size))
            span, salt = self._span_locked(segment, offset, end)
            if span is not None:
                self._ahead = (segment, offset, span if len(span) <= READ_AHEAD else b"", salt)
        return span, offset, salt

    def read_many(self, segment: int, places: Sequence[tuple[int, int]]) -> list[Record]:
        """`read` for (offset, size) places of one segment, with one pread when they lie
        close together (at most READ_SPAN bytes from first to last) and are written."""
        if len(places) == 1:
            return [self.read(segment, *places[0])]
        start = min(offset for offset, _ in places)
        end = max(offset + size for offset, size in places)
        with self._lock:
            self.check_usable()
            span, salt = self._span_locked(segment, start, end) if end - start <= READ_SPAN else (None, 0)
        return [self._checked(span, start, salt, segment, offset, size) for offset, size in places]

    def _span_locked(self, segment: int, start: int, end: int) -> tuple[bytes | None, int]:
        """Bytes `start`..`end` of `segment` and the segment's salt; no bytes (None) if
        they are not all written yet. Under the lock, so that rollover cannot close the
        active file, which serves its mapped stretch from the map."""
        if segment != self._segments[-1].base:
            return self._reader(segment).pread(end - start, start), self._read_salt(segment)
        if end > self._end - self._pending_size:
            return None, self._encoder.salt64
        if self._map is not None:
            return self._map[start:end], self._encoder.salt64
        return self._active.pread(end - start, start), self._encoder.salt64

    def _checked(self, span: bytes | None, start: int, salt: int, segment: int, offset: int, size: int) -> Record:
        """The record of `size` bytes at `offset` of `segment`, verified from `span` (bytes
        read from `start`); when there is no span or it does not check out, `_read_alone`
        reads it again and finds out what is wrong, with the path in the message."""
        try:
            rec = None if span is None else read_record(span, offset - start, salt, None, start)
        except CorruptionError:
            rec = None
        if rec is None or rec.size != size:
            return self._read_alone(segment, offset)
        return rec

    def _read_alone(self, segment: int, offset: int) -> Record:
        """The record at `offset`, its header read and verified first so that its length
        can be trusted; from the pending buffer if it is not written yet."""
        with self._lock:
            self.check_usable()
            written_end = self._end - self._pending_size
            if segment == self._segments[-1].base and offset >= written_end:
                rec = read_record(b"".join(self._pending), offset - written_end, self._encoder.salt64,
                                  None, written_end)
                if rec is not None:
                    return rec
            f, salt = self._reader(segment), self._read_salt(segment)
        path = self._seg_path(segment)
        head = f.pread(RECORD_HEADER_SIZE, offset)
        rec = read_record(head, 0, salt, path, offset)  # verifies the header, so its length
        if rec is None and len(head) == RECORD_HEADER_SIZE:
            size = int.from_bytes(head[4:8], "little")
            rec = read_record(head + f.pread(padded(size), offset + RECORD_HEADER_SIZE), 0, salt, path, offset)
        if rec is None:
            raise CorruptionError("record is truncated", path=path, offset=offset)
        return rec

    def _reader(self, base: int) -> File:
        f = self._readers.get(base)
        if f is None:
            f = self._readers[base] = self.fs.open(self._seg_path(base), readonly=True)
        return f

    # ---------------------------------------------------------------- lifecycle

    @property
    def durable_seq(self) -> int:
        """The highest sequence number known to be fsynced."""
        return self._synced_seq

    @property
    def last_seq(self) -> int:
        """The highest sequence number handed out."""
        return self._next_seq - 1

    def segments(self) -> list[tuple[int, int, bool]]:
        """(base sequence number, size in bytes, sealed) of every segment, oldest first."""
        with self._lock:
            out = [(s.base, s.size, s.sealed) for s in self._segments[:-1]]
            return out + [(self._segments[-1].base, self._end, False)]

    @property
    def failed(self) -> bool:
        return self._failed is not None

    def close(self, checkpoint: Callable[[], bytes] | None = None) -> None:
        """Write and fsync what is pending, stop the syncer, release the lock. Safe to repeat.

        With `checkpoint` (called, before the log's lock is taken, for the state blob)
        and everything durable, it also writes the checkpoint file, so that the next
        open with a `restore` callback hands it the blob and replays only what comes
        after. Failing to write it costs the next open time, not data: it is logged,
        not raised. A failed log, or one whose open skipped damage (salvage), writes
        none (and does not ask for the blob): a later normal open still reports the damage.
        """
        state = None
        if checkpoint is not None and not self._closed and self._failed is None and not self.report.lost:
            state = checkpoint()
        with self._cond:
            if self._closed:
                return
            while self._syncing:
                self._cond.wait()
            error: BaseException | None = None
            if self._failed is None:
                try:
                    self._flush_locked()
                    self._cut_zeros_locked(self._end)  # a closed log keeps no preallocated zeros
                    self._active.fdatasync()
                    self._synced_seq = self._written_seq
                except (OSError, WriterFailedError) as exc:
                    error = exc
            if state is not None and error is None and self._failed is None:
                self._write_checkpoint(state)
            self._closed = True
            self._wake_all_locked()
        self._stop.set()
        if self._syncer is not None and self._syncer is not threading.current_thread():
            self._syncer.join()
        self._release_files()
        if self._failed is not None and error is None:
            raise self._failure()
        if isinstance(error, OSError):
            raise WriterFailedError(f"final fsync of {self.path} failed: {error}") from error
        if error is not None:
            raise error

    def _write_checkpoint(self, state: bytes) -> None:
        """Write `logq.checkpoint` for the log as it is now (all of it written and fsynced):
        to a temporary file, fsynced, renamed over the old one, directory fsynced."""
        try:
            covered = []
            for s in self._segments:
                end = s.size if s.sealed else self._end
                last = s.last_seq if s.sealed else max(self._written_seq, s.base - 1)
                known = self._digests.get(s.base)
                if known is None or known[0] != end:
                    f = self._reader(s.base) if s.sealed else self._active
                    known = (end, _checkpoint.digest(f, end))
                covered.append(_checkpoint.Covered(s.base, end, last, known[1], s.sealed))
            data = _checkpoint.encode(_checkpoint.Checkpoint(self._written_seq, covered, state))
            self._replace_file(os.path.join(self.path, _checkpoint.NAME), data)
        except (OSError, CorruptionError) as exc:
            logging.getLogger("logq").warning(
                "could not write the checkpoint of %s (%s): the next open replays the whole log", self.path, exc)

    def _release_files(self) -> None:
        self._map = self._ahead = None
        for f in list(self._readers.values()) + [getattr(self, "_active", None)]:
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._readers.clear()
        if self._lockfile is not None:
            self._lockfile.release()
            self._lockfile = None

    # ------------------------------------------------------------------ failure

    def _poison(self, exc: BaseException) -> None:
        if self._failed is None:
            self._failed = exc
        self._wake_all_locked()

    def _failure(self) -> WriterFailedError:
        return WriterFailedError(
            f"an earlier write or fsync to {self.path} failed ({self._failed}); nothing since is "
            "durable: close and reopen the queue to recover from what is on disk")

    def check_usable(self) -> None:
        """Raise WriterFailedError if a write or fsync failed, ClosedError if closed."""
        if self._failed is not None:
            raise self._failure()
        if self._closed:
            raise ClosedError(f"the log at {self.path} is closed: open it again")


REPLAY_WINDOW = 8 << 20  # bytes of a segment read at a time during replay
READ_SPAN = 256 << 10  # read_many reads records this close together with one pread
READ_AHEAD = 32 << 10  # bytes `read` takes at once when reads walk forward through a segment
PREALLOCATE = 64 << 10  # bytes of zeros the active segment grows by ahead of its appends
ROOM_AFTER_RECORD = 3 * RECORD_HEADER_SIZE + ALIGN  # a one-record write leaves this much of a segment


def _record_bytes(payload: object) -> bytes:
    """A record payload given as a bytes-like object (a bytes subclass, bytearray,
    memoryview), as bytes; raise for anything else."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise InvalidArgument("records are (type 16..255, bytes) pairs")
    return bytes(payload)


def _scan_windows(f: File, size: int, path: str, deliver: Callable[[Record], None], *,
                  after_seq: int, salvage: bool, base: int, start: int) -> ScanResult:
    """`scan` a segment file a window at a time, so replay memory does not grow with segments.

    A window that ends inside a record or batch is read again from the end of
    its last complete batch; the window doubles whenever more than an eighth
    of it must be read again (large batches), so little is verified twice.
    Salvage probes past damage, so it reads the whole file at once.
    """
    header = f.pread(SEGMENT_HEADER_SIZE, 0)
    window = size if salvage else REPLAY_WINDOW
    pos, total = start, None
    while True:
        n = min(window, size - pos)
        part = scan(f.pread(n, pos), path, deliver, after_seq=after_seq, salvage=salvage,
                    base=base, window=(header, pos))
        total = part if total is None else _merge(total, part)
        if part.sealed or part.damage is not None or pos + n >= size:
            return total
        if (pos + n) - part.end > window // 8:
            window *= 2  # batches are large next to the window
        pos = part.end
        after_seq = part.last_seq or after_seq
        total.torn, total.lost = False, [r for r in total.lost if r.end < pos]


def _merge(a: ScanResult, b: ScanResult) -> ScanResult:
    """The result of two consecutive windows of one segment."""
    b.first_seq = a.first_seq if a.first_seq is not None else b.first_seq
    b.last_seq = b.last_seq if b.last_seq is not None else a.last_seq
    b.records += a.records
    b.lost = a.lost + b.lost
    return b


def _delivering(replay: ReplayCallback, base: int) -> Callable[[Record], None]:
    """`replay` bound to segment `base` (a closure: cheaper per record than a keyword partial)."""
    def deliver(rec: Record) -> None:
        replay(rec, base)
    return deliver


def _no_replay(rec: Record) -> None:
    pass


def _check_options(sync: str, sync_interval: float, segment_size: int,
                   compression: str | None, compress_threshold: int) -> None:
    if sync not in SYNC_MODES:
        raise InvalidArgument(f"sync must be one of {SYNC_MODES}, not {sync!r}")
    if not isinstance(sync_interval, (int, float)) or not 0 < sync_interval <= 60:
        raise InvalidArgument(f"sync_interval must be seconds in (0, 60], not {sync_interval!r}")
    if not isinstance(segment_size, int) or segment_size < 4096:
        raise InvalidArgument(f"segment_size must be an int of at least 4096 bytes, not {segment_size!r}")
    if compression not in (None, "zstd"):
        raise InvalidArgument(f"compression must be None or 'zstd', not {compression!r}")
    if not isinstance(compress_threshold, int) or compress_threshold < 0:
        raise InvalidArgument(f"compress_threshold must be a non-negative int, not {compress_threshold!r}")
