"""One process's part in benchmarks/bench_multiproc.py: a producer or a consumer of one system.

Theory of operation. Every process opens its own handle on the shared store
(a `logq.Queue` on the directory, a SQLite connection to the job table, a
`SqliteHuey` on its file), then waits at a barrier shared by all the
processes of the arrangement; the clock starts when the barrier opens, so
interpreter start-up, imports and opens are not timed. Each process reports
one dict on the results queue: its role, when its work began and ended
(`time.monotonic`, one clock for every process on the machine), how many jobs
it handled, the CPU time it used in all (open and close included), and the
error that stopped it, if any.

Producers enqueue 100-byte payloads one call at a time (a web request
enqueues one job), either a fixed number or until a deadline. When a producer
stops, for whatever reason, it counts itself in the shared `done` counter, so
that consumers always end. A consumer reads `done` before each take: if every
producer had finished before a take came back empty, every job was visible
to that take, and the consumer stops. Its `end` is the time of its last ack.

Handles, per system key (what a user of that system would write):
  logq-{sync}        Queue.lease(wait=) + Queue.ack, one job at a time
  logq-{sync}-many   Queue.lease_many(100, wait=) + Queue.ack_many
  sqlite             bench_queue's job table, one connection per process (WAL,
                     synchronous=FULL, autocommit); claim = one UPDATE ... RETURNING
  sqlite-many        the same, claiming up to 100 rows per UPDATE and acking them in
                     one transaction
  huey               SqliteHuey(fsync=True): enqueue by calling the task, take by
                     huey.dequeue() (which deletes the row: there is no ack)
SQLite and huey have no blocking take: their consumers sleep POLL_S when the
queue is empty (short, to favour them: huey's own consumer starts at 0.1 s).
"""

from __future__ import annotations

import cProfile
import os
import sqlite3
import time
import traceback
from typing import Any

from benchmarks.bench_queue import SqliteQueue

TASK = "noop"
PAYLOAD = b"x" * 100
TAKE_MANY = 100  # jobs per lease_many / batched claim
WAIT_S = 0.05  # logq: how long one lease may wait for a job before the consumer looks at `done`
POLL_S = 0.001  # SQLite, huey: the sleep after an empty take

LEASE_MANY = """
UPDATE jobs SET state = 1, attempts = attempts + 1, lease_expires = ?
WHERE id IN (SELECT id FROM jobs WHERE state = 0 AND run_at <= ?
             ORDER BY priority DESC, run_at, id LIMIT ?)
RETURNING id, name, payload, attempts
"""
ACK = "UPDATE jobs SET state = 2, lease_expires = NULL WHERE id = ? AND state = 1"


