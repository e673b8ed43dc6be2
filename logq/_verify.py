"""Read-only verification of a queue directory: what `inspect --verify` runs.

Opens no lock and writes nothing, so it is safe on a directory that a live
queue is writing: a torn tail of the last segment is reported as a tail (it
may be a write in progress), not as damage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ._errors import CorruptionError
from ._record import Record
from ._segment import ScanResult, parse_segment_name, scan


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
    """(base, path) of every segment in a directory, oldest first."""
    found = [(parse_segment_name(n), n) for n in os.listdir(path)]
    return sorted((b, os.path.join(path, n)) for b, n in found if b is not None)


def verify(path: str, records: list[Record] | None = None) -> Verification:
    """Check every record of every segment in `path`; collect problems, change nothing."""
    out = Verification()
    files = segment_files(path)
    last_seq = 0
    for i, (base, seg) in enumerate(files):
        is_last = i == len(files) - 1
        if last_seq and base != last_seq + 1:
            out.problems.append(Problem(seg, 0, f"missing segment: expected base {last_seq + 1}"))
        with open(seg, "rb") as f:
            data = f.read()
        try:
            result = scan(data, seg, records.append if records is not None else _ignore, after_seq=last_seq)
        except CorruptionError as exc:
            out.segments.append((seg, None))
            if not (is_last and len(data) <= 40 and not any(data)):
                out.problems.append(Problem(seg, exc.offset or 0, str(exc)))
            continue
        out.segments.append((seg, result))
        last_seq = result.last_seq or max(last_seq, base - 1)
        if not is_last:
            if result.damage is not None:
                out.problems.append(Problem(seg, result.damage.offset or 0, str(result.damage)))
            elif not result.sealed:
                out.problems.append(Problem(seg, result.end, "sealed segment does not end with SEAL"))
        elif result.end < len(data):
            out.tail = (seg, result.end, len(data))
    return out


def _ignore(rec: Record) -> None:
    pass
