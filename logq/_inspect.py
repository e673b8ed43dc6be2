"""`python -m logq inspect`: a read-only look at a queue directory or at one segment file.

Theory of operation
-------------------
Inspecting takes no lock and opens nothing for writing. It lists the segment
files and lets `_verify.verify` read and check each one by the rules recovery
uses, which hands every record of a complete batch to a sink. The sink replays
the records through a fresh `Index` with the same `apply` the queue uses, so
every record is reported with the state of its job after it; a record that the
state machine refuses is reported with the error instead of stopping the run.
A torn tail of the last segment is described, never cut.

Gathering functions build plain dicts (the JSON output is exactly these dicts)
and `format_*` functions turn them into text. Files that are not segments
(`*.torn`, `*.tmp`, foreign files) are ignored, so a directory that a queue is
writing, or one in the middle of a compaction, can be inspected.
"""

from __future__ import annotations

import base64
import bisect
import codecs
import errno
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, TextIO

from ._errors import CorruptionError, InvalidArgument, LogqError, NotALogqDirectory, UnsupportedVersionError
from ._fs import read_lock_holder
from ._jobrec import (
    ACK, CANCEL, ENQUEUE, EXPIRE, EXTEND, FAIL, LEASE, RELEASE, RETRY, TYPE_NAMES, decode_enqueue,
    decode_job_at, decode_lease, decode_outcome, job_id_of,
)
from ._jobs import PENDING
from ._log import LOCK_NAME, META_NAME, TORN_SUFFIX
from ._record import (
    ALIGN, FLAG_CONTINUED, FLAG_ZSTD, FORMAT_VERSION, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC, TYPE_SEAL, Record, decode_segment_header, read_record,
)
from ._segment import parse_segment_name, scan
from ._state import Entry, Index
from ._verify import Problem, Verification, segment_files, verify

Info = dict[str, Any]
Emit = Callable[[Info], None]
TYPE_CODES = {name: code for code, name in TYPE_NAMES.items()}
PREVIEW = 40  # characters of payload shown without --payload


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

    def file_of(self, base: int) -> str:
        return next(p for b, p in self.files if b == base)


