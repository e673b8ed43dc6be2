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
    TYPE_SEAL, Record,
    SegmentHeader, decode_segment_header, read_record,
)

SEGMENT_SUFFIX = ".seg"
_NAME = re.compile(r"^([0-9]{20})\.seg$")


def is_unwritten(tail: bytes) -> bool:
    """True if `tail`, the bytes after the last complete batch of the last segment,
    is all zeros: space the writer preallocated, not a torn write."""
    return tail.count(0) == len(tail)


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


def scan(buf: bytes, path: str, deliver: Callable[[Record], None], *,
         after_seq: int = 0, salvage: bool = False, base: int | None = None,
         window: tuple[bytes, int] | None = None) -> ScanResult:
    """Verify every record of a segment's bytes and deliver complete batches in order.

    Stops at the first damage (reported in `damage`/`torn`) unless `salvage`,
    in which case it skips to the next record that verifies and lists the
    skipped ranges in `lost`. Records must have sequence numbers above
    `after_seq` and increasing. Header damage raises `CorruptionError`.
    With `window=(header bytes, offset)`, `buf` holds the file's bytes from
    `offset` on rather than the whole file; reported offsets are the file's.
    """
    head, origin = (buf, 0) if window is None else window
    header = decode_segment_header(head, path)
    if base is not None and header.base_seq != base:
        raise CorruptionError(f"segment header says base {header.base_seq}, the file name {base}",
                              path=path, offset=24)
    start = SEGMENT_HEADER_SIZE if window is None else 0
    result = ScanResult(header=header, end=start)
    state = _Scan(buf, path, header.salt, max(after_seq, header.base_seq - 1), deliver, result)
    state.origin = origin
    state.run(salvage, start)
    return _shifted(result, origin) if origin else result


def _shifted(r: ScanResult, origin: int) -> ScanResult:
    """`r` with every offset moved by `origin` (the scan saw a window of the file)."""
    r.end += origin
    for lost in r.lost:
        lost.start, lost.end = lost.start + origin, lost.end + origin
    if r.damage is not None and r.damage.offset is not None:
        r.damage = type(r.damage)(r.damage.reason, path=r.damage.path, offset=r.damage.offset + origin)
    return r


class _Scan:
    def __init__(self, buf: bytes, path: str, salt: int, last_seq: int,
                 deliver: Callable[[Record], None], result: ScanResult) -> None:
        self.raw, self.origin = buf, 0  # origin: the file offset of buf[0]
        self.buf, self.path, self.salt, self.last_seq = memoryview(buf), path, salt, last_seq
        self.deliver, self.result = deliver, result
        self.batch: list[Record] = []
        self.batch_start = SEGMENT_HEADER_SIZE
        self.dropping = False  # salvage: skipping the rest of a damaged batch

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
                if pos < size:
                    self._trailing(pos, size, salvage)
                return
        if self.batch:
            self.result.torn = True
            self._discard_batch("incomplete batch at end of segment", size)

    def _run_simple(self, pos: int) -> int:
        """The hot loop: uncompressed user records in well-formed batches, all checks.

        Returns where it stopped; anything else (SEAL, zstd, damage, the end of
        the buffer) is left to the general path, which re-reads that record and
        reports exactly what is wrong with it. A batch still open when it stops
        is handed over in `self.batch`.
        """
        buf, view, size, deliver = self.raw, self.buf, len(self.raw), self.deliver
        salt, salt32, last = self.salt, self.salt & 0xFFFFFFFF, self.last_seq
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
                    or end > size or (flags & first_flag) == bool(batch) * first_flag
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
        rec = read_record(self.buf, pos, self.salt, self.path)
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
            self.result.lost[-1].end = end
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

    def _stop(self, exc: CorruptionError) -> None:
        self.result.damage = exc
        self.result.torn = True
        self._lose(LostRange(self.path, self.result.end, len(self.buf), str(exc)))

    def _discard_batch(self, reason: str, size: int) -> None:
        self.batch = []
        if self.result.end < size:
            self._lose(LostRange(self.path, self.result.end, size, reason))

    def _trailing(self, pos: int, size: int, salvage: bool) -> None:
        exc = CorruptionError("bytes after the SEAL record", path=self.path, offset=pos)
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
        while probe + RECORD_HEADER_SIZE <= size:
            try:
                if self._read(probe) is not None:
                    break
            except CorruptionError:
                pass
            probe += ALIGN
        else:
            probe = size
        self._lose(LostRange(self.path, start, probe, str(exc)))
        return probe
