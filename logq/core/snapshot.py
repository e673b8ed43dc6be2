"""The index snapshot: the job index as bytes, and back. Pure, no I/O.

Theory of operation
-------------------
A clean close stores the index in the log's checkpoint file (`log/checkpoint.py`),
so that the next open loads it instead of replaying every record. The
snapshot holds exactly what replay would rebuild: every job's fields, which
heap it waits in, the unique keys. `Index.adopt` derives the heaps, counts
and live bytes from the jobs when loading, with the methods replay uses.

Layout (little-endian; spec/semantics.md, "Index snapshot", gives it byte by byte):

    u32 version (2) | u32 task names | u64 jobs
    names: per name, u16 length + UTF-8 bytes
    rows:  per job, ROW (66 bytes), in id order
    tails: per job whose row flags say so, in the same order:
           key   (flag 1): u16 length + UTF-8 bytes, u8 holds (the job owns the key;
                                                   written for readers, derived at restore)
           extra (flag 2): f64 finished_at, u8 has backoff [+ 4 x f64],
                           last_error and result as u32 length + bytes (NONE_LEN: none;
                           for the result AT_LEN: u64 segment + u64 loc of the ACK record
                           that holds it, `Extra.result_at`)

Times that are None are stored as NaN (real times are finite).
"""

from __future__ import annotations

import math
import struct

from ..errors import CorruptionError
from .records import BACKOFF as _BACKOFF  # a job's backoff, laid out as in its ENQUEUE record
from .jobs import ACTIVE, CANCELLED, DEAD, DONE, PENDING
from .index import Entry, Extra, Index

VERSION = 2  # 2: a result may be kept as the place of its ACK record (AT_LEN)
_HEAD = struct.Struct("<IIQ")
ROW = struct.Struct("<QQQQddIIiIBB")  # id, last, segment, loc, run_at, expires, attempts,
#                                       max_attempts, priority, name index, code, flags
_U16, _U32, _F64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<d")
NONE_LEN = 0xFFFFFFFF
AT_LEN = 0xFFFFFFFE
_AT = struct.Struct("<QQ")
_KEY, _EXTRA = 1, 2
READY, DELAYED = 0, 1  # codes of a pending job: in a ready queue, or waiting for its run_at
_STATE_OF = (PENDING, PENDING, ACTIVE, DONE, DEAD, CANCELLED)  # by code
CODES = {state: code for code, state in enumerate(_STATE_OF) if code > DELAYED}
ACTIVE_CODE = CODES[ACTIVE]
_NAN = math.nan


def encode(index: Index) -> bytes:
    """The snapshot of `index`."""
    names: dict[str, int] = {}
    rows, tails = [], []
    pack, codes = ROW.pack, CODES
    for e in index.jobs.values():
        ni = names.get(e.name)
        if ni is None:
            ni = names[e.name] = len(names)
        if e.state == PENDING:
            code = READY if e.ready else DELAYED
        else:
            code = codes[e.state]
        flags = (_KEY if e.key is not None else 0) | (_EXTRA if e.extra is not None else 0)
        rows.append(pack(e.id, e.last, e.segment, e.loc, e.run_at, _NAN if e.expires is None else e.expires,
                         e.attempts, e.max_attempts, e.priority, ni, code, flags))
        if flags:
            tails.append(_tail(index, e))
    head = [_HEAD.pack(VERSION, len(names), len(index.jobs))]
    for name in names:
        raw = name.encode()
        head.append(_U16.pack(len(raw)) + raw)
    return b"".join(head + rows + tails)


def _tail(index: Index, e: Entry) -> bytes:
    out = b""
    if e.key is not None:
        raw = e.key.encode()
        out += _U16.pack(len(raw)) + raw + bytes((index.keys.get(e.key) == e.id,))
    x = e.extra
    if x is not None:
        out += _F64.pack(_NAN if x.finished_at is None else x.finished_at)
        out += (b"\x01" + _BACKOFF.pack(*x.backoff)) if x.backoff else b"\x00"
        out += _text(None if x.last_error is None else x.last_error.encode())
        out += _text(x.result) if x.result_at is None else _U32.pack(AT_LEN) + _AT.pack(*x.result_at)
    return out


