"""Segment files: naming and scanning, no I/O.

Theory of operation
-------------------
A segment is named by its base sequence number (`00000000000000000001.seg`)
and holds a segment header and records with strictly increasing sequence
numbers. A sealed segment ends with a SEAL record; the next segment's base is
the SEAL's sequence number plus one. Only the last segment of a log may be
unsealed, and only it may end in a torn record.

`scan` walks the bytes of one segment and returns what it found: the records
of complete batches (a batch is a run of records whose last one lacks
FLAG_CONTINUED), where the valid bytes end, and - for damage - where and why.
It decides nothing about repair; the log does that with the rules in
spec/format.md.

`scan_file` does the same for a file a window of bytes at a time, and
`nonzero_end` finds where a tail of zeros begins a chunk at a time, so that no
file, however large or sparse, is read into memory at once: what a scan holds
is a window, one record (at most the reader's `limit`) and the open batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from ..tuples import new_tuple
from ..errors import CorruptionError
import xxhash

from .codec import (
    RECORD_HEADER, ALIGN, FIRST_USER_TYPE, FLAG_CONTINUED, FLAG_FIRST, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE,
    MAX_STORED, TYPE_SEAL, Record,
    SegmentHeader, decode_segment_header, read_record,
)

SEGMENT_SUFFIX = ".seg"
SCAN_WINDOW = 8 << 20  # bytes of a segment `scan_file` reads at a time (more for a larger record or batch)
ZERO_CHUNK = 1 << 20  # bytes `nonzero_end` reads at a time
Pread = Callable[[int, int], bytes]  # read(size, offset), as File.pread: fewer bytes only at the end
_NAME = re.compile(r"^([0-9]{20})\.seg$")
_NONZERO = re.compile(rb"[^\x00]")
_ZERO_BLOCK = bytes(1 << 16)  # runs of zeros are passed over this many bytes at a time (a memcmp each)


def is_unborn(data: bytes, path: str) -> bool:
    """A last segment whose creation did not finish: no longer than a header, and no valid one.

    The header is fsynced before any record is appended (rollover R3), so a
    longer file with a bad header is damage, not an unfinished rollover.
    """
    if len(data) > SEGMENT_HEADER_SIZE:
        return False
    try:
        decode_segment_header(data, path)
    except CorruptionError:
        return True
    return False


def segment_name(base_seq: int) -> str:
    """The file name of the segment whose first sequence number is `base_seq`."""
    return f"{base_seq:020d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """The base sequence number encoded in a segment file name, or None."""
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


@dataclass
class KnownSegment:
    """A segment as the open log knows it: where it starts, how far it is valid, whether
    it is sealed, and its last sequence number (its SEAL's, when sealed)."""

    base: int
    size: int
    sealed: bool
    last_seq: int


@dataclass
class LostRange:
    """Bytes of a segment that did not verify and were skipped or cut.

    The records lost with them are among those whose sequence numbers lie strictly
    between `after_seq` (the last record delivered before the range) and `before_seq`
    (the first delivered after it; None: none followed, the range ends the log).
    """

    path: str
    start: int
    end: int
    reason: str
    after_seq: int | None = None
    before_seq: int | None = None


@dataclass
class ScanResult:
    """What `scan` found in one segment."""

    header: SegmentHeader
    end: int  # offset just past the last complete batch
    first_seq: int | None = None
    last_seq: int | None = None
    records: int = 0
    sealed: bool = False
    damage: CorruptionError | None = None  # first damage, when not salvaging
    torn: bool = False  # the bytes after `end` are an incomplete record or batch
    lost: list[LostRange] = field(default_factory=list)
    resume: int = 0  # a window that is not the file's end: where the next one must start
    dropping: bool = False  # ... and salvage is skipping the rest of a damaged batch there
    resume_seq: int | None = None  # ... and the last sequence number seen before it, if no batch was open


def scan(buf: bytes, path: str, deliver: Callable[[Record], None], *,
         after_seq: int = 0, salvage: bool = False, base: int | None = None,
         window: tuple[bytes, int] | None = None, limit: int = MAX_STORED,
         file_size: int | None = None, dropping: bool = False) -> ScanResult:
    """Verify every record of a segment's bytes and deliver complete batches in order.

    Stops at the first damage (reported in `damage`/`torn`) unless `salvage`,
    in which case it skips to the next record that verifies and lists the
    skipped ranges in `lost`. Records must have sequence numbers above
    `after_seq` and increasing, and payloads of at most `limit` bytes (a
    larger one is `RecordTooLargeError` damage). Header damage raises
    `CorruptionError`.
    With `window=(header bytes, offset)`, `buf` holds the file's bytes from
    `offset` on rather than the whole file; reported offsets are the file's.
    When the file goes on after the window (`file_size`), the scan stops where
    a record or batch runs past the window, at a batch boundary or, while
    salvage skips a damaged batch, at the record or probe it stopped at:
    `resume` and `dropping` say where and how the next window continues
    (`scan_file` does that).
    """
    head, origin = (buf, 0) if window is None else window
    header = decode_segment_header(head, path)
    if base is not None and header.base_seq != base:
        raise CorruptionError(f"segment header says base {header.base_seq}, the file name {base}",
                              path=path, offset=24)
    start = SEGMENT_HEADER_SIZE if window is None else 0
    result = ScanResult(header=header, end=start)
    state = _Scan(buf, path, header.salt, max(after_seq, header.base_seq - 1), deliver, result)
    state.origin, state.limit, state.dropping = origin, limit, dropping
    state.stop = len(buf) if file_size is None else file_size - origin
    state.run(salvage, start)
    return _shifted(result, origin) if origin else result


def scan_file(read: Pread, size: int, path: str, deliver: Callable[[Record], None], *,
              after_seq: int = 0, salvage: bool = False, base: int | None = None,
              start: int = SEGMENT_HEADER_SIZE, limit: int = MAX_STORED) -> ScanResult:
    """`scan` the first `size` bytes of a segment file from `start`, SCAN_WINDOW bytes at a time.

    `read(n, offset)` reads the file. A window ends where a record or batch
    runs past it, and the next starts there; the window doubles whenever more
    than an eighth of it must be read again (a record or batch large next to
    it), so little is verified twice, and it never grows past what one record
    of `limit` bytes or one batch needs. Salvage skips damage a window at a
    time too. Reported offsets are the file's.
    """
    header = read(SEGMENT_HEADER_SIZE, 0)
    window, pos = SCAN_WINDOW, start
    total: ScanResult | None = None
    dropping = False
    while True:
        n = max(0, min(window, size - pos))
        part = scan(read(n, pos), path, deliver, after_seq=after_seq, salvage=salvage, base=base,
                    window=(header, pos), limit=limit, file_size=size, dropping=dropping)
        total = part if total is None else _merge(total, part)
        if part.sealed or part.damage is not None or pos + n >= size:
            return total
        if (pos + n) - part.resume > window // 8:
            window *= 2  # records or batches are large next to the window
        pos, dropping = part.resume, part.dropping
        after_seq = part.resume_seq if part.resume_seq is not None else part.last_seq or after_seq


def _merge(a: ScanResult, b: ScanResult) -> ScanResult:
    """The result of two consecutive windows of one segment (`b` began at `a.resume`)."""
    delivered_first = b.first_seq  # the first record `b` delivered
    b.first_seq = a.first_seq if a.first_seq is not None else b.first_seq
    b.last_seq = b.last_seq if b.last_seq is not None else a.last_seq
    if not b.records:  # `b` began where `a` stopped, at a batch boundary or inside a skip
        b.end = a.end
    b.records += a.records
    for r in a.lost:  # bounds of salvage's lost ranges: the records delivered around them
        if r.before_seq is None:
            r.before_seq = delivered_first
    for r in b.lost:
        if r.after_seq is None:
            r.after_seq = a.last_seq
    lost = list(a.lost)
    for r in b.lost:  # a skip that went on past a window's end is one range
        if lost and lost[-1].path == r.path and lost[-1].end == r.start:
            lost[-1].end, lost[-1].before_seq = r.end, r.before_seq
        else:
            lost.append(r)
    b.lost = lost
    return b


def nonzero_end(read: Pread, start: int, size: int) -> int:
    """The offset just past the last byte in `start`..`size` of a file that is not zero
    (`start` if they all are: preallocated space), read ZERO_CHUNK bytes at a time
    from the end."""
    end = size
    while end > start:
        at = max(start, end - ZERO_CHUNK)
        chunk = read(end - at, at)
        if chunk != (_ZERO_CHUNK if len(chunk) == ZERO_CHUNK else bytes(len(chunk))):  # a memcmp
            return at + len(chunk.rstrip(b"\0"))
        end = at
    return start


_ZERO_CHUNK = bytes(ZERO_CHUNK)


def _first_nonzero(raw: bytes, pos: int) -> int | None:
    """The index of the first byte of `raw` at or after `pos` that is not zero, or None."""
    n, block = len(raw), len(_ZERO_BLOCK)
    while pos < n:
        stop = min(pos + block, n)
        if raw[pos:stop] != (_ZERO_BLOCK if stop - pos == block else bytes(stop - pos)):
            hit = _NONZERO.search(raw, pos, stop)
            return None if hit is None else hit.start()
        pos = stop
    return None


def _shifted(r: ScanResult, origin: int) -> ScanResult:
    """`r` with every offset moved by `origin` (the scan saw a window of the file)."""
    r.end += origin
    r.resume += origin
    for lost in r.lost:
        lost.start, lost.end = lost.start + origin, lost.end + origin
    return r  # `damage` and the reasons of `lost` name file offsets already (`_Scan._in_file`)


class _Scan:
    def __init__(self, buf: bytes, path: str, salt: int, last_seq: int,
                 deliver: Callable[[Record], None], result: ScanResult) -> None:
        self.raw, self.origin = buf, 0  # origin: the file offset of buf[0]
        self.buf, self.path, self.salt, self.last_seq = memoryview(buf), path, salt, last_seq
        self.deliver, self.result = deliver, result
        self.batch: list[Record] = []
        self.batch_start = SEGMENT_HEADER_SIZE
        self.dropping = False  # salvage: skipping the rest of a damaged batch
        self.limit = MAX_STORED  # the largest payload accepted
        self.stop = len(buf)  # where the file ends, from buf[0]: past len(buf), buf is a window of it

    def run(self, salvage: bool, pos: int = SEGMENT_HEADER_SIZE) -> None:
        size = len(self.buf)
        while pos < size:
            if not self.batch and not self.dropping:
                pos = self._run_simple(pos)
                if pos >= size:
                    break
            try:
                rec = self._read(pos)
                if rec is None:
                    if self._window_ends(pos):
                        return
                    self.result.torn = True
                    self._discard_batch("incomplete record at end of segment", size)
                    return
                self._accept(rec, pos + rec.size)
            except CorruptionError as exc:
                if not salvage:
                    self._stop(exc)
                    return
                pos = self._skip(pos, exc)
                continue
            pos += rec.size
            if self.result.sealed:
                if pos < self.stop:
                    self._trailing(pos, self.stop, salvage)
                return
        if self._window_ends(pos):
            return
        if self.batch:
            self.result.torn = True
            self._discard_batch("incomplete batch at end of segment", size)

    def _window_ends(self, pos: int) -> bool:
        """If the file goes on past this window: note where the next window resumes (the
        open batch's start, or `pos`, where a record runs past the window) and say so."""
        if self.stop <= len(self.buf):
            return False
        self.result.resume = self.batch_start if self.batch else pos
        self.result.dropping = self.dropping and not self.batch
        self.result.resume_seq = None if self.batch else self.last_seq  # records dropped count too
        self.batch = []
        return True

    def _run_simple(self, pos: int) -> int:
        """The hot loop: uncompressed user records in well-formed batches, all checks.

        Returns where it stopped; anything else (SEAL, zstd, damage, the end of
        the buffer) is left to the general path, which re-reads that record and
        reports exactly what is wrong with it. A batch still open when it stops
        is handed over in `self.batch`.
        """
        buf, view, size, deliver = self.raw, self.buf, len(self.raw), self.deliver
        salt, salt32, last, most = self.salt, self.salt & 0xFFFFFFFF, self.last_seq, self.limit
        unpack, xxh32, xxh64, new = RECORD_HEADER.unpack_from, xxhash.xxh32_intdigest, xxhash.xxh64_intdigest, new_tuple
        first_flag, cont_flag, user, rec_t, origin = FLAG_FIRST, FLAG_CONTINUED, FIRST_USER_TYPE, Record, self.origin
        batch: list[tuple[int, int, int, int, int, int]] = []  # records of the open batch, payloads not copied
        done_end, done_last, count = pos, last, 0
        limit = size - RECORD_HEADER_SIZE
        while pos <= limit:
            check, n, seq, rtype, flags, reserved, raw_len, pcheck = unpack(buf, pos)
            start = pos + 32
            end = start + ((n + 7) & ~7)
            if (flags & ~(first_flag | cont_flag) or rtype < user or reserved or n != raw_len or seq <= last
                    or end > size or n > most or (flags & first_flag) == bool(batch) * first_flag
                    or check != xxh32(buf[pos + 4:start], salt32)):
                break
            # a batch keeps offsets and copies payloads when it delivers; a lone record copies now
            payload = (view if flags & cont_flag or batch else buf)[start:start + n]
            if pcheck != xxh64(payload, salt) or (end - start != n and any(buf[start + n:end])):
                break
            if flags & cont_flag or batch:
                batch.append((seq, rtype, flags, start, n, pos))
                last, pos = seq, end
                if flags & cont_flag:
                    continue
                for b_seq, b_type, b_flags, b_start, b_n, b_pos in batch:  # the batch is complete
                    deliver(new(rec_t, (b_seq, b_type, b_flags, buf[b_start:b_start + b_n], b_pos + origin,
                                        b_start - b_pos + ((b_n + 7) & ~7))))
                count += len(batch)
                batch = []
            else:
                deliver(new(rec_t, (seq, rtype, flags, payload, pos + origin, end - pos)))
                last, pos = seq, end
                count += 1
            done_end, done_last = pos, seq
        if count:
            r = self.result
            if r.first_seq is None:
                r.first_seq = unpack(buf, self.result.end)[2]
            r.last_seq, r.end, r.records = done_last, done_end, r.records + count
        if batch:  # handed to the general path, which adds the origin when it delivers
            self.batch = [new(rec_t, (b_seq, b_type, b_flags, buf[b_start:b_start + b_n], b_pos,
                                      b_start - b_pos + ((b_n + 7) & ~7)))
                          for b_seq, b_type, b_flags, b_start, b_n, b_pos in batch]
            self.batch_start = batch[0][5]
        self.last_seq = last
        return pos

    def _read(self, pos: int) -> Record | None:
        rec = read_record(self.buf, pos, self.salt, self.path, 0, self.limit)
        if rec is not None and rec.seq <= self.last_seq:
            raise CorruptionError(f"sequence number {rec.seq} does not follow {self.last_seq}",
                                  path=self.path, offset=pos)
        if rec is not None and 1 < rec.type < FIRST_USER_TYPE:
            raise CorruptionError(f"reserved record type {rec.type}", path=self.path, offset=pos)
        return rec

    def _accept(self, rec: Record, end: int) -> None:
        """Take a verified record; raise if it breaks the batch structure."""
        first = bool(rec.flags & FLAG_FIRST)
        if self.dropping and not first:  # salvage: the rest of a damaged batch
            self.last_seq = rec.seq
            lost = self.result.lost
            if lost and lost[-1].end == rec.offset:
                lost[-1].end = end
            else:  # the skip began in an earlier window: `_merge` joins the two
                self._lose(LostRange(self.path, rec.offset, end, "the rest of a damaged batch"))
            return
        self.dropping = False
        if first and self.batch:
            raise CorruptionError("a batch begins before the previous one ended", path=self.path, offset=rec.offset)
        if not first and not self.batch:
            raise CorruptionError("a record continues a batch that never began", path=self.path, offset=rec.offset)
        if rec.type == TYPE_SEAL and rec.flags & FLAG_CONTINUED:
            raise CorruptionError("a SEAL record inside a batch", path=self.path, offset=rec.offset)
        self.last_seq = rec.seq
        if rec.type == TYPE_SEAL:
            self.result.sealed = True
            self._commit_batch([rec], end)
            return
        if not self.batch:
            self.batch_start = rec.offset
        self.batch.append(rec)
        if not rec.flags & FLAG_CONTINUED:
            batch, self.batch = self.batch, []
            self._commit_batch(batch, end)

    def _commit_batch(self, batch: list[Record], end: int) -> None:
        r = self.result
        if r.first_seq is None:
            r.first_seq = batch[0].seq
        for lost in reversed(r.lost):  # salvage: the first record delivered after a lost range bounds it
            if lost.before_seq is not None:
                break
            lost.before_seq = batch[0].seq
        r.last_seq = batch[-1].seq
        r.records += len(batch)
        r.end = end
        origin = self.origin
        for rec in batch:
            if rec.type != TYPE_SEAL:
                self.deliver(rec._replace(offset=rec.offset + origin) if origin else rec)

    def _lose(self, lost: LostRange) -> None:
        """Report `lost`, bounded below by the last record delivered in this segment (if any)."""
        lost.after_seq = self.result.last_seq
        self.result.lost.append(lost)

    def _in_file(self, exc: CorruptionError) -> CorruptionError:
        """`exc` (raised with an offset in this window) with the file's offset instead."""
        if not self.origin or exc.offset is None:
            return exc
        return type(exc)(exc.reason, path=exc.path, offset=exc.offset + self.origin)

    def _stop(self, exc: CorruptionError) -> None:
        self.result.damage = exc = self._in_file(exc)
        self.result.torn = True
        self._lose(LostRange(self.path, self.result.end, self.stop, str(exc)))

    def _discard_batch(self, reason: str, size: int) -> None:
        self.batch = []
        if self.result.end < size:
            self._lose(LostRange(self.path, self.result.end, size, reason))

    def _trailing(self, pos: int, size: int, salvage: bool) -> None:
        exc = CorruptionError("bytes after the SEAL record", path=self.path, offset=pos + self.origin)
        if salvage:
            self._lose(LostRange(self.path, pos, size, str(exc)))
        else:
            self.result.damage = exc

    def _skip(self, pos: int, exc: CorruptionError) -> int:
        """Salvage: find the next aligned offset where a record verifies."""
        start, probe, size = pos, pos + ALIGN, len(self.buf)
        if self.batch:  # a damaged batch is lost whole, up to its last record
            start, self.batch = self.batch_start, []
        self.dropping = True  # resume at the next record that begins a batch
        more = self.stop > size  # the file goes on: a record cut by the window's end may verify
        raw, past = self.raw, ((size - RECORD_HEADER_SIZE) & -ALIGN) + ALIGN  # the first probe with no room
        while probe + RECORD_HEADER_SIZE <= size:
            if not raw[probe + 16]:  # type 0 is never a record: jump over zeroed (or sparse) space
                hit = _first_nonzero(raw, probe + 16)
                probe = past if hit is None else max(probe + ALIGN, (hit - 16 + ALIGN - 1) & -ALIGN)
                continue
            try:
                if self._read(probe) is not None or more:
                    break
            except CorruptionError:
                pass
            probe += ALIGN
        else:
            probe = probe if more else size
        self._lose(LostRange(self.path, start, probe, str(self._in_file(exc))))
        return probe
