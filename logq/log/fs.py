"""The file-system seam: the only module of logq that touches files.

Theory of operation
-------------------
The log needs a handful of operations: open a file for appending, write,
read at an offset, fsync/fdatasync, truncate, rename, unlink, list a
directory, fsync a directory, and take an exclusive advisory lock. They are
the methods of `FileSystem`; `OsFileSystem` implements them with `os` and
`fcntl`.

On Linux, `OsFile` stores writes that fall inside a file's preallocated
stretch (`map_through`) through a shared memory map instead of a pwrite
call: the bytes land in the same page cache (they survive a crash of the
process, and fsync/fdatasync write them out, as they do for mapped pages on
Linux), without a system call per record. `map_through` hands the map to
the log, which stores its writes into it and reads the active segment from
it without a call through this seam. `OsFileSystem(map_writes=False)`
turns this off. The crash-recovery harness substitutes a simulated file system that
can lose unsynced bytes, tear writes and fail with EIO, so nothing else in
logq needs mocking.

Methods raise `OSError` as the operating system does; the log decides what an
error means (a failed write or fsync poisons it).
"""

from __future__ import annotations

import errno
import mmap
import os
import sys
from typing import Protocol

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]


class File(Protocol):
    """An open file. `write` appends at the end, `pwrite` writes at an offset
    (past the end, the gap reads as zeros); both write all bytes or raise."""

    def write(self, data: bytes) -> None: ...
    def pwrite(self, data: bytes, offset: int) -> None: ...
    def pread(self, size: int, offset: int) -> bytes: ...
    def size(self) -> int: ...
    def fsync(self) -> None: ...
    def fdatasync(self) -> None: ...
    def truncate(self, size: int) -> None: ...
    def close(self) -> None: ...

    def map_through(self, size: int) -> mmap.mmap | None:
        """Let later writes inside the file's first `size` bytes (all of which exist)
        skip the system call; they mean the same as pwrite. Returns the shared map
        that such writes go through (the caller may store into it and read from it
        directly, within `size`), or None where there is none: a no-op returning
        None is a valid implementation. Truncating below `size`, mapping again or
        closing the file ends the map."""


class FileSystem(Protocol):
    """The operations the log performs on its directory."""

    def open(self, path: str, *, create: bool = False, exclusive: bool = False, readonly: bool = False) -> File: ...
    def exists(self, path: str) -> bool: ...
    def isdir(self, path: str) -> bool: ...
    def makedirs(self, path: str) -> None: ...
    def listdir(self, path: str) -> list[str]: ...
    def rename(self, src: str, dst: str) -> None: ...
    def unlink(self, path: str) -> None: ...
    def fsync_dir(self, path: str) -> None: ...
    def lock(self, path: str) -> "Lock | None": ...


class Lock(Protocol):
    def release(self) -> None: ...


MAP_WRITES_BY_DEFAULT = sys.platform.startswith("linux")  # where fdatasync is known to write out mapped pages


class OsFile:
    """A file opened with `os.open` (not O_APPEND, which would make pwrite append too)."""

    __slots__ = ("fd", "path", "_map_writes", "_map", "_mapped")

    def __init__(self, path: str, fd: int, map_writes: bool = False) -> None:
        self.path, self.fd, self._map_writes = path, fd, map_writes
        self._map: mmap.mmap | None = None
        self._mapped = -1  # writes ending at or before this offset go through `_map` (-1: none)

    def write(self, data: bytes) -> None:
        self.pwrite(data, os.lseek(self.fd, 0, os.SEEK_END))

    def map_through(self, size: int) -> mmap.mmap | None:
        if not self._map_writes or size <= self._mapped:
            return self._map
        self._unmap()
        try:
            self._map = mmap.mmap(self.fd, size)  # shared and writable: the file's own page cache
        except (OSError, ValueError):  # a file system without shared maps: keep to pwrite
            self._map_writes = False
            return None
        self._mapped = size
        return self._map

    def _unmap(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map, self._mapped = None, -1

    def pwrite(self, data: bytes, offset: int) -> None:
        end = offset + len(data)
        if end <= self._mapped:
            self._map[offset:end] = data  # type: ignore[index]
            return
        written = os.pwrite(self.fd, data, offset)
        if written < len(data):  # a short write: finish it
            view = memoryview(data)[written:]
            while view:
                n = os.pwrite(self.fd, view, offset + written)
                view, written = view[n:], written + n

    def pread(self, size: int, offset: int) -> bytes:
        if offset + size <= self._mapped:
            return self._map[offset:offset + size]  # type: ignore[index]
        chunks, fd = [], self.fd
        while size > 0:
            chunk = os.pread(fd, size, offset)
            if not chunk:
                break
            chunks.append(chunk)
            size -= len(chunk)
            offset += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def fsync(self) -> None:
        os.fsync(self.fd)

    def fdatasync(self) -> None:
        _fdatasync(self.fd)

    def truncate(self, size: int) -> None:
        if size < self._mapped:
            self._unmap()  # a store past the end of a file would be a SIGBUS
        os.ftruncate(self.fd, size)

    def close(self) -> None:
        self._unmap()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_fdatasync = getattr(os, "fdatasync", os.fsync)


class OsLock:
    """An exclusive `flock` on a lock file, holding the owner's pid as text."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1


class OsFileSystem:
    """`FileSystem` on the real operating system.

    `map_writes` (default: on Linux) lets the log write its active segment's
    preallocated stretch through a shared memory map. The bytes are as safe as
    after pwrite, and faster to put there; but a disk that fails or fills
    while a page is stored (possible on copy-on-write file systems such as
    btrfs) ends the process with SIGBUS instead of raising WriterFailedError.
    Nothing written before is lost either way. Turn it off to always get the
    error: ``logq.Queue(path, fs=logq.OsFileSystem(map_writes=False))``.
    """

    map_writes: bool = MAP_WRITES_BY_DEFAULT

    def __init__(self, *, map_writes: bool | None = None) -> None:
        if map_writes is not None:
            self.map_writes = map_writes

    def open(self, path: str, *, create: bool = False, exclusive: bool = False, readonly: bool = False) -> OsFile:
        flags = os.O_RDONLY if readonly else os.O_RDWR
        if create:
            flags |= os.O_CREAT
        if exclusive:
            flags |= os.O_EXCL
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        return OsFile(path, fd, self.map_writes and not readonly)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: str) -> OsLock | None:
        """Take the lock and write our pid into the file, or return None if held."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return OsLock(fd)


def read_lock_holder(path: str) -> int | None:
    """The pid written in a lock file, if it can be read."""
    try:
        with open(path, "rb") as f:
            return int(f.read(32).strip() or b"0") or None
    except (OSError, ValueError):
        return None
