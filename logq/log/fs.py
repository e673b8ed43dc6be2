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

Methods raise `OSError` as the operating system does, with the file's name
in `filename`; the log decides what an error means (a failed write or fsync
poisons it; an error while opening becomes a named `FileAccessError` through
`access_error`).

Files an attacker could plant
-----------------------------
A queue directory may sit where other users can reach it (under /tmp, say).
So `OsFileSystem` never follows a symbolic link and never opens anything but
a regular file there (a FIFO would block the open forever, a link would make
logq write into its target): it looks with lstat before it opens, opens with
O_NOFOLLOW and O_NONBLOCK, and checks again with fstat (`open_regular`); such
a name raises `NotARegularFile`. Temporary files are made with O_EXCL after
unlinking a stale one (unlink removes a link, not its target). `makedirs`
creates the queue directory for its owner alone and refuses an existing one
that belongs to another user or that others may write to
(`UnsafeDirectoryError`), and new files get exactly the queue's `mode`
(0o600 unless the caller shares the queue, e.g. 0o660 for its group; the
umask does not narrow it).
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import sys
from typing import BinaryIO, Protocol

from ..errors import (
    FileAccessError, InvalidArgument, LogqError, MissingFileError, NotARegularFile, UnsafeDirectoryError,
)

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
        None is a valid implementation. A map covers only bytes with disk space
        behind them (none where they cannot be allocated, a full disk), so that
        a store never meets a hole. Truncating below `size`, mapping again or
        closing the file ends the map."""


class FileSystem(Protocol):
    """The operations the log performs on its directory.

    `open` opens a regular file only (anything else, a symbolic link included,
    raises `NotARegularFile`) and never blocks; `create` makes a missing file
    with permission bits `mode`, `exclusive` refuses an existing one
    (FileExistsError). `exists` is true for any name, a dangling link too.
    `makedirs` makes the directory (files `mode` there would be readable by
    whom they are, with search bits: see `dir_mode`) or checks the existing
    one: another user's, or one that others outside `mode` may write to,
    raises `UnsafeDirectoryError`. `open_lock` creates its file like `open`.
    """

    def open(self, path: str, *, create: bool = False, exclusive: bool = False, readonly: bool = False,
             mode: int = ...) -> File: ...
    def exists(self, path: str) -> bool: ...
    def isdir(self, path: str) -> bool: ...
    def makedirs(self, path: str, mode: int = ...) -> None: ...
    def listdir(self, path: str) -> list[str]: ...
    def rename(self, src: str, dst: str) -> None: ...
    def unlink(self, path: str) -> None: ...
    def fsync_dir(self, path: str) -> None: ...
    def open_lock(self, path: str, mode: int = ...) -> "FileLock": ...


class FileLock(Protocol):
    """An advisory lock on a file, as `flock` gives it: held by this handle (one open of the
    file), shared or exclusive, against every other handle, in this process or another. A
    process that dies loses its locks. Changing a held lock's kind is not atomic: a failed
    change may leave it unheld (so callers change kinds only where no one else can intervene)."""

    def acquire(self, *, shared: bool = False, wait: bool = True) -> bool:
        """Take (or change to) the lock; with `wait` False, return False at once if it is held."""
    def release(self) -> None: ...
    def close(self) -> None:
        """Release and let go of the file."""


MAP_WRITES_BY_DEFAULT = sys.platform.startswith("linux")  # where fdatasync is known to write out mapped pages
DEFAULT_MODE = 0o600  # new files: read and written by their owner alone
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def check_mode(mode: object) -> int:
    """`mode` for a queue's new files, checked: permission bits without execute bits,
    including read and write for the owner (0o600, 0o640, 0o660, ...)."""
    if isinstance(mode, bool) or not isinstance(mode, int) or mode & ~0o666 or mode & 0o600 != 0o600:
        raise InvalidArgument(f"mode must be permission bits for files that include 0o600 and no execute "
                              f"bits, such as 0o600 (the default) or 0o660 (shared with the group), not {mode!r}")
    return mode


def dir_mode(mode: int) -> int:
    """The mode of a directory whose files have `mode`: a search bit beside each read bit."""
    return mode | (mode & 0o444) >> 2


def open_regular(path: str, flags: int, *, create: bool = False, exclusive: bool = False,
                 mode: int = DEFAULT_MODE) -> int:
    """A descriptor of the regular file `path`, opened with `flags` (O_RDONLY or O_RDWR).

    Never follows a symbolic link and never blocks: anything but a regular file
    raises `NotARegularFile` (looked at with lstat before the open, so no FIFO or
    device is opened, and with fstat after it, in case the name changed). With
    `create`, a missing file is made with exactly `mode` (the umask does not
    narrow it); with `exclusive`, an existing name raises FileExistsError.
    """
    if create:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode)
        except FileExistsError:
            if exclusive:
                raise
        else:
            return _checked_fd(fd, path, mode)
    refuse_unless_regular(path, os.lstat(path))
    return _checked_fd(os.open(path, flags | _NOFOLLOW | _NONBLOCK | _CLOEXEC), path, None)


def _checked_fd(fd: int, path: str, mode: int | None) -> int:
    """`fd` if it is a regular file, made blocking (and given `mode`, when not None)."""
    try:
        refuse_unless_regular(path, os.fstat(fd))
        if mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def refuse_unless_regular(path: str, st: os.stat_result) -> None:
    """Raise `NotARegularFile` unless `st` (of `path`) describes a regular file."""
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise NotARegularFile(
            f"{path} is {kind}, where logq keeps a regular file of its own: move it out of the queue "
            "directory (logq never follows a link or opens anything else there)", path=path)


def open_readonly(path: str) -> BinaryIO:
    """`path` opened for reading as a Python file, by the rules of `open_regular`."""
    return os.fdopen(open_regular(path, os.O_RDONLY), "rb")


def access_error(exc: OSError, path: str) -> LogqError:
    """`exc` as a named error whose message names the file (`exc.filename`, else
    `path`) and says what to do; a `LogqError` is returned as it is."""
    if isinstance(exc, LogqError):
        return exc
    where = os.fsdecode(exc.filename) if isinstance(exc.filename, (str, bytes)) else path
    code = exc.errno
    advice = _ADVICE.get(code or 0, "check the file and its disk, then try again")
    cls = (NotARegularFile if code in (errno.EISDIR, errno.ELOOP) else MissingFileError if code == errno.ENOENT
           else FileAccessError)
    reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
    return cls(f"cannot use {where} ({reason}): {advice}", path=where, errno=code)


_ADVICE = {
    errno.EACCES: "the user running logq must be able to read and write it (and its directory): fix its "
                  "owner or permissions, or run as its owner",
    errno.EISDIR: "logq keeps a regular file under this name: move the directory out of the queue directory",
    errno.ELOOP: "logq never follows a symbolic link in a queue directory: replace the link by the file, "
                 "or remove it",
    errno.ENOSPC: "the disk is full: free some space, then try again",
    errno.EDQUOT: "the disk quota is used up: free some space, then try again",
    errno.EROFS: "the file system is read-only: remount it read-write (`python -m logq inspect` reads a "
                 "queue without writing)",
    errno.ENOENT: "it vanished while logq was using it: is another program removing files from the queue "
                  "directory? Stop it, then try again",
    errno.ENOTDIR: "a part of the path is a file, not a directory: check the path",
    errno.EMFILE: "too many files are open: raise the limit (ulimit -n) or open fewer queues",
    errno.ENFILE: "too many files are open on this system: close some, then try again",
    errno.EIO: "the disk reported an I/O error: check the disk (dmesg), then try again",
}
_ADVICE[errno.EPERM] = _ADVICE[errno.EACCES]


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
        start = max(self._mapped, 0)
        self._unmap()
        if not _allocate(self.fd, start, size - start):  # a full disk: keep to pwrite, which says so
            return None
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
        try:
            written = os.pwrite(self.fd, data, offset)
            if written < len(data):  # a short write: finish it
                view = memoryview(data)[written:]
                while view:
                    n = os.pwrite(self.fd, view, offset + written)
                    view, written = view[n:], written + n
        except OSError as exc:
            raise self._named(exc)

    def pread(self, size: int, offset: int) -> bytes:
        if offset + size <= self._mapped:
            return self._map[offset:offset + size]  # type: ignore[index]
        chunks, fd = [], self.fd
        try:
            while size > 0:
                chunk = os.pread(fd, size, offset)
                if not chunk:
                    break
                chunks.append(chunk)
                size -= len(chunk)
                offset += len(chunk)
        except OSError as exc:
            raise self._named(exc)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def size(self) -> int:
        try:
            return os.fstat(self.fd).st_size
        except OSError as exc:
            raise self._named(exc)

    def fsync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise self._named(exc)

    def fdatasync(self) -> None:
        try:
            _fdatasync(self.fd)
        except OSError as exc:
            raise self._named(exc)

    def truncate(self, size: int) -> None:
        if size < self._mapped:
            self._unmap()  # a store past the end of a file would be a SIGBUS
        try:
            os.ftruncate(self.fd, size)
        except OSError as exc:
            raise self._named(exc)

    def _named(self, exc: OSError) -> OSError:
        """`exc`, naming this file (a call on a descriptor names none)."""
        if exc.filename is None:
            exc.filename = self.path
        return exc

    def close(self) -> None:
        self._unmap()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_fdatasync = getattr(os, "fdatasync", os.fsync)
_fallocate = getattr(os, "posix_fallocate", None)


def _allocate(fd: int, offset: int, length: int) -> bool:
    """Make sure the disk has blocks behind bytes `offset`..`offset + length` of the file,
    so that a store into them through a map cannot meet a hole on a full disk (a
    SIGBUS): the preallocated zeros of a file copied sparse (`cp --sparse=always`,
    `rsync -S`) are holes. False if it cannot (no space, or no posix_fallocate)."""
    if length <= 0:
        return True
    if _fallocate is None:
        return False
    try:
        _fallocate(fd, offset, length)  # glibc writes zeros itself where the file system lacks fallocate
    except OSError:
        return False
    return True


class OsFileLock:
    """`FileLock` over `flock` on a descriptor of its own."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def acquire(self, *, shared: bool = False, wait: bool = True) -> bool:
        how = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        while True:
            try:
                fcntl.flock(self.fd, how)
                return True
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) and not wait:
                    return False
                raise

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1

    def __del__(self) -> None:  # a log dropped without close lets go of its locks when freed
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass


