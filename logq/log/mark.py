"""The durable mark: where the log was last known to be fsynced, kept in `logq.synced`.

Theory of operation
-------------------
Recovery may cut the end of the last segment only where its bytes were never
made durable (spec/format.md §7). The segments alone cannot say where that
is: a power loss may keep a later write and lose an earlier one, so damage
followed by valid records is not by itself proof of damage at rest. The mark
says it: (segment base, end offset, last sequence number) of a state the log
had fsynced. It is written after a fsync that made it true: when a log opens
(after recovery adopted the last segment), by a group-commit leader after its
fdatasync once the durable end of a segment is MARK_BYTES past the last mark
in it (or past its start). So it trails the true durable end by less than
MARK_BYTES (at a clean close the checkpoint, when one is written, says where
the log ended), and costs one small extra fsync per MARK_BYTES written.

The file holds two 48-byte slots (spec/format.md §13); a write goes to the
slot the previous one did not use, in place, and is fdatasynced. A torn or
lost write leaves the other slot, an older but still true mark. The reader
takes the valid slot with the higher counter; no valid slot is no evidence.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import xxhash

from .directory import replace_file
from .fs import DEFAULT_MODE, File, FileSystem

NAME = "logq.synced"
MAGIC = b"LOGQMARK"
SLOT = struct.Struct("<8sQQQQ")  # magic, counter, segment base, end offset, last seq; then the check
SLOT_SIZE = SLOT.size + 8  # 48
MARK_BYTES = 256 << 10  # a leader marks again once the durable end moved this far


@dataclass(frozen=True)
class Mark:
    """Everything up to byte `end` of segment `base`, and every record up to `seq`, was fsynced."""

    counter: int
    base: int
    end: int
    seq: int


def encode_slot(mark: Mark) -> bytes:
    body = SLOT.pack(MAGIC, mark.counter, mark.base, mark.end, mark.seq)
    return body + xxhash.xxh64_intdigest(body).to_bytes(8, "little")


def decode(data: bytes) -> Mark | None:
    """The newest valid slot of a mark file's bytes; None if neither slot is valid."""
    best = None
    for at in (0, SLOT_SIZE):
        slot = data[at:at + SLOT_SIZE]
        if len(slot) < SLOT_SIZE or xxhash.xxh64_intdigest(slot[:SLOT.size]) != int.from_bytes(slot[-8:], "little"):
            continue
        magic, counter, base, end, seq = SLOT.unpack_from(slot)
        if magic == MAGIC and (best is None or counter > best.counter):
            best = Mark(counter, base, end, seq)
    return best


def read(fs: FileSystem, directory: str) -> Mark | None:
    """The mark of the log in `directory`, or None when it has none (or no valid one)."""
    path = os.path.join(directory, NAME)
    if not fs.exists(path):
        return None
    f = fs.open(path, readonly=True)
    try:
        return decode(f.pread(2 * SLOT_SIZE, 0))
    finally:
        f.close()


class MarkWriter:
    """Writes the marks of one open log. Not thread-safe: its callers take turns (the
    log's open and close, and group-commit leaders, of which one runs at a time)."""

    def __init__(self, fs: FileSystem, directory: str, last: Mark | None, mode: int = DEFAULT_MODE) -> None:
        self._fs, self._path = fs, os.path.join(directory, NAME)
        self._counter = last.counter if last is not None else 0
        self.base, self.end = (last.base, last.end) if last is not None else (0, 0)
        self._file: File | None = None
        if fs.exists(self._path):
            try:
                self._file = fs.open(self._path)
                return
            except OSError:  # not a regular file (a planted link or FIFO): replaced below
                pass
        # whole or not at all: a fresh file of two invalid slots (a rename replaces a link itself)
        replace_file(fs, directory, self._path, bytes(2 * SLOT_SIZE), mode)
        self._file = fs.open(self._path)

    def write(self, base: int, end: int, seq: int) -> None:
        """Record that everything up to (`base`, `end`) and `seq` is fsynced; fdatasync it.
        Raises OSError (the caller poisons the log)."""
        if self._file is None:
            return
        self._counter += 1
        self._file.pwrite(encode_slot(Mark(self._counter, base, end, seq)), (self._counter % 2) * SLOT_SIZE)
        self._file.fdatasync()
        self.base, self.end = base, end

    def due(self, base: int, end: int) -> bool:
        """Whether a leader that made (`base`, `end`) durable should mark it: once it is
        MARK_BYTES past the last mark in that segment (or past its start)."""
        return end - (self.end if base == self.base else 0) >= MARK_BYTES

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
