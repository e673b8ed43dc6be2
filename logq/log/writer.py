"""The writer: frames batches into the active segment, preallocates it, rolls over.

Theory of operation
-------------------
The writer owns the tail of the log: the list of segments, the active
segment's file (and its map), the encoder with the segment's salt, the end
offset, the pending buffer and the sequence counters. Steps 1 and 2 of the
append protocol (spec in `log.py`) happen here:
  1. Under the lock, assign sequence numbers and encode the batch into the
     pending buffer; if it would overflow the active segment, roll over first.
  2. Modes `batch` and `none`: write the pending buffer to the file before
     returning, so the records survive a crash of the process. Writes go at
     the log's end over zeros the file already has: the active segment grows
     PREALLOCATE bytes of zeros at a time, so an append changes no file size
     and fdatasync has only data to flush.
Mode `always` leaves its records pending for the group commit
(`group_commit.py`), which flushes them with `flush_locked` and fsyncs.

Rollover protocol:
  R1. wait until no sync is in flight; write the pending buffer;
  R2. append a SEAL record, cut the zeros after it, fsync the segment (it is
      now sealed);
  R3. create the next segment, named by the SEAL's sequence number + 1, write
      its header and fsync it;
  R4. fsync the directory so the new name is durable.
A crash between R2 and R4 leaves a sealed last segment, or a next segment
with a missing or torn header; recovery creates or recreates it.

A failed write or fsync poisons the log (`poison`): the error is kept, every
waiting and later call raises `WriterFailedError`, and nothing is retried.

The log's lock
--------------
`Writer.lock` is the one lock of an open log; the writer creates it and the
group commit, the reader and the `Log` facade share it. It guards every
field of the writer listed above plus `failed` and `closed`, the group
commit's waiters and counters, and the reader's caches of files and salts.
Who holds it: the write paths (steps 1-2) for their whole run; the group
commit's leader while it flushes and while it wakes callers (never across
fdatasync); the reader while it takes bytes of the active segment (so a
rollover cannot close or unmap the file under it); rollover, roll, close,
install and `segments`. Methods named `..._locked` expect it held.
"""

from __future__ import annotations

import mmap
import os
import threading
from itertools import accumulate
from typing import Callable, NamedTuple, Protocol, Sequence

from ..errors import ClosedError, InvalidArgument, WriterFailedError
from ..tuples import new_tuple as _new_tuple
from .codec import (
    ALIGN, FIRST_USER_TYPE, FLAG_CONTINUED, FLAG_FIRST, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, TYPE_SEAL,
    Encoder, encode_segment_header,
)
from .durability import stronger
from .fs import DEFAULT_MODE, File, FileSystem
from .segment import KnownSegment, segment_name

PREALLOCATE = 64 << 10  # bytes of zeros the active segment grows by ahead of its appends
ROOM_AFTER_RECORD = 3 * RECORD_HEADER_SIZE + ALIGN  # a one-record write leaves this much of a segment


class Appended(NamedTuple):
    """Where an appended batch landed: sequence numbers, segment base and offsets."""

    first_seq: int
    last_seq: int
    segment: int
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    sync: str


class SyncHooks(Protocol):
    """What the writer asks of the group commit (`GroupCommit` provides it); all under the lock."""

    def idle_locked(self) -> None:
        """Return once no sync is in flight (rollover R1, close)."""

    def sealed_locked(self, seq: int) -> None:
        """Every record up to `seq` is fsynced (a SEAL's fsync): wake the callers it covers."""

    def wake_all_locked(self) -> None:
        """The log failed or closed: wake every parked caller, to see it."""