class OsFileSystem:
    """`FileSystem` on the real operating system.

    `map_writes` (default: on Linux) lets the log write its active segment's
    preallocated stretch through a shared memory map. The bytes are as safe as
    after pwrite, and faster to put there. The stretch is allocated on disk
    (posix_fallocate) before it is mapped, holes included (a queue copied
    sparse), so a disk that is full then makes the log fall back to pwrite,
    which raises WriterFailedError; but a disk that fails, or a copy-on-write
    file system (btrfs) that needs new blocks to overwrite allocated ones and
    has none, still ends the process with SIGBUS while a page is stored.
    Nothing written before is lost either way. Turn it off to always get the
    error: ``logq.Queue(path, fs=logq.OsFileSystem(map_writes=False))``.
    """

    map_writes: bool = MAP_WRITES_BY_DEFAULT

    def __init__(self, *, map_writes: bool | None = None) -> None:
        if map_writes is not None:
            self.map_writes = map_writes

    def open(self, path: str, *, create: bool = False, exclusive: bool = False, readonly: bool = False,
             mode: int = DEFAULT_MODE) -> OsFile:
        fd = open_regular(path, os.O_RDONLY if readonly else os.O_RDWR, create=create, exclusive=exclusive,
                          mode=mode)
        return OsFile(path, fd, self.map_writes and not readonly)

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def makedirs(self, path: str, mode: int = DEFAULT_MODE) -> None:
        """Make directory `path` with exactly `dir_mode(mode)` (missing parents as
        os.makedirs makes them), or check the one there (a link to it is followed): it
        must belong to this user, and only those whom `mode` lets write files may write
        to it (else UnsafeDirectoryError)."""
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, exist_ok=True)
        except FileExistsError as exc:  # a file where a directory should be
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), parent) from exc
        try:
            os.mkdir(path, dir_mode(mode))
        except FileExistsError:
            made = False
        else:
            made = True
        fd = os.open(path, os.O_RDONLY | _DIRECTORY | _CLOEXEC | (_NOFOLLOW if made else 0))
        try:
            if made and hasattr(os, "fchmod"):
                os.fchmod(fd, dir_mode(mode))  # exactly: the umask does not narrow it
            check_directory(path, os.fstat(fd), mode)
        finally:
            os.close(fd)

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

    def open_lock(self, path: str, mode: int = DEFAULT_MODE) -> OsFileLock:
        """The lock file `path` (created if missing), on a descriptor of its own."""
        return OsFileLock(open_regular(path, os.O_RDWR, create=True, mode=mode))


