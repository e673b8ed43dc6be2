"""Benchmark of logq.Queue against a hand-written SQLite job table.

Run:  python benchmarks/bench_queue.py [--quick] [--dir DIR] [--json PATH] [--only NAMES]

Every figure is measured in one run on one file system (temporary
directories created in the current directory, or inside --dir, removed
afterwards), so logq and SQLite are compared like with like.

Baseline: stdlib sqlite3, journal_mode=WAL, synchronous=FULL, autocommit (one
commit per call), table jobs(id, name, payload, state, priority, run_at,
attempts, lease_expires) with index (state, priority DESC, run_at, id).
  enqueue = INSERT (commits on its own)
  lease   = UPDATE ... WHERE id = (SELECT id ... ORDER BY priority DESC, run_at,
            id LIMIT 1) RETURNING ...  (one statement, one commit)
  ack     = UPDATE state (one commit)
For 8 threads two arrangements are measured and the FASTER is the baseline:
one shared connection serialized by a lock, and one connection per thread
(busy timeout; SQLite serializes writers itself). SQLite has no group
commit, so neither shares fsyncs.

Workloads (NAMES for --only, comma separated):
  raw        os.write(100 B) + fdatasync loop: the disk's fsync rate (reference)
  enq1       enqueue 100 B, 1 thread, sync="always"    vs SQLite 1 thread
  enq8       enqueue 100 B, 8 threads, sync="always"   vs SQLite 8 threads
  batch      enqueue 100 B, 1 thread, sync="batch"     vs SQLite 1 thread
  drain      lease+ack, 1 consumer, sync="batch"       vs SQLite lease+ack
             (and, as a reference row, lease_many(100) + ack_many per 100 jobs)
  many       enqueue_many of 10,000 x 100 B, "always"  vs SQLite executemany+commit
  open       open a queue of N pending 100 B jobs (fresh subprocess, page cache warm)
  rss        RSS of a fresh subprocess holding a queue of N pending 1 KiB jobs
SQLite synchronous=NORMAL figures (no fsync per commit, comparable in
durability to logq's batch mode) are printed as reference rows.

Targets: enq1 ratio >= 1, enq8 ratio >= 8, batch >= 100,000/s, drain >= 50,000/s,
open < 3 s and RSS < 400 MiB at N = 1,000,000 (in --quick, N = 100,000 and the
open/RSS figures are projected linearly to 1,000,000 for the verdict; the RSS
projection is pessimistic, as freed-but-retained allocator memory is scaled too).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import logq
from logq import Queue

PAYLOAD = b"x" * 100
PAYLOAD_1K = b"x" * 1024
NAME = "job"
THREADS = 8
BATCH = 10_000
DRAIN_BATCH = 100  # jobs per lease_many and ack_many in the batched drain (a reference row)
FULL_N = 1_000_000
WORKLOADS = ("raw", "enq1", "enq8", "batch", "drain", "many", "open", "rss")

clock = time.perf_counter


# ------------------------------------------------------------------- helpers

def timed_loop(op: Callable[[], Any], duration: float) -> tuple[int, float]:
    """Call `op` until `duration` seconds pass; return (calls, seconds)."""
    n = 0
    start = clock()
    deadline = start + duration
    while True:
        op()
        n += 1
        if clock() >= deadline:
            break
    return n, clock() - start


def run_threads(n: int, make_op: Callable[[int], Callable[[], Any]], duration: float,
                profiles: list[cProfile.Profile] | None = None) -> tuple[int, float]:
    """Run `n` threads, each calling its op (made in that thread) in a loop for `duration`
    or until it returns False; return (total calls, seconds). With `profiles`, each
    thread's loop is profiled and its profile appended there."""
    counts = [0] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        c = 0
        prof = cProfile.Profile() if profiles is not None else None
        try:
            op = make_op(i)
            barrier.wait()
            end = deadline[0]
            if prof is not None:
                prof.enable()
            while op() is not False:
                c += 1
                if clock() >= end:
                    break
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()
        finally:
            if prof is not None:
                prof.disable()
                profiles.append(prof)  # type: ignore[union-attr]
            counts[i] = c

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    start = clock()
    deadline[0] = start + duration
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(counts), clock() - start


