"""logq against the queues users would otherwise pick, in one run on one disk.

Run:  python -m benchmarks [--quick] [--only NAMES] [--dir DIR] [--profile]
      (peers: pip install -e '.[bench]')

Systems (durability = what a returned call survives; see peers_systems.py):
  SQLite table (baseline)  WAL, synchronous=FULL, one commit per call   power loss
  logq sync=always         fdatasync before returning, group commit      power loss
  logq sync=batch          written before returning, fsync within 5 ms   process crash
  persist-queue            SQLiteAckQueue, WAL, SQLite default (FULL)    power loss
  litequeue                WAL, synchronous=NORMAL                       process crash
  huey                     SqliteStorage(fsync=True), at-most-once       power loss

Workloads (NAMES for --only, comma separated), 100-byte payloads:
  raw      the disk: write(100 B)+fdatasync per call, appending and into a pre-written
           file (fsyncs/s); sequential 1 MiB appends + one fdatasync (MB/s)
  enq1     one producer, enqueue one call at a time
  enq8     8 producer threads
  many     batch enqueue, 10,000 per call (systems that have a batch call)
  drain1   lease + ack by one consumer, queue prefilled
  drain8   lease + ack by 8 consumer threads
  e2e      no-op tasks through logq's worker runtime and huey's consumer (8 threads)
  startup  open + first lease in a fresh process with N jobs stored (N x 100 B for
           logq and SQLite, N x 1 KiB for every system), and its RSS (N = 1,000,000;
           100,000 with --quick, projected to 1,000,000 for the target)

Every figure is the best of interleaved rounds (see workloads.py); ratios are
to the SQLite baseline of the same workload in the same run. For 8 threads the
baseline is the faster of one connection per thread and one shared connection
behind a lock. Output: a table on stdout, JSON and a PNG chart of the ratios.
A full run of every workload writes benchmarks/results/suite-full.{json,png},
the tracked record the docs cite; a --quick or --only run writes
benchmarks/results/local/suite-quick[-partial].* or suite-full-partial.*
(git ignores local/), so trying the suite leaves the tracked results alone.
--json and --png choose other paths.
"""

from __future__ import annotations

import argparse
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
from dataclasses import asdict
from typing import Any

from benchmarks.machine import cpu_jiffies
from benchmarks.peers_systems import all_systems, by_key
from benchmarks.workloads import FULL_N, WORKLOADS, Ctx, Row, fs_type, make_stage, profile_logq

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")  # tracked: what full runs of every workload write
LOCAL_RESULTS = os.path.join(RESULTS, "local")  # ignored by git: quick and partial runs
BUDGET_S = {"quick": 120.0, "full": 900.0}
CHART_SYSTEMS = ["logq-always", "logq-batch", "persist-queue", "litequeue", "huey"]
TABLE_SYSTEMS = ["sqlite", "logq-always", "logq-batch", "persist-queue", "litequeue", "huey"]


def titles(n_big: int) -> dict[str, str]:
    big = f"{n_big / 1e6:g}M" if n_big >= 1_000_000 else f"{n_big // 1000}k"
    return {
        "raw_fsync": "raw write + fdatasync, appending",
        "raw_fsync_prewritten": "raw write + fdatasync, pre-written file",
        "raw_append": "raw sequential append",
        "enq1": "enqueue, 1 producer",
        "enq8": "enqueue, 8 producer threads",
        "many": "batch enqueue, 10,000 per call",
        "drain1": "lease + ack, 1 consumer",
        "drain8": "lease + ack, 8 consumers",
        "e2e": "no-op tasks, own worker runtime, 8 threads",
        "startup_100B": f"start-up, {big} x 100 B jobs stored",
        "startup_1KiB": f"start-up, {big} x 1 KiB jobs stored",
        "rss_1KiB": f"RSS, {big} pending 1 KiB jobs",
    }


def label_of(key: str) -> str:
    if key == "sqlite-shared":
        return "  SQLite, shared conn + lock"
    if key == "sqlite":
        return "SQLite table (baseline)"
    if key == "logq":
        return "logq (any sync mode)"
    if key == "disk":
        return "disk"
    return by_key(key).label