def open_target(path: str) -> Target:
    """Check that `path` is a queue directory or a segment this logq can read.

    Raises `FileNotFoundError`, `NotALogqDirectory` or `UnsupportedVersionError`.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)
    if not os.path.isdir(path):
        return Target(path, True, [(_check_segment_file(path), path)], None)
    files = segment_files(path)
    version = _meta_version(path, bool(files))
    for _, seg in files:
        _refuse_newer(seg)
    return Target(path, False, files, version)


def _meta_version(path: str, has_segments: bool) -> int | None:
    meta = os.path.join(path, META_NAME)
    if not os.path.exists(meta):
        if has_segments:
            return None
        raise NotALogqDirectory(f"{path} is not a logq queue directory (no {META_NAME}, no segment files)")
    with open(meta, "rb") as f:
        words = f.read(64).split()
    if len(words) != 2 or words[0] != b"logq" or not words[1].isdigit():
        raise NotALogqDirectory(f"{meta} is not a logq marker file: is this the right directory?")
    version = int(words[1])
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(f"{path} was written by format version {version}; this logq "
                                      f"reads up to {FORMAT_VERSION}: upgrade logq", path=meta)
    return version


def _refuse_newer(seg: str) -> None:
    """Raise for a segment of a newer format; any other damage is left to the verifier."""
    try:
        with open(seg, "rb") as f:
            decode_segment_header(f.read(SEGMENT_HEADER_SIZE), seg)
    except UnsupportedVersionError:
        raise
    except (CorruptionError, FileNotFoundError):
        pass


def _check_segment_file(path: str) -> int:
    with open(path, "rb") as f:
        head = f.read(SEGMENT_HEADER_SIZE)
    if not head.startswith(SEGMENT_MAGIC):
        raise NotALogqDirectory(f"{path} is not a logq segment file: pass a queue directory or a .seg file")
    try:
        return decode_segment_header(head, path).base_seq
    except UnsupportedVersionError:
        raise
    except CorruptionError:  # damaged header: the verifier reports it
        return parse_segment_name(os.path.basename(path)) or 1


# --------------------------------------------------------------------- reading

class _Sink(list[Record]):
    """Stands in for the record list of `verify`: replays each record as it arrives.

    It stores nothing; `on_record(rec, base, job_id, error)` sees every record.
    """

    def __init__(self, bases: list[int]) -> None:
        super().__init__()
        self.bases = bases
        self.index = Index()
        self.payload_bytes: dict[int, list[int]] = {}  # segment base -> [raw, stored]
        self.errors: list[Info] = []
        self.on_record: Callable[[Record, int, int | None, str | None], None] | None = None

    def append(self, rec: Record) -> None:
        base = self.bases[max(0, bisect.bisect_right(self.bases, rec.seq) - 1)]
        sizes = self.payload_bytes.setdefault(base, [0, 0])
        sizes[0] += len(rec.payload)
        sizes[1] += rec.size - RECORD_HEADER_SIZE if rec.flags & FLAG_ZSTD else len(rec.payload)
        job_id = rec.seq if rec.type == ENQUEUE else job_id_of(rec.type, rec.payload)
        error = None
        try:
            self.index.apply(rec.type, rec.seq, rec.payload, base, rec.offset, rec.size)
        except LogqError as exc:
            error = str(exc)
            self.errors.append({"seq": rec.seq, "job": job_id, "message": error})
        if self.on_record is not None:
            self.on_record(rec, base, job_id, error)


class _Enough(Exception):
    """Raised by a sink to stop reading early (a --limit or --to was reached)."""


def _read(target: Target, sink: _Sink) -> Verification:
    if not target.single:
        return verify(target.path, sink)
    out = Verification()
    with open(target.path, "rb") as f:
        data = f.read()
    try:
        result = scan(data, target.path, sink.append)
    except CorruptionError as exc:
        out.segments.append((target.path, None))
        out.problems.append(Problem(target.path, exc.offset or 0, str(exc)))
        return out
    out.segments.append((target.path, result))
    if result.end < len(data):
        out.tail = (target.path, result.end, len(data))
    return out


def _tail(v: Verification) -> Info | None:
    """Describe the bytes after the last complete batch of the last segment."""
    if v.tail is None:
        return None
    path, end, size = v.tail
    result = v.segments[-1][1]
    reason = result.lost[-1].reason if result is not None and result.lost else "unverified bytes"
    with open(path, "rb") as f:
        salt = decode_segment_header(f.read(SEGMENT_HEADER_SIZE), path).salt
        f.seek(end)
        rest = f.read(size - end)
    return {"file": path, "offset": end, "bytes": size - end, "reason": reason,
            "valid_records_after_damage": _valid_after_damage(rest, salt),
            "saved_to_on_next_open": f"{path}.{end}{TORN_SUFFIX}"}


def _valid_after_damage(buf: bytes, salt: int) -> bool:
    """True if a record verifies somewhere past the first bad spot of `buf`.

    An incomplete write leaves nothing valid after it; real damage (a flipped
    bit in the active segment) does, and those records would be cut.
    """
    pos = 0
    while True:
        try:
            rec = read_record(buf, pos, salt)
        except CorruptionError:
            break
        if rec is None:
            return False
        pos += rec.size
    for probe in range(pos + ALIGN, len(buf) - RECORD_HEADER_SIZE + 1, ALIGN):
        if buf[probe + 16]:  # a record's type byte is never zero
            try:
                if read_record(buf, probe, salt) is not None:
                    return True
            except CorruptionError:
                pass
    return False


def _problems(v: Verification, tail: Info | None, sink: _Sink) -> list[Info]:
    out = [{"file": p.path, "offset": p.offset, "message": _short(p)} for p in v.problems]
    if tail is not None and tail["valid_records_after_damage"]:
        out.append({"file": tail["file"], "offset": tail["offset"],
                    "message": f"{tail['reason']}, and valid records follow: opening will cut them"})
    for e in sink.errors:
        out.append({"file": None, "offset": None, "seq": e["seq"],
                    "message": f"record {e['seq']} does not replay: {e['message']}"})
    return out


def _short(p: Problem) -> str:
    """The problem's message without the "(path at byte N)" that is reported beside it."""
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
    if not values:
        return None
    out = set()
    for word in (w.strip().lower() for v in values for w in v.split(",") if w.strip()):
        if word not in TYPE_CODES and not word.isdigit():
            raise InvalidArgument(f"unknown record type {word!r}: use one of {', '.join(TYPE_CODES)}")
        out.add(TYPE_CODES.get(word) or int(word))
    return frozenset(out)


