"""Owner files: which openers of a log are alive.

Theory of operation
-------------------
Every opener of a log directory has an owner id, a random nonzero 64-bit
number, and an owner file `logq.owners/<id as 16 hex digits>` on which it
holds an exclusive lock for as long as it has the log open (spec/format.md
§14.8). The kernel drops the lock when the process ends, however it ends, so
another opener that can take the lock of an owner file knows that owner
is gone: `dead` lists them. The layer above names the owner in what it
writes (the queue: each LEASE record) and, for a dead owner, ends what it
held (the queue expires its leases at once) before `forget` removes the file.

An owner file is created and locked under the writer lock, and `dead` is
only asked under it, so no opener ever sees a new owner's file before its
lock is taken. A clean close removes the opener's own file.
"""

from __future__ import annotations

import os

from .directory import OWNERS_NAME as DIRECTORY
from .fs import DEFAULT_MODE, FileLock, FileSystem


def owner_name(owner: int) -> str:
    return f"{owner:016x}"


class Owners:
    """This opener's owner file, and the others' as seen from here."""

    def __init__(self, fs: FileSystem, path: str, mode: int = DEFAULT_MODE) -> None:
        """Writer lock held: make and lock this opener's owner file."""
        self._fs, self._dir, self._mode = fs, os.path.join(path, DIRECTORY), mode
        fs.makedirs(self._dir, mode)
        while True:
            self.id = int.from_bytes(os.urandom(8), "little") or 1
            mine = os.path.join(self._dir, owner_name(self.id))
            if not fs.exists(mine):
                break
        self._lock: FileLock | None = fs.open_lock(mine, mode)
        self._lock.acquire()

    def dead(self) -> list[int]:
        """Writer lock held: the owners whose file nobody holds (their process ended)."""
        found = []
        for name in self._fs.listdir(self._dir):
            try:
                owner = int(name, 16)
            except ValueError:
                continue
            if owner == self.id or len(name) != 16:
                continue
            lock = self._fs.open_lock(os.path.join(self._dir, name), self._mode)
            try:
                if lock.acquire(wait=False):
                    found.append(owner)
            finally:
                lock.close()
        return found

    def forget(self, owners: list[int]) -> None:
        """Writer lock held: remove the files of `owners` (dead, their holdings ended)."""
        for owner in owners:
            path = os.path.join(self._dir, owner_name(owner))
            if self._fs.exists(path):
                self._fs.unlink(path)

    def close(self, *, remove: bool = True) -> None:
        """Let go of this opener's owner file (and remove it, unless the log failed)."""
        lock, self._lock = self._lock, None
        if lock is None:
            return
        if remove:
            try:
                self._fs.unlink(os.path.join(self._dir, owner_name(self.id)))
            except OSError:
                pass
        lock.close()