class Handle:
    """One process's connection to the shared store."""

    blocks = False  # whether take() itself waits for a job

    def enqueue(self) -> None:
        raise NotImplementedError

    def take(self) -> list[Any]:
        """The next job or jobs; [] if none came."""
        raise NotImplementedError

    def finish(self, jobs: list[Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LogqHandle(Handle):
    blocks = True

    def __init__(self, path: str, sync: str, many: bool) -> None:
        import logq
        self.q = logq.Queue(path, sync=sync)
        self.many = many

    def enqueue(self) -> None:
        self.q.enqueue(TASK, PAYLOAD)

    def take(self) -> list[Any]:
        if self.many:
            return self.q.lease_many(TAKE_MANY, wait=WAIT_S)
        job = self.q.lease(wait=WAIT_S)
        return [] if job is None else [job]

    def finish(self, jobs: list[Any]) -> None:
        if self.many:
            self.q.ack_many(jobs)
        else:
            self.q.ack(jobs[0])

    def close(self) -> None:
        self.q.close()


class SqliteHandle(Handle):
    def __init__(self, path: str, many: bool) -> None:
        self.sq = SqliteQueue(os.path.join(path, "jobs.db"), "FULL", create=False)
        self.many = many

    def enqueue(self) -> None:
        self.sq.enqueue(TASK, PAYLOAD)

    def take(self) -> list[Any]:
        if not self.many:
            job = self.sq.lease()
            return [] if job is None else [job]
        now = time.time()
        return self.sq.con.execute(LEASE_MANY, (now + 30.0, now, TAKE_MANY)).fetchall()

    def finish(self, jobs: list[Any]) -> None:
        if not self.many:
            self.sq.ack(jobs[0])
            return
        con = self.sq.con
        con.execute("BEGIN IMMEDIATE")
        con.executemany(ACK, [(job[0],) for job in jobs])
        con.execute("COMMIT")

    def close(self) -> None:
        self.sq.close()


class HueyHandle(Handle):
    def __init__(self, path: str) -> None:
        from benchmarks.peers_systems import make_huey
        self.huey, self.task = make_huey(path, fsync=True)

    def enqueue(self) -> None:
        self.task(PAYLOAD)  # calling a huey task enqueues it

    def take(self) -> list[Any]:
        task = self.huey.dequeue()
        return [] if task is None else [task]

    def finish(self, jobs: list[Any]) -> None:
        pass  # dequeue already deleted the task

    def close(self) -> None:
        self.huey.storage.close()


def open_handle(key: str, path: str) -> Handle:
    """The handle a process of system `key` opens on the store at `path`."""
    if key.startswith("logq-"):
        parts = key.split("-")
        return LogqHandle(path, parts[1], many=parts[-1] == "many")
    if key in ("sqlite", "sqlite-many"):
        return SqliteHandle(path, many=key == "sqlite-many")
    if key == "huey":
        return HueyHandle(path)
    raise KeyError(key)


def create_store(key: str, path: str) -> None:
    """Create the empty store, before any process of the arrangement opens it."""
    os.makedirs(path, exist_ok=True)
    if key.startswith("logq-"):
        import logq
        logq.Queue(path).close()
    elif key.startswith("sqlite"):
        SqliteQueue(os.path.join(path, "jobs.db"), "FULL").close()
    elif key == "huey":
        HueyHandle(path).close()
    else:
        raise KeyError(key)


def count_store(key: str, path: str) -> dict[str, int]:
    """After every process closed: how many jobs the store holds, finished and not."""
    if key.startswith("logq-"):
        import logq
        with logq.Queue(path) as q:
            counts = q.stats().counts
        return dict(done=counts["done"], waiting=counts["pending"] + counts["active"])
    if key.startswith("sqlite"):
        con = sqlite3.connect(os.path.join(path, "jobs.db"))
        try:
            done = con.execute("SELECT count(*) FROM jobs WHERE state = 2").fetchone()[0]
            waiting = con.execute("SELECT count(*) FROM jobs WHERE state != 2").fetchone()[0]
        finally:
            con.close()
        return dict(done=done, waiting=waiting)
    h = HueyHandle(path)
    try:
        return dict(done=-1, waiting=h.huey.storage.queue_size())  # huey keeps no finished tasks
    finally:
        h.close()


# ------------------------------------------------------------------ the roles

def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _start(key: str, path: str, barrier: Any) -> tuple[Handle | None, str]:
    """Open a handle and wait for the others; on failure, break the barrier so none waits for ever."""
    try:
        handle = open_handle(key, path)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        barrier.abort()
        return None, _describe(exc)
    try:
        barrier.wait(timeout=120)
    except BaseException as exc:  # noqa: BLE001 - another process failed to open
        handle.close()
        return None, "another process of the arrangement failed before the start" \
            if type(exc).__name__ == "BrokenBarrierError" else _describe(exc)
    return handle, ""


def _profiler(profile: str) -> cProfile.Profile | None:
    if not profile:
        return None
    prof = cProfile.Profile()
    prof.enable()
    return prof


def _save(prof: cProfile.Profile | None, profile: str, role: str, index: int) -> None:
    if prof is not None:
        prof.disable()
        prof.dump_stats(f"{profile}-{role}-{index}.prof")


def producer(key: str, path: str, index: int, jobs: int, seconds: float, barrier: Any, done: Any,
             results: Any, profile: str = "") -> None:
    """Enqueue `jobs` jobs (or, if jobs is 0, as many as fit in `seconds`); then count in `done`.
    With `profile` (a path prefix), the work is profiled (wall clock) into PREFIX-producer-INDEX.prof."""
    out: dict[str, Any] = dict(role="producer", index=index, pid=os.getpid(), count=0, start=None, end=None,
                               error="")
    handle, out["error"] = _start(key, path, barrier)
    try:
        if handle is not None:
            enqueue = handle.enqueue
            n = 0
            prof = _profiler(profile)
            start = time.monotonic()
            out["start"] = start
            try:
                if jobs:
                    for n in range(1, jobs + 1):
                        enqueue()
                else:
                    deadline = start + seconds
                    while True:
                        enqueue()
                        n += 1
                        if time.monotonic() >= deadline:
                            break
            except BaseException as exc:  # noqa: BLE001
                out["error"] = _describe(exc)
                out["trace"] = traceback.format_exc(limit=6)
            out["end"], out["count"] = time.monotonic(), n
            _save(prof, profile, "producer", index)
            handle.close()
    finally:
        with done.get_lock():
            done.value += 1
        out["cpu_s"] = sum(os.times()[:2])
        results.put(out)


def consumer(key: str, path: str, index: int, producers: int, barrier: Any, done: Any,
             results: Any, profile: str = "") -> None:
    """Take and finish jobs until every producer has finished and the queue is empty (`profile`: as
    for `producer`)."""
    out: dict[str, Any] = dict(role="consumer", index=index, pid=os.getpid(), count=0, start=None, end=None,
                               error="", empty_takes=0)
    handle, out["error"] = _start(key, path, barrier)
    try:
        if handle is not None:
            take, finish, blocks = handle.take, handle.finish, handle.blocks
            n = empty = 0
            prof = _profiler(profile)
            start = last = time.monotonic()
            out["start"] = start
            try:
                while True:
                    finished = done.value == producers  # read before the take: see the module docstring
                    jobs = take()
                    if jobs:
                        finish(jobs)
                        n += len(jobs)
                        last = time.monotonic()
                        continue
                    if finished:
                        break
                    empty += 1
                    if not blocks:
                        time.sleep(POLL_S)
            except BaseException as exc:  # noqa: BLE001
                out["error"] = _describe(exc)
                out["trace"] = traceback.format_exc(limit=6)
            out.update(end=last, count=n, empty_takes=empty)
            _save(prof, profile, "consumer", index)
            handle.close()
    finally:
        out["cpu_s"] = sum(os.times()[:2])
        results.put(out)