def parse_segment(value: str | None, target: Target) -> int | None:
    """A segment given by base sequence number or by file name."""
    if value is None:
        return None
    base = int(value) if value.isdigit() else parse_segment_name(os.path.basename(value))
    if base not in target.bases:
        raise InvalidArgument(f"no segment {value!r} in {target.path}; segments start at "
                              f"{', '.join(map(str, target.bases)) or '(none)'}")
    return base


def describe(rec: Record, base: int, job_id: int | None, error: str | None, index: Index,
             whole: bool) -> Info:
    """One record as a dict: where it is, what it says, and its job's state after it."""
    e = index.jobs.get(job_id) if job_id is not None else None
    fields, data = _fields(rec.type, rec.payload)
    name = fields.pop("name", None)
    d: Info = {"seq": rec.seq, "type": _type_name(rec.type), "type_code": rec.type, "job": job_id,
               "name": e.name if e is not None else name, "state": e.state if e is not None else None,
               "time": None, "segment": base, "offset": rec.offset, "size": rec.size,
               "raw_size": len(rec.payload), "compressed": bool(rec.flags & FLAG_ZSTD),
               "continued": bool(rec.flags & FLAG_CONTINUED)}
    d.update(fields)
    d.update(_payload(data, whole))
    if error is not None:
        d["error"] = error
    return d


def _fields(rtype: int, payload: bytes) -> tuple[Info, bytes]:
    """Type-specific fields and the bytes shown as the payload (job payload, result, error)."""
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
    return {}, payload


def _type_name(rtype: int) -> str:
    return "seal" if rtype == TYPE_SEAL else TYPE_NAMES.get(rtype, f"type-{rtype}")


def _payload(data: bytes, whole: bool) -> Info:
    if not whole:
        return {"preview": preview(data)}
    try:
        return {"payload": data.decode(), "payload_encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"payload": base64.b64encode(data).decode("ascii"), "payload_encoding": "base64"}


def preview(data: bytes, width: int = PREVIEW) -> str:
    """A short, printable rendering: escaped text if it is UTF-8, else hex."""
    head = data[:width * 4]
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) == len(data))
    except UnicodeDecodeError:
        return "0x" + data[:width // 2].hex() + ("..." if len(data) > width // 2 else "")
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:width])
    return shown + ("..." if len(text) > width or len(head) < len(data) else "")


def dump(target: Target, flt: Filter, limit: int | None, whole: bool, emit: Emit) -> list[Info]:
    """Emit the records that match; return the problems met (none if stopped early by a bound)."""
    sink, count = _Sink(target.bases), [0]

    def on_record(rec: Record, base: int, job_id: int | None, error: str | None) -> None:
        if flt.last is not None and rec.seq > flt.last:
            raise _Enough
        if flt.match(rec, base, job_id):
            emit(describe(rec, base, job_id, error, sink.index, whole))
            count[0] += 1
            if limit is not None and count[0] >= limit:
                raise _Enough
    sink.on_record = on_record
    if limit == 0:
        return []
    try:
        v = _read(target, sink)
    except _Enough:
        return []
    return _problems(v, _tail(v), sink)


# ---------------------------------------------------------------- the summary

