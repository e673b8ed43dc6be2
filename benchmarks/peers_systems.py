"""The queues the suite compares, behind one small interface.

Every system is used through its public API only. A store is a directory.
A `System` says how to open a store, fill it for a measurement, and what it promises about
durability; the `Store` it opens has `enqueue`, `enqueue_many` (if the
system has a batch call), `lease`, `ack`, `close` and `for_thread` (the
handle a producer or consumer thread should use: the shared object for the
thread-safe ones, a new connection for the ones built that way).

Durability labels (`POWER`, `CRASH`, `NOTHING`) are what a returned call
survives, read from each system's source and from the PRAGMA values
observed at run time (recorded in the JSON):

* logq sync="always": the call returns after fdatasync (group commit).
* logq sync="batch": written to the OS before returning, fsynced within 5 ms.
* SQLite baseline: WAL, synchronous=FULL, autocommit: one fsynced commit per call.
* persist-queue SQLiteAckQueue: WAL, every put/get/ack commits; it does not set
  `synchronous`, so it gets the library's default (FULL here; recorded).
* litequeue: WAL with synchronous=NORMAL, which it sets itself: commits are
  not fsynced, a power loss may roll back the last ones.
* huey SqliteStorage(fsync=True): synchronous=FULL, WAL. Its dequeue
  deletes the task row before the task runs, so delivery is at-most-once.

Peer libraries are imported lazily, so a child process that measures one
system's start-up and memory loads only that system.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from typing import Any

from benchmarks.bench_queue import SqliteQueue

POWER = "power loss"
CRASH = "process crash"
NOTHING = "nothing promised"

TASK = "noop"  # the task name every system's jobs carry


class Store:
    """An open store of one system. Subclasses fill in the calls they support."""

    has_batch = False

    def enqueue(self, payload: bytes) -> None:
        raise NotImplementedError

    def enqueue_many(self, payloads: list[bytes]) -> None:
        raise NotImplementedError

    def lease(self) -> Any:
        """The next job, or None if the queue is empty."""
        raise NotImplementedError

    def ack(self, job: Any) -> None:
        raise NotImplementedError

    def for_thread(self) -> "Store":
        return self

    def close(self) -> None:
        pass

    def connection(self) -> Any:
        """The SQLite connection under this store (None if it has none)."""
        return None

    def pragmas(self) -> dict[str, Any]:
        """The journal mode and synchronous setting its SQLite connection runs with."""
        c = self.connection()
        if c is None:
            return {}
        return dict(journal_mode=c.execute("PRAGMA journal_mode").fetchone()[0],
                    synchronous=c.execute("PRAGMA synchronous").fetchone()[0])


class System:
    key = ""
    label = ""
    durability = ""
    delivery = ""
    note = ""
    has_batch = False
    has_worker = False
    staged_build = False  # built one call at a time: fill on the staging disk, then copy

    dist = ""  # the distribution whose version describe() reports

    def version(self) -> str:
        from importlib.metadata import version
        return version(self.dist) if self.dist else ""

    def open(self, path: str) -> Store:
        raise NotImplementedError

    def fill(self, path: str, n: int, payload: bytes) -> None:
        """Create a store at `path` holding `n` pending jobs, through the public API, and close it."""
        raise NotImplementedError

    def import_lib(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return dict(key=self.key, label=self.label, durability=self.durability, delivery=self.delivery,
                    note=self.note, version=self.version(), batch=self.has_batch, worker=self.has_worker)


# ----------------------------------------------------------------------- logq

class LogqStore(Store):
    has_batch = True

    def __init__(self, path: str, sync: str) -> None:
        import logq
        self.q = logq.Queue(path, sync=sync)

    def enqueue(self, payload: bytes) -> None:
        self.q.enqueue(TASK, payload)

    def enqueue_many(self, payloads: list[bytes]) -> None:
        self.q.enqueue_many([(TASK, p) for p in payloads])

    def lease(self) -> Any:
        return self.q.lease()

    def ack(self, job: Any) -> None:
        self.q.ack(job)

    def close(self) -> None:
        self.q.close()


class Logq(System):
    has_batch = True
    has_worker = True

    def __init__(self, sync: str) -> None:
        self.sync = sync
        self.key = f"logq-{sync}"
        self.label = f"logq sync={sync}"
        self.durability = {"always": POWER, "batch": CRASH, "none": CRASH}[sync]
        self.delivery = "at-least-once"
        self.note = {"always": "returns after fdatasync; concurrent calls share one",
                     "batch": "written before returning, fdatasync within 5 ms",
                     "none": "written before returning, fsync left to the OS"}[sync]

    def version(self) -> str:
        import logq
        return f"{getattr(logq, '__version__', '')} ({os.path.dirname(logq.__file__)})"

    def import_lib(self) -> None:
        import logq  # noqa: F401

    def open(self, path: str) -> Store:
        return LogqStore(path, self.sync)

    def fill(self, path: str, n: int, payload: bytes) -> None:
        import logq
        chunk = [(TASK, payload)] * 10_000
        with logq.Queue(path, sync="none") as q:
            for i in range(0, n, len(chunk)):
                q.enqueue_many(chunk[:min(len(chunk), n - i)])


# --------------------------------------------------------- SQLite, by hand

class SqliteStore(Store):
    """bench_queue's hand-written job table (WAL, synchronous=FULL, one commit per call)."""

    has_batch = True

    def __init__(self, path: str, shared: bool, create: bool = True) -> None:
        self.path, self.shared = path, shared
        self.sq = SqliteQueue(path, "FULL", create=create and not os.path.exists(path))
        self.lock = threading.Lock()

    def enqueue(self, payload: bytes) -> None:
        if self.shared:
            with self.lock:
                self.sq.enqueue(TASK, payload)
        else:
            self.sq.enqueue(TASK, payload)

    def enqueue_many(self, payloads: list[bytes]) -> None:
        self.sq.enqueue_many([(TASK, p) for p in payloads])

    def lease(self) -> Any:
        if self.shared:
            with self.lock:
                return self.sq.lease()
        return self.sq.lease()

    def ack(self, job: Any) -> None:
        if self.shared:
            with self.lock:
                self.sq.ack(job)
        else:
            self.sq.ack(job)

    def for_thread(self) -> Store:
        if self.shared:
            return self
        return SqliteStore(self.path, shared=False, create=False)

    def close(self) -> None:
        self.sq.close()

    def connection(self) -> Any:
        return self.sq.con