class Workdir:
    """Fresh subdirectories of one temporary root."""

    def __init__(self, parent: str) -> None:
        self.root = tempfile.mkdtemp(prefix="logq-bench-queue-", dir=parent)
        self.n = 0

    def new(self, label: str) -> str:
        self.n += 1
        return os.path.join(self.root, f"{self.n:02d}-{label}")

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# -------------------------------------------------------------------- SQLite

SCHEMA = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    payload BLOB NOT NULL,
    state INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    run_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    lease_expires REAL
);
CREATE INDEX jobs_lease ON jobs (state, priority DESC, run_at, id);
"""
PENDING, ACTIVE, DONE = 0, 1, 2
INSERT = "INSERT INTO jobs (name, payload, state, priority, run_at, attempts) VALUES (?, ?, 0, 0, ?, 0)"
LEASE = """
UPDATE jobs SET state = 1, attempts = attempts + 1, lease_expires = ?
WHERE id = (SELECT id FROM jobs WHERE state = 0 AND run_at <= ?
            ORDER BY priority DESC, run_at, id LIMIT 1)
RETURNING id, name, payload, attempts
"""
ACK = "UPDATE jobs SET state = 2, lease_expires = NULL WHERE id = ? AND state = 1"


def sqlite_connect(path: str, synchronous: str = "FULL") -> sqlite3.Connection:
    # isolation_level=None: autocommit, every statement is its own transaction (one commit per call).
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
    mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    assert mode.lower() == "wal", mode
    con.execute(f"PRAGMA synchronous={synchronous}")
    return con


class SqliteQueue:
    """The baseline job table behind one connection."""

    def __init__(self, path: str, synchronous: str = "FULL", create: bool = True) -> None:
        self.con = sqlite_connect(path, synchronous)
        if create:
            self.con.executescript(SCHEMA)

    def enqueue(self, name: str, payload: bytes) -> int:
        return self.con.execute(INSERT, (name, payload, time.time())).lastrowid  # type: ignore[return-value]

    def enqueue_many(self, items: list[tuple[str, bytes]]) -> None:
        now = time.time()
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        con.executemany(INSERT, [(n, p, now) for n, p in items])
        con.execute("COMMIT")

    def lease(self, lease_time: float = 30.0) -> tuple | None:  # type: ignore[type-arg]
        now = time.time()
        # fetchall steps the statement to completion, which commits the autocommit transaction.
        rows = self.con.execute(LEASE, (now + lease_time, now)).fetchall()
        return rows[0] if rows else None

    def ack(self, job: tuple) -> None:  # type: ignore[type-arg]
        self.con.execute(ACK, (job[0],))

    def close(self) -> None:
        self.con.close()


def check_sqlite_plan(path: str) -> str:
    """The query plan of the lease subquery (should use jobs_lease, no temp b-tree)."""
    con = sqlite_connect(path)
    rows = con.execute("EXPLAIN QUERY PLAN " + LEASE, (0.0, 0.0)).fetchall()
    con.close()
    return "; ".join(r[-1] for r in rows)


# --------------------------------------------------------------------- bench

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.quick = args.quick
        self.duration = 0.6 if args.quick else 3.0
        self.n_big = 100_000 if args.quick else FULL_N
        self.n_drain = 40_000 if args.quick else 250_000
        self.work = Workdir(args.dir or os.getcwd())
        self.results: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []
        self._cache: dict[str, Any] = {}

    # ------------------------------------------------------------- plumbing

    def row(self, workload: str, logq: float | None, sqlite: float | None, unit: str,
            target: str = "", met: bool | None = None, ratio: float | None = None) -> None:
        if ratio is None and logq is not None and sqlite:
            ratio = logq / sqlite
        self.rows.append(dict(workload=workload, logq=logq, sqlite=sqlite, unit=unit, ratio=ratio,
                              target=target, met=met))

    def once(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def log(self, msg: str) -> None:
        print(f"  .. {msg}", file=sys.stderr, flush=True)

    # --------------------------------------------------------------- pieces

    def raw_fsync(self) -> float:
        path = self.work.new("raw") + ".dat"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sync = getattr(os, "fdatasync", os.fsync)
        try:
            n, s = timed_loop(lambda: (os.write(fd, PAYLOAD), sync(fd)), min(self.duration, 1.0))
        finally:
            os.close(fd)
        return n / s

    def sqlite_enqueue_1t(self, synchronous: str = "FULL") -> float:
        def run() -> float:
            sq = SqliteQueue(self.work.new(f"sqlite-enq1-{synchronous}") + ".db", synchronous)
            try:
                n, s = timed_loop(lambda: sq.enqueue(NAME, PAYLOAD), self.duration)
            finally:
                sq.close()
            self.log(f"sqlite enqueue 1t {synchronous}: {n / s:,.0f}/s")
            return n / s
        return float(self.once(f"sqlite_enq1_{synchronous}", run))

    def logq_enqueue_1t(self, sync: str) -> float:
        q = Queue(self.work.new(f"logq-enq1-{sync}"), sync=sync)
        try:
            n, s = timed_loop(lambda: q.enqueue(NAME, PAYLOAD), self.duration)
        finally:
            q.close()
        self.log(f"logq enqueue 1t {sync}: {n / s:,.0f}/s")
        return n / s

    # ------------------------------------------------------------ workloads

    def w_raw(self) -> None:
        rate = float(self.once("raw", self.raw_fsync))
        self.results["raw_fdatasync_per_s"] = rate
        self.row("ref: raw write+fdatasync", rate, None, "/s")

    def w_enq1(self) -> None:
        lq, sq = self.logq_enqueue_1t("always"), self.sqlite_enqueue_1t("FULL")
        self.results["enq1_always"] = dict(logq=lq, sqlite=sq, ratio=lq / sq)
        self.row("1 enqueue 1t always", lq, sq, "jobs/s", ">= 1.0x", lq / sq >= 1.0)

    def w_enq8(self) -> None:
        q = Queue(self.work.new("logq-enq8"), sync="always")
        try:
            n, s = run_threads(THREADS, lambda i: (lambda: q.enqueue(NAME, PAYLOAD)), self.duration)
        finally:
            q.close()
        lq = n / s
        self.log(f"logq enqueue 8t always: {lq:,.0f}/s")

        # SQLite (a): one shared connection, calls serialized by a lock.
        shared = SqliteQueue(self.work.new("sqlite-enq8-shared") + ".db")
        lock = threading.Lock()

        def shared_op() -> None:
            with lock:
                shared.enqueue(NAME, PAYLOAD)
        try:
            n, s = run_threads(THREADS, lambda i: shared_op, self.duration)
        finally:
            shared.close()
        sq_shared = n / s
        self.log(f"sqlite enqueue 8t shared connection: {sq_shared:,.0f}/s")

        # SQLite (b): one connection per thread; SQLite's busy handler serializes writers.
        path = self.work.new("sqlite-enq8-perthread") + ".db"
        SqliteQueue(path).close()
        conns: list[SqliteQueue] = []

        def make(i: int) -> Callable[[], Any]:
            sq = SqliteQueue(path, create=False)
            conns.append(sq)
            return lambda: sq.enqueue(NAME, PAYLOAD)
        try:
            n, s = run_threads(THREADS, make, self.duration)
        finally:
            for c in conns:
                c.close()
        sq_per = n / s
        self.log(f"sqlite enqueue 8t connection per thread: {sq_per:,.0f}/s")
        sq = max(sq_shared, sq_per)
        self.results["enq8_always"] = dict(logq=lq, sqlite=sq, sqlite_shared_conn=sq_shared,
                                           sqlite_conn_per_thread=sq_per, ratio=lq / sq)
        self.row("2 enqueue 8t always", lq, sq, "jobs/s", ">= 8.0x", lq / sq >= 8.0)
        self.row("  sqlite 8t: shared conn+lock", None, sq_shared, "jobs/s")
        self.row("  sqlite 8t: conn per thread", None, sq_per, "jobs/s")

    def w_batch(self) -> None:
        lq, sq = self.logq_enqueue_1t("batch"), self.sqlite_enqueue_1t("FULL")
        sq_normal = self.sqlite_enqueue_1t("NORMAL")
        self.results["enq1_batch"] = dict(logq=lq, sqlite=sq, ratio=lq / sq, sqlite_normal=sq_normal)
        self.row("3 enqueue 1t batch", lq, sq, "jobs/s", ">= 100,000/s", lq >= 100_000)
        self.row("  ref: vs sqlite sync=NORMAL", lq, sq_normal, "jobs/s")

    def w_drain(self) -> None:
        items = [(NAME, PAYLOAD)] * BATCH
        n_jobs = self.n_drain
        q = Queue(self.work.new("logq-drain"), sync="batch")
        try:
            for start in range(0, n_jobs, BATCH):
                q.enqueue_many(items[:min(BATCH, n_jobs - start)])
            q.sync()
            done, s = self._drain(q.lease, q.ack, n_jobs)
        finally:
            q.close()
        lq = done / s
        self.log(f"logq drain batch: {done:,} jobs, {lq:,.0f}/s")
        q = Queue(self.work.new("logq-drain-batched"), sync="batch")
        try:
            for start in range(0, n_jobs, BATCH):
                q.enqueue_many(items[:min(BATCH, n_jobs - start)])
            q.sync()
            batched, s = self._drain_batched(q, n_jobs)
        finally:
            q.close()
        lq_batched = batched / s
        self.log(f"logq drain batch, lease_many({DRAIN_BATCH}) + ack_many: {batched:,} jobs, {lq_batched:,.0f}/s")
        figures = {}
        for sync in ("FULL", "NORMAL"):
            sq = SqliteQueue(self.work.new(f"sqlite-drain-{sync}") + ".db", sync)
            try:
                for start in range(0, n_jobs, BATCH):
                    sq.enqueue_many(items[:min(BATCH, n_jobs - start)])
                done_s, s = self._drain(sq.lease, sq.ack, n_jobs)
                left = sq.con.execute("SELECT count(*) FROM jobs WHERE state = 0").fetchone()[0]
                assert left == n_jobs - done_s, (left, n_jobs, done_s)
            finally:
                sq.close()
            figures[sync] = done_s / s
            self.log(f"sqlite drain {sync}: {done_s:,} jobs, {done_s / s:,.0f}/s")
        self.results["drain_batch"] = dict(logq=lq, sqlite=figures["FULL"], sqlite_normal=figures["NORMAL"],
                                           ratio=lq / figures["FULL"], jobs=done, logq_batched=lq_batched)
        self.row("4 lease+ack drain batch", lq, figures["FULL"], "jobs/s", ">= 50,000/s", lq >= 50_000)
        self.row("  ref: vs sqlite sync=NORMAL", lq, figures["NORMAL"], "jobs/s")
        self.row(f"  ref: lease_many({DRAIN_BATCH}) + ack_many", lq_batched, None, "jobs/s", "(report)")

    def _drain_batched(self, q: Queue, limit: int) -> tuple[int, float]:
        """`_drain` with a batch of leases and one of acks per DRAIN_BATCH jobs."""
        done = 0
        start = clock()
        deadline = start + self.duration
        while done < limit:
            jobs = q.lease_many(DRAIN_BATCH)
            if not jobs:
                break
            q.ack_many(jobs)
            done += len(jobs)
            if clock() >= deadline:
                break
        return done, clock() - start

    def _drain(self, lease: Callable[[], Any], ack: Callable[[Any], None], limit: int) -> tuple[int, float]:
        done = 0
        start = clock()
        deadline = start + self.duration
        while done < limit:
            job = lease()
            if job is None:
                break
            ack(job)
            done += 1
            if not done & 63 and clock() >= deadline:
                break
        return done, clock() - start

    def w_many(self) -> None:
        items = [(NAME, PAYLOAD)] * BATCH
        q = Queue(self.work.new("logq-many"), sync="always")
        try:
            n, s = timed_loop(lambda: q.enqueue_many(items), self.duration)
        finally:
            q.close()
        lq = n * BATCH / s
        sq = SqliteQueue(self.work.new("sqlite-many") + ".db")
        try:
            n, s = timed_loop(lambda: sq.enqueue_many(items), self.duration)
        finally:
            sq.close()
        sql = n * BATCH / s
        self.log(f"enqueue_many 10k always: logq {lq:,.0f}/s, sqlite {sql:,.0f}/s")
        self.results["enqueue_many_10k_always"] = dict(logq=lq, sqlite=sql, ratio=lq / sql)
        self.row("5 enqueue_many 10k always", lq, sql, "jobs/s", "(report)")

    def _build(self, label: str, n: int, payload: bytes) -> tuple[str, float]:
        path = self.work.new(label)
        items = [(NAME, payload)] * BATCH
        start = clock()
        q = Queue(path, sync="none")
        try:
            for i in range(0, n, BATCH):
                q.enqueue_many(items[:min(BATCH, n - i)])
        finally:
            q.close()
        s = clock() - start
        self.log(f"built {label}: {n:,} jobs in {s:.1f} s ({n / s:,.0f}/s)")
        return path, n / s

    def _child(self, mode: str, path: str = "") -> dict[str, Any]:
        # Run the child with the same sys.path as this process, so it imports the same logq.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        out = subprocess.run([sys.executable, "-P", "-c", CHILD, mode, path], capture_output=True, text=True,
                             check=False, timeout=600, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"child {mode} failed:\n{out.stderr}")
        res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        assert res["logq"] == logq.__file__, (res["logq"], logq.__file__)
        return res

    def w_open(self) -> None:
        n = self.n_big
        path, build_rate = self._build("logq-open-100B", n, PAYLOAD)
        res = self._child("open", path)
        assert res["pending"] == n, res
        secs = res["open_s"]
        projected = secs * FULL_N / n
        self.log(f"open {n:,} x 100 B: {secs:.2f} s (rss {res['after_open']['VmRSS']:.0f} MiB)")
        self.results["open"] = dict(jobs=n, seconds=secs, projected_1m_s=projected, child=res,
                                    build_enqueue_many_none_per_s=build_rate)
        tgt = "< 3 s" if n == FULL_N else "< 3 s @1M (proj.)"
        self.row(f"6 open {n // 1000}k x 100 B", secs, None, "s", tgt, projected < 3.0)
        if n != FULL_N:
            self.row("  projected to 1M", projected, None, "s")
        self.row("  ref: build enqueue_many none", build_rate, None, "jobs/s")
        self.row("  ref: RSS after that open", res["after_open"]["VmRSS"], None, "MiB")

    def w_rss(self) -> None:
        n = self.n_big
        path, _ = self._build("logq-rss-1KiB", n, PAYLOAD_1K)
        res = self._child("open", path)
        assert res["pending"] == n, res
        idle = self._child("idle")
        cur, peak = res["after_open"]["VmRSS"], res["after_open"]["VmHWM"]
        base = idle["idle"]["VmRSS"]
        proj_cur = base + (cur - base) * FULL_N / n
        proj_peak = proj_cur + (peak - cur)  # the excess over VmRSS is transient and fixed-size (one segment)
        self.log(f"rss {n:,} x 1 KiB: current {cur:.0f} MiB, peak {peak:.0f} MiB, idle {base:.0f} MiB")
        self.results["rss"] = dict(jobs=n, rss_mib=cur, hwm_mib=peak, idle_rss_mib=base,
                                   idle_hwm_mib=idle["idle"]["VmHWM"], open_s=res["open_s"],
                                   projected_1m_rss_mib=proj_cur, projected_1m_hwm_mib=proj_peak,
                                   bytes_per_job=(cur - base) * 2**20 / n)
        full = n == FULL_N
        tgt = "< 400 MiB" if full else "< 400 MiB @1M (proj.)"
        self.row(f"7 RSS {n // 1000}k x 1 KiB (VmRSS)", cur, None, "MiB", tgt, proj_cur < 400)
        self.row(f"  peak (VmHWM)", peak, None, "MiB", tgt, proj_peak < 400)
        if not full:
            self.row("  VmRSS projected to 1M", proj_cur, None, "MiB")
            self.row("  VmHWM projected to 1M", proj_peak, None, "MiB")
        self.row("  ref: idle interpreter + logq", base, None, "MiB")
        self.row("  ref: bytes per job (VmRSS-idle)", (cur - base) * 2**20 / n, None, "B")
        self.row("  ref: open time (1 KiB jobs)", res["open_s"], None, "s")

    # ------------------------------------------------------------------ run

    def run(self, only: list[str]) -> None:
        for name in WORKLOADS:
            if name in only:
                t = clock()
                getattr(self, f"w_{name}")()
                self.results.setdefault("seconds", {})[name] = clock() - t
                self.log(f"{name} done in {clock() - t:.1f} s")


# A fresh interpreter: imports logq, optionally opens a queue, reports /proc/self/status.
CHILD = r"""
import json, sys, time
def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024.0
    return out