def _text(raw: bytes | None) -> bytes:
    return _U32.pack(NONE_LEN) if raw is None else _U32.pack(len(raw)) + raw


def restore(index: Index, blob: bytes | memoryview) -> None:
    """Fill the empty `index` from a snapshot; on a malformed one raise CorruptionError
    and leave the index empty (it is filled only once everything has been read)."""
    if index.jobs:
        raise ValueError("restore needs an empty index")
    try:
        jobs, delayed = _decode(blob)
    except (struct.error, UnicodeDecodeError, IndexError, KeyError, ValueError) as exc:
        raise CorruptionError(f"malformed index snapshot: {exc}") from None
    index.adopt(jobs, delayed)


def _decode(blob: bytes | memoryview) -> tuple[dict[int, Entry], set[int]]:
    """The jobs (their slots not set yet) and the pending jobs that wait for run_at. The
    `holds` byte of a key is read past: which job owns a key follows from the live jobs
    (`Index.adopt`), as in replay, whatever an older logq wrote there."""
    version, n_names, n_jobs = _HEAD.unpack_from(blob, 0)
    if version != VERSION:
        raise ValueError(f"snapshot version {version}, this logq reads {VERSION}")
    pos = _HEAD.size
    names = []
    for _ in range(n_names):
        (n,) = _U16.unpack_from(blob, pos)
        names.append(str(blob[pos + 2:pos + 2 + n], "utf-8"))
        pos += 2 + n
    rows_end = pos + n_jobs * ROW.size
    if rows_end > len(blob):
        raise ValueError("the job rows overrun the snapshot")
    jobs: dict[int, Entry] = {}
    delayed: set[int] = set()
    tailed: list[tuple[Entry, int]] = []
    states = _STATE_OF
    bases: dict[int, int] = {}  # one int object per segment base, as replay shares them
    for (id, last, segment, loc, run_at, expires, attempts, max_attempts, priority, ni, code,
         flags) in ROW.iter_unpack(memoryview(blob)[pos:rows_end]):
        e = jobs[id] = Entry(id, names[ni], priority, run_at, max_attempts, None,
                             bases.setdefault(segment, segment), loc, states[code], attempts)
        if last != id:  # (else `last` is the id object itself, as after replay: no int of its own)
            e.last = last
        if code == DELAYED:
            delayed.add(id)
        elif code == ACTIVE_CODE:
            e.expires = expires
        if flags:
            tailed.append((e, flags))
    if len(jobs) != n_jobs:
        raise ValueError("a job id appears twice")
    pos = rows_end
    for e, flags in tailed:
        if flags & _KEY:
            (n,) = _U16.unpack_from(blob, pos)
            e.key = str(blob[pos + 2:pos + 2 + n], "utf-8")
            if pos + 2 + n >= len(blob):  # (the holds byte after it is not read: see above)
                raise ValueError("a key overruns the snapshot")
            pos += 3 + n
        if flags & _EXTRA:
            x = e.extra = Extra()
            (finished,) = _F64.unpack_from(blob, pos)
            x.finished_at = None if finished != finished else finished
            pos += 9
            if blob[pos - 1]:
                x.backoff = _BACKOFF.unpack_from(blob, pos)
                pos += _BACKOFF.size
            raw, pos = _read_text(blob, pos)
            x.last_error = None if raw is None else str(raw, "utf-8")
            if _U32.unpack_from(blob, pos)[0] == AT_LEN:
                x.result_at = _AT.unpack_from(blob, pos + 4)
                pos += 4 + _AT.size
            else:
                x.result, pos = _read_text(blob, pos)
    if pos != len(blob):
        raise ValueError(f"{len(blob) - pos} bytes left over after the last job")
    return jobs, delayed


def _read_text(blob: bytes | memoryview, pos: int) -> tuple[bytes | None, int]:
    (n,) = _U32.unpack_from(blob, pos)
    if n == NONE_LEN:
        return None, pos + 4
    if pos + 4 + n > len(blob):
        raise ValueError("a text overruns the snapshot")
    return bytes(blob[pos + 4:pos + 4 + n]), pos + 4 + n
