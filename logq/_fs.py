"""The file-system seam: the only module of logq that touches files.

Theory of operation
-------------------
The log needs a handful of operations: open a file for appending, write,
read at an offset, fsync/fdatasync, truncate, rename, unlink, list a
directory, fsync a directory, and take an exclusive advisory lock. They are
the methods of `FileSystem`; `OsFileSystem` implements them with `os` and
`fcntl`. The crash-recovery harness substitutes a simulated file system that
can lose unsynced bytes, tear writes and fail with EIO, so nothing else in
logq needs mocking.

Methods raise `OSError` as the operating system does; the log decides what an
error means (a failed write or fsync poisons it).
"""

from __future__ import annotations

import errno
import os
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


class OsFile:
    """A file opened with `os.open` (not O_APPEND, which would make pwrite append too)."""

    __slots__ = ("fd", "path")

    def __init__(self, path: str, fd: int) -> None:
        self.path, self.fd = path, fd

    def write(self, data: bytes) -> None:
        self.pwrite(data, os.lseek(self.fd, 0, os.SEEK_END))

    def pwrite(self, data: bytes, offset: int) -> None:
        written = os.pwrite(self.fd, data, offset)
        if written < len(data):  # a short write: finish it
            view = memoryview(data)[written:]
            while view:
                n = os.pwrite(self.fd, view, offset + written)
                view, written = view[n:], written + n

    def pread(self, size: int, offset: int) -> bytes:
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
        os.ftruncate(self.fd, size)

    def close(self) -> None:
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
    """`FileSystem` on the real operating system."""

    def open(self, path: str, *, create: bool = False, exclusive: bool = False, readonly: bool = False) -> OsFile:
        flags = os.O_RDONLY if readonly else os.O_RDWR
        if create:
            flags |= os.O_CREAT
        if exclusive:
            flags |= os.O_EXCL
        return OsFile(path, os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o644))

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
