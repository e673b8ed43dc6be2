"""`python -m logq inspect`: a read-only look at a queue directory or at one segment file.

Theory of operation
-------------------
Inspecting takes no lock and opens nothing for writing. It lists the segment
files and lets `_verify.verify` read and check each one by the rules recovery
uses; the verifier hands every record of a complete batch to a sink. The sink
replays the records through a fresh `Index` with the same `apply` the queue
uses, so every record is reported with the state of its job after it. A record
the state machine refuses (its job's ENQUEUE was lost to damage, say) is
reported with the error instead of stopping the run. A torn tail of the last
segment is described, never cut.

Gathering functions build plain dicts (the JSON output is exactly these dicts)
and the `format_*` functions of `_inspect_text` turn them into lines of text. Files that are not
segments (`*.torn`, `*.tmp`, foreign files) are ignored, so a directory that a
queue is writing, or one in the middle of a compaction, can be inspected.
"""

from __future__ import annotations

import base64
import bisect
import codecs
import errno
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable, TextIO

from ..errors import CorruptionError, InvalidArgument, LogqError, NotALogqDirectory, UnsupportedVersionError
from ..log import checkpoint as _checkpoint
from ..log import control as _control
from ..log.fs import OsFileSystem, open_readonly
from .inspect_text import (
    Info, RecordTable, format_check, format_history, format_summary, problem_lines, to_json,
)
from ..core.records import (
    ACK, CANCEL, ENQUEUE, EXPIRE, EXTEND, FAIL, LEASE, RELEASE, RETRY, TYPE_NAMES, decode_enqueue,
    decode_job_at, decode_lease, decode_outcome, job_id_of,
)
from ..core.jobs import PENDING
from ..log.directory import DIRECTORY_VERSION, LOCK_NAME, META_NAME, REGISTRY_NAME
from ..log.recovery import TORN_SUFFIX
from ..log.codec import (
    ALIGN, FLAG_CONTINUED, FLAG_ZSTD, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC, TYPE_SEAL, Record, decode_segment_header, padded, read_record,
)
from ..log.segment import SCAN_WINDOW, Pread, ScanResult, parse_segment_name
from ..core.index import Entry, Index
from ..log.verify import Problem, Verification, reader, scan_path, segment_files, verify

OnRecord = Callable[[Record, int, int | None, str | None], None]  # record, segment, job id, error
TYPE_CODES = {name: code for code, name in TYPE_NAMES.items()}
PREVIEW = 40  # characters of payload shown without --payload
MAX_REPLAY_ERRORS = 10  # listed in full; the rest are counted


# ------------------------------------------------------------------- the target

@dataclass(frozen=True)
class Target:
    """What the command was pointed at: a queue directory or a single segment file."""

    path: str
    single: bool
    files: list[tuple[int, str]]  # (base seq, path), oldest first
    version: int | None  # from logq.meta; None for a single file or a directory without one

    @property
    def bases(self) -> list[int]:
        return [b for b, _ in self.files]


