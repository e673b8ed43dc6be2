"""A simulated file system behind logq's `FileSystem` seam, for crash-recovery fuzzing.

Theory of operation
-------------------
Every file is an `Inode` with two contents: `data`, what reads see (the page
cache), and `durable`, what a power loss keeps. `unsynced` lists the writes
and truncates made since the last fsync, in order, so that a crash can keep
any prefix or subset of them, tear one at any byte, or keep the new size but
not the bytes (zeros). Each directory likewise has its current entries, its
durable entries (as of its last `fsync_dir`) and the creates, renames and
unlinks made since (`dirops`); a crash keeps a prefix of those. Directories
themselves are durable when made (logq never removes one).

`crash(fault, rng)` ends the simulated process. `kill9` keeps everything
written (the page cache survives a process); every other fault is a power
loss that builds a post-crash image from the durable state plus a chosen part
of the rest - that image is then the durable state. Handles and locks belong
to a generation: after a crash the old process's handles fail with EBADF and
its locks are gone, so an abandoned queue cannot touch the new image.

Fault points: every mutating operation (create, write, fsync, truncate,
rename, unlink, fsync_dir, mkdir) is numbered in `ops`. `crash_after(n)`
halts the process right after operation n: from then on (`halted`) every
operation raises `SimCrash`, an OSError, and changes nothing, until `crash`
is called. The dead process's code thus unwinds through logq's ordinary
error paths (a BaseException would run cleanup that a killed process never
runs, and could hang it); the caller tells a crash from an I/O error by
`halted`. `fail(kind, nth)` makes the nth next
operation of `kind` ("write", "fsync", "fsync_dir") raise EIO (`fail_at(n)`:
operation number n, if of such a kind); a failing
write may first write a prefix of its bytes. All randomness comes from a
seeded `random.Random`, so a seed reproduces a run.

The seam's rules about what may be opened hold here too: a name that is a
directory is not opened as a file (IsADirectoryError, which the log names);
the model has no links, FIFOs or other users, so the rest hold trivially.
New files and directories keep the permission bits asked for (`Inode.mode`,
`dir_modes`), so tests can check what the log asks for.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from dataclasses import dataclass, field

from logq.log.fs import DEFAULT_MODE, dir_mode

#: Faults `crash` understands. The first is a process crash, the rest power losses.
PROCESS_FAULTS = ("kill9",)
POWER_FAULTS = ("lose_unsynced", "torn", "subset", "zeros", "revert_dir", "chaos")
FAULTS = PROCESS_FAULTS + POWER_FAULTS
_POLICIES = {  # fault: (what happens to unsynced data, to uncovered directory operations)
    "kill9": ("all", "all"),
    "lose_unsynced": ("none", "none"),
    "torn": ("torn", "all"),
    "subset": ("subset", "all"),
    "zeros": ("zeros", "all"),
    "revert_dir": ("all", "prefix"),
    "chaos": ("random", "prefix"),
}
_DATA_POLICIES = ("all", "none", "torn", "subset", "zeros")
EIO_KINDS = ("write", "fsync", "fsync_dir")

Op = tuple[int, bytes | int]  # (offset, bytes) for a write, (-1, new size) for a truncate
DirOp = tuple[tuple[str, "int | None"], ...]  # names set (to an inode) or removed (None) atomically


class SimCrash(OSError):
    """The simulated process is dead: nothing it does reaches the disk any more."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


@dataclass
class Inode:
    data: bytearray = field(default_factory=bytearray)
    durable: bytes = b""
    unsynced: list[Op] = field(default_factory=list)
    mode: int = DEFAULT_MODE  # permission bits it was created with

    def copy(self) -> "Inode":
        return Inode(bytearray(self.data), self.durable, list(self.unsynced), self.mode)


@dataclass
class Stats:
    """Counts of what the file system did, for tests and reports."""

    injected: int = 0  # EIO errors raised
    fsyncs: int = 0
    dir_fsyncs: int = 0


