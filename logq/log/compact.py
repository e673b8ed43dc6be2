"""Compaction: rewrite the sealed prefix of the log without the records of swept jobs.

Theory of operation
-------------------
Compaction always takes the whole prefix of sealed segments, oldest first,
and writes one new segment named by the prefix's first base. It holds every
kept record with its original sequence number, type and stored payload
(re-checked under the new file's salt, each a one-record batch: the batches
were durable before, so atomicity is already settled), and ends with the
prefix's last SEAL, so the next segment still follows it.

The caller decides which records to drop (`drop(record) -> bool`). The queue
drops every record of a job that is final and past retention and whose last
record lies inside the prefix: since the prefix starts at the oldest
segment, no earlier record of such a job can be left behind to bring it back.

Swap protocol (each step is a named fault point in the tests):
  C1. write `<first>.seg.compacting`, fsync it;
  C2. rename it to `<first>.seg.swap`, fsync the directory - the commit point;
  C3. unlink the other old segments of the prefix, fsync the directory;
  C4. rename `.swap` over `<first>.seg`, fsync the directory.
Recovery before replay: a `.compacting` file is an unfinished compaction and
is deleted (roll back); a `.swap` file is a committed one: the old segments
it covers (bases up to its SEAL) are deleted and it is renamed into place
(roll forward). A crash at any step leaves either the old set or the new one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from ..errors import CorruptionError
from .fs import DEFAULT_MODE, File, FileSystem
from .codec import FLAG_FIRST, SEGMENT_HEADER_SIZE, TYPE_SEAL, Encoder, Record, encode_segment_header
from .segment import scan_file, segment_name

COMPACTING = ".compacting"
SWAP = ".swap"
WRITE_CHUNK = 4 << 20  # the compacted file is written a few MiB at a time


@dataclass
class Output:
    """A written and fsynced compacted segment (step C1 done)."""

    tmp_path: str
    base: int
    size: int
    seal_seq: int
    kept: int = 0
    dropped: int = 0
    read_bytes: int = 0
    moved: dict[int, tuple[int, int]] = field(default_factory=dict)  # seq -> (offset, size)


def write_compacted(fs: FileSystem, directory: str, bases: list[int], template: Encoder,
                    drop: Callable[[Record], bool], *, mode: int = DEFAULT_MODE) -> Output:
    """Step C1: read the segments `bases` (a sealed prefix) and write the survivors.

    `template` gives the compression policy; records are re-encoded with a new salt.
    """
    first = bases[0]
    salt = int.from_bytes(os.urandom(8), "little")
    encoder = template.with_salt(salt)
    out = Output(os.path.join(directory, segment_name(first) + COMPACTING), first, 0, 0)
    if fs.exists(out.tmp_path):
        fs.unlink(out.tmp_path)
    f = fs.open(out.tmp_path, create=True, exclusive=True, mode=mode)
    try:
        _copy_survivors(fs, directory, bases, encoder, drop, f, out)
    finally:
        f.close()
    return out


def _copy_survivors(fs: FileSystem, directory: str, bases: list[int], encoder: Encoder,
                    drop: Callable[[Record], bool], f: File, out: Output) -> None:
    """Write header, kept records and SEAL to `f`, a few MiB at a time, then fsync it.
    The segments are read a window at a time and each record re-encoded as it is
    read, so neither a segment nor its records are ever whole in memory."""
    chunks = [encode_segment_header(encoder.salt64, out.base)]
    end, buffered = SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE

    def keep(rec: Record) -> None:
        nonlocal chunks, end, buffered
        if drop(rec):
            out.dropped += 1
            return
        chunk = encoder.encode(rec.seq, rec.type, rec.payload, FLAG_FIRST)
        out.moved[rec.seq] = (end, len(chunk))
        chunks.append(chunk)
        end += len(chunk)
        buffered += len(chunk)
        out.kept += 1
        if buffered >= WRITE_CHUNK:
            f.write(b"".join(chunks))
            chunks, buffered = [], 0

    for base in bases:
        path = os.path.join(directory, segment_name(base))
        result = _scanned(fs, path, keep, base)
        out.read_bytes += result.read
        if result.damage is not None or not result.sealed:
            raise CorruptionError("cannot compact a damaged or unsealed segment", path=path, offset=result.end)
        out.seal_seq = result.last_seq or out.seal_seq
    chunks.append(encoder.encode(out.seal_seq, TYPE_SEAL, b"", FLAG_FIRST))
    out.size = end + len(chunks[-1])
    f.write(b"".join(chunks))
    f.fsync()


def commit(fs: FileSystem, directory: str, out: Output, bases: list[int]) -> None:
    """Steps C2-C4: make the compacted segment the only one for its range."""
    swap = os.path.join(directory, segment_name(out.base) + SWAP)
    fs.rename(out.tmp_path, swap)  # C2
    fs.fsync_dir(directory)
    roll_forward(fs, directory, swap, bases)


def roll_forward(fs: FileSystem, directory: str, swap: str, bases: list[int]) -> None:
    """C3-C4, also run by recovery for a `.swap` left by a crash."""
    first = bases[0]
    for base in bases[1:]:  # C3
        path = os.path.join(directory, segment_name(base))
        if fs.exists(path):
            fs.unlink(path)
    fs.fsync_dir(directory)
    fs.rename(swap, os.path.join(directory, segment_name(first)))  # C4
    fs.fsync_dir(directory)


def recover_swaps(fs: FileSystem, directory: str, names: list[str], parse: Callable[[str], int | None]) -> bool:
    """Roll forward a committed swap (`.swap`) that a process which died left half done; a
    `.compacting` file is left alone (it may be another process's C1 in progress). For a
    log that other processes share (follow.py)."""
    return recover(fs, directory, names, parse, roll_back=False)


def recover(fs: FileSystem, directory: str, names: list[str], parse: Callable[[str], int | None], *,
            roll_back: bool = True) -> bool:
    """Finish or undo an interrupted compaction before replay; True if anything was done."""
    acted = False
    for name in sorted(names):
        path = os.path.join(directory, name)
        if name.endswith(".seg" + COMPACTING) and roll_back:
            fs.unlink(path)  # never committed: roll back
            acted = True
        elif name.endswith(".seg" + SWAP):
            base = parse(name[: -len(SWAP)])
            if base is None:
                continue
            seal = _seal_of(fs, path)
            covered = [base] + sorted(b for b in map(parse, names) if b is not None and base < b <= seal)
            roll_forward(fs, directory, path, covered)  # committed: roll forward
            acted = True
    if acted:
        fs.fsync_dir(directory)
    return acted


def _seal_of(fs: FileSystem, path: str) -> int:
    result = _scanned(fs, path, lambda rec: None)
    if result.damage is not None or not result.sealed or result.last_seq is None:
        raise CorruptionError("a committed compaction file does not verify", path=path, offset=result.end)
    return result.last_seq


class _Scanned(NamedTuple):
    damage: CorruptionError | None
    sealed: bool
    last_seq: int | None
    end: int
    read: int  # the file's size: bytes read


def _scanned(fs: FileSystem, path: str, deliver: Callable[[Record], None], base: int | None = None) -> _Scanned:
    """Scan the segment file at `path` a window at a time (`scan_file`): never whole in memory."""
    f = fs.open(path, readonly=True)
    try:
        size = f.size()
        r = scan_file(f.pread, size, path, deliver, base=base)
    finally:
        f.close()
    return _Scanned(r.damage, r.sealed, r.last_seq, r.end, size)


