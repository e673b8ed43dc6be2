"""Several processes on one queue: logq against SQLite and huey in the same arrangements.

Run:  python benchmarks/bench_multiproc.py [--quick] [--dir DIR] [--rounds R] [--json PATH] [--profile]
      (peers: pip install -e '.[bench]')

Arrangements (each system in the same one, in one run, on one disk):
  e2e    4 producer processes enqueue N jobs each (100 B payloads, one call
         at a time) while 2 consumer processes take and finish them until all
         are done; jobs/s = 4 N / (last ack - start)
  enq8   8 producer processes enqueue for a fixed time; jobs/s enqueued

Systems (see multiproc_roles.py for exactly what each process calls):
  SQLite table (baseline)   one connection per process, WAL, synchronous=FULL,
                            one commit per call; claim = UPDATE ... RETURNING
  logq sync=batch|always    logq.Queue(path, sync=...) in every process;
                            lease(wait=) + ack, or lease_many(100) + ack_many
  huey                      SqliteHuey(fsync=True) in every process; enqueue by
                            calling the task, take by dequeue (no ack)
  SQLite, claims of 100     (reference for the lease_many rows) UPDATE ... LIMIT 100
                            RETURNING, acks in one transaction

Every process is a real one (multiprocessing's forkserver context, the
libraries imported once in the server); all the processes of an arrangement
open their handles, then wait at one barrier, and the clock starts when it
opens. Rounds alternate the order of the systems; a figure is a system's
best round, and every round is in the JSON. After each measurement the store
is reopened and its jobs counted: a figure whose count is wrong is an error.

Targets (issue 20): e2e sync=batch >= 10x SQLite, e2e sync=always >= 3x,
enq8 sync=always >= 5x. Until several processes can open one logq directory,
the logq rows say so and the peers are still measured.

A full run writes benchmarks/results/multiproc-full.json, the tracked record
the docs cite; a --quick run (or one with --only or --rounds) writes
benchmarks/results/local/multiproc-*.json, which git ignores.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import multiprocessing
import os
import pstats
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import multiproc_roles as roles  # noqa: E402
from benchmarks.suite import LoadMeter, environment, fmt_ratio, fmt_value  # noqa: E402
from benchmarks.workloads import Row, fs_type  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
LOCAL_RESULTS = os.path.join(RESULTS, "local")
ISSUE20 = "needs several processes per directory (issue 20)"

PRODUCERS, CONSUMERS, PRODUCERS_ENQ = 4, 2, 8

SYSTEMS: dict[str, tuple[str, str, str]] = {
    # key: label, durability of a returned call, delivery
    "sqlite": ("SQLite table (baseline)", "power loss", "at-least-once"),
    "logq-always": ("logq sync=always", "power loss", "at-least-once"),
    "logq-batch": ("logq sync=batch", "process crash", "at-least-once"),
    "logq-always-many": ("  logq sync=always, lease_many(100)+ack_many", "power loss", "at-least-once"),
    "logq-batch-many": ("  logq sync=batch, lease_many(100)+ack_many", "process crash", "at-least-once"),
    "sqlite-many": ("  SQLite, claims of 100 (reference)", "power loss", "at-least-once"),
    "huey": ("huey SqliteStorage fsync=True", "power loss", "at-most-once (no ack)"),
}
WORKLOADS: dict[str, list[str]] = {
    "e2e": ["sqlite", "logq-batch", "logq-always", "huey", "logq-batch-many", "logq-always-many", "sqlite-many"],
    "enq8": ["sqlite", "logq-always", "huey", "logq-batch"],
}
TITLES = {"e2e": f"{PRODUCERS} producer + {CONSUMERS} consumer processes, end to end",
          "enq8": f"enqueue, {PRODUCERS_ENQ} producer processes"}
TARGETS = [
    # name, workload, system, threshold (ratio to the SQLite baseline of the same run)
    ("4 producers + 2 consumers, sync=batch vs SQLite", "e2e", "logq-batch", 10.0),
    ("4 producers + 2 consumers, sync=always vs SQLite", "e2e", "logq-always", 3.0),
    ("8 producer processes, sync=always vs SQLite", "enq8", "logq-always", 5.0),
]


# --------------------------------------------------------------- processes

def make_context() -> Any:
    """A forkserver context whose server has imported logq and the peers once."""
    mp = multiprocessing.get_context("forkserver")
    mp.set_forkserver_preload(["benchmarks.multiproc_roles", "logq", "huey", "sqlite3"])
    return mp


def run_arrangement(mp: Any, key: str, path: str, producers: int, consumers: int, jobs: int,
                    seconds: float, timeout: float, profile: str = "") -> list[dict[str, Any]]:
    """Start the processes of one arrangement on a store at `path`; every process's report
    (`profile`: a path prefix for each process's profile, see multiproc_roles.producer)."""
    barrier = mp.Barrier(producers + consumers)
    done = mp.Value("i", 0)
    results = mp.Queue()
    procs = [mp.Process(target=roles.producer, args=(key, path, i, jobs, seconds, barrier, done, results, profile))
             for i in range(producers)]
    procs += [mp.Process(target=roles.consumer, args=(key, path, i, producers, barrier, done, results, profile))
              for i in range(consumers)]
    for p in procs:
        p.start()
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(reports) < len(procs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{key}: {len(procs) - len(reports)} of {len(procs)} processes "
                                   f"had not reported after {timeout:.0f} s")
            try:
                reports.append(results.get(timeout=min(left, 5.0)))
            except Exception:  # noqa: BLE001 - queue.Empty: see whether a process died silently
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"{key}: a process exited with code {dead[0].exitcode} "
                                       "without reporting") from None
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
    return reports