def check_directory(path: str, st: os.stat_result, mode: int) -> None:
    """Raise `UnsafeDirectoryError` unless directory `path` (stat `st`) belongs to this
    user and no one outside `mode` may write to it (the group may, if `mode` lets it).
    When `mode` lets the group write, the directory may also belong to another member
    of the group: sharing the queue with them is what the caller asked for."""
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    shared = bool(mode & 0o020) and uid is not None and st.st_gid in {os.getegid(), *os.getgroups()}
    if uid is not None and st.st_uid != uid and not shared:
        raise UnsafeDirectoryError(
            f"{path} belongs to user {st.st_uid}, not to this user ({uid}): its owner could plant links "
            "or files in it that make logq write elsewhere; use a directory of your own, or run as its owner "
            "(a queue shared with mode=0o660 may belong to another member of its group)", path=path)
    extra = st.st_mode & 0o022 & ~dir_mode(mode)
    if extra:
        who = ("g" if extra & 0o020 else "") + ("o" if extra & 0o002 else "")
        raise UnsafeDirectoryError(
            f"{path} may be written by {'its group' if who == 'g' else 'other users'} (mode "
            f"{oct(stat.S_IMODE(st.st_mode))}): they could plant links or files in it that make logq write "
            f"elsewhere; run `chmod {who}-w {path}`, or pass mode=0o660 to share the queue with the group",
            path=path)