class Sqlite(System):
    key = "sqlite"
    label = "SQLite table (baseline)"
    durability = POWER
    delivery = "at-least-once (lease expiry column)"
    note = "WAL, synchronous=FULL, one commit per call"
    has_batch = True

    def __init__(self, shared: bool = False) -> None:
        # For many threads: one connection per thread, or one shared connection behind a lock.
        self.shared = shared

    def version(self) -> str:
        return f"sqlite {sqlite3.sqlite_version}"

    def open(self, path: str) -> Store:
        os.makedirs(path, exist_ok=True)
        return SqliteStore(os.path.join(path, "jobs.db"), self.shared)

    def fill(self, path: str, n: int, payload: bytes) -> None:
        os.makedirs(path, exist_ok=True)
        sq = SqliteQueue(os.path.join(path, "jobs.db"), "FULL")
        try:
            chunk = [(TASK, payload)] * 10_000
            for i in range(0, n, len(chunk)):
                sq.enqueue_many(chunk[:min(len(chunk), n - i)])
        finally:
            sq.close()


# --------------------------------------------------------------- persist-queue

class PersistQueueStore(Store):
    def __init__(self, path: str) -> None:
        import persistqueue
        self.empty = persistqueue.Empty
        # multithreading=True: the documented setting for producers and consumers in several threads.
        self.q = persistqueue.SQLiteAckQueue(path, multithreading=True)

    def enqueue(self, payload: bytes) -> None:
        self.q.put(payload)

    def lease(self) -> Any:
        try:
            return self.q.get(block=False, raw=True)
        except self.empty:
            return None

    def ack(self, job: Any) -> None:
        self.q.ack(id=job["pqid"])

    def close(self) -> None:
        self.q.close()

    def connection(self) -> Any:
        return self.q._putter  # read-only look at the settings it runs with


class PersistQueue(System):
    key = "persist-queue"
    label = "persist-queue SQLiteAckQueue"
    durability = POWER
    delivery = "at-least-once (unacked items resume on reopen)"
    note = "WAL, a commit per put/get/ack, SQLite's default synchronous (FULL)"
    staged_build = True

    dist = "persist-queue"

    def import_lib(self) -> None:
        import persistqueue  # noqa: F401

    def open(self, path: str) -> Store:
        return PersistQueueStore(path)

    def fill(self, path: str, n: int, payload: bytes) -> None:
        s = PersistQueueStore(path)
        try:
            for _ in range(n):
                s.q.put(payload)
        finally:
            s.close()


# ------------------------------------------------------------------ litequeue

class LiteQueueStore(Store):
    def __init__(self, path: str) -> None:
        import litequeue
        self.path = path
        self.q = litequeue.LiteQueue(path)

    def enqueue(self, payload: bytes) -> None:
        self.q.put(payload.decode())  # litequeue stores text

    def lease(self) -> Any:
        return self.q.pop()

    def ack(self, job: Any) -> None:
        self.q.done(job.message_id)

    def for_thread(self) -> Store:
        # pop() runs BEGIN IMMEDIATE on its connection: threads each need their own.
        return LiteQueueStore(self.path)

    def close(self) -> None:
        self.q.close()

    def connection(self) -> Any:
        return self.q.conn