def durability_of(key: str) -> str:
    if key in ("disk",):
        return ""
    if key == "logq":
        return "either mode"
    return by_key("sqlite" if key == "sqlite-shared" else key).durability


# ------------------------------------------------------------------ ratios

def add_ratios(rows: list[Row]) -> dict[str, dict[str, Any]]:
    """Per workload: the SQLite baseline figure; sets row.extra['ratio'] (>1 = better than SQLite)."""
    base: dict[str, dict[str, Any]] = {}
    for w in {r.workload for r in rows}:
        cands = [r for r in rows if r.workload == w and r.system in ("sqlite", "sqlite-shared")
                 and r.value is not None]
        if not cands:
            continue
        best = (max if cands[0].higher_is_better else min)(cands, key=lambda r: r.value or 0.0)
        base[w] = dict(value=best.value, system=best.system, unit=best.unit)
    # no-op tasks have no SQLite runtime: their reference is the 8-consumer lease+ack loop
    for r in rows:
        b = base.get(r.workload)
        if b is None or r.value is None or not b["value"]:
            continue
        r.extra["ratio"] = r.value / b["value"] if r.higher_is_better else b["value"] / r.value
    return base


TARGETS = [
    # name, workload, system, kind, threshold
    ("sync=always, 1 producer vs SQLite", "enq1", "logq-always", "ratio", 1.0),
    ("sync=always, 8 producers vs SQLite", "enq8", "logq-always", "ratio", 8.0),
    ("sync=batch, 1 producer vs SQLite", "enq1", "logq-batch", "ratio", 20.0),
    ("sync=batch, drain (lease+ack, 1 consumer) vs SQLite", "drain1", "logq-batch", "ratio", 15.0),
    ("batch enqueue, 10,000 per call (sync=always)", "many", "logq-always", "rate", 300_000.0),
    ("start-up with 1,000,000 jobs (100 B)", "startup_100B", "logq", "seconds", 3.0),
]


def evaluate_targets(rows: list[Row], n_big: int) -> list[dict[str, Any]]:
    out = []
    for name, workload, system, kind, threshold in TARGETS:
        row = next((r for r in rows if r.workload == workload and r.system == system), None)
        t: dict[str, Any] = dict(name=name, workload=workload, system=system, kind=kind, threshold=threshold)
        if row is None or row.value is None:
            t.update(value=None, met=None)
        elif kind == "ratio":
            v = row.extra.get("ratio")
            t.update(value=v, met=v is not None and v >= threshold,
                     detail=f"{row.value:,.0f} {row.unit}")
        elif kind == "rate":
            t.update(value=row.value, met=row.value >= threshold)
            other = next((r for r in rows if r.workload == workload and r.system == "logq-batch"), None)
            if other is not None and other.value is not None and system != "logq-batch":
                t["detail"] = f"sync=batch: {other.value:,.0f}/s"
        else:
            projected = row.value * FULL_N / n_big
            t.update(value=projected, measured=row.value, jobs=n_big, met=projected < threshold,
                     projected=n_big != FULL_N)
        if t.get("met") is False and t["value"]:
            if kind == "seconds":
                t["shortfall"] = f"{t['value'] / threshold:.1f}x too slow ({t['value'] - threshold:.1f} s over)"
            else:
                t["shortfall"] = f"at {t['value'] / threshold:.0%} of the target"
        out.append(t)
    return out


# ------------------------------------------------------------------ output

def fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v:.3f} s" if v < 10 else f"{v:.1f} s"
    if unit == "MiB":
        return f"{v:,.0f} MiB"
    if unit == "MB/s":
        return f"{v:,.0f} MB/s"
    if unit == "fsyncs/s":
        return f"{v:,.0f} fsyncs/s"
    return f"{v:,.0f}/s"


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "-"
    if r >= 100:
        return f"{r:,.0f}x"
    if r >= 10:
        return f"{r:.1f}x"
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"