class SimFS:
    """An in-memory `FileSystem` that can crash and fail; deterministic for a seed."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.inodes: dict[int, Inode] = {}
        self.dirs: dict[str, dict[str, int]] = {"/": {}}
        self.durable_dirs: dict[str, dict[str, int]] = {"/": {}}
        self.dirops: dict[str, list[DirOp]] = {"/": []}
        self.dir_modes: dict[str, int] = {"/": 0o755}  # permission bits each directory was made with
        self.locks: dict[str, dict["SimLock", bool]] = {}  # path -> holding handle -> shared
        self.gen = 0
        self.ops = 0
        self.trace: list[tuple[str, str]] = []  # (kind, path) of every numbered operation
        self.halted = False
        self.crash_at: int | None = None
        self._fail_at: int | None = None
        self.stats = Stats()
        self._counts: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._next_ino = 1
        self._mutex = threading.RLock()

    # -------------------------------------------------------------- fault control

    def crash_after(self, n: int | None) -> None:
        """Halt the process right after operation number `n` (None: never)."""
        self.crash_at = n

    def fail(self, kind: str, nth: int = 1) -> None:
        """Make the `nth` next operation of `kind` raise EIO."""
        if kind not in EIO_KINDS:
            raise ValueError(f"kind must be one of {EIO_KINDS}")
        self._failures[kind] = self._counts.get(kind, 0) + nth

    def fail_at(self, n: int) -> None:
        """Make operation number `n` raise EIO, if it is a write, fsync or directory fsync."""
        self._fail_at = n

    def disarm(self, *, crash: bool = True, eio: bool = True) -> None:
        """Forget the armed crash point and/or every armed EIO."""
        if crash:
            self.crash_at = None
        if eio:
            self._fail_at = None
            self._failures.clear()

    def crash(self, fault: str, rng: random.Random | None = None) -> None:
        """End the process; for a power fault, replace everything by a post-crash image."""
        if fault not in _POLICIES:
            raise ValueError(f"fault must be one of {FAULTS}, not {fault!r}")
        with self._mutex:
            self.gen += 1
            self.halted = False
            self.locks.clear()
            self.disarm()
            if fault != "kill9":
                data, dirs = _POLICIES[fault]
                self._power_loss(data, dirs, rng or self.rng)

    def fork(self) -> "SimFS":
        """An independent copy of the files as they are now (no locks, handles or faults)."""
        with self._mutex:
            other = SimFS()
            other.rng = random.Random(self.rng.random())
            other.inodes = {i: n.copy() for i, n in self.inodes.items()}
            other.dirs = {d: dict(e) for d, e in self.dirs.items()}
            other.durable_dirs = {d: dict(e) for d, e in self.durable_dirs.items()}
            other.dirops = {d: list(o) for d, o in self.dirops.items()}
            other.dir_modes = dict(self.dir_modes)
            other._next_ino = self._next_ino
            return other

    # --------------------------------------------------------------- power loss

    def _power_loss(self, data_policy: str, dir_policy: str, rng: random.Random) -> None:
        for d, ops in self.dirops.items():
            keep = {"all": len(ops), "none": 0}.get(dir_policy)
            names = dict(self.durable_dirs[d])
            for op in ops[: rng.randint(0, len(ops)) if keep is None else keep]:
                _apply_dirop(names, op)
            self.dirs[d], self.durable_dirs[d] = names, dict(names)
            ops.clear()
        live = {i for entries in self.dirs.values() for i in entries.values()}
        self.inodes = {i: n for i, n in self.inodes.items() if i in live}
        for node in self.inodes.values():
            policy = rng.choice(_DATA_POLICIES) if data_policy == "random" else data_policy
            image = crash_content(node, policy, rng)
            node.data, node.durable, node.unsynced = bytearray(image), image, []

    # ------------------------------------------------------------ at-rest damage

    def read_file(self, path: str) -> bytes:
        """The current content of a file (no fault point, works while halted)."""
        return bytes(self.inodes[self._lookup(path)].data)

    def synced(self, path: str) -> bool:
        """Whether a file's content is all durable (no unsynced write or truncate)."""
        return not self.inodes[self._lookup(path)].unsynced

    def replace_at_rest(self, path: str, content: bytes) -> None:
        """Set a file's content as if it had always been on disk (bit rot, restore)."""
        node = self.inodes[self._lookup(path)]
        node.data, node.durable, node.unsynced = bytearray(content), bytes(content), []

    def image(self) -> dict[str, bytes]:
        """Path -> current content of every file."""
        out = {}
        for d, entries in self.dirs.items():
            for name, ino in entries.items():
                out[os.path.join(d, name)] = bytes(self.inodes[ino].data)
        return out

    def durable_image(self) -> dict[str, bytes]:
        """Path -> what a power loss that keeps nothing unsynced would leave."""
        out = {}
        for d, entries in self.durable_dirs.items():
            for name, ino in entries.items():
                out[os.path.join(d, name)] = self.inodes[ino].durable
        return out

    # ----------------------------------------------------------- the seam: files

    def open(self, path: str, *, create: bool = False, exclusive: bool = False,
             readonly: bool = False, mode: int = DEFAULT_MODE) -> "SimFile":
        path = _norm(path)
        with self._mutex:
            self._alive()
            d, name = self._parent(path)
            ino = self.dirs[d].get(name)
            if ino is not None and create and exclusive:
                raise FileExistsError(errno.EEXIST, "file exists", path)
            if ino is None:
                if not create:
                    raise FileNotFoundError(errno.ENOENT, "no such file", path)
                ino = self._create(d, name, path, mode)
            return SimFile(self, ino, path, self.gen, readonly)

    def exists(self, path: str) -> bool:
        path = _norm(path)
        with self._mutex:
            self._alive()
            d, name = os.path.dirname(path), os.path.basename(path)
            return path in self.dirs or name in self.dirs.get(d, {})

    def isdir(self, path: str) -> bool:
        with self._mutex:
            self._alive()
            return _norm(path) in self.dirs

    def makedirs(self, path: str, mode: int = DEFAULT_MODE) -> None:
        """Make `path` (and its parents) with `dir_mode(mode)`; an existing one is kept
        as it is (the model has one user, so every directory is safe)."""
        path = _norm(path)
        with self._mutex:
            self._alive()
            if path in self.dirs:
                return
            parent = os.path.dirname(path)
            if parent not in self.dirs:
                self.makedirs(parent, mode)
            if os.path.basename(path) in self.dirs[parent]:
                raise FileExistsError(errno.EEXIST, "a file has this name", path)
            self._step("mkdir", path)
            self.dirs[path], self.durable_dirs[path], self.dirops[path] = {}, {}, []
            self.dir_modes[path] = dir_mode(mode)
            self._after()

    def listdir(self, path: str) -> list[str]:
        path = _norm(path)
        with self._mutex:
            self._alive()
            if path not in self.dirs:
                raise FileNotFoundError(errno.ENOENT, "no such directory", path)
            subdirs = [os.path.basename(d) for d in self.dirs if d != path and os.path.dirname(d) == path]
            return sorted(self.dirs[path]) + subdirs

    def rename(self, src: str, dst: str) -> None:
        src, dst = _norm(src), _norm(dst)
        with self._mutex:
            self._alive()
            sd, sname = self._parent(src)
            dd, dname = self._parent(dst)
            ino = self.dirs[sd].get(sname)
            if ino is None:
                raise FileNotFoundError(errno.ENOENT, "no such file", src)
            self._step("rename", f"{src} -> {dst}")
            if sd == dd:
                self._dirop(sd, ((dname, ino), (sname, None)))
            else:
                self._dirop(dd, ((dname, ino),))
                self._dirop(sd, ((sname, None),))
            self._after()

    def unlink(self, path: str) -> None:
        path = _norm(path)
        with self._mutex:
            self._alive()
            d, name = self._parent(path)
            if name not in self.dirs[d]:
                raise FileNotFoundError(errno.ENOENT, "no such file", path)
            self._step("unlink", path)
            self._dirop(d, ((name, None),))
            self._after()

    def fsync_dir(self, path: str) -> None:
        path = _norm(path)
        with self._mutex:
            self._alive()
            if path not in self.dirs:
                raise FileNotFoundError(errno.ENOENT, "no such directory", path)
            self._step("fsync_dir", path)
            self.stats.dir_fsyncs += 1
            self.durable_dirs[path] = dict(self.dirs[path])
            self.dirops[path].clear()
            self._after()

    def open_lock(self, path: str, mode: int = DEFAULT_MODE) -> "SimLock":
        """A handle for flock-like locks on `path` (creating the file)."""
        path = _norm(path)
        with self._mutex:
            self._alive()
            d, name = self._parent(path)
            if name not in self.dirs[d]:
                self._create(d, name, path, mode)
            return SimLock(self, path, self.gen)

    # --------------------------------------------------------------- internals

    def _alive(self, gen: int | None = None) -> None:
        if self.halted:
            raise SimCrash("the simulated process has crashed")
        if gen is not None and gen != self.gen:
            raise OSError(errno.EBADF, "stale handle: its process crashed")

    def _step(self, kind: str, path: str) -> None:
        """Number an operation; raise an armed EIO for it."""
        self.ops += 1
        self.trace.append((kind, path))
        count = self._counts[kind] = self._counts.get(kind, 0) + 1
        if self._failures.get(kind) == count or (self._fail_at == self.ops and kind in EIO_KINDS):
            self._failures.pop(kind, None)
            self.stats.injected += 1
            raise OSError(errno.EIO, f"injected EIO on {kind} (operation {self.ops})", path)

    def _after(self) -> None:
        if self.crash_at is not None and self.ops >= self.crash_at:
            self.halted = True
            raise SimCrash(f"crash after operation {self.ops} ({self.trace[-1][0]} {self.trace[-1][1]})")

    def _create(self, d: str, name: str, path: str, mode: int) -> int:
        self._step("create", path)
        ino = self._next_ino
        self._next_ino += 1
        self.inodes[ino] = Inode(mode=mode)
        self._dirop(d, ((name, ino),))
        self._after()
        return ino

    def _dirop(self, d: str, op: DirOp) -> None:
        _apply_dirop(self.dirs[d], op)
        self.dirops[d].append(op)

    def _parent(self, path: str) -> tuple[str, str]:
        d = os.path.dirname(path)
        if d not in self.dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", d)
        if path in self.dirs:
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        return d, os.path.basename(path)

    def _lookup(self, path: str) -> int:
        d, name = self._parent(_norm(path))
        return self.dirs[d][name]