import logq
res = {"idle": status(), "logq": logq.__file__}
if sys.argv[1] == "open":
    t0 = time.perf_counter()
    q = logq.Queue(sys.argv[2], sync="batch")
    res["open_s"] = time.perf_counter() - t0
    res["after_open"] = status()
    res["pending"] = q.stats().counts["pending"]
    q.close()
print(json.dumps(res))
"""


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v:.2f} s"
    if unit in ("MiB",):
        return f"{v:,.0f} MiB"
    if unit == "B":
        return f"{v:,.0f} B"
    return f"{v:,.0f}/s"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("workload", "logq", "sqlite", "ratio", "target", "status")
    lines = [head]
    for r in rows:
        status = "" if r["met"] is None else ("met" if r["met"] else "MISSED")
        lines.append((r["workload"], fmt(r["logq"], r["unit"]), fmt(r["sqlite"], r["unit"]),
                      "-" if r["ratio"] is None else f"{r['ratio']:.2f}x", r["target"], status))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for i, line in enumerate(lines):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs and N=100,000 (under ~60 s)")
    ap.add_argument("--dir", help="where to create the temporary directories (default: current directory)")
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--only", help=f"comma-separated subset of: {','.join(WORKLOADS)}")
    args = ap.parse_args()
    only = list(WORKLOADS) if not args.only else [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = set(only) - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)}; choose from {','.join(WORKLOADS)}")

    bench = Bench(args)
    started = clock()
    try:
        plan_db = bench.work.new("plan") + ".db"
        SqliteQueue(plan_db).close()
        plan = check_sqlite_plan(plan_db)
        env = dict(python=sys.version.split()[0], sqlite=sqlite3.sqlite_version, platform=platform.platform(),
                   cpus=os.cpu_count(), dir=bench.work.root, lease_plan=plan,
                   logq=os.path.dirname(logq.__file__))
        print(f"logq queue benchmark ({'quick' if args.quick else 'full'}): python {env['python']}, "
              f"sqlite {env['sqlite']}, {env['platform']}, {env['cpus']} CPUs, logq from {env['logq']}", flush=True)
        print(f"  dir {bench.work.root}; {bench.duration:g} s per timed workload; N = {bench.n_big:,}; "
              f"sqlite lease plan: {plan}", flush=True)
        bench.run(only)
    finally:
        bench.work.cleanup()
    total = clock() - started
    print()
    print_table(bench.rows)
    print(f"\ntotal {total:.1f} s")
    if args.json:
        out = dict(mode="quick" if args.quick else "full", duration_s=bench.duration, n_big=bench.n_big,
                   n_drain=bench.n_drain, threads=THREADS, payload_bytes=len(PAYLOAD), env=env,
                   results=bench.results, rows=bench.rows, total_s=total)
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
