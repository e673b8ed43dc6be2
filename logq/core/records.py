"""Job records: the payload layouts of the queue's record types. Pure, no I/O.

Theory of operation
-------------------
Every change of a job is one record in the log. A record carries the outcome
that the live call decided (the retry time it drew, whether the job is now
dead), so applying it needs no clock and no randomness: replay reproduces the
live state exactly. The job's id is the sequence number of its ENQUEUE record.

All integers are little-endian; times are float64 seconds since the epoch;
text is UTF-8. spec/semantics.md lists the layouts.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, NamedTuple

from ..errors import CorruptionError
from ..tuples import new_tuple as _new_tuple

ENQUEUE, LEASE, ACK, FAIL, RELEASE, EXTEND, CANCEL, RETRY, EXPIRE = range(16, 25)
TYPE_NAMES = {ENQUEUE: "enqueue", LEASE: "lease", ACK: "ack", FAIL: "fail", RELEASE: "release",
              EXTEND: "extend", CANCEL: "cancel", RETRY: "retry", EXPIRE: "expire"}

_ENQ = ENQUEUE_HEAD = struct.Struct("<ddiIBHH")  # enqueued_at, run_at, priority, max_attempts, opts, name len, key len
BACKOFF = _BACKOFF = struct.Struct("<dddd")  # base, factor, max, jitter
_OPT_KEY, _OPT_BACKOFF = 1, 2
_OPTS_AT = 24  # offset of the opts byte in _ENQ
_JOB_AT = struct.Struct("<Qd")  # job id, time (ack/cancel: when; extend: expires; release/retry: run_at)
_LEASE = struct.Struct("<QIdd")  # job id, attempt, leased_at, expires_at
_LEASE_OWNED = struct.Struct("<QIddQ")  # ... then the owner id, when the lease names one (directory version 2)
_OUTCOME = struct.Struct("<QdBd")  # job id, at, dead?, run_at (fail, expire)


class Enqueue(NamedTuple):
    enqueued_at: float
    run_at: float
    priority: int
    max_attempts: int
    name: str
    key: str | None
    backoff: tuple[float, float, float, float] | None
    payload: bytes


class Lease(NamedTuple):
    """`owner`: the id of the opener that took the lease (its owner file, spec/format.md
    §14.8); 0 when the record names none (written before owners, or by a backend without)."""

    job_id: int
    attempt: int
    leased_at: float
    expires_at: float
    owner: int = 0


class JobAt(NamedTuple):
    """ACK (at, result), CANCEL (at), EXTEND (expires), RELEASE and RETRY (run_at)."""

    job_id: int
    at: float
    data: bytes


class Outcome(NamedTuple):
    """FAIL and EXPIRE: the job is dead, or pending again at `run_at`."""

    job_id: int
    at: float
    dead: bool
    run_at: float
    error: str


RECORD_FIELDS = _ENQ.size + 2 * 0xFFFF + _BACKOFF.size  # the most bytes a record holds besides a payload


def max_record_size(max_payload: int, max_result: int = 0) -> int:
    """The largest record payload a queue with `max_payload` and `max_result` writes, and
    so the bound its log is given (at most 2^28, the format's): the larger of a job
    payload and a result, with the most the other fields of a record take (an
    ENQUEUE's name and key of up to 65535 bytes each, a backoff). An error text
    must fit the same bound."""
    return min(max(max_payload, max_result) + RECORD_FIELDS, 1 << 28)


def encode_enqueue(e: Enqueue) -> bytes:
    key = e.key.encode() if e.key is not None else None
    return enqueue_head(e.enqueued_at, e.run_at, e.priority, e.max_attempts, e.name.encode(), key,
                        e.backoff) + e.payload


def enqueue_head(enqueued_at: float, run_at: float, priority: int, max_attempts: int, name: bytes,
                 key: bytes | None = None, backoff: tuple[float, float, float, float] | None = None) -> bytes:
    """The bytes of an ENQUEUE payload up to the job payload (name and key UTF-8 encoded):
    `encode_enqueue` is this followed by the payload."""
    opts = (_OPT_KEY if key is not None else 0) | (_OPT_BACKOFF if backoff else 0)
    head = _ENQ.pack(enqueued_at, run_at, priority, max_attempts, opts, len(name), len(key or b"")) + name
    if key is not None:
        head += key
    return (head + _BACKOFF.pack(*backoff)) if backoff else head


def enqueue_meta(buf: bytes | memoryview) -> tuple[float, float, int, int, str, str | None, int]:
    """The fixed fields of an ENQUEUE payload and the offset where the job payload starts."""
    try:
        enq_at, run_at, prio, max_att, opts, nlen, klen = _ENQ.unpack_from(buf, 0)
        pos = _ENQ.size
        name = bytes(buf[pos:pos + nlen]).decode()
        key = bytes(buf[pos + nlen:pos + nlen + klen]).decode() if opts & _OPT_KEY else None
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptionError(f"malformed enqueue record: {exc}") from None
    pos += nlen + klen + (_BACKOFF.size if opts & _OPT_BACKOFF else 0)
    if pos > len(buf):
        raise CorruptionError("malformed enqueue record: fields overrun the payload")
    return enq_at, run_at, prio, max_att, name, key, pos


def enqueue_time_and_payload(buf: bytes) -> tuple[float, bytes]:
    """What a lease needs of an ENQUEUE payload that the index already knows the rest
    of: the enqueue time and the job payload (without decoding name and key)."""
    try:
        enq_at, _, _, _, opts, nlen, klen = _ENQ.unpack_from(buf, 0)
    except struct.error as exc:
        raise CorruptionError(f"malformed enqueue record: {exc}") from None
    pos = _ENQ.size + nlen + klen + (_BACKOFF.size if opts & _OPT_BACKOFF else 0)
    if pos > len(buf):
        raise CorruptionError("malformed enqueue record: fields overrun the payload")
    return enq_at, buf[pos:]


def decode_enqueue(buf: bytes | memoryview) -> Enqueue:
    enq_at, run_at, prio, max_att, name, key, pos = enqueue_meta(buf)
    return Enqueue(enq_at, run_at, prio, max_att, name, key, enqueue_backoff(buf, pos), bytes(buf[pos:]))


def enqueue_backoff(buf: bytes | memoryview, payload_at: int | None = None) -> tuple[float, float, float, float] | None:
    """The per-job backoff of an ENQUEUE payload, if it has one."""
    if not buf[_OPTS_AT] & _OPT_BACKOFF:
        return None
    if payload_at is None:
        payload_at = enqueue_meta(buf)[-1]
    return _BACKOFF.unpack_from(buf, payload_at - _BACKOFF.size)


def encode_lease(rec: Lease) -> bytes:
    if rec.owner:
        return _LEASE_OWNED.pack(*rec)
    return _LEASE.pack(rec.job_id, rec.attempt, rec.leased_at, rec.expires_at)


def decode_lease(buf: bytes) -> Lease:
    if len(buf) == _LEASE_OWNED.size:
        return _new_tuple(Lease, _LEASE_OWNED.unpack(buf))
    return _new_tuple(Lease, _unpack(_LEASE, buf) + (0,))


def encode_job_at(rec: JobAt) -> bytes:
    return _JOB_AT.pack(rec.job_id, rec.at) + rec.data


def decode_job_at(buf: bytes) -> JobAt:
    job_id, at = _unpack(_JOB_AT, buf, exact=False)
    return _new_tuple(JobAt, (job_id, at, bytes(buf[_JOB_AT.size:])))


def encode_outcome(rec: Outcome) -> bytes:
    return _OUTCOME.pack(rec.job_id, rec.at, rec.dead, rec.run_at) + rec.error.encode()


def decode_outcome(buf: bytes) -> Outcome:
    job_id, at, dead, run_at = _unpack(_OUTCOME, buf, exact=False)
    try:
        error = bytes(buf[_OUTCOME.size:]).decode()
    except UnicodeDecodeError:
        raise CorruptionError("malformed outcome record: error text is not UTF-8") from None
    return Outcome(job_id, at, bool(dead), run_at, error)


JobRecord = Lease | JobAt | Outcome  # the decoded form of every record type but ENQUEUE
CODECS: dict[int, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
    LEASE: (encode_lease, decode_lease),
    ACK: (encode_job_at, decode_job_at),
    FAIL: (encode_outcome, decode_outcome),
    EXPIRE: (encode_outcome, decode_outcome),
    RELEASE: (encode_job_at, decode_job_at),
    EXTEND: (encode_job_at, decode_job_at),
    CANCEL: (encode_job_at, decode_job_at),
    RETRY: (encode_job_at, decode_job_at),
}
"""Per record type (all but ENQUEUE): its encoder and its decoder, exact inverses."""
ENCODERS = {rtype: encode for rtype, (encode, _) in CODECS.items()}


def _unpack(layout: struct.Struct, buf: bytes, exact: bool = True) -> tuple:  # type: ignore[type-arg]
    if len(buf) < layout.size or (exact and len(buf) != layout.size):
        raise CorruptionError(f"malformed job record: {len(buf)} bytes where {layout.size} expected")
    return layout.unpack_from(buf, 0)


def job_id_of(rtype: int, buf: bytes) -> int | None:
    """The job a record is about (its own seq for ENQUEUE is not known here: None)."""
    if rtype == ENQUEUE or len(buf) < 8:
        return None
    return int.from_bytes(buf[:8], "little")
