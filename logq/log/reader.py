"""The reader: random reads of records the writer placed, with read-ahead.

Theory of operation
-------------------
A record is read back by the place `Appended` gave it (segment base, offset,
size) and verified before it is returned. Sealed segments are read through
files opened read-only on first use and kept (`file`), with the segment's
salt from its header (`salt`). The active segment is read under the log's
lock (see `writer.py`): from the writer's map where it has one, else from
its file; records still pending (mode `always`, not yet flushed) from the
pending buffer.

Reads that walk forward through a segment (a consumer leasing jobs in the
order they were enqueued) read READ_AHEAD bytes at a time and keep them
(`_ahead`); a record in the kept bytes is checked from them with no system
call. A record that does not check out is read again, header first, to say
what is wrong with it, with file and offset.
"""

from __future__ import annotations

import os
from typing import Sequence

from ..errors import CorruptionError
from .codec import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, Record, decode_segment_header, padded, read_record
from .fs import File, FileSystem
from .segment import segment_name
from .writer import Writer

READ_SPAN = 256 << 10  # read_many reads records this close together with one pread
READ_AHEAD = 32 << 10  # bytes `read` takes at once when reads walk forward through a segment


class Reader:
    """Reads and verifies records of any segment of one log; keeps its files and salts."""

    def __init__(self, fs: FileSystem, path: str, writer: Writer) -> None:
        self._fs, self._path, self._writer = fs, path, writer
        self._lock = writer.lock
        self._files: dict[int, File] = {}  # segment base -> file opened read-only
        self._salts: dict[int, int] = {}  # segment base -> salt from its header
        self._ahead: tuple[int, int, bytes, int] | None = None  # `read`'s last span: segment, start, bytes, salt

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
        writer = self._writer
        if writer.failed is not None or writer.closed:
            writer.check_usable()
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
        last, writer = self._ahead, self._writer
        forward = last is not None and last[0] == segment and last[1] < offset
        with self._lock:
            writer.check_usable()
            end = offset + max(size, READ_AHEAD) if forward else offset + size
            if segment == writer.segments[-1].base:
                end = max(offset + size, min(end, writer.end - writer.pending_size))
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
            self._writer.check_usable()
            span, salt = self._span_locked(segment, start, end) if end - start <= READ_SPAN else (None, 0)
        return [self._checked(span, start, salt, segment, offset, size) for offset, size in places]

    def _span_locked(self, segment: int, start: int, end: int) -> tuple[bytes | None, int]:
        """Bytes `start`..`end` of `segment` and the segment's salt; no bytes (None) if
        they are not all written yet. Under the lock, so that rollover cannot close the
        active file, which serves its mapped stretch from the map."""
        writer = self._writer
        if segment != writer.segments[-1].base:
            return self.file(segment).pread(end - start, start), self.salt(segment)
        if end > writer.end - writer.pending_size:
            return None, writer.encoder.salt64
        if writer.map is not None:
            return writer.map[start:end], writer.encoder.salt64
        return writer.active.pread(end - start, start), writer.encoder.salt64

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
        writer = self._writer
        with self._lock:
            writer.check_usable()
            written_end = writer.end - writer.pending_size
            if segment == writer.segments[-1].base and offset >= written_end:
                rec = read_record(b"".join(writer.pending), offset - written_end, writer.encoder.salt64,
                                  None, written_end)
                if rec is not None:
                    return rec
            f, salt = self.file(segment), self.salt(segment)
        path = os.path.join(self._path, segment_name(segment))
        head = f.pread(RECORD_HEADER_SIZE, offset)
        rec = read_record(head, 0, salt, path, offset)  # verifies the header, so its length
        if rec is None and len(head) == RECORD_HEADER_SIZE:
            size = int.from_bytes(head[4:8], "little")
            rec = read_record(head + f.pread(padded(size), offset + RECORD_HEADER_SIZE), 0, salt, path, offset)
        if rec is None:
            raise CorruptionError("record is truncated", path=path, offset=offset)
        return rec

    # ------------------------------------------------------------ files, salts

    def file(self, base: int) -> File:
        """Segment `base` opened read-only (once; kept until `forget` or `close`)."""
        f = self._files.get(base)
        if f is None:
            f = self._files[base] = self._fs.open(os.path.join(self._path, segment_name(base)), readonly=True)
        return f

    def salt(self, base: int) -> int:
        """The salt in segment `base`'s header (read once)."""
        salt = self._salts.get(base)
        if salt is None:
            head = self.file(base).pread(SEGMENT_HEADER_SIZE, 0)
            salt = self._salts[base] = decode_segment_header(
                head, os.path.join(self._path, segment_name(base))).salt
        return salt

    def forget(self, bases: Sequence[int]) -> None:
        """Close and forget segments compaction replaced; drop kept bytes, which may be theirs.
        Under the lock."""
        for base in bases:
            f = self._files.pop(base, None)
            if f is not None:
                f.close()
            self._salts.pop(base, None)
        self._ahead = None

    def close(self) -> None:
        """Close every file opened for reading (errors ignored: the log is going away)."""
        self._ahead = None
        for f in self._files.values():
            try:
                f.close()
            except OSError:
                pass
        self._files.clear()