def measure(mp: Any, workload: str, key: str, path: str, jobs: int, seconds: float,
            timeout: float, profile: str = "") -> dict[str, Any]:
    """One measurement: the rate, the processes' reports, and the check of the store's count."""
    roles.create_store(key, path)
    if workload == "e2e":
        reports = run_arrangement(mp, key, path, PRODUCERS, CONSUMERS, jobs, 0.0, timeout, profile)
    else:
        reports = run_arrangement(mp, key, path, PRODUCERS_ENQ, 0, 0, seconds, timeout, profile)
    errors = [r["error"] for r in reports if r["error"]]
    if errors:
        locked = any(e.startswith("LockedError") and "already open by process" in e for e in errors)
        return dict(error=ISSUE20 if locked else errors[0], errors=errors, reports=reports)
    produced = sum(r["count"] for r in reports if r["role"] == "producer")
    start = min(r["start"] for r in reports)
    if workload == "e2e":
        handled = sum(r["count"] for r in reports if r["role"] == "consumer")
        end = max(r["end"] for r in reports if r["role"] == "consumer")
    else:
        handled = produced
        end = max(r["end"] for r in reports)
    counted = roles.count_store(key, path)
    out = dict(n=handled, seconds=end - start, rate=handled / (end - start), produced=produced,
               store=counted, reports=reports, error="")
    expected = dict(done=produced, waiting=0) if workload == "e2e" else dict(waiting=produced)
    if counted["done"] == -1:  # huey keeps no finished tasks
        expected.pop("done", None)
    wrong = {k: (counted[k], v) for k, v in expected.items() if counted[k] != v}
    if workload == "e2e" and handled != produced:
        wrong["taken"] = (handled, produced)
    if wrong:
        out["error"] = f"wrong count in the store afterwards (found, expected): {wrong}"
    return out


# -------------------------------------------------------------- the rounds