class LiteQueue(System):
    key = "litequeue"
    label = "litequeue"
    durability = CRASH
    delivery = "at-least-once if the app re-queues locked messages (list_locked + retry)"
    note = "WAL, synchronous=NORMAL (set by litequeue): commits are not fsynced"
    staged_build = True

    dist = "litequeue"

    def import_lib(self) -> None:
        import litequeue  # noqa: F401

    def open(self, path: str) -> Store:
        os.makedirs(path, exist_ok=True)
        return LiteQueueStore(os.path.join(path, "queue.db"))

    def fill(self, path: str, n: int, payload: bytes) -> None:
        os.makedirs(path, exist_ok=True)
        s = LiteQueueStore(os.path.join(path, "queue.db"))
        text = payload.decode()
        try:
            for _ in range(n):
                s.q.put(text)
        finally:
            s.close()


# ----------------------------------------------------------------------- huey

def make_huey(path: str, fsync: bool) -> tuple[Any, Any]:
    """A SqliteHuey on `path` (a directory) and its registered no-op task."""
    import huey
    os.makedirs(path, exist_ok=True)
    h = huey.SqliteHuey(name="bench", filename=os.path.join(path, "huey.db"), fsync=fsync)

    def noop(payload: bytes) -> None:
        return None
    return h, h.task(name=TASK)(noop)


class HueyStore(Store):
    def __init__(self, path: str, fsync: bool = True) -> None:
        self.huey, self.task = make_huey(path, fsync)

    def enqueue(self, payload: bytes) -> None:
        self.task(payload)  # calling a huey task enqueues it

    def lease(self) -> Any:
        return self.huey.dequeue()  # deletes the row: there is no ack

    def ack(self, job: Any) -> None:
        pass

    def close(self) -> None:
        self.huey.storage.close()

    def connection(self) -> Any:
        return self.huey.storage.conn


class Huey(System):
    key = "huey"
    label = "huey SqliteStorage fsync=True"
    durability = POWER
    delivery = "at-most-once (dequeue deletes the task before it runs)"
    note = "WAL, synchronous=FULL; dequeue = one commit, no ack"
    has_worker = True
    staged_build = True

    dist = "huey"

    def import_lib(self) -> None:
        import huey  # noqa: F401

    def open(self, path: str) -> Store:
        return HueyStore(path, fsync=True)

    def fill(self, path: str, n: int, payload: bytes) -> None:
        # fsync=False is huey's own option (synchronous=OFF); the store is reopened with fsync=True.
        s = HueyStore(path, fsync=False)
        try:
            for _ in range(n):
                s.task(payload)
        finally:
            s.close()


def all_systems() -> list[System]:
    """The systems in table order; the SQLite baseline first."""
    return [Sqlite(), Logq("always"), Logq("batch"), PersistQueue(), LiteQueue(), Huey()]


def by_key(key: str) -> System:
    if key == "sqlite-shared":
        return Sqlite(shared=True)
    for s in all_systems():
        if s.key == key:
            return s
    raise KeyError(key)


def copy_store(src: str, dst: str) -> None:
    """Copy a closed store (a directory) to `dst`."""
    shutil.copytree(src, dst)


def store_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


# ---------------------------------------------------------------- child side

def _status() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024.0
    return out


def child_startup(key: str, path: str) -> dict[str, Any]:
    """In a fresh interpreter: open the store at `path` and lease its first job.

    The library import is not timed; the figure is open + first lease.
    Memory (/proc/self/status) is read before opening and after the lease.
    """
    system = by_key(key)
    system.import_lib()
    before = _status()
    t0 = time.perf_counter()
    store = system.open(path)
    t1 = time.perf_counter()
    job = store.lease()
    t2 = time.perf_counter()
    after = _status()
    if job is None:
        raise RuntimeError(f"{key}: the store at {path} gave no job")
    res: dict[str, Any] = dict(open_s=t1 - t0, first_lease_s=t2 - t1, startup_s=t2 - t0,
                               idle=before, after=after, pragmas=store.pragmas())
    if key.startswith("logq"):
        import logq
        res["logq"] = logq.__file__
        res["pending"] = store.q.stats().counts["pending"]  # type: ignore[attr-defined]
    store.close()
    return res


CHILD = (
    "import json, sys\n"
    "from benchmarks.peers_systems import child_startup\n"
    "print(json.dumps(child_startup(sys.argv[1], sys.argv[2])))\n"
)