def target_figure(t: dict[str, Any], rate_unit: str, projection: bool) -> str:
    """A target's measured figure: a ratio with its detail, a rate, or seconds."""
    if t["value"] is None:
        return "not measured"
    if t["kind"] == "ratio":
        return f"{t['value']:.2f}x ({t.get('detail', '')})"
    if t["kind"] == "rate":
        return f"{t['value']:,.0f}{rate_unit}" + (f" ({t['detail']})" if t.get("detail") else "")
    if projection and t.get("projected"):
        return f"{t['value']:.2f} s (measured {t['measured']:.2f} s at {t['jobs']:,}, projected)"
    return f"{t['value']:.2f} s"


def target_text(t: dict[str, Any]) -> str:
    if t["kind"] == "ratio":
        return f">= {t['threshold']:g}x"
    if t["kind"] == "rate":
        return f">= {t['threshold']:,.0f}/s"
    return f"< {t['threshold']:g} s" + (" @1M (proj.)" if t.get("projected") else "")


def status_text(t: dict[str, Any]) -> str:
    return "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")


def print_table(rows: list[Row], targets: list[dict[str, Any]], n_big: int) -> None:
    names = titles(n_big)
    tmap = {(t["workload"], t["system"]): t for t in targets}
    head = ("workload", "system", "durability", "result", "vs SQLite", "target", "status")
    lines: list[tuple[str, ...]] = [head]
    order = list(names)
    for w in order:
        wrows = [r for r in rows if r.workload == w]
        wrows.sort(key=lambda r: _system_order(r.system))
        for i, r in enumerate(wrows):
            t = tmap.get((w, r.system))
            result = _error_cell(r.error) if r.error and r.value is None else (
                fmt_value(r.value, r.unit) if r.value is not None else (r.note or "-"))
            lines.append((names[w] if i == 0 else "", label_of(r.system), durability_of(r.system), result,
                          fmt_ratio(r.extra.get("ratio")), target_text(t) if t else "",
                          status_text(t) if t else ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for i, line in enumerate(lines):
        print("  ".join(c.ljust(w) if j < 3 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    failed = [r for r in rows if r.error and r.value is None and len(r.error) > ERROR_CELL]
    for r in failed:  # the table shows the start of a long error; here it is whole
        print(f"error in {r.workload}, {label_of(r.system).strip()}: {r.error}")


ERROR_CELL = 40  # characters of an error shown in the table (then "...", and the error whole below it)


def _error_cell(error: str) -> str:
    return error if len(error) <= ERROR_CELL else error[:ERROR_CELL - 3] + "..."


def _system_order(key: str) -> int:
    order = ["disk", "sqlite", "sqlite-shared", "logq", "logq-always", "logq-batch", "persist-queue",
             "litequeue", "huey"]
    return order.index(key) if key in order else len(order)


def print_targets(targets: list[dict[str, Any]]) -> None:
    print("\ntargets (ratios to the SQLite baseline of the same run)")
    for t in targets:
        shown = target_figure(t, "/s", projection=True)
        extra = f"  -- {t['shortfall']}" if t.get("shortfall") else ""
        print(f"  {t['name']:<52} {shown:<40} {target_text(t):<20} {status_text(t)}{extra}")


def markdown(rows: list[Row], targets: list[dict[str, Any]], n_big: int, base: dict[str, Any]) -> str:
    names = titles(n_big)
    cols = ["enq1", "enq8", "many", "drain1", "drain8", "e2e", "startup_1KiB", "rss_1KiB"]
    short = {"enq1": "enqueue, 1 producer", "enq8": "enqueue, 8 threads", "many": "enqueue_many 10k/call",
             "drain1": "lease+ack, 1 consumer", "drain8": "lease+ack, 8 consumers",
             "e2e": "no-op tasks, worker (8 threads)", "startup_1KiB": names["startup_1KiB"],
             "rss_1KiB": names["rss_1KiB"]}
    get = {(r.workload, r.system): r for r in rows}
    out = ["| system | durability | " + " | ".join(short[c] for c in cols) + " |",
           "| --- | --- | " + " | ".join("---:" for _ in cols) + " |"]
    for key in TABLE_SYSTEMS:
        cells = []
        for c in cols:
            r = get.get((c, key)) or (get.get((c, "logq")) if key.startswith("logq") else None)
            if key == "sqlite" and c in base and base[c]["system"] == "sqlite-shared":
                r = get.get((c, "sqlite-shared"))
            if r is None or r.value is None:
                cells.append(r.note if r is not None and r.note else ("error" if r is not None and r.error else "-"))
                continue
            ratio = r.extra.get("ratio")
            cell = fmt_value(r.value, r.unit)
            if ratio is not None and key != "sqlite":
                cell += f" ({fmt_ratio(ratio)})"
            if key == "sqlite" and c in ("enq8", "drain8", "e2e"):
                cell += " ¹"
            cells.append(cell)
        sysobj = by_key(key)
        out.append(f"| {sysobj.label} | {sysobj.durability} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("| target | figure | target | status |")
    out.append("| --- | ---: | ---: | --- |")
    for t in targets:
        shown = target_figure(t, " jobs/s", projection=False)
        miss = f" ({t['shortfall']})" if t.get("shortfall") else ""
        out.append(f"| {t['name']} | {shown} | {target_text(t)} | {status_text(t)}{miss} |")
    return "\n".join(out) + "\n"


def chart(rows: list[Row], targets: list[dict[str, Any]], n_big: int, path: str, title: str) -> str:
    """A PNG of every system's ratio to the SQLite baseline, per workload (log scale)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    names = titles(n_big)
    groups = [w for w in ["enq1", "enq8", "many", "drain1", "drain8", "e2e", "startup_1KiB", "rss_1KiB"]
              if any(r.workload == w and r.extra.get("ratio") for r in rows)]
    if not groups:
        return "no ratios to chart"
    get = {(r.workload, r.system): r for r in rows}
    colors = {"logq-always": "#1f5fa8", "logq-batch": "#6fa8dc", "persist-queue": "#e69138",
              "litequeue": "#93c47d", "huey": "#a64d79"}
    tmap = {(t["workload"], t["system"]): t for t in targets if t["kind"] == "ratio"}
    bar_h, gap = 0.8, 1.2
    fig_h = 1.2 + len(groups) * (len(CHART_SYSTEMS) * bar_h + gap) * 0.32
    fig, ax = plt.subplots(figsize=(10, fig_h))
    y, yticks, ylabels = 0.0, [], []
    values = []
    for w in groups:
        top = y
        for key in CHART_SYSTEMS:
            r = get.get((w, key)) or (get.get((w, "logq")) if key.startswith("logq") else None)
            ratio = r.extra.get("ratio") if r is not None else None
            if ratio:
                ax.barh(y, ratio, height=bar_h, color=colors[key], label=by_key(key).label)
                ax.text(ratio * 1.06, y, fmt_ratio(ratio), va="center", fontsize=7)
                values.append(ratio)
                t = tmap.get((w, key))
                if t is not None:
                    ax.plot([t["threshold"]] * 2, [y - bar_h / 2, y + bar_h / 2], color="red", lw=2)
            else:
                ax.text(1.0, y, "  n/a", va="center", fontsize=7, color="grey")
            y += bar_h
        yticks.append((top + y - bar_h) / 2)
        ylabels.append(names[w].replace(", own worker runtime", "\n(own worker runtime)"))
        y += gap
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xscale("log")
    lo, hi = min(values + [0.5]), max(values + [2.0])
    ax.set_xlim(lo / 2, hi * 4)
    ax.set_yticks(yticks)
    ax.set_yticklabels(ylabels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("times the SQLite baseline (WAL, synchronous=FULL, commit per call) - higher is better; "
                  "red tick = target", fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    ax.legend(seen.values(), seen.keys(), fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ""


# ----------------------------------------------------------- environment

class LoadMeter:
    """CPU used by other processes during the run, and load averages sampled every 5 s."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(5.0):
            self.samples.append(os.getloadavg()[0])

    def start(self) -> None:
        self.busy0, _ = cpu_jiffies()
        self.own0 = sum(os.times()[:4])
        self.wall0 = time.monotonic()
        self.samples.append(os.getloadavg()[0])
        self._t.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        busy1, _ = cpu_jiffies()
        own1 = sum(os.times()[:4])
        wall = time.monotonic() - self.wall0
        hz = os.sysconf("SC_CLK_TCK")
        busy_cores = (busy1 - self.busy0) / hz / wall
        own_cores = (own1 - self.own0) / wall
        return dict(wall_s=wall, busy_cores=busy_cores, suite_cores=own_cores,
                    other_cores=max(0.0, busy_cores - own_cores),
                    loadavg_1m=dict(min=min(self.samples), max=max(self.samples),
                                    mean=sum(self.samples) / len(self.samples)))


def environment(root: str, stage: str | None) -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    import logq
    return dict(python=sys.version.split()[0], sqlite=sqlite3.sqlite_version, platform=platform.platform(),
                cpu=cpu, cpus=os.cpu_count(), memory=mem, dir=root, dir_fs=fs_type(root),
                stage=stage, stage_fs=fs_type(stage) if stage else None,
                logq=os.path.dirname(logq.__file__), git_head=git("rev-parse", "HEAD"),
                git_dirty_logq=git("status", "--porcelain", "--", "logq").splitlines(),
                date=time.strftime("%Y-%m-%d %H:%M:%S %z"))


def observed_pragmas(ctx: Ctx) -> dict[str, Any]:
    """The journal mode and synchronous level each SQLite-based system actually runs with."""
    out = {}
    for s in all_systems():
        if s.key.startswith("logq"):
            continue
        try:
            store = s.open(ctx.new(f"pragmas-{s.key}"))
            try:
                out[s.key] = store.pragmas()
            finally:
                store.close()
        except Exception as exc:  # noqa: BLE001
            out[s.key] = dict(error=str(exc))
    return out


# -------------------------------------------------------------------- main

def output_paths(quick: bool, partial: bool) -> tuple[str, str]:
    """The default JSON and PNG paths: the tracked results only for a full run of every workload."""
    stem = f"suite-{'quick' if quick else 'full'}" + ("-partial" if partial else "")
    folder = LOCAL_RESULTS if quick or partial else RESULTS
    return os.path.join(folder, stem + ".json"), os.path.join(folder, stem + ".png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0],
                                 epilog="See the module docstring of benchmarks/suite.py for the details.")
    ap.add_argument("--quick", action="store_true", help="1 round of 0.5 s, N = 100,000 (about a minute)")
    ap.add_argument("--only", help=f"comma-separated subset of: {','.join(WORKLOADS)}")
    ap.add_argument("--dir", help="where to make the scratch directory: the disk under test "
                                  "(default: the current directory)")
    ap.add_argument("--no-stage", action="store_true",
                    help="fill one-call-at-a-time systems in place instead of on /dev/shm")
    ap.add_argument("--rounds", type=int, help="rounds per workload (default 3, --quick 1)")
    ap.add_argument("--slice", type=float, help="seconds per system per round (default 1.0, --quick 0.5)")
    ap.add_argument("--json", help="JSON output path")
    ap.add_argument("--png", help="chart output path")
    ap.add_argument("--markdown", help="also write the README tables (markdown) to this path")
    ap.add_argument("--profile", action="store_true", help="also profile logq's side of the targeted workloads")
    args = ap.parse_args(argv)
    only = list(WORKLOADS) if not args.only else [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = set(only) - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)}; choose from {','.join(WORKLOADS)}")
    mode = "quick" if args.quick else "full"
    json_path, png_path = output_paths(args.quick, bool(args.only))
    json_path, png_path = args.json or json_path, args.png or png_path

    missing = []
    for mod, pkg in (("persistqueue", "persist-queue"), ("litequeue", "litequeue"), ("huey", "huey")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(pkg)
    if missing:
        print(f"missing peers: {', '.join(missing)}; install them with: pip install -e '.[bench]'",
              file=sys.stderr)
        return 2

    parent = args.dir or os.getcwd()
    os.makedirs(parent, exist_ok=True)
    root = tempfile.mkdtemp(prefix="logq-bench-suite-", dir=parent)
    stage = None if args.no_stage else make_stage()

    def log(msg: str) -> None:
        print(f"  .. {msg}", file=sys.stderr, flush=True)

    ctx = Ctx(quick=args.quick, root=root, stage=stage, log=log,
              rounds=args.rounds or (1 if args.quick else 3),
              slice_s=args.slice or (0.5 if args.quick else 1.0),
              depth=20_000 if args.quick else 100_000,
              n_big=100_000 if args.quick else FULL_N)
    meter = LoadMeter()
    meter.start()
    started = time.perf_counter()
    rows: list[Row] = []
    seconds: dict[str, float] = {}
    profiles: dict[str, str] = {}
    try:
        env = environment(root, stage)
        if env["dir_fs"] in ("tmpfs", "ramfs"):
            log(f"WARNING: {root} is on {env['dir_fs']}: fsync figures mean nothing there; use --dir")
        print(f"logq suite ({mode}): python {env['python']}, sqlite {env['sqlite']}, {env['cpus']} CPUs "
              f"({env['cpu']}), {env['platform']}", flush=True)
        print(f"  disk under test: {root} ({env['dir_fs']}); staging: {stage or 'none'}; "
              f"{ctx.rounds} round(s) x {ctx.slice_s:g} s per system; drain depth {ctx.depth:,}; "
              f"N = {ctx.n_big:,}", flush=True)
        pragmas = observed_pragmas(ctx)
        for name in only:
            t = time.perf_counter()
            log(f"--- {name}")
            rows += WORKLOADS[name](ctx)
            seconds[name] = time.perf_counter() - t
            log(f"{name} done in {seconds[name]:.1f} s")
        if args.profile:
            profiles = profile_logq(ctx)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if stage:
            shutil.rmtree(stage, ignore_errors=True)
    load = meter.stop()
    total = time.perf_counter() - started

    base = add_ratios(rows)
    targets = evaluate_targets(rows, ctx.n_big)
    print()
    print_table(rows, targets, ctx.n_big)
    print_targets(targets)
    for name, text in profiles.items():
        print(f"\nprofile {name}: {text}")
    print(f"\nother processes used {load['other_cores']:.2f} of {env['cpus']} CPUs on average during the run "
          f"(load average {load['loadavg_1m']['min']:.1f}-{load['loadavg_1m']['max']:.1f})")
    budget = BUDGET_S[mode]
    print(f"total {total:.1f} s" + (f" (over the {budget:.0f} s budget)" if total > budget and not args.only
                                    else ""))

    systems = {s.key: s.describe() for s in all_systems()}
    for key, p in pragmas.items():
        systems[key]["pragmas_observed"] = p
    out = dict(mode=mode, command="python -m benchmarks" + (" --quick" if args.quick else "") +
               (f" --only {args.only}" if args.only else ""),
               settings=dict(rounds=ctx.rounds, slice_s=ctx.slice_s, drain_depth=ctx.depth, n_big=ctx.n_big,
                             threads=8, payload_bytes=100, batch=10_000),
               env=env, load=load, systems=systems, baselines=base, targets=targets,
               rows=[asdict(r) for r in rows], seconds=seconds, profiles=profiles, total_s=total)
    for path in (json_path, png_path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    title = (f"logq vs SQLite-based queues, ratio to a hand-written SQLite table ({mode} run, "
             f"{env['date'][:10]}, {env['cpus']} CPUs, Python {env['python']})")
    problem = chart(rows, targets, ctx.n_big, png_path, title)
    print(f"wrote {os.path.relpath(json_path)}" + (f"; {problem}" if problem else f", {os.path.relpath(png_path)}")
          + ("" if json_path.startswith(RESULTS + os.sep) and not json_path.startswith(LOCAL_RESULTS + os.sep)
             else " (not the tracked results: those come from a full run)"))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, targets, ctx.n_big, base))
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
