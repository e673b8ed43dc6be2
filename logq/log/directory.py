"""The log directory's small files: the format marker, the lock, files replaced whole.

Theory of operation
-------------------
`logq.meta` says "logq <format version>". `prepare` checks an existing
directory is a logq one (or empty); `write_meta` writes the marker of a new
one (after its first segment). The lock files and the control file that
let several processes share the directory are `turns.py`'s.
`replace_file` is how every small file (the marker, the checkpoint, a torn
tail kept aside) is written: whole or not at all, durably.
"""

from __future__ import annotations

import os
import re
from typing import Iterable

from ..errors import NotALogqDirectory, UnsupportedVersionError
from .codec import FORMAT_VERSION

# The directory's format version, in logq.meta (spec/format.md §9): the segment framing's
# (FORMAT_VERSION, in every segment header) and the directory's files. Version 2: LEASE
# records may name their owner (§14.8); an opener that is alone raises a version-1 marker.
DIRECTORY_VERSION = 2
assert DIRECTORY_VERSION >= FORMAT_VERSION
from .fs import DEFAULT_MODE, FileSystem
from .segment import parse_segment_name

_UNBORN_KEPT = re.compile(r"^[0-9]{20}\.seg\.0\.torn(\.tmp)?$")
META_NAME = "logq.meta"
LOCK_NAME = "logq.lock"  # the writer lock (turns.py)
REGISTRY_NAME = "logq.open"  # every opener's shared lock (turns.py)
CONTROL_NAME = "logq.control"  # the published state (control.py)
OWNERS_NAME = "logq.owners"  # a directory: one locked file per opener (owners.py)
COMPACT_LOCK_NAME = "logq.compact.lock"  # held by the one process that compacts (backends/compactor.py)
TMP_SUFFIX = ".tmp"  # `replace_file` writes `final` + this first


def prepare(fs: FileSystem, path: str, mode: int = DEFAULT_MODE) -> int:
    """Check and create if needed the log directory `path`; return the version its marker
    names (0: it has none, as a new directory). New files get `mode`; a directory others
    could plant files in is refused (`fs.makedirs`). The caller writes a missing marker
    (`write_meta`) once the first segment exists, so that a marker without segments
    means segments were lost (spec/format.md §7 rule 0)."""
    if fs.exists(path) and not fs.isdir(path):
        raise NotALogqDirectory(f"{path} is a file, not a logq directory: pass a directory path")
    fs.makedirs(path, mode)
    fresh = not [n for n in fs.listdir(path) if not _left_by_a_first_open(n)]
    return 0 if fresh else check_meta(fs, path)


def write_meta(fs: FileSystem, path: str, mode: int = DEFAULT_MODE) -> None:
    """Write the marker `logq.meta` of the log directory `path`, durably."""
    replace_file(fs, path, os.path.join(path, META_NAME), f"logq {DIRECTORY_VERSION}\n".encode(), mode)


def _left_by_a_first_open(name: str) -> bool:
    """What an open that crashed before its marker was written may leave: the lock, a
    marker's temporary file, and an unborn first segment kept aside (`<segment>.0.torn`)."""
    return name in (LOCK_NAME, REGISTRY_NAME, CONTROL_NAME, COMPACT_LOCK_NAME, OWNERS_NAME, META_NAME + TMP_SUFFIX) \
        or _UNBORN_KEPT.match(name) is not None


def check_meta(fs: FileSystem, path: str) -> int:
    """Refuse a directory that is not a logq one, or one written by a newer format; return
    the version its marker names (0: it has none)."""
    meta = os.path.join(path, META_NAME)
    if not fs.exists(meta):
        if not any(parse_segment_name(n) is not None for n in fs.listdir(path)):
            raise NotALogqDirectory(
                f"{path} is not empty and holds no logq queue: pass an empty or new directory")
        return 0
    f = fs.open(meta, readonly=True)
    try:
        text = f.pread(64, 0)
    finally:
        f.close()
    parts = text.split()
    if len(parts) != 2 or parts[0] != b"logq" or not parts[1].isdigit():
        raise NotALogqDirectory(f"{meta} is not a logq marker file: is this the right directory?")
    if int(parts[1]) > DIRECTORY_VERSION:
        raise UnsupportedVersionError(
            f"queue was written by format version {int(parts[1])}; this logq reads up to "
            f"{DIRECTORY_VERSION}: upgrade logq", path=meta)
    return int(parts[1])


def replace_file(fs: FileSystem, directory: str, final: str, data: bytes | Iterable[bytes],
                 mode: int = DEFAULT_MODE) -> None:
    """Make `final` hold `data` (bytes, or chunks of them written one after another, so
    that a large file is never whole in memory; a chunk of zeros is left a hole, so
    a sparse tail copied aside stays sparse), whole or not at all, durably: write
    `final`.tmp (a new file of `mode`), fsync it, rename it over `final`, fsync the directory."""
    tmp = final + TMP_SUFFIX
    if fs.exists(tmp):  # a stale one, or a planted link: never write through it
        fs.unlink(tmp)
    f = fs.open(tmp, create=True, exclusive=True, mode=mode)
    try:
        at = written = 0
        for chunk in (data,) if isinstance(data, bytes) else data:
            if chunk.count(0) != len(chunk):
                f.pwrite(chunk, at)
                written = at + len(chunk)
            at += len(chunk)
        if written < at:  # it ends with zeros: they are a hole
            f.truncate(at)
        f.fsync()
    finally:
        f.close()
    fs.rename(tmp, final)
    fs.fsync_dir(directory)