def open_target(path: str) -> Target:
    """Check that `path` is a queue directory or a segment file this logq can read.

    Raises `FileNotFoundError`, `NotALogqDirectory` or `UnsupportedVersionError`.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)
    if not os.path.isdir(path):
        return Target(path, True, [(_segment_base(path, single=True), path)], None)
    files = segment_files(path)
    version = _meta_version(path, bool(files))
    for _, seg in files:
        _segment_base(seg, single=False)
    return Target(path, False, files, version)


def _meta_version(path: str, has_segments: bool) -> int | None:
    meta = os.path.join(path, META_NAME)
    if not os.path.exists(meta):
        if has_segments:
            return None
        raise NotALogqDirectory(f"{path} is not a logq queue directory (no {META_NAME}, no segment files)")
    with open_readonly(meta) as f:
        words = f.read(64).split()
    if len(words) != 2 or words[0] != b"logq" or not words[1].isdigit():
        raise NotALogqDirectory(f"{meta} is not a logq marker file: is this the right directory?")
    if int(words[1]) > DIRECTORY_VERSION:
        raise UnsupportedVersionError(f"{path} was written by format version {int(words[1])}; this logq "
                                      f"reads up to {DIRECTORY_VERSION}: upgrade logq", path=meta)
    return int(words[1])


def _segment_base(path: str, single: bool) -> int:
    """A segment's base; refuses another format (single file) or a newer version.

    Any other damage to the header is left for the verifier to report.
    """
    with open_readonly(path) as f:
        head = f.read(SEGMENT_HEADER_SIZE)
    if single and not head.startswith(SEGMENT_MAGIC):
        raise NotALogqDirectory(f"{path} is not a logq segment file: pass a queue directory or a .seg file")
    try:
        return decode_segment_header(head, path).base_seq
    except UnsupportedVersionError:
        raise
    except CorruptionError:
        return parse_segment_name(os.path.basename(path)) or 1


# --------------------------------------------------------------------- reading

class _Sink(list[Record]):
    """Stands in for the record list of `verify` and replays each record as it arrives.

    It stores no record; `on_record` sees each one right after it is applied.
    """

    def __init__(self, bases: list[int], on_record: OnRecord | None = None) -> None:
        super().__init__()
        self.bases, self.on_record = bases, on_record
        self.job_index = Index()
        self.payload_bytes: dict[int, list[int]] = {}  # segment base -> [raw, stored]
        self.errors: list[Info] = []  # the first MAX_REPLAY_ERRORS
        self.error_count = 0

    def append(self, rec: Record) -> None:
        base = self.bases[max(0, bisect.bisect_right(self.bases, rec.seq) - 1)]
        sizes = self.payload_bytes.setdefault(base, [0, 0])
        sizes[0] += len(rec.payload)
        sizes[1] += rec.size - RECORD_HEADER_SIZE if rec.flags & FLAG_ZSTD else len(rec.payload)
        job_id = rec.seq if rec.type == ENQUEUE else job_id_of(rec.type, rec.payload)
        error = None
        try:
            self.job_index.apply(rec.type, rec.seq, rec.payload, base, rec.offset, rec.size)
        except LogqError as exc:
            error = str(exc)
            self.error_count += 1
            if len(self.errors) < MAX_REPLAY_ERRORS:
                self.errors.append({"seq": rec.seq, "job": job_id, "message": error})
        if self.on_record is not None:
            self.on_record(rec, base, job_id, error)


class _Enough(Exception):
    """Raised from `on_record` to stop reading early (--limit or --to reached)."""


def _read(target: Target, sink: _Sink) -> Verification:
    if not target.single:
        return verify(target.path, sink)
    out = Verification()
    try:
        result, size, written = scan_path(target.path, sink.append)
    except CorruptionError as exc:
        out.segments.append((target.path, None))
        out.problems.append(Problem(target.path, exc.offset or 0, str(exc)))
        return out
    out.segments.append((target.path, result))
    if written > result.end:
        out.tail = (target.path, result.end, size)
    return out


def _tail(v: Verification) -> Info | None:
    """The bytes after the last complete batch of the last segment, and what they are."""
    if v.tail is None:
        return None
    path, end, size = v.tail
    result = v.segments[-1][1]
    reason = result.lost[-1].reason if result is not None and result.lost else "unverified bytes"
    try:  # read again: the verifier keeps no bytes (and the file may have changed since)
        with open_readonly(path) as f:
            salt = decode_segment_header(f.read(SEGMENT_HEADER_SIZE), path).salt
            valid_after = _valid_after_damage(reader(f), end, size, salt)
    except (OSError, CorruptionError):
        valid_after = False
    return {"file": path, "offset": end, "bytes": size - end, "reason": reason,
            "valid_records_after_damage": valid_after,
            "saved_to_on_next_open": f"{path}.{end}{TORN_SUFFIX}"}


def _valid_after_damage(read: Pread, start: int, size: int, salt: int) -> bool:
    """True if a record verifies somewhere past the first bad spot of bytes `start`..`size`
    of a segment (read a window at a time with `read`).

    An unfinished write leaves nothing valid after it; damage inside the
    active segment (a flipped bit) does, and opening would cut those records.
    """
    pos = start
    while pos < size:  # the records that still verify, up to the first bad spot
        try:
            head = read(RECORD_HEADER_SIZE, pos)
            rec = read_record(head, 0, salt)
            if rec is None and len(head) == RECORD_HEADER_SIZE:  # the header verified: read the record
                rec = read_record(read(RECORD_HEADER_SIZE + padded(int.from_bytes(head[4:8], "little")), pos),
                                  0, salt)
        except CorruptionError:
            break
        if rec is None:
            return False
        pos += rec.size
    window = SCAN_WINDOW
    for at in range(pos + ALIGN, size - RECORD_HEADER_SIZE + 1, window):
        buf = read(window + RECORD_HEADER_SIZE, at)  # a header that starts in this window is whole
        for probe in range(0, min(window, len(buf) - RECORD_HEADER_SIZE + 1), ALIGN):
            if buf[probe + 16]:  # a record's type byte is never zero: skip zeroed space fast
                try:
                    read_record(buf[probe:probe + RECORD_HEADER_SIZE], 0, salt)
                except CorruptionError:
                    continue
                try:  # the header verifies: so must the whole record
                    n = int.from_bytes(buf[probe + 4:probe + 8], "little")
                    if read_record(read(RECORD_HEADER_SIZE + padded(n), at + probe), 0, salt) is not None:
                        return True
                except CorruptionError:
                    pass
    return False


def _findings(v: Verification, sink: _Sink) -> Info:
    """Problems (file, offset, message), replay errors and the tail: what the verdict rests on."""
    tail = _tail(v)
    problems = [{"file": p.path, "offset": p.offset, "message": _short(p)} for p in v.problems]
    if tail is not None and tail["valid_records_after_damage"]:
        problems.append({"file": tail["file"], "offset": tail["offset"],
                         "message": f"{tail['reason']}, and valid records follow: opening would cut them"})
    replay = {"count": sink.error_count, "first": sink.errors}
    return {"ok": not problems and not sink.error_count, "problems": problems,
            "replay_errors": replay, "tail": tail}


def _short(p: Problem) -> str:
    """The message without the "(path at byte N)" that is reported beside it."""
    return p.message.removesuffix(f" ({p.path} at byte {p.offset})")


# --------------------------------------------------------------------- records

@dataclass(frozen=True)
class Filter:
    """Which records `--records` prints; every bound is inclusive."""

    segment: int | None = None
    first: int | None = None
    last: int | None = None
    types: frozenset[int] | None = None
    job: int | None = None

    def match(self, rec: Record, base: int, job_id: int | None) -> bool:
        return ((self.segment is None or base == self.segment)
                and (self.first is None or rec.seq >= self.first)
                and (self.types is None or rec.type in self.types)
                and (self.job is None or job_id == self.job))


def parse_types(values: list[str] | None) -> frozenset[int] | None:
    """Record types from names or numbers, repeated or comma-separated."""
    words = [w.strip().lower() for v in values or () for w in v.split(",") if w.strip()]
    for w in words:
        if w not in TYPE_CODES and not w.isdigit():
            raise InvalidArgument(f"unknown record type {w!r}: use one of {', '.join(TYPE_CODES)}")
    return frozenset(TYPE_CODES.get(w) or int(w) for w in words) if words else None


def parse_segment(value: str | None, target: Target) -> int | None:
    """A segment given by its base sequence number or its file name."""
    if value is None:
        return None
    base = int(value) if value.isdigit() else parse_segment_name(os.path.basename(value))
    if base not in target.bases:
        raise InvalidArgument(f"no segment {value!r} in {target.path}; segments start at "
                              f"{', '.join(map(str, target.bases)) or '(none)'}")
    return base


def describe(rec: Record, base: int, job_id: int | None, error: str | None, index: Index,
             whole: bool) -> Info:
    """One record as a dict: where it lies, what it says, and its job's state after it."""
    e = index.jobs.get(job_id) if job_id is not None else None
    fields, data = _fields(rec.type, rec.payload)
    name = fields.pop("name", None)
    d: Info = {"seq": rec.seq, "type": _type_name(rec.type), "type_code": rec.type, "job": job_id,
               "name": e.name if e is not None else name, "state": e.state if e is not None else None,
               "time": None, "segment": base, "offset": rec.offset, "size": rec.size,
               "raw_size": len(rec.payload), "compressed": bool(rec.flags & FLAG_ZSTD),
               "continued": bool(rec.flags & FLAG_CONTINUED)}
    d.update(fields)
    d.update(_data(data, whole, is_error=rec.type in (FAIL, EXPIRE)))
    if error is not None:
        d["error"] = error
    return d


