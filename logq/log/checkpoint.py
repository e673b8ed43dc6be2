"""The checkpoint file: what a clean close leaves so that the next open need not replay.

Theory of operation
-------------------
At a clean close the log writes `logq.checkpoint`: the position it reached
(per segment: base, end offset, last sequence number, sealed or not, and a
digest of the segment's bytes up to that end) and an opaque state blob (the
queue's index snapshot). Opening finds the checkpoint usable only if the
directory's first segments are exactly the ones it lists and every one of
them still hashes to its digest over the covered bytes; then the blob is
restored and only the records after the covered end are replayed. Anything
else (no file, damage, another version, a segment compacted or changed) and
the open replays the whole log as if there were no checkpoint: the log is the
truth, the checkpoint only a shortcut.

The digests make the shortcut as strict as replay: every covered byte is
still read and checked, by one XXH3-64 pass per segment instead of two checks
per record. A digest that does not match sends the open to full replay, which
names the damaged record.

Layout (little-endian; spec/format.md §11):

    8  magic b"LOGQCKPT"
    4  version (1)
    4  n, the number of covered segments
    8  the last sequence number covered
    8  L, the length of the state blob
    n x 40  per segment: u64 base, u64 end, u64 last sequence number,
            u64 digest, u8 sealed, 7 zero bytes
    L  the state blob
    8  XXH64 (seed 0) of every byte before it
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

import xxhash

from ..errors import CorruptionError
from .fs import File

NAME = "logq.checkpoint"
MAGIC = b"LOGQCKPT"
VERSION = 1
_HEAD = struct.Struct("<8sIIQQ")
_SEGMENT = struct.Struct("<QQQQB7x")
_CHECK = struct.Struct("<Q")
DIGEST_WINDOW = 8 << 20  # bytes read at a time when hashing a segment


@dataclass(frozen=True)
class Covered:
    """One segment as the checkpoint saw it: its bytes [0, end) hash to `digest`."""

    base: int
    end: int
    last_seq: int
    digest: int
    sealed: bool


@dataclass(frozen=True)
class Checkpoint:
    last_seq: int
    segments: list[Covered]
    state: bytes | memoryview


def encode(cp: Checkpoint) -> bytes:
    parts: list[bytes | memoryview] = [_HEAD.pack(MAGIC, VERSION, len(cp.segments), cp.last_seq, len(cp.state))]
    parts += [_SEGMENT.pack(s.base, s.end, s.last_seq, s.digest, s.sealed) for s in cp.segments]
    parts.append(cp.state)
    body = b"".join(parts)
    return body + _CHECK.pack(xxhash.xxh64_intdigest(body))


def decode(data: bytes) -> Checkpoint:
    """The checkpoint in `data`; CorruptionError saying why if it is not a sound one."""
    if len(data) < _HEAD.size + _CHECK.size:
        raise CorruptionError(f"checkpoint is {len(data)} bytes, too short")
    (check,) = _CHECK.unpack_from(data, len(data) - _CHECK.size)
    if check != xxhash.xxh64_intdigest(memoryview(data)[:-_CHECK.size]):
        raise CorruptionError("checkpoint checksum does not match")
    magic, version, n, last_seq, state_len = _HEAD.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION:
        raise CorruptionError(f"checkpoint magic {magic!r} version {version}: not one this logq writes")
    at = _HEAD.size + n * _SEGMENT.size
    if n == 0 or at + state_len + _CHECK.size != len(data):
        raise CorruptionError("checkpoint lengths do not add up")
    segments = [Covered(base, end, last, dig, bool(sealed))
                for base, end, last, dig, sealed in _SEGMENT.iter_unpack(memoryview(data)[_HEAD.size:at])]
    return Checkpoint(last_seq, segments, memoryview(data)[at:at + state_len])  # not copied: it can be large


def load(read: Callable[[int, int], bytes], size: int) -> Checkpoint:
    """The checkpoint in a file of `size` bytes, `read(n, offset)` from it; CorruptionError
    saying why if it is not a sound one. Its lengths and its check are verified a
    DIGEST_WINDOW at a time before the file is read whole, so a file that is not a
    checkpoint (a large or sparse one in its place) costs no more memory than that."""
    if size < _HEAD.size + _CHECK.size:
        raise CorruptionError(f"checkpoint is {size} bytes, too short")
    magic, version, n, _, state_len = _HEAD.unpack(read(_HEAD.size, 0))
    if magic != MAGIC or version != VERSION:
        raise CorruptionError(f"checkpoint magic {magic!r} version {version}: not one this logq writes")
    if n == 0 or _HEAD.size + n * _SEGMENT.size + state_len + _CHECK.size != size:
        raise CorruptionError("checkpoint lengths do not add up")
    h, pos, end = xxhash.xxh64(), 0, size - _CHECK.size
    while pos < end:
        chunk = read(min(DIGEST_WINDOW, end - pos), pos)
        if not chunk:
            raise CorruptionError("checkpoint is shorter than its size")
        h.update(chunk)
        pos += len(chunk)
    if _CHECK.pack(h.intdigest()) != read(_CHECK.size, end):
        raise CorruptionError("checkpoint checksum does not match")
    return decode(read(size, 0))


def verify(cp: Checkpoint, bases: list[int], open_segment: Callable[[int], File]) -> None:
    """Raise CorruptionError unless the directory's segments (`bases`, in order) still
    hold every byte `cp` covers (format §11, rules 2-4); `open_segment(base)` opens one."""
    if [c.base for c in cp.segments] != bases[:len(cp.segments)]:
        raise CorruptionError("it lists other segments than the directory holds (compacted since?)")
    for i, c in enumerate(cp.segments):
        if not c.sealed and i < len(cp.segments) - 1:
            raise CorruptionError(f"segment {c.base} is covered but not sealed")
        f = open_segment(c.base)
        try:
            size = f.size()
            if size < c.end or (c.sealed and size != c.end):
                raise CorruptionError(f"segment {c.base} is {size} bytes, the checkpoint saw {c.end}")
            if digest(f, c.end) != c.digest:
                raise CorruptionError(f"segment {c.base} does not hash to the checkpoint's digest")
        finally:
            f.close()


def digest(f: File, end: int) -> int:
    """XXH3-64 (seed 0) of the first `end` bytes of `f`; CorruptionError if it has fewer."""
    h = xxhash.xxh3_64()
    pos = 0
    while pos < end:
        chunk = f.pread(min(DIGEST_WINDOW, end - pos), pos)
        if not chunk:
            raise CorruptionError(f"segment ends at {pos}, before the {end} bytes the checkpoint covers")
        h.update(chunk)
        pos += len(chunk)
    return h.intdigest()
