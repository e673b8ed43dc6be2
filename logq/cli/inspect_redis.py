"""`inspect` of a queue on a Redis server: its summary, one job's history, as text or JSON.

The local `inspect` reads segment files; a Redis queue has none, so this reads
what the server keeps: the counts per state, the due jobs per task name, the
oldest pending job, the server's persistence settings, and, for `--job`, the
job's records (its ENQUEUE and the list of its later records, in the layouts
of spec/semantics.md), each with the job's state after it, found by applying
them to an empty `core.index.Index` as a replay would. The same JSON fields and
text tables as the local `inspect` are used where they mean the same.
"""

from __future__ import annotations

import struct
import time
from typing import Any, TextIO

from ..core.index import Index
from ..core.records import ENQUEUE, FAIL, EXPIRE, TYPE_NAMES
from ..errors import LogqError
from ..queue import Queue
from . import inspect as _inspect
from .inspect_text import format_history, iso, to_json

Info = dict[str, Any]
_SEQ = struct.Struct("<Q")


def summary(q: Queue) -> Info:
    """The queue's counts, due jobs per name, oldest pending job and the server's settings."""
    s = q.stats()
    backend: Any = q.backend
    return {"path": q.path, "kind": "redis", "name": backend.name, "jobs": s.counts, "due": s.due,
            "due_by_name": s.due_by_name, "oldest_pending_age": s.oldest_pending_age, "last_seq": s.last_seq,
            "durable_seq": s.durable_seq, "fsync_every_write": backend.fsync_always, "time": time.time()}


def history(q: Queue, job_id: int, whole: bool) -> Info | None:
    """The job and each of its records with its state after it; None if there is no such job."""
    backend: Any = q.backend
    enqueue = backend.enqueue_record(job_id)
    if enqueue is None:
        return None
    records = [(ENQUEUE, job_id, enqueue)] + [
        (raw[0], _SEQ.unpack_from(raw, 1)[0], raw[1 + _SEQ.size:]) for raw in backend.history(job_id)]
    index, out = Index(), []
    for rtype, seq, payload in records:
        error = None
        try:
            index.apply(rtype, seq, payload, 0, seq, len(payload))
        except LogqError as exc:
            error = str(exc)
        e = index.jobs.get(job_id)
        fields, data = _inspect._fields(rtype, payload)
        name = fields.pop("name", None)
        d: Info = {"seq": seq, "type": TYPE_NAMES.get(rtype, f"type-{rtype}"), "type_code": rtype, "job": job_id,
                   "name": e.name if e is not None else name, "state": e.state if e is not None else None,
                   "time": None, "segment": None, "offset": None, "size": len(payload), "raw_size": len(payload),
                   "compressed": False, "continued": False}
        d.update(fields)
        d.update(_inspect._data(data, whole, is_error=rtype in (FAIL, EXPIRE)))
        if error is not None:
            d["error"] = error
        out.append(d)
    info = q.get(job_id)
    job: Info = {"id": job_id, "state": None}
    if info is not None:
        job = {"id": info.id, "name": info.name, "state": info.state, "attempts": info.attempts,
               "max_attempts": info.max_attempts, "priority": info.priority, "key": info.key,
               "run_at": info.run_at, "lease_expires_at": info.lease_expires_at, "enqueued_at": info.enqueued_at,
               "last_error": info.last_error}
    return {"path": q.path, "job": job, "history": out, "problems": [],
            "replay_errors": {"count": 0, "first": []}}


def format_summary(d: Info) -> list[str]:
    jobs = d["jobs"]
    lines = [f"logq queue {d['name']!r} on Redis: {d['path']}", "",
             f"jobs: {', '.join(f'{n:,} {s}' for s, n in jobs.items())} ({sum(jobs.values()):,} in all)"]
    if d["due_by_name"]:
        lines.append(f"due now, by task: {', '.join(f'{name!r} {n:,}' for name, n in d['due_by_name'].items())}")
    age = d["oldest_pending_age"]
    lines.append("oldest pending job: " + ("none" if age is None else f"{age:.1f}s old"))
    lines.append(f"records: {d['last_seq']:,}; the server fsyncs every write: "
                 f"{'yes' if d['fsync_every_write'] else 'no (or cannot tell)'}; as of {iso(d['time'])}")
    return lines


def run(url: str, name: str | None, job: int | None, as_json: bool, whole: bool,
        out: TextIO, err: TextIO) -> int:
    """`inspect URL [--job ID] [--json]`; returns the exit status (1: no such job)."""
    with Queue(url, name=name) as q:
        if job is not None:
            d = history(q, job, whole)
            if d is None:
                err.write(f"logq inspect: no job {job} in queue {q.path}\n")
                return 1
            lines = [to_json(d)] if as_json else list(format_history(d))
        else:
            s = summary(q)
            lines = [to_json(s)] if as_json else format_summary(s)
    for line in lines:
        out.write(line + "\n")
    return 0
