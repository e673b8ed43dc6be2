"""Catching up: bring one opener's writer (and its caller's picture) up to the published state.

Theory of operation
-------------------
When several processes share a log (spec/format.md §14, `turns.py`), a
process that takes the writer lock first reads what the others appended
since its last turn: from its own end to the published (base, end). Each
segment another process sealed is read to its SEAL, and the next one
becomes active (`Writer.switch_active_locked`); the active one is read up
to the published end. Every record goes to the caller's replay callback,
exactly as at open. Bytes short of the published end that do not verify are
damage (`CorruptionError`): the log fails rather than guess.

Then it sets aside a batch a writer left half-written when it died holding
the lock: bytes after the published end that are not zeros were never
published, so no caller was told they were written. They are zeroed before
anything is appended over them (a copy is kept in `<segment>.<offset>.torn`
as recovery keeps a cut tail), and so is any segment file named after the
published one, which such a writer may have created while rolling over
(having cut the active one's preallocated zeros at its SEAL: the writer maps
no further than the file goes from then on).
"""

from __future__ import annotations

import logging
import os
from typing import Callable

from ..errors import CorruptionError
from . import compact
from .codec import (
    MAX_STORED, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, TYPE_SEAL, Record, decode_segment_header, read_record,
)
from .fs import File
from .control import State
from .directory import replace_file
from .recovery import TORN_SUFFIX, ReplayCallback
from .segment import ZERO_CHUNK, KnownSegment, nonzero_end, parse_segment_name, scan_file, segment_name
from .writer import Writer

log = logging.getLogger("logq")


def catch_up(writer: Writer, state: State, replay: ReplayCallback | None, limit: int = MAX_STORED) -> int:
    """Under the log's lock, with the writer lock held: read from the writer's end to `state`,
    handing each record to `replay`; return how many records were read."""
    if replay is None:  # nothing to hand over (a producer's log): only where the log ends now
        _skip_to(writer, state)
        return 0
    records = 0
    while writer.segments[-1].base < state.base:
        active = writer.segments[-1]
        size = writer.active.size()  # sealed by another process: it ends at its SEAL
        result = _scan(writer, active.base, writer.end, size, replay, limit)
        if not result.sealed:
            raise CorruptionError(f"segment {active.base} was followed by another, but it does not end with a "
                                  "SEAL record", path=_path(writer, active.base), offset=result.end)
        records += result.records - 1
        active.sealed, active.size = True, result.end
        active.last_seq = result.last_seq if result.last_seq is not None else writer.next_seq - 1
        writer.next_seq, writer.written_seq = active.last_seq + 1, active.last_seq
        writer.switch_active_locked(active.last_seq + 1)
    if state.end > writer.end:
        result = _scan(writer, state.base, writer.end, state.end, replay, limit)
        if result.end != state.end:
            raise result.damage or CorruptionError(
                f"records end at byte {result.end}, short of the end another process published ({state.end})",
                path=_path(writer, state.base), offset=result.end)
        records += result.records
    writer.end, writer.next_seq, writer.written_seq = state.end, state.last_seq + 1, state.last_seq
    writer.segments[-1].last_seq = state.last_seq
    writer.grown_locked()
    return records


def _skip_to(writer: Writer, state: State) -> None:
    """`catch_up` without reading records: each segment another process sealed ends at its
    SEAL (read from the file's end), and the active one at the published end."""
    while writer.segments[-1].base < state.base:
        active = writer.segments[-1]
        seal = _seal_seq(writer.active, _path(writer, active.base))
        if seal is None:
            raise CorruptionError(f"segment {active.base} was followed by another, but it does not end with a "
                                  "SEAL record", path=_path(writer, active.base), offset=writer.active.size())
        active.sealed, active.size, active.last_seq = True, writer.active.size(), seal
        writer.switch_active_locked(seal + 1)
    writer.end, writer.next_seq, writer.written_seq = state.end, state.last_seq + 1, state.last_seq
    writer.segments[-1].last_seq = state.last_seq
    writer.grown_locked()


def _scan(writer: Writer, base: int, start: int, size: int, replay: ReplayCallback | None, limit: int):  # type: ignore[no-untyped-def]
    deliver: Callable[[Record], None] = (lambda rec: None) if replay is None else (lambda rec: replay(rec, base))
    return scan_file(writer.active.pread, size, _path(writer, base), deliver, after_seq=writer.next_seq - 1,
                     base=base, start=start, limit=limit)