def _fields(rtype: int, payload: bytes) -> tuple[Info, bytes]:
    """Type-specific fields, and the data shown as payload: job payload, result or error text."""
    try:
        if rtype == ENQUEUE:
            q = decode_enqueue(payload)
            return {"name": q.name, "time": q.enqueued_at, "detail": {
                "run_at": q.run_at, "priority": q.priority, "max_attempts": q.max_attempts,
                "key": q.key}}, q.payload
        if rtype == LEASE:
            le = decode_lease(payload)
            return {"time": le.leased_at, "detail": {"attempt": le.attempt, "expires_at": le.expires_at}}, b""
        if rtype in (FAIL, EXPIRE):
            o = decode_outcome(payload)
            return {"time": o.at, "detail": {"dead": o.dead, "run_at": o.run_at}}, o.error.encode()
        if rtype in (ACK, CANCEL, RETRY, EXTEND, RELEASE):
            j = decode_job_at(payload)
            key = {EXTEND: "expires_at", RELEASE: "run_at"}.get(rtype)
            return ({"detail": {key: j.at}} if key else {"time": j.at}), j.data
    except LogqError:
        pass
    return {}, bytes(payload)


def _type_name(rtype: int) -> str:
    return "seal" if rtype == TYPE_SEAL else TYPE_NAMES.get(rtype, f"type-{rtype}")