class SimFile:
    """An open file of a `SimFS`; `write` appends, `pwrite` writes at an offset."""

    def __init__(self, fs: SimFS, ino: int, path: str, gen: int, readonly: bool) -> None:
        self.fs, self.ino, self.path, self.gen, self.readonly = fs, ino, path, gen, readonly
        self.closed = False

    def _node(self, writing: bool = False) -> Inode:
        self.fs._alive(self.gen)
        if self.closed or (writing and self.readonly):
            raise OSError(errno.EBADF, "bad file descriptor", self.path)
        return self.fs.inodes[self.ino]

    def write(self, data: bytes) -> None:
        with self.fs._mutex:
            self._write_at(data, None)

    def pwrite(self, data: bytes, offset: int) -> None:
        with self.fs._mutex:
            self._write_at(data, offset)

    def _write_at(self, data: bytes, offset: int | None) -> None:
        fs = self.fs
        node = self._node(writing=True)
        data = bytes(data)
        at = len(node.data) if offset is None else offset
        try:
            fs._step("write", self.path)
        except OSError:
            _put(node, at, data[: fs.rng.randint(0, len(data))])
            raise
        _put(node, at, data)
        fs._after()

    def pread(self, size: int, offset: int) -> bytes:
        with self.fs._mutex:
            return bytes(self._node().data[offset:offset + size])

    def size(self) -> int:
        with self.fs._mutex:
            return len(self._node().data)

    def fsync(self) -> None:
        fs = self.fs
        with fs._mutex:
            node = self._node()
            fs._step("fsync", self.path)
            fs.stats.fsyncs += 1
            node.durable, node.unsynced = bytes(node.data), []
            fs._after()

    def fdatasync(self) -> None:
        self.fsync()

    def map_through(self, size: int) -> None:
        """A write through a map means what pwrite means: the model keeps to pwrite."""
        return None

    def truncate(self, size: int) -> None:
        fs = self.fs
        with fs._mutex:
            node = self._node(writing=True)
            fs._step("truncate", self.path)
            _resize(node.data, size)
            node.unsynced.append((-1, size))
            fs._after()

    def close(self) -> None:
        self.closed = True


