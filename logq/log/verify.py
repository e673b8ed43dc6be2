"""Read-only verification of a queue directory: what `inspect --verify` runs.

Opens no lock and writes nothing, so it is safe on a directory that a live
queue is writing: a torn tail of the last segment is reported as a tail (it
may be a write in progress), not as damage. A record there whose checks
verify but whose content is invalid (a length over the limits, a frame that
does not inflate to its raw length) is no write in progress: it is damage.

Files are read a window at a time (`scan_path`), never whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .compact import SWAP
from typing import BinaryIO, Callable

from ..errors import ChecksumError, CorruptionError, LogqError
from . import checkpoint, mark
from .codec import MAX_STORED, SEGMENT_HEADER_SIZE, Record
from .directory import META_NAME
from .fs import open_readonly
from .recovery import Evidence
from .segment import Pread, ScanResult, is_unborn, nonzero_end, parse_segment_name, scan_file


@dataclass
class Problem:
    path: str
    offset: int
    message: str


@dataclass
class Verification:
    segments: list[tuple[str, ScanResult | None]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    tail: tuple[str, int, int] | None = None  # last segment: path, valid end, file size

    @property
    def ok(self) -> bool:
        return not self.problems


def segment_files(path: str) -> list[tuple[int, str]]:
    """(base, path) of every segment in a directory, oldest first.

    A committed compaction that has not been rolled into place yet (a
    `.seg.swap` file) stands for the old segments it replaces, as it will
    after the next open.
    """
    names = os.listdir(path)
    found = sorted((b, os.path.join(path, n)) for b, n in ((parse_segment_name(n), n) for n in names)
                   if b is not None)
    for name in names:
        base = parse_segment_name(name[:-len(SWAP)]) if name.endswith(".seg" + SWAP) else None
        if base is not None:
            swap = os.path.join(path, name)
            seal = scan_path(swap, _ignore)[0].last_seq or base
            found = sorted([(b, p) for b, p in found if not base <= b <= seal] + [(base, swap)])
    return found


def verify(path: str, records: list[Record] | None = None) -> Verification:
    """Check every record of every segment in `path`; collect problems, change nothing.

    If a file vanishes while it is read (a compaction swapped it), a check
    without `records` starts over; one that streams records raises
    `LogqError` asking to run it again, rather than deliver records twice.
    """
    for attempt in range(5 if records is None else 1):
        try:
            return _verify_once(path, records)
        except FileNotFoundError:
            continue
    raise LogqError(f"the segments of {path} changed while they were read (a compaction "
                    "swapped them): run the command again")


def evidence(path: str) -> Evidence:
    """What the directory's durable mark and checkpoint say was durable (§7), read-only.
    A mark or checkpoint that is missing, unreadable or damaged is no evidence."""
    m = cp = None
    try:
        with open_readonly(os.path.join(path, mark.NAME)) as f:
            m = mark.decode(f.read(2 * mark.SLOT_SIZE))
    except OSError:  # none, or not a regular file: refused unread
        pass
    try:
        with open_readonly(os.path.join(path, checkpoint.NAME)) as f:
            size = os.fstat(f.fileno()).st_size
            cp = checkpoint.load(lambda n, offset: os.pread(f.fileno(), n, offset), size)
    except (OSError, CorruptionError):
        pass
    return Evidence.of(m, cp)


def _verify_once(path: str, records: list[Record] | None) -> Verification:
    out = Verification()
    ev = evidence(path)  # before the segments: a live writer only moves it after them
    files = segment_files(path)
    _check_first(path, files, ev, out)
    last_seq = 0
    for i, (base, seg) in enumerate(files):
        is_last = i == len(files) - 1
        if last_seq and base != last_seq + 1:
            out.problems.append(Problem(seg, 0, f"missing segment: expected base {last_seq + 1}"))
        try:
            result, size, written = scan_path(seg, records.append if records is not None else _ignore,
                                              after_seq=last_seq, base=base)
        except CorruptionError as exc:
            out.segments.append((seg, None))
            if not (is_last and _unborn(seg)):
                out.problems.append(Problem(seg, exc.offset or 0, str(exc)))
                last_seq = 0  # unknown: do not report the next segment as missing too
            continue
        out.segments.append((seg, result))
        last_seq = result.last_seq or max(last_seq, base - 1)
        if not is_last:
            if result.damage is not None:
                out.problems.append(Problem(seg, result.damage.offset or 0, str(result.damage)))
                last_seq = 0
            elif not result.sealed:
                out.problems.append(Problem(seg, result.end, "sealed segment does not end with SEAL"))
                last_seq = 0
        elif result.end < ev.end_of(base):
            what = f"valid only up to byte {result.end}" if result.damage is None else result.damage.reason
            out.problems.append(Problem(seg, result.end, f"{what}, though bytes up to {ev.end_of(base)} were "
                                        f"durable ({ev.describe()}): damage, not a torn write; opening refuses"))
        elif result.damage is not None and not isinstance(result.damage, ChecksumError) \
                and not (result.sealed and written <= result.end):  # zeros after a SEAL: §7 cuts them
            out.problems.append(Problem(seg, result.damage.offset or 0, str(result.damage)))
        elif written > result.end:
            out.tail = (seg, result.end, size)
    if files and last_seq < ev.seq and not out.problems:
        out.problems.append(Problem(files[-1][1], 0, f"records up to sequence number {ev.seq} were durable "
                                    f"({ev.describe()}), but the log ends at {last_seq}: a segment or its "
                                    "end is missing"))
    return out


def _check_first(path: str, files: list[tuple[int, str]], ev: Evidence, out: Verification) -> None:
    """§7 rule 0: the first segment has base 1; a directory with its marker has a segment."""
    if files and files[0][0] > 1:
        out.problems.append(Problem(files[0][1], 0, f"the first segment starts at sequence number "
                                    f"{files[0][0]}: segments holding 1..{files[0][0] - 1} are missing"))
    elif not files and (ev.seq or os.path.exists(os.path.join(path, META_NAME))):
        out.problems.append(Problem(path, 0, "no segment, though the directory held a queue: "
                                    "every segment is missing"))


def scan_path(path: str, deliver: Callable[[Record], None], *, after_seq: int = 0, base: int | None = None,
              limit: int = MAX_STORED) -> tuple[ScanResult, int, int]:
    """`scan_file` the segment file at `path`, reading it a window at a time; return the
    result, the file's size, and where the bytes that are not zero end (the result's
    end if only zeros, preallocated space, follow it)."""
    with open_readonly(path) as f:
        read, size = reader(f), os.fstat(f.fileno()).st_size
        result = scan_file(read, size, path, deliver, after_seq=after_seq, base=base, limit=limit)
        return result, size, nonzero_end(read, result.end, size)


def reader(f: BinaryIO) -> Pread:
    """A `Pread` over a Python file: `read(n, offset)`."""
    def read(n: int, offset: int) -> bytes:
        f.seek(offset)
        return f.read(n)
    return read


def _unborn(path: str) -> bool:
    """The segment at `path` is an unfinished rollover (`is_unborn`): it is read only
    if it is no longer than a header."""
    with open_readonly(path) as f:
        return is_unborn(f.read(SEGMENT_HEADER_SIZE + 1), path)


def _ignore(rec: Record) -> None:
    pass
