"""End-to-end throughput of no-op tasks through the worker runtime (logq.runtime.worker).

Run:  python benchmarks/bench_worker.py [--quick] [--dir DIR] [--json PATH] [--no-profile]

Every run uses a fresh queue (sync="batch", the default) in a temporary
directory (made under --dir, default /tmp, removed afterwards):

  1. enqueue N no-op jobs with `enqueue_many` (chunks of 10,000) of the raw
     payload a `q.task` call would write: JSON `[args, kwargs]` = b"[[],{}]";
  2. start `q.worker(concurrency=C, kind=K).run()` in a thread; the clock starts
     just before `run()` is called;
  3. wait with `q.wait(last_id)`, then poll `stats()` until all N are done; the
     clock stops there (stopping the worker is not timed).

Rows: thread x {1, 4, 8}, process x {2, 4}, async x {4, 8} (async runs an
`async def` task), plus two reference rows:
  thread C / hook   the same as thread C (C = 1, 4), but completion is seen
                    through an on_success hook counting to N instead of
                    q.wait (q.wait wakes on every record the workers append);
  floor             one thread calling q.lease() + q.ack() in a loop, no worker
                    runtime: what the queue itself allows.

Each row reports tasks/s, CPU time of this process per task, and the machine
load while it ran (os.getloadavg, and the cores busy with other processes,
from /proc/stat), since the 2-core machine is shared.

Profile (unless --no-profile): the thread-worker path (C = 4) runs again with
a cProfile per worker thread, once with a wall-clock timer (where the slots
spend their time, waits included) and once with a per-thread CPU timer (what
costs CPU), and the time per task is split into buckets: leases, outcomes,
task decode, task call, result encode, metrics, hooks/bookkeeping, heartbeat,
and the main thread's q.wait wake-ups. cProfile cannot see the wait to
acquire a `with lock:` block: that wait shows up as the *self* time of
Engine.lease/Engine.complete in the wall-clock profile and is absent from the CPU
profile.

Target (issue): thread workers in batch mode >= 20,000 tasks/s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio  # noqa: F401  (the async kind needs it importable)
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import logq
from logq.runtime.worker import PREFETCH_MAX, Worker

if __package__:
    from .machine import CpuSampler, git_state
else:  # run as a script: python benchmarks/<name>.py
    from machine import CpuSampler, git_state  # type: ignore[no-redef,import-not-found]

TARGET_THREAD = 20_000.0
PAYLOAD = b"[[],{}]"  # what noop.enqueue() writes: JSON [args, kwargs]
TASK = "bench.noop"
CHUNK = 10_000
RUN_TIMEOUT = 300.0

clock = time.perf_counter


# ------------------------------------------------------------------- the runs

def _open(root: str, name: str) -> tuple[logq.Queue, str]:
    path = tempfile.mkdtemp(prefix=f"{name}-", dir=root)
    return logq.Queue(path, sync="batch"), path


def _register(q: logq.Queue, kind: str) -> None:
    if kind == "async":
        async def noop() -> None:
            return None
    else:
        def noop() -> None:
            return None
    q.task(name=TASK)(noop)


def _fill(q: logq.Queue, n: int) -> tuple[list[int], float]:
    start = clock()
    ids: list[int] = []
    for i in range(0, n, CHUNK):
        ids += q.enqueue_many([(TASK, PAYLOAD)] * min(CHUNK, n - i))
    q.sync()
    return ids, clock() - start


def _wait_all(q: logq.Queue, ids: list[int], n: int, deadline: float) -> None:
    q.wait(ids[-1], timeout=max(0.0, deadline - time.monotonic()))
    while True:
        c = q.stats().counts
        if c["done"] + c["dead"] >= n:
            if c["dead"]:
                raise RuntimeError(f"{c['dead']} no-op jobs died")
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {c['done']} of {n} jobs done after {RUN_TIMEOUT:.0f} s: hang?")
        time.sleep(0.001)


def run_worker(root: str, kind: str, concurrency: int, n: int, *, completion: str = "wait",
               worker_cls: type[Worker] = Worker,
               wait_all: Callable[[logq.Queue, list[int], int, float], None] | None = None) -> dict[str, Any]:
    """One end-to-end run; returns its figures."""
    q, path = _open(root, f"{kind}{concurrency}")
    try:
        _register(q, kind)
        ids, fill_s = _fill(q, n)
        seen = [0]
        done = threading.Event()
        lock = threading.Lock()

        def on_success(job: Any, value: Any) -> None:
            with lock:
                seen[0] += 1
                if seen[0] >= n:
                    done.set()

        hooks = {"on_success": on_success} if completion == "hook" else {}
        w = worker_cls(q._registry, concurrency=concurrency, kind=kind, grace=5.0, **hooks)
        errors: list[BaseException] = []

        def runner() -> None:
            try:
                w.run()
            except BaseException as exc:  # reported below
                errors.append(exc)

        th = threading.Thread(target=runner, name="bench-worker-run", daemon=True)
        sampler = CpuSampler()
        sampler.start()
        deadline = time.monotonic() + RUN_TIMEOUT
        th.start()
        if completion == "hook":
            if not done.wait(RUN_TIMEOUT):
                raise TimeoutError(f"only {seen[0]} of {n} jobs done after {RUN_TIMEOUT:.0f} s: hang?")
        else:
            (wait_all or _wait_all)(q, ids, n, deadline)
        load = sampler.stop()
        stop_start = clock()
        w.stop()
        th.join(30.0)
        stop_s = clock() - stop_start
        if th.is_alive():
            raise RuntimeError("worker did not stop within 30 s after stop(): hang?")
        if errors:
            raise errors[0]
        children = os.times()
        return {"kind": kind, "concurrency": concurrency, "completion": completion, "jobs": n,
                "enqueue_s": fill_s, "seconds": load["wall_s"], "tasks_per_s": n / load["wall_s"],
                "cpu_us_per_task": load["cpu_s"] / n * 1e6, "stop_s": stop_s,
                "children_cpu_s": children.children_user + children.children_system,
                "load": load}
    finally:
        q.close()
        shutil.rmtree(path, ignore_errors=True)


def run_floor(root: str, n: int) -> dict[str, Any]:
    """One thread: q.lease() + q.ack() in a loop over N ready jobs, no worker runtime."""
    q, path = _open(root, "floor")
    try:
        ids, fill_s = _fill(q, n)
        lease, ack = q.lease, q.ack
        sampler = CpuSampler()
        sampler.start()
        for _ in range(n):
            ack(lease(TASK))
        load = sampler.stop()
        return {"kind": "floor", "concurrency": 1, "completion": "-", "jobs": n, "enqueue_s": fill_s,
                "seconds": load["wall_s"], "tasks_per_s": n / load["wall_s"],
                "cpu_us_per_task": load["cpu_s"] / n * 1e6, "load": load}
    finally:
        q.close()
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------ per-call costs

def run_micro(root: str, n: int) -> dict[str, float]:
    """CPU microseconds per call of each step of a task's path, one thread, no contention."""
    from logq.queue import _names
    q, path = _open(root, "micro")
    out: dict[str, float] = {}

    def measure(label: str, fn: Callable[[], Any], count: int, per: int = 1) -> list[Any]:
        """Call `fn` `count` times; record the CPU time per call, or per job of `per` a call."""
        got = []
        append = got.append
        t0 = time.thread_time()
        for _ in range(count):
            append(fn())
        out[label] = (time.thread_time() - t0) / count / per * 1e6
        return got

    try:
        _register(q, "thread")
        task = q._registry.tasks[TASK]
        names = frozenset([TASK])
        ids, _ = _fill(q, n)
        jobs = measure("Queue.lease(frozenset, wait=0.5) as Worker._lease calls it",
                       lambda: q.lease(names, wait=0.5), n)
        it = iter(jobs)
        measure("Queue._complete(job, result=b'null') as Worker._finish_ok calls it",
                lambda: q._complete(next(it), result=b"null"), n)
        ids, _ = _fill(q, n)
        jobs = measure("Queue.lease('name')", lambda: q.lease(TASK), n)
        it = iter(jobs)
        measure("Queue.ack(job)", lambda: q.ack(next(it)), n)
        ids, _ = _fill(q, n)
        batches = measure(f"Queue.lease_many({PREFETCH_MAX}, frozenset) as a fast slot calls it, per job",
                          lambda: q.lease_many(PREFETCH_MAX, names), n // PREFETCH_MAX, PREFETCH_MAX)
        it = iter(batches)
        measure(f"Queue._complete_many({PREFETCH_MAX} acks) as a fast slot calls it, per job",
                lambda: q._complete_many([(j, b"null", None) for j in next(it)]), n // PREFETCH_MAX, PREFETCH_MAX)
        e = q._backend._index.jobs[ids[0]]
        measure("  of lease: read the ENQUEUE record back (_enqueue_of)", lambda: q._backend._enqueue_of(e), n)
        measure("  of lease: _names(frozenset) (copy + name checks)", lambda: _names(names), n)
        measure("  of lease+ack: Condition.notify_all, no waiter (x2 per task)",
                lambda: (q._backend._lock.acquire(), q._backend._changed.notify_all(), q._backend._lock.release()), n)
        measure("Registry.names() (per lease)", q._registry.names, n)
        measure("Task.decode(b'[[],{}]') (JSON)", lambda: task.decode(PAYLOAD), n)
        measure("Task.encode_result(None) (JSON)", lambda: task.encode_result(None), n)
        metrics = q.metrics
        measure("Metrics.record (lock + getattr/setattr)", lambda: metrics.record(TASK, "succeeded", 1e-6), n)
        j = jobs[0]
        measure("Job(...) construction", lambda: logq.Job(j.id, j.name, j.payload, j.attempts, j.priority,
                                                          j.enqueued_at, j.lease_expires_at, j.max_attempts), n)
    finally:
        q.close()
        shutil.rmtree(path, ignore_errors=True)
    return out


# --------------------------------------------------------------------- profile

def _profiled_worker(timer: Callable[[], float] | None, profiles: dict[str, list[cProfile.Profile]]) -> type[Worker]:
    def make() -> cProfile.Profile:
        return cProfile.Profile(timer) if timer is not None else cProfile.Profile()

    class ProfiledWorker(Worker):
        def _thread_slot(self) -> None:
            p = make()
            profiles["slots"].append(p)
            p.enable()
            try:
                super()._thread_slot()
            finally:
                p.disable()

        def _heartbeat(self) -> None:
            p = make()
            profiles["heartbeat"].append(p)
            p.enable()
            try:
                super()._heartbeat()
            finally:
                p.disable()
    return ProfiledWorker


def _find(st: pstats.Stats, file_end: str, func: str) -> list[tuple[Any, ...]]:
    return [k for k in st.stats if k[0].endswith(file_end) and k[2] == func]  # type: ignore[attr-defined]


def _cum(st: pstats.Stats, file_end: str, func: str, caller: tuple[str, str] | None = None) -> float:
    """Cumulative seconds of a function (optionally: only its calls from `caller`)."""
    total = 0.0
    for k in _find(st, file_end, func):
        cc, nc, tt, ct, callers = st.stats[k]  # type: ignore[attr-defined]
        if caller is None:
            total += ct
        else:
            for ck, cv in callers.items():
                if ck[0].endswith(caller[0]) and ck[2] == caller[1]:
                    total += cv[3]
    return total


def _self(st: pstats.Stats, file_end: str, func: str) -> float:
    return sum(st.stats[k][2] for k in _find(st, file_end, func))  # type: ignore[attr-defined]


def _calls(st: pstats.Stats, file_end: str, func: str) -> int:
    return sum(st.stats[k][1] for k in _find(st, file_end, func))  # type: ignore[attr-defined]


def _merge(profiles: list[cProfile.Profile]) -> pstats.Stats | None:
    if not profiles:
        return None
    st = pstats.Stats(profiles[0], stream=io.StringIO())
    for p in profiles[1:]:
        st.add(p)
    return st


def buckets(st: pstats.Stats) -> list[tuple[str, float]]:
    """(label, seconds) per bucket of the worker slots' time; sub-rows start with two spaces.

    The slots lease with `Queue.lease_many` (and `lease`), which check their arguments
    and call the backend's `Engine.lease`, and record outcomes with
    `Queue._complete_many`, which calls `Engine.complete`."""
    Q, W, T, S = "logq/queue.py", "logq/runtime/worker.py", "logq/runtime/tasks.py", "logq/core/index.py"
    E, G, WR = "logq/backends/engine.py", "logq/log/group_commit.py", "logq/log/writer.py"
    R = "logq/runtime/registry.py"
    lease = _cum(st, Q, "lease_many") + _cum(st, Q, "lease")
    wait_locked = _cum(st, E, "_wait_locked")
    lease_append = _cum(st, E, "_change_locked", (E, "lease")) + _cum(st, E, "_change_all_locked", (E, "lease"))
    lease_read = _cum(st, E, "_leased_jobs", (E, "lease"))
    lease_index = _cum(st, E, "_expire_locked", (E, "lease")) + _cum(st, S, "promote", (E, "lease")) \
        + _cum(st, S, "take_ready", (E, "lease"))
    lease_names = _cum(st, Q, "_names", (Q, "lease_many")) + _cum(st, Q, "_names", (Q, "lease"))
    lease_commit = _cum(st, G, "commit", (E, "lease"))
    lease_self = _self(st, Q, "lease_many") + _self(st, Q, "lease") + _self(st, E, "lease")
    lease_other = lease - lease_self - wait_locked - lease_append - lease_read - lease_index - lease_names - lease_commit
    complete = _cum(st, Q, "_complete_many")
    ack_self = _self(st, Q, "_complete_many") + _self(st, E, "complete")
    ack_append = _cum(st, E, "_append_locked", (E, "complete"))
    ack_check = _cum(st, E, "_leased_entry", (E, "complete"))
    ack_commit = _cum(st, G, "commit", (E, "complete"))
    ack_other = complete - ack_self - ack_append - ack_check - ack_commit
    decode = _cum(st, T, "decode")
    encode = _cum(st, T, "encode_result")
    metrics = _cum(st, R, "record")
    hook = _cum(st, W, "_hook")
    task_names = _cum(st, R, "names")
    call = _cum(st, "bench_worker.py", "noop")
    slot_total = _cum(st, W, "_thread_slot")
    bookkeeping = slot_total - lease - complete - decode - encode - metrics - hook - task_names - call
    write = _cum(st, WR, "write") + _cum(st, WR, "write_one", (E, "_change_locked"))  # (write calls write_one too)
    index = _cum(st, S, "transition") + _cum(st, S, "apply")
    notify = _cum(st, "threading.py", "notify_all", (E, "_notify_locked"))
    return [
        ("lease (Queue.lease_many and lease, Engine.lease)", lease),
        ("  self time: waiting for the queue lock/GIL, arg checks", lease_self),
        ("  Condition.wait, no due job (idle tail until stop)", wait_locked),
        ("  write and apply the LEASE records", lease_append),
        ("  read the ENQUEUE records back, build the Jobs", lease_read),
        ("  expire/promote/take_ready", lease_index),
        ("  _names(): frozenset + name checks", lease_names),
        ("  log.commit (GroupCommit.commit)", lease_commit),
        ("  rest", lease_other),
        ("outcomes (Queue._complete_many, Engine.complete)", complete),
        ("  self time: waiting for the queue lock/GIL, records built", ack_self),
        ("  write and apply the ACK/FAIL records", ack_append),
        ("  lease checks (_leased_entry)", ack_check),
        ("  log.commit (GroupCommit.commit)", ack_commit),
        ("  rest", ack_other),
        ("task decode (JSON [args, kwargs])", decode),
        ("task call (the no-op)", call),
        ("result encode (JSON null)", encode),
        ("metrics (Metrics.record)", metrics),
        ("hooks (Worker._hook)", hook),
        ("Registry.names() per lease", task_names),
        ("worker bookkeeping (slot loop, _process, running dict lock)", bookkeeping),
        ("= slot threads total", slot_total),
        ("of which: Log.write/write_one (leases and outcomes)", write),
        ("of which: Index.transition/apply (leases and outcomes)", index),
        ("of which: Condition.notify_all after a change", notify),
    ]


def run_profile(root: str, n: int, concurrency: int) -> dict[str, Any]:
    out: dict[str, Any] = {"jobs": n, "concurrency": concurrency}
    tables: dict[str, dict[str, float]] = {}
    for label, timer in (("wall", None), ("cpu", time.thread_time)):
        profiles: dict[str, list[cProfile.Profile]] = {"slots": [], "heartbeat": []}
        main = cProfile.Profile(timer) if timer is not None else cProfile.Profile()
        cls = _profiled_worker(timer, profiles)

        def profiled_wait_all(*a: Any, main: cProfile.Profile = main) -> None:
            main.enable()  # the main thread's q.wait and stats polling
            try:
                _wait_all(*a)
            finally:
                main.disable()
        res = run_worker(root, "thread", concurrency, n, worker_cls=cls, wait_all=profiled_wait_all)
        st = _merge(profiles["slots"])
        assert st is not None
        table = {k: v / n * 1e6 for k, v in buckets(st)}
        hb = _merge(profiles["heartbeat"])
        table["heartbeat thread (wall: mostly asleep)"] = (_cum(hb, "logq/runtime/worker.py", "_heartbeat") / n * 1e6
                                                     if hb is not None else 0.0)
        ms = pstats.Stats(main, stream=io.StringIO())
        table["main thread: q.wait wake-ups (count per task)"] = _calls(ms, "threading.py", "wait") / n
        tables[label] = table
        out[f"tasks_per_s_{label}_profiled"] = res["tasks_per_s"]
        if label == "wall":
            text = io.StringIO()
            st.stream = text  # type: ignore[attr-defined]
            st.sort_stats("tottime").print_stats(15)
            out["top_tottime_wall"] = text.getvalue()
    out["us_per_task"] = tables
    return out


# ---------------------------------------------------------------------- driver

CONFIGS = [("thread", 1), ("thread", 4), ("thread", 8), ("process", 2), ("process", 4), ("async", 4), ("async", 8)]


def run(root: str, quick: bool, profile: bool, log_line: Callable[[str], None]) -> dict[str, Any]:
    n_for = {"thread": 10_000, "process": 3_000, "async": 5_000} if quick else \
            {"thread": 30_000, "process": 10_000, "async": 10_000}
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    plan: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    for kind, c in CONFIGS:
        plan.append((f"{kind} x{c}", lambda kind=kind, c=c: run_worker(root, kind, c, n_for[kind])))
        if (kind, c) == ("thread", 1):
            plan.append(("thread x1 / hook", lambda: run_worker(root, "thread", 1, n_for["thread"],
                                                                completion="hook")))
        if (kind, c) == ("thread", 4):
            plan.append(("thread x4 / hook", lambda: run_worker(root, "thread", 4, n_for["thread"],
                                                                completion="hook")))
    plan.append(("floor", lambda: run_floor(root, n_for["thread"])))
    repeats = 1 if quick else 3
    for label, fn in plan:
        runs = []
        for i in range(repeats):
            log_line(f"  {label} (run {i + 1}/{repeats}) ...")
            try:
                runs.append(fn())
            except Exception as exc:  # a failure is a finding: record it, go on
                errors.append(f"{label}: {type(exc).__name__}: {exc}")
                log_line(f"    FAILED: {type(exc).__name__}: {exc}")
        if runs:
            runs.sort(key=lambda r: r["tasks_per_s"])
            row = runs[len(runs) // 2]  # the median run
            row["all_tasks_per_s"] = [r["tasks_per_s"] for r in runs]
            rows.append(row)
    log_line("  per-call costs ...")
    micro = run_micro(root, 5_000 if quick else 20_000)
    prof = None
    if profile:
        log_line("  profiling thread x4 (wall-clock, then CPU timer) ...")
        prof = run_profile(root, 10_000 if quick else 30_000, 4)
    best_thread = max((r["tasks_per_s"] for r in rows if r["kind"] == "thread" and r["completion"] == "wait"),
                      default=0.0)
    targets = {"thread_batch": {"what": "thread workers, batch mode, best of 1/4/8", "value": best_thread,
                                "target": TARGET_THREAD, "met": best_thread >= TARGET_THREAD}}
    return {"mode": "quick" if quick else "full", "git": git_state(), "jobs": n_for, "rows": rows, "errors": errors,
            "micro_cpu_us": micro, "profile": prof, "targets": targets, "python": sys.version.split()[0],
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "switchinterval_s": sys.getswitchinterval(), "dir": os.path.abspath(root),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def report(res: dict[str, Any]) -> str:
    out = [f"logq worker benchmark ({res['mode']}, logq {res['git']}, no-op tasks, sync=batch, Python {res['python']}, "
           f"{res['cpus']} CPUs)", ""]
    hdr = (f"{'worker':<21} {'jobs':>7} {'seconds':>8} {'tasks/s':>9} {'(min-max of runs)':>17} "
           f"{'CPU us/task':>11} {'sys%':>5} {'ctxsw/task':>10} {'cores ours':>10} {'others':>7} {'load1':>6}")
    out += [hdr, "-" * len(hdr)]
    for r in res["rows"]:
        label = ("floor: lease+ack, 1 thr" if r["kind"] == "floor" else
                 f"{r['kind']} x{r['concurrency']}" + (" / hook" if r["completion"] == "hook" else ""))
        ld = r["load"]
        span = r.get("all_tasks_per_s", [r["tasks_per_s"]])
        span_s = f"{min(span):,.0f}-{max(span):,.0f}" if len(span) > 1 else ""
        sys_pct = 100 * ld["sys_s"] / max(1e-9, ld["user_s"] + ld["sys_s"])
        out.append(f"{label:<21} {r['jobs']:>7,} {r['seconds']:>8.2f} {r['tasks_per_s']:>9,.0f} {span_s:>17} "
                   f"{r['cpu_us_per_task']:>11.1f} {sys_pct:>5.0f} {ld['ctx_switches'] / r['jobs']:>10.2f} "
                   f"{ld['cores_ours']:>10.2f} {ld['cores_others']:>7.2f} {ld['load1_after']:>6.2f}")
    out.append("(median run shown; CPU us/task and sys% are this process's CPU (all its threads); ctxsw: "
               "voluntary+involuntary context switches of this process; cores ours/others: cores busy with "
               "this process / with other processes during the run, from /proc/stat; process rows: the "
               "children's CPU counts as 'others')")
    for e in res["errors"]:
        out.append(f"ERROR {e}")
    micro = res.get("micro_cpu_us") or {}
    if micro:
        width = max(len(k) for k in micro)
        out += ["", "per-call CPU cost, one thread, no contention (thread CPU time)"]
        for k, v in micro.items():
            out.append(f"  {k:<{width}}  {v:>7.1f} us")
    prof = res.get("profile")
    if prof:
        w, c = prof["us_per_task"]["wall"], prof["us_per_task"]["cpu"]
        out += ["", f"profile: thread x{prof['concurrency']}, {prof['jobs']:,} jobs "
                f"({prof['tasks_per_s_wall_profiled']:,.0f} tasks/s under the wall-clock profiler, "
                f"{prof['tasks_per_s_cpu_profiled']:,.0f} under the CPU one)",
                "  microseconds per task, summed over the worker threads (profiler overhead included)", ""]
        width = max(len(k) for k in w)
        out.append(f"  {'bucket':<{width}}  {'wall us':>8}  {'CPU us':>8}")
        for k in w:
            if k.startswith("main thread"):
                continue
            out.append(f"  {k:<{width}}  {w[k]:>8.1f}  {c.get(k, float('nan')):>8.1f}")
        out.append(f"  main thread q.wait woke {w['main thread: q.wait wake-ups (count per task)']:.2f} "
                   "times per task")
    out += ["", "targets"]
    for t in res["targets"].values():
        out.append(f"  {t['what']:<44} {t['value']:>10,.0f}/s  (target >= {t['target']:,.0f}/s)  "
                   f"{'met' if t['met'] else 'MISSED'}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer jobs per run (about a minute)")
    ap.add_argument("--dir", default="/tmp", help="make the scratch directory inside DIR (default /tmp)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile runs")
    args = ap.parse_args(argv)

    os.makedirs(args.dir, exist_ok=True)
    root = tempfile.mkdtemp(prefix="logq-bench-worker-", dir=args.dir)
    start = clock()
    try:
        res = run(root, args.quick, not args.no_profile, lambda s: print(s, file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    res["total_s"] = clock() - start
    print(report(res))
    if res.get("profile"):
        print("\nthread x4, wall-clock profile, top functions by self time (all worker threads):")
        print(res["profile"]["top_tottime_wall"])
    print(f"(total {res['total_s']:.1f} s, load average now {os.getloadavg()[0]:.2f})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
            fh.write("\n")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