class SimLock:
    """One handle's lock on a file, as flock has it: shared or exclusive against every other
    handle. A crash ends every handle's locks; a handle from before a crash holds nothing."""

    def __init__(self, fs: SimFS, path: str, gen: int) -> None:
        self.fs, self.path, self.gen = fs, path, gen
        self._changed = threading.Condition(fs._mutex)

    def acquire(self, *, shared: bool = False, wait: bool = True) -> bool:
        with self._changed:
            holders = self.fs.locks.setdefault(self.path, {})
            holders.pop(self, None)  # changing kind: the old lock goes first, as with flock
            while any(not s or not shared for h, s in holders.items() if h is not self):
                if not wait or self.gen != self.fs.gen:
                    self._changed.notify_all()
                    return False
                self._changed.wait(0.01)
                holders = self.fs.locks.setdefault(self.path, {})
            if self.gen != self.fs.gen:
                return False
            holders[self] = shared
            return True

    def release(self) -> None:
        with self._changed:
            holders = self.fs.locks.get(self.path)
            if holders is not None and holders.pop(self, None) is not None:
                self._changed.notify_all()

    def close(self) -> None:
        self.release()


# ------------------------------------------------------------------ pure helpers


def crash_content(node: Inode, policy: str, rng: random.Random) -> bytes:
    """What a power loss leaves of a file under a data policy (see `_DATA_POLICIES`)."""
    ops = node.unsynced
    if not ops or policy == "all":
        return bytes(node.data)
    if policy == "none":
        return node.durable
    if policy == "zeros":
        return _zeroed_tail(node, rng)
    if policy == "torn":
        i = rng.randrange(len(ops))
        return _replay(node.durable, ops[:i] + [_tear(ops[i], rng)])
    if policy == "subset":
        return _replay(node.durable, [op for op in ops if rng.random() < 0.5])
    raise ValueError(f"unknown data policy {policy!r}")