class Writer:
    """The active segment and the sequence numbers: encodes, writes, preallocates, rolls over."""

    syncs: SyncHooks  # set by the `Log` that composes the writer with its group commit

    def __init__(self, fs: FileSystem, path: str, *, sync_mode: str, segment_size: int, template: Encoder,
                 salt_of: Callable[[int], int], on_rollover: Callable[[], None] | None,
                 mode: int = DEFAULT_MODE) -> None:
        self.fs, self.path, self.mode = fs, path, mode  # `mode`: of the segments it creates
        self.sync_mode, self.segment_size = sync_mode, segment_size
        self.lock = threading.Lock()
        self.segments: list[KnownSegment] = []  # oldest first; the last one is active
        self.failed: BaseException | None = None
        self.closed = False
        self.pending: list[bytes] = []  # encoded, not yet written (a batch being written, `always` mode)
        self.pending_size = 0
        self.shared = False  # other processes may have the log open: cut no file they may map
        self.map: mmap.mmap | None = None  # the active file's first `allocated` bytes (`_map_zeros`)
        self._template = template
        self._salt_of = salt_of
        self._on_rollover = on_rollover

    def start(self, segments: list[KnownSegment], last_seq: int, *, shared: bool = False) -> None:
        """Take over the `segments` recovery found (their last sequence number `last_seq`)
        and open the active one: the last, or a new one when there is none or it is sealed.
        `shared`: other processes have the log open (spec/format.md §14): it changes no file."""
        self.segments = segments
        self.shared = shared
        if not self.segments or self.segments[-1].sealed:  # the first segment is always 1 (§7 rule 0)
            self._create_segment(last_seq + 1 if self.segments else 1)
        active = self.segments[-1]
        self.active: File = self.fs.open(self._seg_path(active.base))
        self.encoder = self._template.with_salt(self._salt_of(active.base))
        self.next_seq = max(last_seq + 1, active.base)
        self.written_seq = self.next_seq - 1
        self.end = active.size
        self.allocated = self.active.size()  # the file's size: `end` plus preallocated zeros
        if shared:
            self._map_zeros()
        elif self.allocated > self.end:
            most = self._next_step(self.end)
            if self.allocated > most:  # more zeros than preallocation leaves (a sparse or foreign file)
                self.active.truncate(most)  # so none are allocated, mapped or kept past the next step
                self.allocated = most
            self._map_zeros()

    # ---------------------------------------------------------------- appending

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
        with self.lock:
            if self.failed is not None or self.closed:
                self.check_usable()
            return self._write_batch_locked(items, mode)

    def write_one(self, rtype: int, payload: bytes, *, sync: str | None = None) -> Appended:
        """`write` of a single record, the common case, kept short: the caller (`write`,
        the queue) passes a valid `rtype` (16..255) and `payload` (bytes). Unless a
        rollover is due or the record waits behind others (batch and none modes), it
        is written at once (batch, none) or queued for the next sync (always)."""
        mode = self.sync_mode if sync is None else stronger(self.sync_mode, sync)
        with self.lock:
            if self.failed is not None or self.closed:
                self.check_usable()
            end = self.end
            if (end + len(payload) <= self.segment_size - ROOM_AFTER_RECORD
                    and (mode == "always" or not self.pending)):
                seq = self.next_seq
                chunk = self.encoder.encode(seq, rtype, payload, FLAG_FIRST)
                stop = end + len(chunk)
                if mode == "always":
                    self.pending.append(chunk)
                    self.pending_size += stop - end
                else:
                    self._put_locked(chunk, end)
                    self.written_seq = seq
                self.end, self.next_seq = stop, seq + 1
                return _new_tuple(Appended, (seq, seq, self.segments[-1].base, (end,), (stop - end,), mode))
            return self._write_batch_locked(((rtype, payload),), mode)

    def _write_batch_locked(self, items: Sequence[tuple[int, bytes]], mode: str) -> Appended:
        chunks, offsets, sizes, first = self._encode_batch(items)
        self.pending.extend(chunks)
        size = sum(sizes)
        self.pending_size += size
        self.end += size
        if mode != "always":
            self.flush_locked()
        return Appended(first, self.next_seq - 1, self.segments[-1].base, offsets, sizes, mode)

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
        if self.end > SEGMENT_HEADER_SIZE and self.end + sum(map(len, payloads)) + n * (RECORD_HEADER_SIZE + 8) \
                + 64 > self.segment_size:
            self.rollover_locked()
        flags = [FLAG_CONTINUED] * n  # every record but the last says another follows
        flags[0] |= FLAG_FIRST
        flags[-1] &= ~FLAG_CONTINUED
        seq = self.next_seq
        chunks = list(map(self.encoder.encode, range(seq, seq + n), types, payloads, flags))
        sizes = tuple(map(len, chunks))
        offsets = tuple(accumulate(sizes[:-1], initial=self.end))
        self.next_seq = seq + n
        return chunks, offsets, sizes, seq

    def flush_locked(self) -> None:
        """Write everything pending to the active segment (one write)."""
        if not self.pending:
            return
        data = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)
        self._put_locked(data, self.end - self.pending_size)
        self.pending.clear()
        self.pending_size = 0
        self.written_seq = self.next_seq - 1

    def _put_locked(self, data: bytes, offset: int) -> None:
        """Write `data` at `offset` of the active segment, over preallocated zeros: a
        store into the map where it reaches, else a pwrite; a failure poisons the log."""
        stop = offset + len(data)
        if stop <= self.allocated and self.map is not None:
            self.map[offset:stop] = data
            return
        try:
            if offset + len(data) > self.allocated:
                self._preallocate(offset + len(data))
            self.active.pwrite(data, offset)
        except OSError as exc:
            self.poison(exc)
            raise self.failure() from exc

    # ------------------------------------------------------------ preallocation

    def cut_zeros_locked(self, end: int) -> None:
        """Truncate the active segment's preallocated zeros after `end` (a SEAL, a close).
        (A SEAL's cut is safe with others sharing the log: none reads or writes past it.)
        The file's own size is asked too: another process that died after growing
        it, before publishing anything, leaves zeros this writer's `allocated` does not know."""
        if self.allocated > end or self.active.size() > end:
            self.map = None
            self.active.truncate(end)
            self.allocated = end

    def _preallocate(self, needed: int) -> None:
        """Grow the active segment with zeros to at least `needed` bytes: to the next
        multiple of PREALLOCATE, at most the segment size. Appends then overwrite
        bytes the file already has, and fdatasync need not commit a new file size."""
        new = max(needed, self._next_step(self.allocated))
        self.active.pwrite(bytes(new - self.allocated), self.allocated)
        self.allocated = new
        self._map_zeros()

    def _next_step(self, size: int) -> int:
        """Where preallocation grows a file of `size` bytes to: the next multiple of
        PREALLOCATE, at most the segment size (and never below `size`)."""
        return max(size, min((size // PREALLOCATE + 1) * PREALLOCATE, self.segment_size))

    def _map_zeros(self) -> None:
        """Let writes into the preallocated zeros skip the system call (`File.map_through`),
        unless every write is fsynced at once: in `always` mode stores through a map
        measured a quarter slower than pwrite (each fsync write-protects the pages again)."""
        if self.sync_mode != "always":
            self.map = self.active.map_through(self.allocated)

    # ----------------------------------------------------------------- rollover

    def roll(self) -> None:
        """Seal the active segment now (if it holds records) and start a new one."""
        with self.lock:
            self.check_usable()
            if self.end > SEGMENT_HEADER_SIZE:
                self.rollover_locked()

    def rollover_locked(self) -> None:
        """Rollover steps R1-R4 (see the top of this module)."""
        self.syncs.idle_locked()  # R1: never close a file another thread is syncing
        self.check_usable()
        self.flush_locked()
        seal_seq = self.next_seq
        try:
            seal = self.encoder.encode(seal_seq, TYPE_SEAL, b"", FLAG_FIRST)  # R2
            self.active.pwrite(seal, self.end)
            self.cut_zeros_locked(self.end + len(seal))  # a sealed segment ends at its SEAL
            self.active.fsync()
        except OSError as exc:
            self.poison(exc)
            raise self.failure() from exc
        self.written_seq, self.next_seq = seal_seq, seal_seq + 1
        self.syncs.sealed_locked(seal_seq)
        old = self.segments[-1]
        old.sealed, old.last_seq = True, seal_seq
        old.size = self.end + RECORD_HEADER_SIZE
        self.map = None
        self.active.close()
        try:
            self._create_segment(seal_seq + 1)  # R3, R4
            new = self.segments[-1]
            self.active = self.fs.open(self._seg_path(new.base))
            self.encoder = self._template.with_salt(self._salt_of(new.base))
        except OSError as exc:
            self.poison(exc)
            raise self.failure() from exc
        self.end = self.allocated = SEGMENT_HEADER_SIZE
        if self._on_rollover is not None:
            self._on_rollover()

    def switch_active_locked(self, base: int) -> None:
        """Make segment `base`, which another process started, the active one (catching up)."""
        self.map = None
        self.active.close()
        self.active = self.fs.open(self._seg_path(base))
        self.encoder = self._template.with_salt(self._salt_of(base))
        self.segments.append(KnownSegment(base, SEGMENT_HEADER_SIZE, False, base - 1))
        self.end, self.allocated = SEGMENT_HEADER_SIZE, self.active.size()
        self._map_zeros()

    def resync_locked(self) -> None:
        """Take the active file's size as it is now, grown or cut by another process (one that
        died mid-rollover may have cut it at a SEAL since set aside): no map reaches past it."""
        size = self.active.size()
        if size != self.allocated:
            self.map = None
            self.active.truncate(size)  # (the same size: only drops a map of the old one)
            self.allocated = size
            self._map_zeros()

    def grown_locked(self) -> None:
        """Another process may have preallocated the active segment further: map that too.
        Or cut it short (a writer that died after its SEAL cut the zeros, before publishing):
        then let go of the map, whose stores past the end of the file would be lost (or a
        SIGBUS), and write no further than the file goes without growing it first."""
        size = self.active.size()
        if size < self.allocated:
            self.map = None
            self.active.close()  # (ends the file's map: `File.map_through`)
            self.active = self.fs.open(self._seg_path(self.segments[-1].base))
            self.allocated = size
            self._map_zeros()
        elif size > self.allocated:
            self.allocated = size
            self._map_zeros()

    def _create_segment(self, base: int) -> None:
        """Rollover steps R3 and R4: a new segment with its header, durable with its name."""
        salt = int.from_bytes(os.urandom(8), "little")
        path = self._seg_path(base)
        if self.shared and self.fs.exists(path):  # never published: a dead writer's
            self.fs.unlink(path)
        f = self.fs.open(path, create=True, exclusive=True, mode=self.mode)
        try:
            f.write(encode_segment_header(salt, base))
            f.fsync()
        finally:
            f.close()
        self.fs.fsync_dir(self.path)
        self.segments.append(KnownSegment(base, SEGMENT_HEADER_SIZE, False, base - 1))

    def _seg_path(self, base: int) -> str:
        return os.path.join(self.path, segment_name(base))

    # ---------------------------------------------------------- closing, failure

    def finish_locked(self) -> None:
        """For a clean close: write what is pending, cut the preallocated zeros (a
        closed log keeps none) and fdatasync. Raises OSError or WriterFailedError."""
        self.flush_locked()
        self.cut_zeros_locked(self.end)
        self.active.fdatasync()

    def close_file(self) -> None:
        """Drop the map and close the active file (errors ignored: the log is going away)."""
        self.map = None
        f = getattr(self, "active", None)
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def poison(self, exc: BaseException) -> None:
        """Keep the first failure for good and wake every parked caller to see it."""
        if self.failed is None:
            self.failed = exc
        self.syncs.wake_all_locked()

    def failure(self) -> WriterFailedError:
        return WriterFailedError(
            f"an earlier write or fsync to {self.path} failed ({self.failed}); nothing since is "
            "durable: close and reopen the queue to recover from what is on disk")

    def check_usable(self) -> None:
        """Raise WriterFailedError if a write or fsync failed, ClosedError if closed."""
        if self.failed is not None:
            raise self.failure()
        if self.closed:
            raise ClosedError(f"the log at {self.path} is closed: open it again")


def _record_bytes(payload: object) -> bytes:
    """A record payload given as a bytes-like object (a bytes subclass, bytearray,
    memoryview), as bytes; raise for anything else."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise InvalidArgument("records are (type 16..255, bytes) pairs")
    return bytes(payload)
