"""Single-process figures of two commits, measured in alternation in one session.

Run:  python benchmarks/ab_single.py [--base REV] [--head REV] [--pairs N] [--dir DIR] [--json PATH]

Each commit's `logq/` and `benchmarks/` are exported with `git archive` into
a temporary directory (the repository's work trees are not touched), and each
side runs its own copy of `benchmarks/bench_floor.py` and
`benchmarks/bench_queue.py --quick` under this interpreter with the export
first on PYTHONPATH (the logq each run imported is checked). Runs alternate
A B, B A, A B, ... so that a change in the machine's load falls on both
sides; a side's figure is the median of its runs, and the table gives each
metric's change from base to head, signed so that negative is worse. The
issue's bar for the multi-process work (issue 20) is no more than 10% worse.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 0.10  # worse than this fraction is flagged

# metric: (source, how to read it, higher is better)
FLOOR = {"floor: lease + ack": "logq lease + ack",
         "floor: lease_many(100) + ack_many": "logq lease_many(100) + ack_many"}
QUEUE = {
    "queue: enqueue 1t always": (("enq1_always", "logq"), True),
    "queue: enqueue 8t always": (("enq8_always", "logq"), True),
    "queue: enqueue 1t batch": (("enq1_batch", "logq"), True),
    "queue: lease+ack batch": (("drain_batch", "logq"), True),
    "queue: lease_many+ack_many batch": (("drain_batch", "logq_batched"), True),
    "queue: enqueue_many 10k always": (("enqueue_many_10k_always", "logq"), True),
    "queue: open 100k x 100 B (s)": (("open", "seconds"), False),
    "queue: RSS 100k x 1 KiB (MiB)": (("rss", "rss_mib"), False),
}


def export(rev: str, into: str) -> str:
    """`rev`'s logq/ and benchmarks/ in a fresh directory; its full commit id."""
    full = subprocess.run(["git", "-C", REPO, "rev-parse", "--verify", rev + "^{commit}"], check=True,
                          capture_output=True, text=True).stdout.strip()
    os.makedirs(into)
    archive = subprocess.run(["git", "-C", REPO, "archive", full, "logq", "benchmarks"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return full


def run_side(root: str, scratch: str, jobs: int) -> dict[str, float]:
    """One run of both benchmarks on the export at `root`; metric -> figure."""
    env = dict(os.environ, PYTHONPATH=root)
    out: dict[str, float] = {}
    floor = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "bench_floor.py"), "--dir", scratch,
                            "--jobs", str(jobs)], env=env, cwd=root, capture_output=True, text=True, timeout=900)
    if floor.returncode != 0:
        raise RuntimeError(f"bench_floor failed in {root}:\n{floor.stderr[-2000:]}")
    for metric, label in FLOOR.items():
        m = re.search(rf"^{re.escape(label)}\s+([\d,]+)\s", floor.stdout, re.M)
        if m is None:
            raise RuntimeError(f"no '{label}' line in bench_floor's output:\n{floor.stdout}")
        out[metric] = float(m.group(1).replace(",", ""))
    path = os.path.join(scratch, "queue.json")
    queue = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "bench_queue.py"), "--quick",
                            "--dir", scratch, "--json", path], env=env, cwd=root, capture_output=True, text=True,
                           timeout=900)
    if queue.returncode != 0:
        raise RuntimeError(f"bench_queue failed in {root}:\n{queue.stderr[-2000:]}")
    with open(path) as f:
        res = json.load(f)
    if os.path.realpath(res["env"]["logq"]) != os.path.realpath(os.path.join(root, "logq")):
        raise RuntimeError(f"bench_queue in {root} imported logq from {res['env']['logq']}")
    for metric, ((group, key), _) in QUEUE.items():
        out[metric] = float(res["results"][group][key])
    return out


def fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def higher_is_better(metric: str) -> bool:
    return QUEUE[metric][1] if metric in QUEUE else True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="c54df26", help="the commit before the change (default c54df26)")
    ap.add_argument("--head", default="HEAD", help="the commit to compare (default HEAD)")
    ap.add_argument("--pairs", type=int, default=5, help="runs of each side (default 5)")
    ap.add_argument("--jobs", type=int, default=100_000, help="jobs per bench_floor measurement")
    ap.add_argument("--dir", default=os.getcwd(), help="where the scratch directory goes (the disk under test)")
    ap.add_argument("--json", help="also write every run's figures here")
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="logq-bench-ab-", dir=args.dir)
    runs: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
    try:
        sides = {name: os.path.join(tmp, name) for name in ("base", "head")}
        commits = {name: export(getattr(args, name), sides[name]) for name in sides}
        print(f"A/B of single-process figures: base {commits['base'][:7]}, head {commits['head'][:7]}, "
              f"{args.pairs} runs each, alternating", flush=True)
        for i in range(args.pairs):
            for name in (("base", "head") if i % 2 == 0 else ("head", "base")):
                scratch = tempfile.mkdtemp(prefix="run-", dir=tmp)
                t = time.perf_counter()
                runs[name].append(run_side(sides[name], scratch, args.jobs))
                shutil.rmtree(scratch, ignore_errors=True)
                print(f"  .. run {i + 1} {name}: {time.perf_counter() - t:.0f} s, load {os.getloadavg()[0]:.1f}",
                      file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{'metric':<36}{'base (median)':>15}{'head (median)':>15}{'change':>9}  runs base | head")
    worse = []
    for metric in [*FLOOR, *QUEUE]:
        a = statistics.median(r[metric] for r in runs["base"])
        b = statistics.median(r[metric] for r in runs["head"])
        change = (b / a - 1) if higher_is_better(metric) else (a / b - 1)
        flag = "  <-- more than 10% worse" if change < -LIMIT else ""
        if flag:
            worse.append(metric)
        spread = " ".join(fmt(r[metric]) for r in runs["base"]) + " | " + " ".join(fmt(r[metric]) for r in runs["head"])
        print(f"{metric:<36}{fmt(a):>15}{fmt(b):>15}{change:>+9.1%}  {spread}{flag}")
    print("\nchange: head against base, negative = worse (for open time and RSS, base / head - 1)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(commits=commits, runs=runs, worse=worse, load1=os.getloadavg()[0]), f, indent=2)
            f.write("\n")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
