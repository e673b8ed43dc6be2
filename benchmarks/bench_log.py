"""Throughput benchmark of the logq log against the raw disk and raw Python.

Run:  python benchmarks/bench_log.py [--quick] [--dir DIR] [--json PATH]

Every figure is measured in one run, on one file system (a temporary
directory created in the current directory, or inside --dir, and removed
afterwards), so the ratios compare like with like:

  raw_fsync       os.write(100 B) + os.fdatasync in a loop, one file  (fsyncs/s)
  raw_append      os.write of one record's on-disk size, no fsync     (writes/s)
  always_1t       Log(sync="always"), 1 thread, 100 B payloads        (appends/s)
  always_8t       Log(sync="always"), 8 threads appending in loops    (total appends/s)
  batch_1t        Log(sync="batch"), 1 thread, 100 B payloads         (appends/s)
  replay          reopening a log of N one-record batches, no-op replay (records/s, best of 3)

Targets: always_8t / raw_fsync >= 5, batch_1t >= 200,000/s, replay >= 500,000/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from typing import Callable

from logq.log.log import Log

PAYLOAD_SIZE = 100
RECORD_TYPE = 16
# On-disk size of one record with a 100-byte payload: 32-byte header + payload padded to 8.
RECORD_BYTES = 32 + ((PAYLOAD_SIZE + 7) & ~7)
THREADS = 8
STEP = 64  # loop iterations between clock reads in the tight raw loops

TARGET_GROUP_COMMIT = 5.0
TARGET_BATCH = 200_000.0
TARGET_REPLAY = 500_000.0


def timed_loop(op: Callable[[], None], duration: float, step: int = 1) -> tuple[int, float]:
    """Call `op` repeatedly for about `duration` seconds; return (calls, seconds)."""
    clock = time.perf_counter
    n = 0
    start = clock()
    deadline = start + duration
    if step == 1:
        while True:
            op()
            n += 1
            if clock() >= deadline:
                break
    else:
        rng = range(step)
        while True:
            for _ in rng:
                op()
            n += step
            if clock() >= deadline:
                break
    return n, clock() - start


# ----------------------------------------------------------------- raw baselines

def bench_raw_fsync(root: str, duration: float) -> float:
    path = os.path.join(root, "raw-fsync")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    data = b"x" * PAYLOAD_SIZE
    write, fdatasync = os.write, getattr(os, "fdatasync", os.fsync)

    def op() -> None:
        write(fd, data)
        fdatasync(fd)

    try:
        op()  # warm-up: allocate the file
        n, secs = timed_loop(op, duration)
    finally:
        os.close(fd)
        os.unlink(path)
    return n / secs


def bench_raw_append(root: str, duration: float) -> float:
    path = os.path.join(root, "raw-append")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    data = b"x" * RECORD_BYTES
    write = os.write

    def op() -> None:
        write(fd, data)

    try:
        n, secs = timed_loop(op, duration, STEP)
    finally:
        os.close(fd)
        os.unlink(path)
    return n / secs


# ----------------------------------------------------------------------- logq

def _items() -> list[tuple[int, bytes]]:
    return [(RECORD_TYPE, os.urandom(PAYLOAD_SIZE))]


def bench_single(root: str, name: str, sync: str, duration: float) -> float:
    path = os.path.join(root, name)
    log = Log(path, sync=sync)
    items = _items()
    append = log.append
    try:
        for _ in range(100):  # warm-up
            append(items)
        n, secs = timed_loop(lambda: append(items), duration)
    finally:
        log.close()
        shutil.rmtree(path, ignore_errors=True)
    return n / secs


def bench_threads(root: str, name: str, sync: str, threads: int, duration: float) -> float:
    path = os.path.join(root, name)
    log = Log(path, sync=sync)
    items = _items()
    append = log.append
    try:
        return run_threads(lambda i: append(items), threads, duration)
    finally:
        log.close()
        shutil.rmtree(path, ignore_errors=True)


def run_threads(body: Callable[[int], object], threads: int, duration: float) -> float:
    """Call `body(i)` in a loop in each of `threads` threads (i = 0..threads-1), all
    started together, for about `duration` seconds; return calls per second in all.
    The first exception a thread raises is raised here."""
    counts = [0] * threads
    errors: list[BaseException] = []
    stop = threading.Event()
    barrier = threading.Barrier(threads + 1)

    def worker(i: int) -> None:
        n = 0
        try:
            barrier.wait()
            while not stop.is_set():
                body(i)
                n += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            counts[i] = n

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    try:
        for t in pool:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        time.sleep(duration)
        stop.set()
        for t in pool:
            t.join()
        secs = time.perf_counter() - start
    finally:
        stop.set()
    if errors:
        raise errors[0]
    return sum(counts) / secs


def build_log(path: str, records: int) -> float:
    """Write `records` one-record batches (sync="none"); return seconds taken."""
    log = Log(path, sync="none")
    items = _items()
    append = log.append
    start = time.perf_counter()
    try:
        for _ in range(records):
            append(items)
    finally:
        log.close()
    return time.perf_counter() - start


def bench_replay(root: str, records: int, runs: int) -> tuple[float, float]:
    """(best replay records/s over `runs` reopenings, seconds spent building the log)."""
    path = os.path.join(root, "replay")
    build_secs = build_log(path, records)
    def replay(rec: object, base: int) -> None:
        pass

    best = 0.0
    try:
        for _ in range(runs):
            start = time.perf_counter()
            log = Log(path, sync="none", replay=replay)
            secs = time.perf_counter() - start
            got = log.report.records
            log.close()
            if got != records:
                raise RuntimeError(f"replay saw {got} records, expected {records}")
            best = max(best, records / secs)
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return best, build_secs


# -------------------------------------------------------------------- driver

def run(root: str, quick: bool, log_line: Callable[[str], None]) -> dict:
    duration = 0.5 if quick else 2.0
    replay_n = 200_000 if quick else 1_000_000
    replay_runs = 3  # best of 3 reopenings: one replay takes about 2 s, and this machine swings by 30%
    figures: dict[str, float] = {}
    steps: list[tuple[str, Callable[[], float]]] = [
        ("raw_fsync", lambda: bench_raw_fsync(root, duration)),
        ("raw_append", lambda: bench_raw_append(root, duration)),
        ("always_1t", lambda: bench_single(root, "always-1", "always", duration)),
        ("always_8t", lambda: bench_threads(root, "always-8", "always", THREADS, duration)),
        ("batch_1t", lambda: bench_single(root, "batch-1", "batch", duration)),
    ]
    for name, fn in steps:
        log_line(f"  measuring {name} ...")
        figures[name] = fn()
    log_line(f"  building a log of {replay_n:,} records, then replaying it ...")
    figures["replay"], build_secs = bench_replay(root, replay_n, replay_runs)
    figures["build_none_1t"] = replay_n / build_secs

    ratios = {
        "always_8t/raw_fsync": figures["always_8t"] / figures["raw_fsync"],
        "always_1t/raw_fsync": figures["always_1t"] / figures["raw_fsync"],
        "batch_1t/raw_append": figures["batch_1t"] / figures["raw_append"],
    }
    targets = {
        "group_commit": {"what": "always_8t / raw_fsync", "value": ratios["always_8t/raw_fsync"],
                         "target": TARGET_GROUP_COMMIT},
        "batch": {"what": "batch_1t appends/s", "value": figures["batch_1t"], "target": TARGET_BATCH},
        "replay": {"what": "replay records/s", "value": figures["replay"], "target": TARGET_REPLAY},
    }
    for t in targets.values():
        t["met"] = t["value"] >= t["target"]
    return {
        "mode": "quick" if quick else "full",
        "duration_s": duration,
        "payload_bytes": PAYLOAD_SIZE,
        "record_bytes": RECORD_BYTES,
        "threads": THREADS,
        "replay_records": replay_n,
        "figures": figures,
        "ratios": ratios,
        "targets": targets,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "dir": os.path.abspath(root),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def report(res: dict) -> str:
    f, r = res["figures"], res["ratios"]
    rows = [
        ("raw fsync (write 100 B + fdatasync)", f["raw_fsync"], "fsyncs/s"),
        (f"raw append (os.write {res['record_bytes']} B)", f["raw_append"], "writes/s"),
        ("logq always, 1 thread", f["always_1t"], "appends/s"),
        (f"logq always, {res['threads']} threads", f["always_8t"], "appends/s"),
        ("logq batch, 1 thread", f["batch_1t"], "appends/s"),
        (f"logq replay ({res['replay_records']:,} records)", f["replay"], "records/s"),
        ("(logq none, 1 thread: building the replay log)", f["build_none_1t"], "appends/s"),
    ]
    out = [f"logq log benchmark ({res['mode']}, {res['duration_s']} s per measurement, "
           f"{res['payload_bytes']} B payloads, Python {res['python']}, {res['cpus']} CPUs)", ""]
    w = max(len(r[0]) for r in rows)
    out.append(f"{'measurement':<{w}}  {'rate':>12}")
    out.append("-" * (w + 24))
    for label, value, unit in rows:
        out.append(f"{label:<{w}}  {value:>12,.0f}  {unit}")
    out += ["", "ratios"]
    out.append(f"  always {res['threads']} threads / raw fsync : {r['always_8t/raw_fsync']:8.2f}x")
    out.append(f"  always 1 thread  / raw fsync : {r['always_1t/raw_fsync']:8.2f}x")
    out.append(f"  batch 1 thread   / raw append: {r['batch_1t/raw_append']:8.3f}x")
    out += ["", "targets"]
    for name, t in res["targets"].items():
        value = f"{t['value']:,.2f}x" if name == "group_commit" else f"{t['value']:,.0f}/s"
        target = f"{t['target']:,.0f}x" if name == "group_commit" else f"{t['target']:,.0f}/s"
        out.append(f"  {t['what']:<24} {value:>14}  (target >= {target:>9})  "
                   f"{'met' if t['met'] else 'MISSED'}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="0.5 s per measurement, 200,000-record replay")
    ap.add_argument("--dir", help="make the scratch directory inside DIR (default: the current directory)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = ap.parse_args(argv)

    parent = args.dir or "."
    os.makedirs(parent, exist_ok=True)
    root = tempfile.mkdtemp(prefix="logq-bench-", dir=parent)
    start = time.perf_counter()
    try:
        res = run(root, args.quick, lambda s: print(s, file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    res["total_s"] = time.perf_counter() - start
    print(report(res))
    print(f"\n(total {res['total_s']:.1f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
