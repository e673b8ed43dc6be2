"""Test helpers: a fault-injecting wrapper over the real file system, byte editors."""

from __future__ import annotations

import errno
import os
import threading
from typing import Any

from logq.log.fs import OsFile, OsFileSystem
from logq.log.segment import parse_segment_name


class FaultyFile:
    def __init__(self, fs: "FaultyFS", inner: OsFile) -> None:
        self._fs, self._inner = fs, inner

    def write(self, data: bytes) -> None:
        self._fs.hit("write", self._inner.path)
        self._inner.write(data)

    def pwrite(self, data: bytes, offset: int) -> None:
        self._fs.hit("write", self._inner.path)
        self._inner.pwrite(data, offset)

    def fsync(self) -> None:
        self._fs.hit("fsync", self._inner.path)
        self._inner.fsync()

    def fdatasync(self) -> None:
        self._fs.hit("fsync", self._inner.path)
        self._inner.fdatasync()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class FaultyFS(OsFileSystem):
    """The real file system, but `fail_on(op, n)` makes the n-th such call raise EIO.

    Every operation is counted in `calls`; `synced` is an Event set at each fsync.
    """

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.synced = threading.Event()
        self._lock = threading.Lock()

    def fail_on(self, op: str, nth: int = 1) -> None:
        self.failures[op] = self.calls.get(op, 0) + nth

    def hit(self, op: str, path: str = "") -> None:
        with self._lock:
            n = self.calls[op] = self.calls.get(op, 0) + 1
        if self.failures.get(op) == n:
            raise OSError(errno.EIO, f"injected EIO on {op}", path)
        if op == "fsync":
            self.synced.set()

    def open(self, path: str, **kw: Any) -> FaultyFile:  # type: ignore[override]
        return FaultyFile(self, super().open(path, **kw))

    def rename(self, src: str, dst: str) -> None:
        self.hit("rename", src)
        super().rename(src, dst)

    def fsync_dir(self, path: str) -> None:
        self.hit("fsync_dir", path)
        super().fsync_dir(path)

    def unlink(self, path: str) -> None:
        self.hit("unlink", path)
        super().unlink(path)


class Crash(BaseException):
    """Raised by CrashingFS to stop a process at a chosen file operation."""


class CrashingFS(FaultyFS):
    """Counts every mutating operation and raises `Crash` at operation number `at`."""

    def __init__(self, at: int | None = None) -> None:
        super().__init__()
        self.at, self.ops = at, 0
        self.log: list[str] = []

    def hit(self, op: str, path: str = "") -> None:
        super().hit(op, path)
        self.ops += 1
        self.log.append(f"{op} {os.path.basename(path)}")
        if self.at is not None and self.ops >= self.at:
            raise Crash(f"crash at operation {self.ops}: {op} {path}")


def abandon(queue: Any) -> None:
    """What a crash leaves: no close, no final fsync; only the lock goes with the process."""
    backend = queue._backend
    backend._closed = True
    if not backend.capabilities.durable:
        return  # nothing to leave behind
    backend.compactor.wanted()
    backend.log._abandon()


def segment_paths(path: str) -> list[str]:
    names = sorted(n for n in os.listdir(path) if parse_segment_name(n) is not None)
    return [os.path.join(path, n) for n in names]


def flip_bit(path: str, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ (1 << bit)]))


def truncate(path: str, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)