class Run:
    def __init__(self, args: argparse.Namespace, root: str) -> None:
        self.quick, self.root = args.quick, root
        self.rounds = args.rounds or (1 if args.quick else 3)
        self.jobs = args.jobs or (1_000 if args.quick else 5_000)  # per producer, e2e
        self.seconds = args.seconds or (1.0 if args.quick else 3.0)  # per measurement, enq8
        self.timeout = 120.0 if args.quick else 300.0
        self.mp = make_context()
        self.n = 0
        self.children_cpu_s = 0.0  # CPU time of every process started (they are the forkserver's children)

    def log(self, msg: str) -> None:
        print(f"  .. {msg}", file=sys.stderr, flush=True)

    def new(self, label: str) -> str:
        self.n += 1
        return os.path.join(self.root, f"{self.n:03d}-{label}")

    def workload(self, name: str) -> list[Row]:
        keys = WORKLOADS[name]
        out: dict[str, dict[str, Any]] = {k: dict(samples=[], rounds=[], failures=[]) for k in keys}
        for r in range(self.rounds):
            for key in (keys if r % 2 == 0 else keys[::-1]):
                m = out[key]
                if ISSUE20 in m["failures"]:
                    continue  # a logq without issue 20 fails every round the same way
                path = self.new(f"{name}-{key}")
                try:
                    res = measure(self.mp, name, key, path, self.jobs, self.seconds, self.timeout)
                except Exception as exc:  # noqa: BLE001 - one system failing must not stop the run
                    res = dict(error=f"{type(exc).__name__}: {exc}")
                finally:
                    shutil.rmtree(path, ignore_errors=True)
                self.children_cpu_s += sum(p.get("cpu_s", 0.0) for p in res.get("reports", []))
                m["rounds"].append({k: v for k, v in res.items() if k != "reports"} |
                                   dict(reports=_brief(res.get("reports", []))))
                if res["error"]:  # a failed round is a finding; the other rounds still run
                    m["failures"].append(res["error"])
                    self.log(f"round {r + 1}: {name} {key}: {res['error']}")
                    continue
                m["samples"].append(res["rate"])
                t0 = min(p["start"] for p in res["reports"])
                produced = max(p["end"] for p in res["reports"] if p["role"] == "producer") - t0
                self.log(f"round {r + 1}: {name} {key}: {res['n']:,} jobs in {res['seconds']:.2f} s "
                         f"= {res['rate']:,.0f}/s (producers done after {produced:.2f} s)")
        rows = []
        for key, m in out.items():
            value = max(m["samples"]) if m["samples"] else None
            failures = m["failures"]
            note = error = ""
            if ISSUE20 in failures:
                note = ISSUE20
            elif value is None:
                error = failures[0] if failures else "no round completed"
            elif failures:
                note = f"{len(failures)} of {len(m['rounds'])} rounds failed: {failures[0]}"
            rows.append(Row(name, key, value, "jobs/s", samples=m["samples"], extra=dict(rounds=m["rounds"]),
                            note=note, error=error))
        return rows


    def profile(self, name: str, key: str, top: int = 14) -> str:
        """One more, untimed, measurement of `key` with every process profiled (wall clock);
        the top functions by own time, per role, summed over that role's processes."""
        path = self.new(f"profile-{name}-{key}")
        prefix = path + "-prof"
        try:
            res = measure(self.mp, name, key, path, self.jobs, self.seconds, self.timeout, profile=prefix)
            text = [f"profile of {name}, {SYSTEMS[key][0].strip()}: "
                    + (res["error"] or f"{res['n']:,} jobs in {res['seconds']:.2f} s under the profiler")]
            for role in ("producer", "consumer"):
                files = sorted(f for f in glob.glob(prefix + f"-{role}-*.prof"))
                if not files:
                    continue
                stream = io.StringIO()
                stats = pstats.Stats(*files, stream=stream)
                stats.sort_stats("tottime").print_stats(top)
                body = stream.getvalue()
                body = body[body.find("ncalls"):] if "ncalls" in body else body
                text.append(f"  {len(files)} {role}s, summed:\n" + "\n".join(
                    "    " + line for line in body.splitlines() if line.strip()))
            return "\n".join(text)
        finally:
            shutil.rmtree(path, ignore_errors=True)
            for f in glob.glob(prefix + "-*.prof"):
                os.remove(f)


