"""The record codec: round trips, every prefix, trailing bytes, damage, random bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from logq import ChecksumError, CorruptionError, LogqError, UnsupportedVersionError
from logq.log.codec import (
    FLAG_CONTINUED, FLAG_ZSTD, SEGMENT_HEADER_SIZE, Encoder, decode_segment_header,
    encode_segment_header, read_record,
)

SALT = 0x1234_5678_9ABC_DEF0
payloads = st.binary(max_size=2000) | st.text(max_size=600).map(str.encode)
rtypes = st.integers(16, 255)
salts = st.integers(0, 2**64 - 1)


@given(payloads, rtypes, st.integers(1, 2**63), st.booleans(), st.booleans(), salts)
def test_round_trip_gives_the_same_record(payload, rtype, seq, continued, zstd, salt):
    enc = Encoder(salt, compression="zstd" if zstd else None, threshold=16)
    flags = FLAG_CONTINUED if continued else 0
    data = enc.encode(seq, rtype, payload, flags)
    rec = read_record(data, 0, salt)
    assert rec is not None
    assert (rec.seq, rec.type, rec.payload, rec.size) == (seq, rtype, payload, len(data))
    assert rec.flags & FLAG_CONTINUED == flags
    assert len(data) % 8 == 0
    assert enc.encode(seq, rtype, payload, flags) == data  # re-encoding is byte-identical


def test_compressible_payload_is_stored_compressed_and_tiny_one_is_not():
    enc = Encoder(SALT, compression="zstd", threshold=64)
    big = enc.encode(1, 16, b"a" * 4000)
    tiny = enc.encode(2, 16, b"a" * 63)
    assert len(big) < 200 and read_record(big, 0, SALT).flags & FLAG_ZSTD
    assert not read_record(tiny, 0, SALT).flags & FLAG_ZSTD


def test_incompressible_payload_is_stored_raw():
    import os
    data = os.urandom(2000)
    rec = read_record(Encoder(SALT, compression="zstd", threshold=1).encode(1, 16, data), 0, SALT)
    assert rec.payload == data and not rec.flags & FLAG_ZSTD


@given(payloads, st.booleans())
def test_every_strict_prefix_needs_more(payload, zstd):
    data = Encoder(SALT, compression="zstd" if zstd else None, threshold=16).encode(9, 20, payload)
    for cut in range(len(data)):
        assert read_record(data[:cut], 0, SALT) is None


@given(payloads, st.binary(min_size=1, max_size=64))
def test_trailing_bytes_do_not_change_the_record(payload, trailing):
    data = Encoder(SALT).encode(3, 16, payload)
    rec = read_record(data + trailing, 0, SALT)
    assert rec is not None and rec.payload == payload and rec.size == len(data)


@settings(max_examples=300)
@given(payloads, st.data())
def test_any_flipped_bit_is_detected(payload, data):
    raw = bytearray(Encoder(SALT, compression="zstd", threshold=16).encode(5, 17, payload))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CorruptionError):
        read_record(bytes(raw), 0, SALT)


def test_record_from_another_segment_does_not_verify():
    data = Encoder(SALT).encode(1, 16, b"payload")
    with pytest.raises(ChecksumError):
        read_record(data, 0, SALT + 1)


def test_zeroed_bytes_never_decode_as_a_record():
    with pytest.raises(ChecksumError):
        read_record(bytes(4096), 0, SALT)
    with pytest.raises(ChecksumError):
        read_record(bytes(4096), 0, 0)


@settings(max_examples=500)
@given(st.binary(max_size=300), salts)
def test_random_bytes_decode_or_raise_only_logq_errors(blob, salt):
    try:
        read_record(blob, 0, salt)
    except LogqError:
        pass


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=200), st.data())
def test_forged_header_with_valid_check_is_still_bounded(payload, data):
    """A header whose check matches but whose fields lie still fails as a logq error."""
    import struct
    import xxhash
    n = data.draw(st.integers(0, 2**32 - 1))
    flags = data.draw(st.integers(0, 255))
    body = struct.pack("<IQBBHIQ", n, 1, 16, flags, 0, data.draw(st.integers(0, 2**32 - 1)),
                       xxhash.xxh64_intdigest(payload, SALT))
    blob = struct.pack("<I", xxhash.xxh32_intdigest(body, SALT & 0xFFFFFFFF)) + body + payload
    try:
        read_record(blob, 0, SALT)
    except LogqError:
        pass


def test_segment_header_round_trip():
    head = encode_segment_header(SALT, 42)
    assert len(head) == SEGMENT_HEADER_SIZE
    h = decode_segment_header(head)
    assert (h.salt, h.base_seq, h.version) == (SALT, 42, 1)


@pytest.mark.parametrize("index", range(SEGMENT_HEADER_SIZE))
def test_segment_header_damage_is_detected(index):
    head = bytearray(encode_segment_header(SALT, 42))
    head[index] ^= 0x10
    with pytest.raises(CorruptionError):
        decode_segment_header(bytes(head), "x.seg")


def test_newer_segment_version_is_refused_by_name():
    import struct
    import xxhash
    body = struct.pack("<8sHHIQQ", b"\x89LOGQSG\n", 2, 40, 0, SALT, 1)
    head = body + struct.pack("<Q", xxhash.xxh64_intdigest(body, 0))
    with pytest.raises(UnsupportedVersionError, match="upgrade logq"):
        decode_segment_header(head, "x.seg")


# ------------------------------------------------------------------ job records

from logq.core.records import Enqueue, decode_enqueue, encode_enqueue, enqueue_head  # noqa: E402


@given(st.floats(0, 2e9), st.floats(0, 1e6), st.integers(-(2**31), 2**31 - 1), st.integers(1, 2**32 - 1),
       st.text(min_size=1, max_size=40), st.binary(max_size=300))
def test_plain_enqueue_head_plus_payload_is_the_enqueue_record(at, delay, prio, attempts, name, payload):
    try:
        raw = name.encode()
    except UnicodeEncodeError:  # lone surrogates: the queue refuses such names before encoding
        return
    job = Enqueue(at, at + delay, prio, attempts, name, None, None, payload)
    assert enqueue_head(at, at + delay, prio, attempts, raw) + payload == encode_enqueue(job)
    assert decode_enqueue(encode_enqueue(job)) == job


def test_a_record_read_from_bytes_taken_inside_a_segment_has_its_segment_offset():
    first, second = Encoder(SALT).encode(1, 16, b"one"), Encoder(SALT).encode(2, 16, b"two")
    rec = read_record(first + second, len(first), SALT, None, 4096)
    assert rec is not None and (rec.payload, rec.offset) == (b"two", 4096 + len(first))
    damaged = first + bytes([second[0] ^ 1]) + second[1:]
    with pytest.raises(ChecksumError) as info:
        read_record(damaged, len(first), SALT, "seg", 4096)
    assert (info.value.path, info.value.offset) == ("seg", 4096 + len(first))