def _data(data: bytes, whole: bool, is_error: bool = False) -> Info:
    """The record's data: a preview, or with `whole` the data itself. An error's preview is the
    whole text (control characters escaped): an error cut short would hide what went wrong."""
    if not whole:
        return {"preview": preview(data, max(len(data), PREVIEW) if is_error else PREVIEW)}
    try:
        return {"payload": data.decode(), "payload_encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"payload": base64.b64encode(data).decode("ascii"), "payload_encoding": "base64"}


def preview(data: bytes, width: int = PREVIEW) -> str:
    """A short printable rendering: text with escaped control characters if UTF-8, else hex."""
    head = data[:width * 4]
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) == len(data))
    except UnicodeDecodeError:
        return "0x" + data[:width // 2].hex() + ("..." if len(data) > width // 2 else "")
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:width])
    return shown + ("..." if len(text) > width or len(head) < len(data) else "")


def dump(target: Target, flt: Filter, limit: int | None, whole: bool, emit: Callable[[Info], None]) -> Info:
    """Emit each matching record; return the findings (empty if a bound stopped the reading)."""
    count = [0]

    def on_record(rec: Record, base: int, job_id: int | None, error: str | None) -> None:
        if flt.last is not None and rec.seq > flt.last:
            raise _Enough
        if flt.match(rec, base, job_id):
            emit(describe(rec, base, job_id, error, sink.job_index, whole))
            count[0] += 1
            if limit is not None and count[0] >= limit:
                raise _Enough
    sink = _Sink(target.bases, on_record)
    try:
        if limit == 0:
            raise _Enough
        return _findings(_read(target, sink), sink)
    except _Enough:
        return _findings(Verification(), _Sink([]))


# ------------------------------------------------------------ summary, verify, job

def summary(target: Target, now: float) -> Info:
    """Segments, totals, job counts, oldest pending job, torn tail and problems."""
    sink = _Sink(target.bases)
    v = _read(target, sink)
    found = _findings(v, sink)
    segments = [_segment(target, path, result, i == len(v.segments) - 1, v, found["tail"], sink)
                for i, (path, result) in enumerate(v.segments)]
    return {"path": target.path, "kind": "segment" if target.single else "queue",
            "format_version": target.version, "segments": segments, "totals": _totals(segments),
            "jobs": dict(sink.job_index.counts), "due_by_name": _due_by_name(sink.job_index, now),
            "oldest_pending": _oldest(target, sink.job_index, now),
            **found, "saved_tails": _saved_tails(target), "open_by": _open_by(target),
            "checkpoint": _checkpoint_info(target)}


def _due_by_name(index: Index, now: float) -> dict[str, int]:
    """Due jobs per task name at `now` (as `Stats.due_by_name`): a name that no worker
    knows shows here with jobs waiting."""
    index.timetable.promote(now)
    return {name: n for name, n in sorted(index.ready_by_name.items()) if n}