def summary(target: Target, now: float) -> Info:
    """Segments, totals, job counts, oldest pending job, torn tail and problems."""
    sink = _Sink(target.bases)
    v = _read(target, sink)
    tail = _tail(v)
    problems = _problems(v, tail, sink)
    segments = [_segment(target, path, i == len(v.segments) - 1, v, tail, sink)
                for i, (path, _) in enumerate(v.segments)]
    return {"path": target.path, "kind": "segment" if target.single else "queue",
            "format_version": target.version, "segments": segments, "totals": _totals(segments),
            "jobs": dict(sink.index.counts), "oldest_pending": _oldest(target, sink.index, now),
            "tail": tail, "saved_tails": _saved_tails(target), "writer": _writer(target),
            "problems": problems, "ok": not problems}


def _segment(target: Target, path: str, last: bool, v: Verification, tail: Info | None,
             sink: _Sink) -> Info:
    result = dict(v.segments)[path]
    base = next(b for b, p in target.files if p == path)
    raw, stored = sink.payload_bytes.get(base, [0, 0])
    mine = [p for p in v.problems if p.path == path]
    check = "damaged" if mine else "torn tail" if tail is not None and tail["file"] == path else "ok"
    sealed = bool(result and result.sealed)
    return {"file": os.path.basename(path), "base": base,
            "first_seq": result.first_seq if result else None, "last_seq": result.last_seq if result else None,
            "records": result.records if result else 0, "bytes": _size(path),
            "state": "sealed" if sealed or not last else "active",
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
    out: Info = {"job": e.id, "name": e.name, "run_at": e.run_at, "attempts": e.attempts,
                 "enqueued_at": None, "age": None}
    try:
        enqueued = _enqueue_time(target.file_of(e.segment), e)
    except (OSError, LogqError, StopIteration):
        return out
    out.update(enqueued_at=enqueued, age=round(now - enqueued, 3))
    return out


def _enqueue_time(path: str, e: Entry) -> float:
    """Read back a job's ENQUEUE record (the index keeps where it is, not its contents)."""
    with open(path, "rb") as f:
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


def _writer(target: Target) -> Info | None:
    """The pid in the lock file, read without locking, and whether such a process runs."""
    if target.single:
        return None
    pid = read_lock_holder(os.path.join(target.path, LOCK_NAME))
    return None if pid is None else {"pid": pid, "running": _running(pid)}


def _running(pid: int) -> bool | None:
    if os.name != "posix":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------- job history and verify

def history(target: Target, job_id: int, whole: bool) -> Info | None:
    """Every record of one job with the state after each; None if the log never mentions it."""
    sink, records = _Sink(target.bases), []

    def on_record(rec: Record, base: int, jid: int | None, error: str | None) -> None:
        if jid == job_id:
            records.append(describe(rec, base, jid, error, sink.index, whole))
    sink.on_record = on_record
    v = _read(target, sink)
    if not records:
        return None
    e = sink.index.jobs.get(job_id)
    job = _job(e, records[0]) if e is not None else {"id": job_id, "state": None}
    return {"path": target.path, "job": job, "history": records,
            "problems": _problems(v, _tail(v), sink)}


def _job(e: Entry, first: Info) -> Info:
    extra = e.extra
    return {"id": e.id, "name": e.name, "state": e.state, "attempts": e.attempts,
            "max_attempts": e.max_attempts, "priority": e.priority, "key": e.key, "run_at": e.run_at,
            "lease_expires_at": e.expires, "enqueued_at": first["time"],
            "last_error": extra.last_error if extra else None,
            "finished_at": extra.finished_at if extra else None}


def check(target: Target) -> Info:
    """`--verify`: every record checked; ok is False on any damage."""
    sink = _Sink(target.bases)
    v = _read(target, sink)
    tail = _tail(v)
    problems = _problems(v, tail, sink)
    records = sum(r.records for _, r in v.segments if r is not None)
    return {"path": target.path, "ok": not problems, "segments": len(v.segments), "records": records,
            "problems": problems, "tail": tail}


# ------------------------------------------------------------------------ text

def iso(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def format_summary(d: Info) -> Iterator[str]:
    kind = "segment file" if d["kind"] == "segment" else f"queue (format {d['format_version'] or '?'})"
    yield f"logq {kind}: {d['path']}"
    yield ""
    yield f"{'segment':<24} {'first':>8} {'last':>8} {'records':>8} {'bytes':>12}  {'state':<7} {'ratio':>5}  check"
    for s in d["segments"]:
        ratio = f"{s['compression_ratio']:.2f}" if s["compression_ratio"] else "-"
        yield (f"{s['file']:<24} {_n(s['first_seq']):>8} {_n(s['last_seq']):>8} {s['records']:>8,} "
               f"{_n(s['bytes']):>12}  {s['state']:<7} {ratio:>5}  {s['check']}")
    t = d["totals"]
    yield (f"{'total: ' + str(t['segments']) + ' segment(s)':<24} {_n(t['first_seq']):>8} {_n(t['last_seq']):>8} "
           f"{t['records']:>8,} {t['bytes']:>12,}")
    yield ""
    jobs = d["jobs"]
    yield f"jobs: {', '.join(f'{n:,} {s}' for s, n in jobs.items())} ({sum(jobs.values()):,} in all)"
    yield from _oldest_lines(d["oldest_pending"])
    yield from _tail_lines(d["tail"], d["saved_tails"], d["writer"])
    yield from _problem_lines(d["problems"])


def _n(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _oldest_lines(o: Info | None) -> Iterator[str]:
    if o is None:
        yield "oldest pending job: none"
        return
    when = f", enqueued {iso(o['enqueued_at'])} ({_ago(o['age'])} ago)" if o["age"] is not None else ""
    yield f"oldest pending job: {o['job']} {o['name']!r}{when}, attempts so far {o['attempts']}"


def _tail_lines(tail: Info | None, saved: list[Info], writer: Info | None) -> Iterator[str]:
    if tail is None:
        yield "torn tail: none"
    else:
        yield (f"torn tail: {tail['bytes']:,} bytes after byte {tail['offset']:,} of "
               f"{os.path.basename(tail['file'])} ({tail['reason']}); not repaired: the next open "
               f"saves them to {os.path.basename(tail['saved_to_on_next_open'])} and cuts them")
        if writer is not None and writer["running"]:
            yield f"  (process {writer['pid']} named in {LOCK_NAME} is running: this may be a write in progress)"
    for s in saved:
        yield f"saved tail from an earlier recovery: {s['file']} ({_n(s['bytes'])} bytes)"


def _problem_lines(problems: list[Info]) -> Iterator[str]:
    if not problems:
        return
    yield ""
    yield f"DAMAGE: {len(problems)} problem(s); run with --verify for the exit status"
    for p in problems:
        yield "  " + _problem_text(p)


def _problem_text(p: Info) -> str:
    if p["file"] is None:
        return p["message"]
    return f"{p['file']}: byte {p['offset']}: {p['message']}"


RECORD_HEADER = (f"{'seq':>8}  {'type':<8} {'job':>8}  {'name':<16} {'state':<9} {'size':>7} "
                 f"{'raw':>7}  {'time':<24}  detail")


def format_record(r: Info) -> str:
    """One line of `--records` (or of a job's history)."""
    job = "-" if r["job"] is None else str(r["job"])
    return (f"{r['seq']:>8}  {r['type']:<8} {job:>8}  {r['name'] or '-':<16} {r['state'] or '-':<9} "
            f"{r['size']:>7} {r['raw_size']:>7}  {iso(r['time']):<24}  {_detail(r)}")


def _detail(r: Info) -> str:
    parts = []
    for key, value in (r.get("detail") or {}).items():
        if value is None:
            continue
        if key.endswith("_at"):
            value = iso(value) if r["time"] is None else f"{value - r['time']:+.3f}s"
        parts.append(f"{key}={value}")
    if r.get("preview"):
        parts.append(repr(r["preview"]) if r["type"] != "fail" and r["type"] != "expire"
                     else f"error={r['preview']!r}")
    if r.get("error"):
        parts.append(f"!! {r['error']}")
    return " ".join(parts)


def format_payload(r: Info) -> Iterator[str]:
    """With --payload: the whole payload under its record line."""
    if r.get("payload"):
        label = "payload" if r["payload_encoding"] == "utf-8" else "payload (base64)"
        yield f"          {label}: {r['payload']}"


def format_history(d: Info) -> Iterator[str]:
    j = d["job"]
    if j["state"] is None:
        yield f"job {j['id']}: no ENQUEUE record found (lost or compacted); its records:"
    else:
        key = f", key {j['key']!r}" if j["key"] else ""
        yield (f"job {j['id']} {j['name']!r}{key}: {j['state']}, attempts {j['attempts']} of "
               f"{j['max_attempts']}, priority {j['priority']}, enqueued {iso(j['enqueued_at'])}")
        if j["last_error"]:
            yield f"last error: {j['last_error']}"
    yield ""
    yield RECORD_HEADER
    for r in d["history"]:
        yield format_record(r)
        yield from format_payload(r)
    yield from _problem_lines(d["problems"])


def format_check(d: Info) -> Iterator[str]:
    for p in d["problems"]:
        yield "DAMAGE " + _problem_text(p)
    t = d["tail"]
    if t is not None and not t["valid_records_after_damage"]:
        yield (f"note: torn tail of {t['bytes']:,} bytes at byte {t['offset']:,} of {t['file']} "
               f"({t['reason']}): an unfinished write, not damage")
    verdict = "ok" if d["ok"] else f"{len(d['problems'])} problem(s) found"
    yield f"{verdict}: checked {d['segments']} segment(s), {d['records']:,} records in {d['path']}"


def to_json(d: Info, lines: bool = False) -> str:
    if lines:
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(d, indent=2, ensure_ascii=False)


# ------------------------------------------------------------------ the command

def run(path: str, *, records: bool = False, job: int | None = None, verify_only: bool = False,
        as_json: bool = False, segment: str | None = None, first: int | None = None,
        last: int | None = None, types: list[str] | None = None, limit: int | None = None,
        whole: bool = False, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """`inspect`: the summary, `--records`, `--job` or `--verify`; return the exit status.

    Raises `LogqError` or `OSError` for a path it cannot inspect (the CLI exits 2).
    """
    target = open_target(path)
    if records:
        flt = Filter(parse_segment(segment, target), first, last, parse_types(types), job)
        return _run_records(target, flt, limit, whole, as_json, out, err)
    if job is not None:
        return _run_history(target, job, whole, as_json, out, err)
    if verify_only:
        d = check(target)
        _write(out, [to_json(d)] if as_json else format_check(d))
        return 0 if d["ok"] else 1
    d = summary(target, time.time())
    _write(out, [to_json(d)] if as_json else format_summary(d))
    return 0


def _run_records(target: Target, flt: Filter, limit: int | None, whole: bool, as_json: bool,
                 out: TextIO, err: TextIO) -> int:
    def emit(r: Info) -> None:
        _write(out, [to_json(r, lines=True)] if as_json else [format_record(r), *format_payload(r)])
    if not as_json:
        out.write(RECORD_HEADER + "\n")
    problems = dump(target, flt, limit, whole, emit)
    _write(err, (f"logq inspect: warning: {_problem_text(p)}" for p in problems))
    return 0


def _run_history(target: Target, job: int, whole: bool, as_json: bool, out: TextIO, err: TextIO) -> int:
    d = history(target, job, whole)
    if d is None:
        err.write(f"logq inspect: no record of job {job} in {target.path}\n")
        return 1
    _write(out, [to_json(d)] if as_json else format_history(d))
    return 0


def _write(out: TextIO, lines: Iterable[str]) -> None:
    for line in lines:
        out.write(line + "\n")