def _brief(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The processes' reports with times relative to the first start, for the JSON."""
    starts = [r["start"] for r in reports if r.get("start") is not None]
    t0 = min(starts) if starts else 0.0
    out = []
    for r in reports:
        b = {k: v for k, v in r.items() if k not in ("start", "end")}
        for k in ("start", "end"):
            if r.get(k) is not None:
                b[k + "_s"] = round(r[k] - t0, 6)
        out.append(b)
    return out


# ------------------------------------------------------------------ ratios

def add_ratios(rows: list[Row]) -> None:
    """Every row's ratio to the SQLite baseline (one job per call) of its workload."""
    base = {r.workload: r.value for r in rows if r.system == "sqlite" and r.value}
    for r in rows:
        b = base.get(r.workload)
        if b and r.value is not None:
            r.extra["ratio"] = r.value / b


def evaluate_targets(rows: list[Row]) -> list[dict[str, Any]]:
    out = []
    for name, workload, system, threshold in TARGETS:
        row = next((r for r in rows if r.workload == workload and r.system == system), None)
        ratio = row.extra.get("ratio") if row is not None else None
        t: dict[str, Any] = dict(name=name, workload=workload, system=system, threshold=threshold, value=ratio,
                                 met=None if ratio is None else ratio >= threshold)
        if row is not None and row.value is not None:
            t["detail"] = f"{row.value:,.0f} jobs/s"
        elif row is not None:
            t["detail"] = row.note or row.error
        out.append(t)
    return out


def status_text(t: dict[str, Any]) -> str:
    if t["met"] is None:
        return "not measured"
    return "met" if t["met"] else f"MISSED (at {t['value'] / t['threshold']:.0%} of the target)"


def print_table(rows: list[Row]) -> None:
    head = ("arrangement", "system", "durability", "delivery", "jobs/s", "vs SQLite")
    lines: list[tuple[str, ...]] = [head]
    for w in WORKLOADS:
        for i, r in enumerate(r for r in rows if r.workload == w):
            label, durability, delivery = SYSTEMS[r.system]
            result = fmt_value(r.value, r.unit) if r.value is not None else (r.note or f"ERROR {r.error[:60]}")
            lines.append((TITLES[w] if i == 0 else "", label, durability, delivery, result,
                          fmt_ratio(r.extra.get("ratio"))))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for i, line in enumerate(lines):
        print("  ".join(c.ljust(w) if j < 4 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for r in rows:
        if r.error and len(r.error) > 60:
            print(f"error in {r.workload}, {SYSTEMS[r.system][0].strip()}: {r.error}")
        elif r.value is not None and r.note:
            print(f"{r.workload}, {SYSTEMS[r.system][0].strip()}: best of the rounds that ran; {r.note}")


def markdown(rows: list[Row], targets: list[dict[str, Any]]) -> str:
    """The README's table of these rows, and the targets."""
    out = ["| arrangement | system | durability | jobs/s | vs SQLite |", "| --- | --- | --- | ---: | ---: |"]
    for w in WORKLOADS:
        for i, r in enumerate(r for r in rows if r.workload == w):
            label, durability, _ = SYSTEMS[r.system]
            cell = fmt_value(r.value, r.unit) if r.value is not None else (r.note or f"failed: {r.error}")
            if r.value is not None and r.note:
                cell += f" ({r.note})"
            ratio = "" if r.system == "sqlite" else fmt_ratio(r.extra.get("ratio"))
            out.append(f"| {TITLES[w] if i == 0 else ''} | {label.strip()} | {durability} | {cell} | {ratio} |")
    out += ["", "| target | figure | target | status |", "| --- | ---: | ---: | --- |"]
    for t in targets:
        fig = "-" if t["value"] is None else f"{t['value']:.2f}x ({t.get('detail', '')})"
        out.append(f"| {t['name']} | {fig} | >= {t['threshold']:g}x | {status_text(t)} |")
    return "\n".join(out) + "\n"


# -------------------------------------------------------------------- main

def output_path(quick: bool, partial: bool) -> str:
    """The default JSON path: the tracked results only for a full run with the default settings."""
    if quick or partial:
        return os.path.join(LOCAL_RESULTS, f"multiproc-{'quick' if quick else 'full'}"
                                           + ("-partial" if partial else "") + ".json")
    return os.path.join(RESULTS, "multiproc-full.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="See the module docstring for the details.")
    ap.add_argument("--quick", action="store_true", help="1 round, 1,000 jobs per producer, 1 s slices "
                                                         "(under a minute)")
    ap.add_argument("--dir", help="where to make the scratch directory: the disk under test "
                                  "(default: the current directory)")
    ap.add_argument("--only", help=f"comma-separated subset of: {','.join(WORKLOADS)}")
    ap.add_argument("--rounds", type=int, help="rounds per arrangement (default 3, --quick 1)")
    ap.add_argument("--jobs", type=int, help="jobs per producer in e2e (default 5,000, --quick 1,000)")
    ap.add_argument("--seconds", type=float, help="seconds per enq8 measurement (default 3, --quick 1)")
    ap.add_argument("--json", help="JSON output path")
    ap.add_argument("--markdown", help="also write the README table (markdown) to this path")
    ap.add_argument("--profile", action="store_true",
                    help="then profile one more run of logq's target rows (every process, wall clock)")
    args = ap.parse_args(argv)
    only = list(WORKLOADS) if not args.only else [w.strip() for w in args.only.split(",") if w.strip()]
    if set(only) - set(WORKLOADS):
        ap.error(f"unknown arrangements {sorted(set(only) - set(WORKLOADS))}; choose from {','.join(WORKLOADS)}")
    try:
        __import__("huey")
    except ImportError:
        print("missing peer: huey; install it with: pip install -e '.[bench]'", file=sys.stderr)
        return 2

    parent = args.dir or os.getcwd()
    os.makedirs(parent, exist_ok=True)
    root = tempfile.mkdtemp(prefix="logq-bench-multiproc-", dir=parent)
    run = Run(args, root)
    meter = LoadMeter()
    meter.start()
    started = time.perf_counter()
    rows: list[Row] = []
    seconds: dict[str, float] = {}
    profiles: dict[str, str] = {}
    try:
        env = environment(root, None)
        if env["dir_fs"] in ("tmpfs", "ramfs"):
            run.log(f"WARNING: {root} is on {env['dir_fs']}: fsync figures mean nothing there; use --dir")
        print(f"logq multi-process benchmark ({'quick' if args.quick else 'full'}): python {env['python']}, "
              f"sqlite {env['sqlite']}, {env['cpus']} CPUs, logq at {env['git_head'][:7]}", flush=True)
        print(f"  disk under test: {root} ({fs_type(root)}); {run.rounds} round(s); e2e: {PRODUCERS} x "
              f"{run.jobs:,} jobs; enq8: {run.seconds:g} s per measurement", flush=True)
        for name in only:
            began = time.perf_counter()
            run.log(f"--- {name}")
            rows += run.workload(name)
            seconds[name] = time.perf_counter() - began
        if args.profile:
            for _, name, key, _ in TARGETS:
                if name in only:
                    run.log(f"profiling {name} {key}")
                    profiles[f"{name}/{key}"] = run.profile(name, key)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load = meter.stop()
    total = time.perf_counter() - started
    # The measured processes are the forkserver's children, not ours: take their CPU out of "other".
    load["children_cores"] = run.children_cpu_s / load["wall_s"]
    load["other_cores"] = max(0.0, load["busy_cores"] - load["suite_cores"] - load["children_cores"])

    add_ratios(rows)
    targets = evaluate_targets(rows)
    print()
    print_table(rows)
    print("\ntargets (ratios to the SQLite baseline of the same run)")
    for t in targets:
        fig = "-" if t["value"] is None else f"{t['value']:.2f}x"
        print(f"  {t['name']:<50} {fig:>7}  ({t.get('detail', '')})  >= {t['threshold']:g}x  {status_text(t)}")
    for text in profiles.values():
        print("\n" + text)
    print(f"\nthe benchmark's processes used {load['children_cores'] + load['suite_cores']:.2f} and other "
          f"processes {load['other_cores']:.2f} of {env['cpus']} CPUs on average during the run "
          f"(load average {load['loadavg_1m']['min']:.1f}-{load['loadavg_1m']['max']:.1f}); total {total:.1f} s")

    out = dict(mode="quick" if args.quick else "full",
               command="python benchmarks/bench_multiproc.py" + (" --quick" if args.quick else ""),
               settings=dict(rounds=run.rounds, e2e_producers=PRODUCERS, e2e_consumers=CONSUMERS,
                             e2e_jobs_per_producer=run.jobs, enq_producers=PRODUCERS_ENQ,
                             enq_seconds=run.seconds, payload_bytes=len(roles.PAYLOAD),
                             take_many=roles.TAKE_MANY, logq_wait_s=roles.WAIT_S, peer_poll_s=roles.POLL_S,
                             start_method="forkserver"),
               env=env, load=load, systems={k: dict(label=v[0].strip(), durability=v[1], delivery=v[2])
                                            for k, v in SYSTEMS.items()},
               targets=targets, rows=[asdict(r) for r in rows], seconds=seconds, profiles=profiles, total_s=total)
    path = args.json or output_path(args.quick, bool(args.only or args.rounds or args.jobs or args.seconds))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    tracked = path.startswith(RESULTS + os.sep) and not path.startswith(LOCAL_RESULTS + os.sep)
    print(f"wrote {os.path.relpath(path)}" + ("" if tracked or args.json
                                              else " (not the tracked results: those come from a full run)"))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, targets))
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