def _segment(target: Target, path: str, result: ScanResult | None, last: bool, v: Verification,
             tail: Info | None, sink: _Sink) -> Info:
    base = next(b for b, p in target.files if p == path)
    raw, stored = sink.payload_bytes.get(base, [0, 0])
    mine = [p for p in v.problems if p.path == path]
    check = "damaged" if mine else "torn tail" if tail is not None and tail["file"] == path else "ok"
    return {"file": os.path.basename(path), "base": base,
            "first_seq": result.first_seq if result else None, "last_seq": result.last_seq if result else None,
            "records": result.records if result else 0, "bytes": _size(path),
            "state": "sealed" if (result and result.sealed) or not last else "active",
            "compression_ratio": round(raw / stored, 2) if stored else None, "check": check,
            "problem": {"offset": mine[0].offset, "message": _short(mine[0])} if mine else None}


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def _totals(segments: list[Info]) -> Info:
    firsts = [s["first_seq"] for s in segments if s["first_seq"] is not None]
    lasts = [s["last_seq"] for s in segments if s["last_seq"] is not None]
    return {"segments": len(segments), "records": sum(s["records"] for s in segments),
            "bytes": sum(s["bytes"] or 0 for s in segments),
            "first_seq": min(firsts, default=None), "last_seq": max(lasts, default=None)}


def _oldest(target: Target, index: Index, now: float) -> Info | None:
    e = index.oldest(PENDING)
    if e is None:
        return None
    out: Info = {"job": e.id, "name": e.name, "attempts": e.attempts, "run_at": e.run_at,
                 "enqueued_at": None, "age": None}
    try:
        enqueued = _enqueue_time(dict(target.files)[e.segment], e)
    except (OSError, LogqError, KeyError):
        return out
    out.update(enqueued_at=enqueued, age=round(now - enqueued, 3))
    return out


def _enqueue_time(path: str, e: Entry) -> float:
    """Read back a job's ENQUEUE record: the index keeps where it is, not what it says."""
    with open_readonly(path) as f:
        salt = decode_segment_header(f.read(SEGMENT_HEADER_SIZE), path).salt
        f.seek(e.offset)
        rec = read_record(f.read(e.size), 0, salt, path)
    if rec is None:
        raise CorruptionError("enqueue record is truncated", path=path, offset=e.offset)
    return decode_enqueue(rec.payload).enqueued_at


def _saved_tails(target: Target) -> list[Info]:
    if target.single:
        return []
    names = sorted(n for n in os.listdir(target.path) if n.endswith(TORN_SUFFIX))
    return [{"file": n, "bytes": _size(os.path.join(target.path, n))} for n in names]


def _checkpoint_info(target: Target) -> Info | None:
    """The checkpoint file, what it covers, and whether the next open can use it (and if not, why)."""
    path = None if target.single else os.path.join(target.path, _checkpoint.NAME)
    if path is None or not os.path.exists(path):
        return None
    info: Info = {"file": _checkpoint.NAME, "bytes": None, "last_seq": None, "segments": None,
                  "usable": False, "reason": None}
    try:
        with open_readonly(path) as f:
            info["bytes"] = size = os.fstat(f.fileno()).st_size
            cp = _checkpoint.load(reader(f), size)  # checked a chunk at a time before read whole
    except OSError as exc:  # optional: an unusable checkpoint is reported, not fatal
        info["reason"] = str(exc)
        return info
    except CorruptionError as exc:
        info["reason"] = exc.reason
        return info
    try:
        info["last_seq"], info["segments"] = cp.last_seq, len(cp.segments)
        fs, paths = OsFileSystem(), dict(target.files)
        _checkpoint.verify(cp, target.bases, lambda base: fs.open(paths[base], readonly=True))
        info["usable"] = True
    except CorruptionError as exc:
        info["reason"] = exc.reason
    return info


def _open_by(target: Target) -> Info | None:
    """Who has the queue open now, read from the kernel's list of locks (Linux), never
    locked: `pids`, the processes holding the registry `logq.open` (every opener holds it
    shared; None where the list cannot be read); `writer_lock`, the one holding the writer
    lock `logq.lock` now, if any; and `keeper`, the process the control file names as
    keeping the writer lock between calls because it was alone (0 there: none), with
    `keeper_running`. A pid in the control file can be stale (a process killed while it
    kept the lock, or a reused pid): only the kernel's list says who holds a lock now."""
    if target.single:
        return None
    pids = _flock_holders(os.path.join(target.path, REGISTRY_NAME))
    writers = _flock_holders(os.path.join(target.path, LOCK_NAME))
    keeper = _keeper(target)
    return {"pids": pids, "writer_lock": writers[0] if writers else None, "keeper": keeper,
            "keeper_running": _alive(keeper) if keeper else None}