def _zeroed_tail(node: Inode, rng: random.Random) -> bytes:
    """The file's new size, but zeros from some point past what is durable."""
    full, durable = bytes(node.data), node.durable
    common = 0
    limit = min(len(full), len(durable))
    while common < limit and full[common] == durable[common]:
        common += 1
    cut = rng.randint(common, len(full))
    return full[:cut] + bytes(len(full) - cut)


def _tear(op: Op, rng: random.Random) -> Op:
    offset, what = op
    if isinstance(what, int):  # a truncate is atomic: it happened or not
        return op if rng.random() < 0.5 else (offset, b"")
    return offset, what[: rng.randint(0, len(what))]


def _replay(durable: bytes, ops: list[Op]) -> bytes:
    buf = bytearray(durable)
    for offset, what in ops:
        if isinstance(what, int):
            _resize(buf, what)
        elif what:
            if len(buf) < offset:
                _resize(buf, offset)
            buf[offset:offset + len(what)] = what
    return bytes(buf)


def _put(node: Inode, offset: int, data: bytes) -> None:
    if data:
        node.unsynced.append((offset, data))
        if len(node.data) < offset:
            _resize(node.data, offset)
        node.data[offset:offset + len(data)] = data


def _resize(buf: bytearray, size: int) -> None:
    if size < len(buf):
        del buf[size:]
    else:
        buf.extend(bytes(size - len(buf)))


def _apply_dirop(names: dict[str, int], op: DirOp) -> None:
    for name, ino in op:
        if ino is None:
            names.pop(name, None)
        else:
            names[name] = ino


def _norm(path: str) -> str:
    return os.path.normpath(os.fspath(path))

