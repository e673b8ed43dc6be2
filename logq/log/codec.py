"""Record codec: bytes in, bytes out, no I/O.

Theory of operation
-------------------
A segment file is a segment header followed by records. Every record is a
32-byte header and a stored payload padded with zeros to a multiple of 8, so
every record starts 8-byte aligned. The header opens with a 32-bit check over
the rest of the header, so the stored length is verified before it is trusted;
a 64-bit check over the stored payload is verified before the payload is
decompressed. Both checks are seeded by the segment's random salt, so bytes
left from another file (or a preallocated one) never validate.

Decoding fails one way: `read_record` returns a record, returns None when the
buffer ends inside the record ("need more"), or raises `CorruptionError`.

What a record can cost is bounded before it is paid: a raw (decompressed)
length above MAX_STORED is damage like a stored one, a reader may pass a lower
`limit` (a queue passes its max_payload plus the record's fields), and a zstd
frame is never inflated past the raw length its header promised.
spec/format.md is the authority for every width and rule used here.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import xxhash
import zstandard

from ..tuples import new_tuple
from ..errors import ChecksumError, CorruptionError, InvalidArgument, RecordTooLargeError, UnsupportedVersionError

FORMAT_VERSION = 1
SEGMENT_MAGIC = b"\x89LOGQSG\n"
SEGMENT_HEADER = struct.Struct("<8sHHIQQQ")  # magic, version, header size, reserved, salt, base seq, check
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size  # 40
RECORD_HEADER_SIZE = 32
_CHECK = struct.Struct("<I")
_BODY = struct.Struct("<IQBBHIQ")  # stored len, seq, type, flags, reserved, raw len, payload check
RECORD_HEADER = struct.Struct("<IIQBBHIQ")  # check, then the body: unpacked whole by readers

MAX_STORED = 1 << 28  # 256 MiB: a larger stored or raw length is rejected even with a good check
ALIGN = 8

# Record types. 0 is reserved so that zeroed bytes never decode as a record.
TYPE_SEAL = 1
FIRST_USER_TYPE = 16  # types 1..15 belong to the log, 16..255 to the layer above

# Flags.
FLAG_ZSTD = 0x01  # stored payload is a zstd frame of raw_len bytes
FLAG_CONTINUED = 0x02  # more records of the same atomic batch follow
FLAG_FIRST = 0x04  # the first record of an atomic batch (every batch has exactly one)
KNOWN_FLAGS = FLAG_ZSTD | FLAG_CONTINUED | FLAG_FIRST

_xxh32 = xxhash.xxh32_intdigest
_xxh64 = xxhash.xxh64_intdigest
_ZEROS = bytes(ALIGN)


class Record(NamedTuple):
    """One decoded record. `payload` is the raw (decompressed) payload."""

    seq: int
    type: int
    flags: int
    payload: bytes
    offset: int  # where the record header starts in its segment
    size: int  # bytes the record occupies, padding included


class SegmentHeader(NamedTuple):
    version: int
    salt: int
    base_seq: int


def padded(n: int) -> int:
    """Round `n` up to the record alignment."""
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def encode_segment_header(salt: int, base_seq: int) -> bytes:
    """The 40-byte header that opens a segment file."""
    body = SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, SEGMENT_HEADER_SIZE, 0, salt, base_seq, 0)[:32]
    return body + struct.pack("<Q", _xxh64(body, 0))


def decode_segment_header(buf: bytes, path: str | None = None) -> SegmentHeader:
    """Parse and verify a segment header; raise `CorruptionError` if it is not one."""
    if len(buf) < SEGMENT_HEADER_SIZE:
        raise CorruptionError("segment header is truncated", path=path, offset=0)
    magic, version, hsize, reserved, salt, base, check = SEGMENT_HEADER.unpack_from(buf, 0)
    if magic != SEGMENT_MAGIC:
        raise CorruptionError("not a logq segment (bad magic)", path=path, offset=0)
    if check != _xxh64(bytes(buf[:32]), 0):
        raise ChecksumError("segment header check mismatch", path=path, offset=0)
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"segment has format version {version}; this logq reads up to {FORMAT_VERSION}: upgrade logq",
            path=path, offset=0)
    if version < 1 or hsize != SEGMENT_HEADER_SIZE or reserved:
        raise CorruptionError("segment header has invalid fields", path=path, offset=0)
    return SegmentHeader(version, salt, base)


class Encoder:
    """Encodes records for one segment (its salt) with an optional zstd policy.

    Not thread-safe: the log calls it under its append lock.
    """

    __slots__ = ("salt64", "salt32", "_zstd", "_threshold", "limit")

    def __init__(self, salt: int, *, compression: str | None = None, threshold: int = 512,
                 limit: int = MAX_STORED) -> None:
        self.salt64 = salt
        self.salt32 = salt & 0xFFFFFFFF
        self._zstd = zstandard.ZstdCompressor(level=3) if compression == "zstd" else None
        self._threshold = threshold
        self.limit = check_limit(limit)  # the largest payload it encodes: what its readers accept

    def with_salt(self, salt: int) -> "Encoder":
        """A copy of this encoder for another segment."""
        other = Encoder.__new__(Encoder)
        other.salt64, other.salt32 = salt, salt & 0xFFFFFFFF
        other._zstd, other._threshold, other.limit = self._zstd, self._threshold, self.limit
        return other

    def encode(self, seq: int, rtype: int, payload: bytes, flags: int = 0) -> bytes:
        """The bytes of one record, padding included. A payload over `limit` bytes
        raises `InvalidArgument`: a reader with the same limit would refuse it."""
        raw_len = n = len(payload)
        if raw_len > self.limit:
            raise InvalidArgument(f"a record payload of {raw_len} bytes exceeds the log's {self.limit}-byte "
                                  "limit: make it smaller (or open the queue with a larger max_payload or max_result)")
        stored = payload
        if self._zstd is not None and raw_len >= self._threshold:
            packed = self._zstd.compress(payload)
            if len(packed) < raw_len:
                stored, flags, n = packed, flags | FLAG_ZSTD, len(packed)
        body = _BODY.pack(n, seq, rtype, flags, 0, raw_len, _xxh64(stored, self.salt64))
        return _CHECK.pack(_xxh32(body, self.salt32)) + body + stored + _ZEROS[:-n & (ALIGN - 1)]


def encode_stored(salt: int, seq: int, rtype: int, flags: int, stored: bytes, raw_len: int) -> bytes:
    """The bytes of a record whose stored payload is `stored` as given (a zstd frame when
    `flags` has FLAG_ZSTD) and whose header claims `raw_len`, padding included: what
    `Encoder.encode` writes, without its checks or its choice to compress. For tools
    and tests that must write records no writer of logq would, to see them refused."""
    body = _BODY.pack(len(stored), seq, rtype, flags, 0, raw_len, _xxh64(stored, salt))
    return _CHECK.pack(_xxh32(body, salt & 0xFFFFFFFF)) + body + stored + _ZEROS[:-len(stored) & (ALIGN - 1)]


def check_limit(limit: object) -> int:
    """`limit`, a bound on record payloads, if it is one (an int in 0..MAX_STORED)."""
    if type(limit) is not int or not 0 <= limit <= MAX_STORED:
        raise InvalidArgument(f"a record limit must be an int in 0..{MAX_STORED}, not {limit!r}")
    return limit


def read_record(buf: bytes | memoryview, pos: int, salt: int, path: str | None = None,
                origin: int = 0, limit: int = MAX_STORED) -> Record | None:
    """Decode the record at `pos`; None if `buf` ends inside it. `origin` is where
    `buf` starts in its segment: the record's offset, and an error's, is origin + pos.

    Raises `ChecksumError` when a check fails and `CorruptionError` for any
    other invalid content (a stored or raw length above MAX_STORED included);
    `RecordTooLargeError` for a record that verifies but whose stored or raw
    length is above `limit` (checked before its payload is read or inflated).
    Never raises anything else for any input, and never builds a payload
    larger than its raw length.
    """
    end = len(buf)
    start = pos + RECORD_HEADER_SIZE
    if start > end:
        return None
    check, n, seq, rtype, flags, reserved, raw_len, pcheck = RECORD_HEADER.unpack_from(buf, pos)
    if check != _xxh32(buf[pos + 4:start], salt & 0xFFFFFFFF):
        raise ChecksumError("record header check mismatch", path=path, offset=origin + pos)
    if n > MAX_STORED or raw_len > MAX_STORED or rtype == 0 or reserved or flags & ~KNOWN_FLAGS:
        raise CorruptionError("record header has invalid fields", path=path, offset=origin + pos)
    if n > limit or raw_len > limit:
        raise too_large(max(n, raw_len), limit, path, origin + pos)
    stop = start + n
    size = RECORD_HEADER_SIZE + ((n + ALIGN - 1) & -ALIGN)
    if pos + size > end:
        return None
    stored = buf[start:stop]
    if pcheck != _xxh64(stored, salt):
        raise ChecksumError("record payload check mismatch", path=path, offset=origin + pos)
    if n & (ALIGN - 1) and buf[stop:pos + size] != _ZEROS[:pos + size - stop]:
        raise CorruptionError("record padding is not zero", path=path, offset=origin + pos)
    if flags & FLAG_ZSTD or raw_len != n or type(stored) is not bytes:
        stored = _unpack(bytes(stored), flags, raw_len, path, origin + pos)
    return new_tuple(Record, (seq, rtype, flags, stored, origin + pos, size))


def too_large(size: int, limit: int, path: str | None, offset: int) -> RecordTooLargeError:
    """The error for a record of `size` bytes that a reader with `limit` refuses."""
    return RecordTooLargeError(
        f"a record of {size} bytes is above this log's limit of {limit} bytes: open the queue with "
        "the max_payload and max_result it was written with, or with salvage=True to skip the record", path=path, offset=offset)


def _unpack(stored: bytes, flags: int, raw_len: int, path: str | None, pos: int) -> bytes:
    if not flags & FLAG_ZSTD:
        if raw_len != len(stored):
            raise CorruptionError("record raw length differs from stored length", path=path, offset=pos)
        return stored
    try:
        payload = inflate(stored, raw_len)
    except zstandard.ZstdError as exc:
        raise CorruptionError(f"record payload does not decompress: {exc}", path=path, offset=pos) from None
    if len(payload) != raw_len:
        raise CorruptionError("decompressed payload has the wrong length", path=path, offset=pos)
    return payload


def inflate(frame: bytes, raw_len: int) -> bytes:
    """The content of the zstd `frame` if it is `raw_len` bytes; otherwise its first
    `raw_len` + 1 bytes at most (or ZstdError), so the caller sees the mismatch
    without the frame ever costing more than `raw_len` + 1 bytes of output.

    A frame that declares its content size (logq's writers always do) is
    inflated only when that size is `raw_len`: the declared size is what
    zstandard allocates. One that does not is read through a stream."""
    declared = zstandard.frame_content_size(frame)  # ZstdError if there is no frame header
    if declared == raw_len:
        return zstandard.ZstdDecompressor().decompress(frame)
    if declared != -1:
        raise zstandard.ZstdError(f"the frame declares {declared} bytes, the record {raw_len}")
    with zstandard.ZstdDecompressor().stream_reader(frame) as reader:
        return reader.read(raw_len + 1)