def _keeper(target: Target) -> int | None:
    """The pid the control file's newest state names as keeping the writer lock (None: none)."""
    try:
        with open_readonly(os.path.join(target.path, _control.NAME)) as f:
            state = _control.decode(f.read(_control.SIZE))
    except OSError:
        return None
    return state.holder if state is not None and state.holder else None


def _flock_holders(path: str) -> list[int] | None:
    """The pids holding a flock on `path` (shared or exclusive; waiters not counted), sorted
    and each once, read from /proc/locks (Linux); [] if the file does not exist, None if the
    list cannot be read. Matched by inode (the device numbers that list shows are not always
    those of stat, e.g. on overlayfs)."""
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        return []
    except OSError:
        return None
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    pids = set()
    for line in lines:
        words = line.split()  # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2162976 0 EOF"; waiters have "->"
        if len(words) >= 6 and words[1] == "FLOCK" and words[5].rpartition(":")[2] == str(inode) \
                and words[4].isdigit():
            pids.add(int(words[4]))
    return sorted(pids)


def _alive(pid: int) -> bool | None:
    if os.name != "posix":
        return None
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def check(target: Target) -> Info:
    """`--verify`: every record checked; `ok` is False on any damage."""
    sink = _Sink(target.bases)
    v = _read(target, sink)
    records = sum(r.records for _, r in v.segments if r is not None)
    return {"path": target.path, "segments": len(v.segments), "records": records, **_findings(v, sink)}


def history(target: Target, job_id: int, whole: bool) -> Info | None:
    """Every record of one job with the state after each; None if no record names the job."""
    records: list[Info] = []

    def on_record(rec: Record, base: int, jid: int | None, error: str | None) -> None:
        if jid == job_id:
            records.append(describe(rec, base, jid, error, sink.job_index, whole))
    sink = _Sink(target.bases, on_record)
    v = _read(target, sink)
    if not records:
        return None
    e = sink.job_index.jobs.get(job_id)
    job = _job(e, records[0]) if e is not None else {"id": job_id, "state": None}
    return {"path": target.path, "job": job, "history": records, **_findings(v, sink)}


def _job(e: Entry, first: Info) -> Info:
    extra = e.extra
    return {"id": e.id, "name": e.name, "state": e.state, "attempts": e.attempts,
            "max_attempts": e.max_attempts, "priority": e.priority, "key": e.key, "run_at": e.run_at,
            "lease_expires_at": e.expires, "enqueued_at": first["time"],
            "last_error": extra.last_error if extra else None,
            "finished_at": extra.finished_at if extra else None}


# ------------------------------------------------------------------ the command

def run(path: str, *, records: bool = False, job: int | None = None, verify_only: bool = False,
        as_json: bool = False, segment: str | None = None, first: int | None = None,
        last: int | None = None, types: list[str] | None = None, limit: int | None = None,
        whole: bool = False, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`inspect`: the summary, `--records`, `--job` or `--verify`; returns the exit status.

    Raises `LogqError` or `OSError` for a path it cannot inspect (the CLI exits 2).
    """
    out, err = out or sys.stdout, err or sys.stderr
    target = open_target(path)
    if records:
        flt = Filter(parse_segment(segment, target), first, last, parse_types(types), job)
        return _run_records(target, flt, limit, whole, as_json, out, err)
    if job is not None:
        d = history(target, job, whole)
        if d is None:
            err.write(f"logq inspect: no record names job {job} in {target.path}\n")
            return 1
        _write(out, [to_json(d)] if as_json else format_history(d))
        return 0
    d = check(target) if verify_only else summary(target, time.time())
    _write(out, [to_json(d)] if as_json else format_check(d) if verify_only else format_summary(d))
    return 1 if verify_only and not d["ok"] else 0


def _run_records(target: Target, flt: Filter, limit: int | None, whole: bool, as_json: bool,
                 out: TextIO, err: TextIO) -> int:
    table = RecordTable()

    def emit(r: Info) -> None:
        _write(out, [to_json(r, lines=True)] if as_json else table.add(r))
    try:
        found = dump(target, flt, limit, whole, emit)
    finally:  # print what the table holds back, also when reading stopped on an error
        if not as_json:
            _write(out, table.finish())
    _write(err, problem_lines(found, "logq inspect: warning:"))
    return 0


def _write(out: TextIO, lines: Iterable[str]) -> None:
    for line in lines:
        out.write(line + "\n")
