"""The suite's workloads: each measures every system that supports it.

Method. Within a workload every system's store is opened (and filled, where
the workload drains a queue) first; then the measurement runs in rounds,
and each round gives every system one time slice, back to back, in
alternating order (forward, then backward). A system's figure is its best
round; every round's figure is kept in the JSON. On a shared machine load
only ever slows a round down, so best-of-rounds with interleaving compares
the systems under the most similar conditions the run had.

All stores live on the disk under test (the suite's work directory).
Systems whose only enqueue is one call at a time are filled on a staging
directory (a RAM disk when there is one), through their own API, and the
closed store is copied to the disk under test before it is measured.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from benchmarks.bench_queue import run_threads, timed_loop
from benchmarks.peers_systems import (
    CHILD, TASK, Huey, Logq, Sqlite, Store, System, all_systems, by_key, copy_store, make_huey, store_bytes,
)

PAYLOAD = b"x" * 100
PAYLOAD_1K = b"x" * 1024
THREADS = 8
BATCH = 10_000
FULL_N = 1_000_000

clock = time.perf_counter


@dataclass
class Row:
    """One figure: a workload measured on one system."""

    workload: str
    system: str
    value: float | None
    unit: str
    higher_is_better: bool = True
    samples: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    error: str = ""


@dataclass
class Ctx:
    quick: bool
    root: str  # the work directory on the disk under test
    stage: str | None  # where one-call-at-a-time systems are filled (None: in place)
    log: Callable[[str], None]
    rounds: int = 3
    slice_s: float = 1.0
    depth: int = 100_000  # jobs in the queue before a drain
    n_big: int = FULL_N
    n: int = 0
    templates: dict[tuple[str, int, int], str] = field(default_factory=dict)

    def new(self, label: str) -> str:
        self.n += 1
        return os.path.join(self.root, f"{self.n:03d}-{label}")

    def filled(self, system: System, n: int, payload: bytes, label: str) -> tuple[str, dict[str, Any]]:
        """A fresh store of `system` on the disk under test holding `n` pending jobs."""
        dst = self.new(f"{system.key}-{label}")
        t = clock()
        if system.staged_build and self.stage is not None:
            key = (system.key, n, len(payload))
            if key not in self.templates:
                src = os.path.join(self.stage, f"{system.key}-{n}-{len(payload)}")
                t0 = clock()
                system.fill(src, n, payload)
                self.log(f"filled {system.key} template: {n:,} jobs in {clock() - t0:.1f} s (staged)")
                self.templates[key] = src
            copy_store(self.templates[key], dst)
            how = "filled one call at a time on the staging disk, copied"
        else:
            system.fill(dst, n, payload)
            how = "batch API" if system.has_batch else "filled one call at a time in place"
        return dst, dict(jobs=n, fill_s=clock() - t, fill=how, bytes=store_bytes(dst))

    def drop_template(self, system: System, n: int, payload: bytes) -> None:
        src = self.templates.pop((system.key, n, len(payload)), None)
        if src is not None:
            shutil.rmtree(src, ignore_errors=True)


# --------------------------------------------------------------- measuring

def loop_until(op: Callable[[], bool], seconds: float) -> tuple[int, float]:
    """Call `op` until `seconds` pass or it returns False (queue empty); (successful calls, seconds)."""
    n = 0
    start = clock()
    deadline = start + seconds
    while op():
        n += 1
        if clock() >= deadline:
            break
    return n, clock() - start


def threads_until(ops: list[Callable[[], Any]], seconds: float,
                  profiles: list[cProfile.Profile] | None = None) -> tuple[int, float]:
    """Run each op in its own thread until `seconds` pass or it returns False; (total calls, seconds)."""
    return run_threads(len(ops), lambda i: ops[i], seconds, profiles)


def drain_op(store: Store) -> Callable[[], bool]:
    lease, ack = store.lease, store.ack

    def op() -> bool:
        job = lease()
        if job is None:
            return False
        ack(job)
        return True
    return op


Measure = Callable[[], tuple[int, float]]


def interleave(ctx: Ctx, entries: list[tuple[str, Measure]], scale: int = 1) -> dict[str, dict[str, Any]]:
    """Run every entry once per round, alternating the order; per key: samples (rate), counts, error."""
    out: dict[str, dict[str, Any]] = {k: dict(samples=[], counts=[], error="") for k, _ in entries}
    for r in range(ctx.rounds):
        order = entries if r % 2 == 0 else entries[::-1]
        for key, fn in order:
            if out[key]["error"]:
                continue
            try:
                n, s = fn()
            except Exception as exc:  # noqa: BLE001 - one system failing must not stop the suite
                out[key]["error"] = f"{type(exc).__name__}: {exc}"
                ctx.log(f"  {key}: ERROR {out[key]['error']}")
                continue
            out[key]["counts"].append(n * scale)
            if n > 0:
                out[key]["samples"].append(n * scale / s)
            ctx.log(f"  round {r + 1}: {key}: {n * scale:,} in {s:.2f} s = {n * scale / s:,.0f}/s")
    return out


def rows_from(workload: str, measured: dict[str, dict[str, Any]], unit: str = "jobs/s",
              extra: dict[str, dict[str, Any]] | None = None) -> list[Row]:
    rows = []
    for key, m in measured.items():
        value = max(m["samples"]) if m["samples"] else None
        err = m["error"] or ("" if value is not None else "no job completed")
        rows.append(Row(workload, key, value, unit, samples=m["samples"],
                        extra=dict(counts=m["counts"], **((extra or {}).get(key, {}))), error=err))
    return rows


def close_all(stores: list[Store]) -> None:
    for s in stores:
        try:
            s.close()
        except Exception:  # noqa: BLE001 - closing after a failure
            pass


# --------------------------------------------------------------- workloads

def w_raw(ctx: Ctx) -> list[Row]:
    """The disk itself, in three loops:

    * write(100 B) + fdatasync appended to a growing file (as bench_log.py): every
      fdatasync also has to commit the new file size;
    * the same into a file written and fsynced beforehand (overwriting in place,
      as SQLite does in its reused WAL): data only;
    * sequential 1 MiB appends, then one fdatasync, timed together (MB/s).
    """
    sync = getattr(os, "fdatasync", os.fsync)
    data = b"x" * 100
    path = ctx.new("raw") + ".dat"
    pre_size = 64 << 20

    def fsync_loop(prewritten: bool) -> float:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if prewritten:
                block = b"\0" * (1 << 20)
                for _ in range(pre_size >> 20):
                    os.write(fd, block)
                os.fsync(fd)
                os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, data)
            sync(fd)
            n, s = timed_loop(lambda: (os.write(fd, data), sync(fd)), ctx.slice_s)
        finally:
            os.close(fd)
            os.unlink(path)
        return n / s

    appended, prewritten = [], []
    for _ in range(ctx.rounds):
        appended.append(fsync_loop(False))
        prewritten.append(fsync_loop(True))
    chunk = b"\0" * (1 << 20)
    cap = (256 if not ctx.quick else 64) << 20
    rates = []
    for _ in range(ctx.rounds):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            written = 0
            start = clock()
            while written < cap and clock() - start < ctx.slice_s:
                written += os.write(fd, chunk)
            sync(fd)
            rates.append(written / (clock() - start) / 1e6)
        finally:
            os.close(fd)
            os.unlink(path)
    ctx.log(f"raw fdatasync {max(appended):,.0f}/s appending, {max(prewritten):,.0f}/s in a pre-written file, "
            f"sequential append {max(rates):,.0f} MB/s")
    return [Row("raw_fsync", "disk", max(appended), "fsyncs/s", samples=appended,
                note="os.write(100 B) + fdatasync, appending to one file"),
            Row("raw_fsync_prewritten", "disk", max(prewritten), "fsyncs/s", samples=prewritten,
                note="os.write(100 B) + fdatasync, overwriting a file written and fsynced beforehand"),
            Row("raw_append", "disk", max(rates), "MB/s", samples=rates,
                note=f"os.write of 1 MiB blocks (up to {cap >> 20} MiB) then one fdatasync, timed together")]


def w_enq1(ctx: Ctx) -> list[Row]:
    """Single producer: enqueue(100 B), one call at a time."""
    stores: list[Store] = []
    entries: list[tuple[str, Measure]] = []
    try:
        for system in all_systems():
            store = system.open(ctx.new(f"enq1-{system.key}"))
            stores.append(store)
            for _ in range(20):  # warm-up: file creation, first pages
                store.enqueue(PAYLOAD)
            entries.append((system.key, partial(timed_loop, partial(store.enqueue, PAYLOAD), ctx.slice_s)))
        return rows_from("enq1", interleave(ctx, entries))
    finally:
        close_all(stores)


def w_enq8(ctx: Ctx) -> list[Row]:
    """Eight producer threads, each enqueue(100 B) in a loop."""
    stores: list[Store] = []
    entries: list[tuple[str, Measure]] = []
    try:
        for system in [Sqlite(shared=True)] + all_systems():
            key = "sqlite-shared" if isinstance(system, Sqlite) and system.shared else system.key
            store = system.open(ctx.new(f"enq8-{key}"))
            stores.append(store)
            handles = [store.for_thread() for _ in range(THREADS)]
            stores += [h for h in handles if h is not store]
            for h in handles:
                h.enqueue(PAYLOAD)
            ops: list[Callable[[], Any]] = [partial(h.enqueue, PAYLOAD) for h in handles]
            entries.append((key, partial(threads_until, ops, ctx.slice_s)))
        return rows_from("enq8", interleave(ctx, entries))
    finally:
        close_all(stores)


def w_many(ctx: Ctx) -> list[Row]:
    """Batch enqueue: 10,000 x 100 B per call, for the systems that have a batch call."""
    stores: list[Store] = []
    entries: list[tuple[str, Measure]] = []
    batch = [PAYLOAD] * BATCH
    try:
        for system in all_systems():
            if not system.has_batch:
                continue
            store = system.open(ctx.new(f"many-{system.key}"))
            stores.append(store)
            store.enqueue_many(batch[:100])
            entries.append((system.key, partial(timed_loop, partial(store.enqueue_many, batch), ctx.slice_s)))
        rows = rows_from("many", interleave(ctx, entries, scale=BATCH))
    finally:
        close_all(stores)
    for system in all_systems():
        if not system.has_batch:
            rows.append(Row("many", system.key, None, "jobs/s", note="no batch enqueue call"))
    return rows


def _drain(ctx: Ctx, workload: str, threads: int) -> list[Row]:
    stores: list[Store] = []
    entries: list[tuple[str, Measure]] = []
    extra: dict[str, dict[str, Any]] = {}
    systems: list[System] = all_systems()
    if threads > 1:
        systems = [Sqlite(shared=True)] + systems
    try:
        for system in systems:
            key = "sqlite-shared" if isinstance(system, Sqlite) and system.shared else system.key
            path, info = ctx.filled(system, ctx.depth, PAYLOAD, workload)
            extra[key] = dict(prefill=info)
            store = system.open(path)
            stores.append(store)
            if threads == 1:
                entries.append((key, partial(loop_until, drain_op(store), ctx.slice_s)))
            else:
                handles = [store.for_thread() for _ in range(threads)]
                stores += [h for h in handles if h is not store]
                ops: list[Callable[[], Any]] = [drain_op(h) for h in handles]
                entries.append((key, partial(threads_until, ops, ctx.slice_s)))
        return rows_from(workload, interleave(ctx, entries), extra=extra)
    finally:
        close_all(stores)


def w_drain1(ctx: Ctx) -> list[Row]:
    """One consumer: lease + ack (dequeue for huey) of 100 B jobs from a queue of ctx.depth."""
    return _drain(ctx, "drain1", 1)


def w_drain8(ctx: Ctx) -> list[Row]:
    """Eight consumer threads: lease + ack from a queue of ctx.depth."""
    return _drain(ctx, "drain8", THREADS)


def w_e2e(ctx: Ctx) -> list[Row]:
    """No-op tasks through each system's own worker runtime, 8 worker threads, queue prefilled.

    logq: Queue.register + Queue.worker(concurrency=8, kind="thread").
    huey: its consumer with 8 worker threads. Reference: the SQLite table drained by
    8 lease+ack threads (no runtime around it). A job counts once it is acked.
    """
    entries: list[tuple[str, Measure]] = []
    extra: dict[str, dict[str, Any]] = {}
    closers: list[Callable[[], None]] = []
    try:
        system: System
        for shared in (False, True):
            system = Sqlite(shared=shared)
            key = "sqlite-shared" if shared else "sqlite"
            path, info = ctx.filled(system, ctx.depth, PAYLOAD, "e2e")
            extra[key] = dict(prefill=info, runtime="8 threads: lease + ack loop (no runtime)")
            store = system.open(path)
            handles = [store.for_thread() for _ in range(THREADS)]
            closers += [h.close for h in handles if h is not store] + [store.close]
            ops: list[Callable[[], Any]] = [drain_op(h) for h in handles]
            entries.append((key, partial(threads_until, ops, ctx.slice_s)))
        for sync in ("always", "batch"):
            system = Logq(sync)
            path, info = ctx.filled(system, ctx.depth, PAYLOAD, "e2e")
            extra[system.key] = dict(prefill=info, runtime="Queue.worker(concurrency=8, kind='thread')")
            entries.append((system.key, _logq_worker_measure(ctx, path, sync, closers)))
        system = Huey()
        path, info = ctx.filled(system, ctx.depth, PAYLOAD, "e2e")
        extra[system.key] = dict(prefill=info, runtime="huey consumer, workers=8, worker_type='thread'")
        entries.append((system.key, _huey_measure(ctx, path, closers)))
        rows = rows_from("e2e", interleave(ctx, entries), extra=extra)
    finally:
        for c in closers:
            try:
                c()
            except Exception:  # noqa: BLE001
                pass
    for s in all_systems():
        if not s.has_worker and s.key != "sqlite":
            rows.append(Row("e2e", s.key, None, "jobs/s", note="no worker runtime of its own"))
    return rows


def _logq_worker_measure(ctx: Ctx, path: str, sync: str, closers: list[Callable[[], None]]) -> Measure:
    import logq
    q = logq.Queue(path, sync=sync)
    closers.append(q.close)
    q.register(TASK, lambda payload: None)
    done = [0]
    lock = threading.Lock()

    def on_success(job: Any, value: Any) -> None:
        with lock:
            done[0] += 1

    def measure() -> tuple[int, float]:
        worker = q.worker(concurrency=THREADS, kind="thread", on_success=on_success)
        runner = threading.Thread(target=worker.run, daemon=True)
        first = done[0]
        start = clock()
        runner.start()
        time.sleep(ctx.slice_s)
        n, secs = done[0] - first, clock() - start
        worker.stop()
        runner.join(60)
        return n, secs
    return measure


def _huey_measure(ctx: Ctx, path: str, closers: list[Callable[[], None]]) -> Measure:
    from huey.signals import SIGNAL_COMPLETE
    h, _task = make_huey(path, fsync=True)
    closers.append(h.storage.close)
    done = [0]
    lock = threading.Lock()

    def on_complete(sig: str, task: Any, *args: Any) -> None:
        with lock:
            done[0] += 1
    h.signal(SIGNAL_COMPLETE)(on_complete)

    def measure() -> tuple[int, float]:
        consumer = h.create_consumer(workers=THREADS, worker_type="thread", periodic=False,
                                     check_worker_health=False)
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        first = done[0]
        start = clock()
        try:
            consumer.start()  # also installs its signal handlers: put ours back after
            time.sleep(ctx.slice_s)
            n, secs = done[0] - first, clock() - start
            consumer.stop(graceful=True)
        finally:
            for s, handler in saved.items():
                signal.signal(s, handler)
        return n, secs
    return measure


def _child(key: str, path: str) -> dict[str, Any]:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo] + [p for p in sys.path if p]))
    out = subprocess.run([sys.executable, "-c", CHILD, key, path], capture_output=True, text=True,
                         check=False, timeout=900, env=env, cwd=repo)
    if out.returncode != 0:
        raise RuntimeError(f"child {key} failed:\n{out.stderr[-2000:]}")
    res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return res


def w_startup(ctx: Ctx) -> list[Row]:
    """Start-up (open + first lease, fresh process, page cache warm) and RSS with n_big jobs stored.

    Two stores: n_big x 100 B (logq and the SQLite table: the start-up target) and
    n_big x 1 KiB pending jobs (every system: start-up and memory).
    """
    rows: list[Row] = []
    n = ctx.n_big
    plan: list[tuple[System, bytes, str]] = [(Sqlite(), PAYLOAD, "100B"), (Logq("batch"), PAYLOAD, "100B")]
    plan += [(s, PAYLOAD_1K, "1KiB") for s in all_systems() if s.key != "logq-always"]
    for system, payload, size in plan:
        key = "logq" if system.key.startswith("logq") else system.key
        try:
            path, info = ctx.filled(system, n, payload, f"startup-{size}")
            ctx.drop_template(system, n, payload)
            ctx.log(f"startup {key} {size}: store of {n:,} jobs, {info['bytes'] / 2**20:,.0f} MiB, "
                    f"filled in {info['fill_s']:.1f} s")
            res = _child(system.key, path)
            shutil.rmtree(path, ignore_errors=True)
        except Exception as exc:  # noqa: BLE001
            ctx.log(f"startup {key} {size}: ERROR {exc}")
            rows.append(Row(f"startup_{size}", key, None, "s", higher_is_better=False, error=str(exc)[-300:]))
            continue
        if "pending" in res and res["pending"] != n - 1:
            raise AssertionError(f"{key}: {res['pending']} pending after one lease, expected {n - 1}")
        ctx.log(f"startup {key} {size}: {res['startup_s']:.3f} s, VmRSS {res['after']['VmRSS']:.0f} MiB "
                f"(peak {res['after']['VmHWM']:.0f}, idle {res['idle']['VmRSS']:.0f})")
        extra = dict(child=res, store=info, jobs=n)
        rows.append(Row(f"startup_{size}", key, res["startup_s"], "s", higher_is_better=False, extra=extra))
        if size == "1KiB":
            rows.append(Row("rss_1KiB", key, res["after"]["VmRSS"], "MiB", higher_is_better=False,
                            extra=dict(hwm_mib=res["after"]["VmHWM"], idle_mib=res["idle"]["VmRSS"], jobs=n)))
    return rows


WORKLOADS: dict[str, Callable[[Ctx], list[Row]]] = {
    "raw": w_raw, "enq1": w_enq1, "enq8": w_enq8, "many": w_many,
    "drain1": w_drain1, "drain8": w_drain8, "e2e": w_e2e, "startup": w_startup,
}


# --------------------------------------------------------------- profiles

def profile_logq(ctx: Ctx, top: int = 12) -> dict[str, str]:
    """cProfile of logq's side of the workloads whose targets are logq's (printed top functions)."""
    out: dict[str, str] = {}

    def report(name: str, profs: list[cProfile.Profile], what: str) -> None:
        stream = io.StringIO()
        st = pstats.Stats(profs[0], stream=stream)
        for p in profs[1:]:
            st.add(p)
        st.sort_stats("tottime").print_stats(top)
        text = stream.getvalue()
        text = text[text.find("ncalls"):] if "ncalls" in text else text
        out[name] = f"{what}\n" + "\n".join(line for line in text.splitlines() if line.strip())
        ctx.log(f"profiled {name}")

    def single(name: str, sync: str, fn: Callable[[Any], Callable[[], Any]], what: str,
               fill: int = 0) -> None:
        import logq
        path = ctx.new(f"profile-{name}")
        if fill:
            Logq("none").fill(path, fill, PAYLOAD)
        q = logq.Queue(path, sync=sync)
        try:
            op = fn(q)
            prof = cProfile.Profile()
            prof.enable()
            n, s = timed_loop(op, ctx.slice_s)
            prof.disable()
        finally:
            q.close()
        report(name, [prof], f"{what}: {n:,} calls in {s:.2f} s under the profiler")

    single("enq1-always", "always", lambda q: (lambda: q.enqueue(TASK, PAYLOAD)), "enqueue, sync=always")
    single("enq1-batch", "batch", lambda q: (lambda: q.enqueue(TASK, PAYLOAD)), "enqueue, sync=batch")
    batch = [(TASK, PAYLOAD)] * BATCH
    single("many-always", "always", lambda q: (lambda: q.enqueue_many(batch)), "enqueue_many 10k, sync=always")

    def lease_ack(q: Any) -> Callable[[], Any]:
        def op() -> None:
            q.ack(q.lease())
        return op
    single("drain1-batch", "batch", lease_ack, "lease + ack, sync=batch", fill=ctx.depth)

    import logq
    q = logq.Queue(ctx.new("profile-enq8"), sync="always")
    try:
        profs: list[cProfile.Profile] = []
        n, s = threads_until([(lambda: q.enqueue(TASK, PAYLOAD)) for _ in range(THREADS)], ctx.slice_s, profs)
    finally:
        q.close()
    report("enq8-always", profs, f"enqueue, sync=always, 8 threads (profiles merged): {n:,} calls in {s:.2f} s")

    n_open = min(ctx.n_big, 200_000)
    path = ctx.new("profile-open")
    Logq("none").fill(path, n_open, PAYLOAD)
    prof = cProfile.Profile()
    t = clock()
    prof.enable()
    logq.Queue(path, sync="batch").close()
    prof.disable()
    report("startup", [prof], f"open of {n_open:,} x 100 B jobs: {clock() - t:.2f} s under the profiler")
    shutil.rmtree(path, ignore_errors=True)
    return out


def make_stage() -> str | None:
    """A staging directory on a RAM disk, when the machine has one."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return tempfile.mkdtemp(prefix="logq-bench-suite-stage-", dir=shm)
    return None


def fs_type(path: str) -> str:
    """The file system type of `path` (from /proc/mounts), or '' when unknown."""
    best, kind = "", ""
    try:
        real = os.path.realpath(path)
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and (real == parts[1] or real.startswith(parts[1].rstrip("/") + "/")) \
                        and len(parts[1]) >= len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


__all__ = ["Ctx", "Row", "WORKLOADS", "profile_logq", "make_stage", "fs_type", "by_key", "Huey"]
