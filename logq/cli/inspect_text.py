"""How `python -m logq inspect` prints what `_inspect` found: text lines and JSON.

Pure formatting: every function takes the plain dicts that `_inspect` builds
(the same ones `--json` prints) and yields lines; none reads a file.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any, Iterator

from ..log.log import LOCK_NAME

Info = dict[str, Any]
DATA_LABEL = {"ack": "result", "fail": "error", "expire": "error"}  # else "payload"


def iso(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _n(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def format_summary(d: Info) -> Iterator[str]:
    kind = "segment file" if d["kind"] == "segment" else f"queue (format {d['format_version'] or '?'})"
    yield f"logq {kind}: {d['path']}"
    yield ""
    yield f"{'segment':<24} {'first':>8} {'last':>8} {'records':>8} {'bytes':>12}  {'state':<7} {'ratio':>5}  check"
    for s in d["segments"]:
        ratio = f"{s['compression_ratio']:.2f}" if s["compression_ratio"] else "-"
        where = f" at byte {s['problem']['offset']:,}" if s["problem"] else ""
        yield (f"{s['file']:<24} {_n(s['first_seq']):>8} {_n(s['last_seq']):>8} {s['records']:>8,} "
               f"{_n(s['bytes']):>12}  {s['state']:<7} {ratio:>5}  {s['check']}{where}")
    t = d["totals"]
    yield (f"{'total (' + str(t['segments']) + ')':<24} {_n(t['first_seq']):>8} {_n(t['last_seq']):>8} "
           f"{t['records']:>8,} {t['bytes']:>12,}")
    yield ""
    jobs = d["jobs"]
    yield f"jobs: {', '.join(f'{n:,} {s}' for s, n in jobs.items())} ({sum(jobs.values()):,} in all)"
    yield _oldest_line(d["oldest_pending"])
    yield from _tail_lines(d["tail"], d["saved_tails"], d["writer"])
    yield _checkpoint_line(d["checkpoint"])
    yield from problem_lines(d, "DAMAGE")


def _oldest_line(o: Info | None) -> str:
    if o is None:
        return "oldest pending job: none"
    when = f", enqueued {iso(o['enqueued_at'])} ({_ago(o['age'])} ago)" if o["age"] is not None else ""
    return f"oldest pending job: {o['job']} {o['name']!r}{when}, {o['attempts']} attempt(s) so far"


def _checkpoint_line(c: Info | None) -> str:
    if c is None:
        return "checkpoint: none (the next open replays every record)"
    if c["usable"]:
        return (f"checkpoint: {c['file']} ({c['bytes']:,} bytes) covers {c['segments']} segment(s) through "
                f"seq {c['last_seq']:,}; the next open starts from it")
    return f"checkpoint: {c['file']} is not usable ({c['reason']}); the next open replays every record"


def _tail_lines(tail: Info | None, saved: list[Info], writer: Info | None) -> Iterator[str]:
    if tail is None:
        yield "torn tail: none"
    else:
        yield (f"torn tail: {tail['bytes']:,} bytes after byte {tail['offset']:,} of "
               f"{os.path.basename(tail['file'])} ({tail['reason']}); not repaired: the next open "
               f"saves them to {os.path.basename(tail['saved_to_on_next_open'])} and cuts them")
        if writer is not None and writer["running"]:
            yield f"  process {writer['pid']} (named in {LOCK_NAME}) is running: this may be a write in progress"
    for s in saved:
        yield f"saved by an earlier recovery: {s['file']} ({_n(s['bytes'])} bytes)"


def problem_lines(d: Info, prefix: str) -> Iterator[str]:
    for p in d["problems"]:
        yield f"{prefix} {p['file']}: byte {p['offset']}: {p['message']}"
    replay = d["replay_errors"]
    for e in replay["first"][:3]:
        yield f"{prefix} record {e['seq']} does not replay: {e['message']}"
    if replay["count"] > 3:
        yield f"{prefix} ... {replay['count'] - 3:,} more record(s) do not replay"


RECORD_HEADER = (f"{'seq':>8}  {'type':<8} {'job':>8}  {'name':<16} {'state':<9} {'size':>7} "
                 f"{'raw':>7}  {'time':<24}  detail")


def format_record(r: Info) -> Iterator[str]:
    """One record: a line (as in RECORD_HEADER), and with --payload its data whole below it."""
    job = "-" if r["job"] is None else str(r["job"])
    yield (f"{r['seq']:>8}  {r['type']:<8} {job:>8}  {r['name'] or '-':<16} {r['state'] or '-':<9} "
           f"{r['size']:>7} {r['raw_size']:>7}  {iso(r['time']):<24}  {_detail(r)}".rstrip())
    if r.get("payload"):
        encoding = "" if r["payload_encoding"] == "utf-8" else " (base64)"
        yield f"{'':>10}{DATA_LABEL.get(r['type'], 'payload')}{encoding}: {r['payload']}"


def _detail(r: Info) -> str:
    parts = []
    for key, value in (r.get("detail") or {}).items():
        if value is None or value == r["time"] and key.endswith("_at"):
            continue
        if key.endswith("_at"):
            value = iso(value) if r["time"] is None else f"{value - r['time']:+.3f}s"
        parts.append(f"{key}={value}")
    if r.get("preview"):
        parts.append(f"{DATA_LABEL.get(r['type'], 'payload')}={r['preview']!r}")
    if r.get("error"):
        parts.append(f"!! {r['error']}")
    return " ".join(parts)


def format_history(d: Info) -> Iterator[str]:
    j = d["job"]
    if j["state"] is None:
        yield f"job {j['id']}: no ENQUEUE record found (lost to damage?); the records that name it:"
    else:
        key = f", key {j['key']!r}" if j["key"] else ""
        yield (f"job {j['id']} {j['name']!r}{key}: {j['state']}, {j['attempts']} of "
               f"{j['max_attempts']} attempts used, priority {j['priority']}, enqueued {iso(j['enqueued_at'])}")
        if j["last_error"]:
            yield f"last error: {j['last_error']}"
    yield ""
    yield RECORD_HEADER
    for r in d["history"]:
        yield from format_record(r)
    yield from problem_lines(d, "DAMAGE")


def format_check(d: Info) -> Iterator[str]:
    yield from problem_lines(d, "DAMAGE")
    t = d["tail"]
    if t is not None and not t["valid_records_after_damage"]:
        yield (f"note: torn tail of {t['bytes']:,} bytes at byte {t['offset']:,} of {t['file']} "
               f"({t['reason']}): an unfinished write, not damage")
    count = len(d["problems"]) + d["replay_errors"]["count"]
    yield (f"{'ok' if d['ok'] else f'{count} problem(s) found'}: checked {d['segments']} segment(s), "
           f"{d['records']:,} records in {d['path']}")


def to_json(d: Info, lines: bool = False) -> str:
    if lines:
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(d, indent=2, ensure_ascii=False)
