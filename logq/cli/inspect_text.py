"""How `python -m logq inspect` prints what `_inspect` found: text lines and JSON.

Pure formatting: every function takes the plain dicts that `_inspect` builds
(the same ones `--json` prints) and yields lines; none reads a file.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

from ..log.directory import LOCK_NAME, REGISTRY_NAME

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
    rows = []
    for s in d["segments"]:
        ratio = f"{s['compression_ratio']:.2f}" if s["compression_ratio"] else "-"
        where = f" at byte {s['problem']['offset']:,}" if s["problem"] else ""
        rows.append((s["file"], _n(s["first_seq"]), _n(s["last_seq"]), f"{s['records']:,}", _n(s["bytes"]),
                     s["state"], ratio, s["check"] + where))
    t = d["totals"]
    rows.append((f"total ({t['segments']})", _n(t["first_seq"]), _n(t["last_seq"]), f"{t['records']:,}",
                 f"{t['bytes']:,}", "", "", ""))
    widths = _widths(SEGMENT_COLUMNS, rows)
    yield _row(SEGMENT_COLUMNS, widths, tuple(c.title for c in SEGMENT_COLUMNS))
    for row in rows:
        yield _row(SEGMENT_COLUMNS, widths, row)
    yield ""
    jobs = d["jobs"]
    yield f"jobs: {', '.join(f'{n:,} {s}' for s, n in jobs.items())} ({sum(jobs.values()):,} in all)"
    if d.get("due_by_name"):
        yield f"due now, by task: {', '.join(f'{name!r} {n:,}' for name, n in d['due_by_name'].items())}"
    yield _oldest_line(d["oldest_pending"])
    if d["kind"] != "segment":
        yield _open_by_line(d["open_by"])
    yield from _tail_lines(d["tail"], d["saved_tails"], d.get("open_by"))
    yield _checkpoint_line(d["checkpoint"])
    yield from problem_lines(d, "DAMAGE")


# ------------------------------------------------------------------- tables

@dataclass(frozen=True)
class Column:
    """A column of a text table: its title, the least width and how cells align in it."""

    title: str
    width: int
    right: bool = False
    gap: str = " "  # what separates it from the column before


SEGMENT_COLUMNS = (Column("segment", 24), Column("first", 8, True), Column("last", 8, True),
                   Column("records", 8, True), Column("bytes", 12, True), Column("state", 7, gap="  "),
                   Column("ratio", 5, True), Column("check", 0, gap="  "))


def _widths(columns: tuple[Column, ...], rows: Iterable[tuple[str, ...]],
            least: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Each column as wide as its widest cell, its title, its least width and `least`."""
    widths = list(least or (max(c.width, len(c.title)) for c in columns))
    for row in rows:
        for i, cell in enumerate(row[:-1]):  # the last column is never padded
            widths[i] = max(widths[i], len(cell))
    return tuple(widths)


def _row(columns: tuple[Column, ...], widths: tuple[int, ...], cells: tuple[str, ...]) -> str:
    out = []
    for i, (c, w, cell) in enumerate(zip(columns, widths, cells)):
        last = i == len(columns) - 1
        out.append((c.gap if i else "") + (cell if last else cell.rjust(w) if c.right else cell.ljust(w)))
    return "".join(out).rstrip()


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


def _open_by_line(o: Info | None) -> str:
    """Who has the queue open now (the holders of the registry) and who holds the writer lock."""
    if o is None:
        return "open by: cannot be told here"
    pids = o["pids"]
    if pids is None:  # no kernel list of locks: only the control file's word, which may be stale
        if not o["keeper"]:
            return f"open by: cannot be told here (no /proc/locks to read who holds {REGISTRY_NAME})"
        state = {True: "is running", False: "has ended", None: "may be running"}[o["keeper_running"]]
        return (f"open by: cannot be told here (no /proc/locks); the control file names process {o['keeper']} "
                f"as keeping the writer lock, and it {state}")
    if not pids:
        return f"open by: no process (none holds {REGISTRY_NAME})"
    return f"open by: {len(pids)} process{'es' if len(pids) > 1 else ''}: " + ", ".join(_opener(o, p) for p in pids)


def _opener(o: Info, pid: int) -> str:
    if pid != o["writer_lock"]:
        return str(pid)
    if pid == o["keeper"]:
        return f"{pid} (alone: it keeps the writer lock {LOCK_NAME} between calls)"
    return f"{pid} (holds the writer lock {LOCK_NAME} now)"