def set_aside_unpublished(writer: Writer, mode: int) -> None:
    """Zero what a writer that died holding the lock left after the published end (kept
    in a side file first), and remove segment files after the active one."""
    end, size = writer.end, writer.active.size()
    if size > end and writer.active.pread(8, end).count(0) != 8:
        written = nonzero_end(writer.active.pread, end, size)
        path = _path(writer, writer.segments[-1].base)
        side = f"{path}.{end}{TORN_SUFFIX}"
        chunks = (writer.active.pread(min(ZERO_CHUNK, written - at), at) for at in range(end, written, ZERO_CHUNK))
        replace_file(writer.fs, writer.path, side, chunks, mode)
        writer.active.pwrite(bytes(written - end), end)
        log.warning("%s: a process died while appending; its unpublished batch (%d bytes at %d) was set aside "
                    "in %s", path, written - end, end, side)
        active = writer.segments[-1].base
        for name in writer.fs.listdir(writer.path):
            base = parse_segment_name(name)
            if base is not None and base > active:
                writer.fs.unlink(os.path.join(writer.path, name))
                log.warning("%s: removed segment %s, started by a process that died before publishing it",
                            writer.path, name)
        writer.resync_locked()  # such a writer may have cut the active segment at its SEAL


def follow_compaction(writer: Writer, state: State, replay: ReplayCallback | None, limit: int = MAX_STORED
                      ) -> tuple[int, dict[int, tuple[int, int]], set[int]]:
    """Another process compacted the sealed prefix (the epoch changed): under the log's lock,
    with the writer lock held, finish a swap its process left half done, then read the
    compacted segment. Records this opener had not read yet (it may have lagged behind
    the compaction) go to `replay`, in order. Returns (the compacted segment's base, the
    new place of every record in it by sequence number, the bases whose records moved);
    the caller points its jobs there and drops those the compaction swept. The writer's
    segments are updated; if its active segment was compacted, the next one becomes active.
    (If the compacting process died before its swap, nothing moved: nothing changes.)"""
    fs, path = writer.fs, writer.path
    compact.recover_swaps(fs, path, fs.listdir(path), parse_segment_name)
    bases = sorted(b for b in map(parse_segment_name, fs.listdir(path)) if b is not None and b <= state.base)
    if not bases:
        raise CorruptionError("the queue's directory holds no segment after a compaction", path=path, offset=0)
    first = bases[0]
    f = writer.fs.open(_path(writer, first), readonly=True)
    try:
        seal = _seal_seq(f, _path(writer, first))
        if seal is None:  # the first segment is not sealed: no compaction happened
            return first, {}, set()
        active = writer.segments[-1]
        seen = writer.next_seq - 1  # every record up to here went to `replay` already
        if active.base == first or active.base not in bases:  # this opener's active one was compacted
            rest = _scan(writer, active.base, writer.end, writer.active.size(), replay, limit)
            seen = rest.last_seq if rest.last_seq is not None else seen
        moved: dict[int, tuple[int, int]] = {}

        def collect(rec: Record) -> None:
            moved[rec.seq] = (rec.offset, rec.size)
            if rec.seq > seen and replay is not None:
                replay(rec, first)
        result = scan_file(f.pread, f.size(), _path(writer, first), collect, base=first, limit=limit)
    finally:
        f.close()
    if result.damage is not None or not result.sealed:
        raise result.damage or CorruptionError("a compacted segment does not verify to its SEAL record",
                                               path=_path(writer, first), offset=result.end)
    old = {s.base for s in writer.segments if s.base <= seal}
    kept = [s for s in writer.segments if s.base > seal]
    writer.segments[:] = [KnownSegment(first, result.end, True, seal)] + kept
    if not kept:  # the active segment was compacted: the one after the compacted prefix is active now
        writer.switch_active_locked(seal + 1)
        writer.next_seq, writer.written_seq = seal + 1, seal
    return first, moved, old


def _seal_seq(f: File, path: str) -> int | None:
    """The sequence number of the SEAL that ends segment file `f`, or None if it does not end
    with one (it is a fixed-size record: read from the file's end)."""
    size = f.size()
    if size < SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE:
        return None
    salt = decode_segment_header(f.pread(SEGMENT_HEADER_SIZE, 0), path).salt
    try:
        rec = read_record(f.pread(RECORD_HEADER_SIZE, size - RECORD_HEADER_SIZE), 0, salt, path,
                          size - RECORD_HEADER_SIZE)
    except CorruptionError:
        return None
    return rec.seq if rec is not None and rec.type == TYPE_SEAL else None


def _path(writer: Writer, base: int) -> str:
    return os.path.join(writer.path, segment_name(base))