def _may_be_writing(o: Info | None) -> bool:
    """Some process has the queue open, or where that cannot be told, the keeper the control
    file names may still be running."""
    if o is None:
        return False
    if o["pids"] is not None:
        return bool(o["pids"])
    return bool(o["keeper"]) and o["keeper_running"] is not False


def _who(o: Info | None) -> str:
    pids = [] if o is None else o["pids"] if o["pids"] is not None else [o["keeper"]]
    listed = ", ".join(map(str, pids))
    return f"processes {listed} have" if len(pids) > 1 else f"process {listed} has"


def _tail_lines(tail: Info | None, saved: list[Info], open_by: Info | None) -> Iterator[str]:
    if tail is None:
        yield "torn tail: none"
    else:
        yield (f"torn tail: {tail['bytes']:,} bytes after byte {tail['offset']:,} of "
               f"{os.path.basename(tail['file'])} ({tail['reason']}); not repaired: the next open "
               f"saves them to {os.path.basename(tail['saved_to_on_next_open'])} and cuts them")
        if _may_be_writing(open_by):
            yield f"  {_who(open_by)} the queue open: this may be a write in progress"
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


RECORD_COLUMNS = (Column("seq", 8, True), Column("type", 8, gap="  "), Column("job", 8, True),
                  Column("name", 16, gap="  "), Column("state", 9), Column("size", 7, True),
                  Column("raw", 7, True), Column("time", 24, gap="  "), Column("detail", 0, gap="  "))
RECORD_PAGE = 256  # records a streamed table holds back to size its columns
RECORD_PAGE_BYTES = 4 << 20  # or fewer, when their whole payloads (--payload) add up to this


class RecordTable:
    """Record lines under a header, with columns as wide as their contents.

    A whole list (`--job`) is sized at once. A stream (`--records`) is held
    back a page of RECORD_PAGE records (or RECORD_PAGE_BYTES of whole
    payloads) at a time and sized to it; columns only
    ever widen, and when a later page widens them the header is printed again
    above it, so that every line lines up with the header above it. `add`
    and `finish` return the lines to print now; `finish` prints at least the header.
    """

    def __init__(self, page: int = RECORD_PAGE, page_bytes: int = RECORD_PAGE_BYTES) -> None:
        self.page, self.page_bytes = page, page_bytes
        self.held: list[Info] = []
        self.held_bytes = 0
        self.widths: tuple[int, ...] | None = None

    def add(self, r: Info) -> list[str]:
        self.held.append(r)
        self.held_bytes += len(r.get("payload") or "")
        full = len(self.held) >= self.page or self.held_bytes >= self.page_bytes
        return self._release() if full else []

    def finish(self) -> list[str]:
        return self._release()

    def _release(self) -> list[str]:
        rows = [(r, _record_cells(r)) for r in self.held]
        self.held, self.held_bytes = [], 0
        widths = _widths(RECORD_COLUMNS, (cells for _, cells in rows), self.widths)
        out = []
        if widths != self.widths:
            out.append(_row(RECORD_COLUMNS, widths, tuple(c.title for c in RECORD_COLUMNS)))
            self.widths = widths
        for r, cells in rows:
            out.append(_row(RECORD_COLUMNS, widths, cells))
            out.extend(_data_lines(r))
        return out


def _record_cells(r: Info) -> tuple[str, ...]:
    return (str(r["seq"]), r["type"], "-" if r["job"] is None else str(r["job"]), r["name"] or "-",
            r["state"] or "-", str(r["size"]), str(r["raw_size"]), iso(r["time"]), _detail(r))


def _data_lines(r: Info) -> list[str]:
    """With --payload: the record's data whole, below its line."""
    if not r.get("payload"):
        return []
    encoding = "" if r["payload_encoding"] == "utf-8" else " (base64)"
    return [f"{'':>10}{DATA_LABEL.get(r['type'], 'payload')}{encoding}: {r['payload']}"]


def format_records(records: Iterable[Info]) -> Iterator[str]:
    """A header and every record, the columns sized to all of them."""
    table = RecordTable(page=sys.maxsize, page_bytes=sys.maxsize)
    for r in records:
        yield from table.add(r)
    yield from table.finish()


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
    yield from format_records(d["history"])
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
