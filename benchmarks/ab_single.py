"""Single-process figures of two commits, measured in alternation in one session.

Run:  python benchmarks/ab_single.py [--base REV] [--head REV] [--pairs N] [--dir DIR] [--json PATH]

Each commit's `logq/` and `benchmarks/` are exported with `git archive` into
a temporary directory (the repository's work trees are not touched), and each
side runs its own copy of `benchmarks/bench_floor.py` and
`benchmarks/bench_queue.py --quick` under this interpreter with the export
first on PYTHONPATH (the logq each run imported is checked). Before them,
a fresh interpreter on each side's logq measures CPU time per operation
(`time.process_time`, all its threads: enqueue, lease + ack, enqueue_many,
lease_many + ack_many in sync="batch", enqueue in sync="always", and an open
of 200,000 jobs), which a loaded machine moves far less than wall-clock
rates (`--cpu-only` runs only that). Runs alternate
A B, B A, A B, ... so that a change in the machine's load falls on both
sides; the table gives each side's median and best run, and each metric's
change from base to head, signed so that negative is worse. The
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


# A fresh interpreter on one side's logq: CPU time (all its threads) per operation, one thread calling.
CPU_CHILD = r"""
import json, os, sys, time
import logq
root, n = sys.argv[1], int(sys.argv[2])
P, BATCH = b"x" * 100, [("job", b"x" * 100)] * 10_000
out = {"logq": logq.__file__}

def per_op(fn):
    t = time.process_time()
    k = fn()
    return (time.process_time() - t) / k * 1e6

def enqueue(q, k):
    for _ in range(k):
        q.enqueue("job", P)
    return k

def drain(q):
    k = 0
    while (job := q.lease()) is not None:
        q.ack(job)
        k += 1
    return k

def drain_many(q):
    k = 0
    while jobs := q.lease_many(100):
        q.ack_many(jobs)
        k += len(jobs)
    return k

def fill(q, k):
    for _ in range(k // 10_000):
        q.enqueue_many(BATCH)
    return k // 10_000 * 10_000

with logq.Queue(os.path.join(root, "batch"), sync="batch") as q:
    out["cpu: enqueue batch (us)"] = per_op(lambda: enqueue(q, n))
    out["cpu: lease+ack batch (us)"] = per_op(lambda: drain(q))
    out["cpu: enqueue_many 10k batch (us/job)"] = per_op(lambda: fill(q, n))
    out["cpu: lease_many+ack_many batch (us/job)"] = per_op(lambda: drain_many(q))
with logq.Queue(os.path.join(root, "always"), sync="always") as q:
    out["cpu: enqueue always (us)"] = per_op(lambda: enqueue(q, n // 20))
with logq.Queue(os.path.join(root, "open"), sync="none") as q:
    fill(q, 10 * n)
t = time.process_time()
logq.Queue(os.path.join(root, "open")).close()
out["cpu: open+close 10n jobs (ms)"] = (time.process_time() - t) * 1e3
print(json.dumps(out))
"""
CPU = ["cpu: enqueue batch (us)", "cpu: lease+ack batch (us)", "cpu: enqueue_many 10k batch (us/job)",
       "cpu: lease_many+ack_many batch (us/job)", "cpu: enqueue always (us)", "cpu: open+close 10n jobs (ms)"]


def export(rev: str, into: str) -> str:
    """`rev`'s logq/ and benchmarks/ in a fresh directory; its full commit id."""
    full = subprocess.run(["git", "-C", REPO, "rev-parse", "--verify", rev + "^{commit}"], check=True,
                          capture_output=True, text=True).stdout.strip()
    os.makedirs(into)
    archive = subprocess.run(["git", "-C", REPO, "archive", full, "logq", "benchmarks"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return full


def run_cpu(root: str, scratch: str, jobs: int) -> dict[str, float]:
    """CPU time per operation of the logq exported at `root`, in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=root)
    r = subprocess.run([sys.executable, "-c", CPU_CHILD, scratch, str(jobs)], env=env, cwd=root,
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"the CPU child failed in {root}:\n{r.stderr[-2000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if os.path.realpath(res.pop("logq")) != os.path.realpath(os.path.join(root, "logq", "__init__.py")):
        raise RuntimeError(f"the CPU child in {root} imported another logq")
    return {k: float(v) for k, v in res.items()}


def run_side(root: str, scratch: str, jobs: int, wall: bool) -> dict[str, float]:
    """One run on the export at `root`: the CPU child, then (if `wall`) both benchmarks; metric -> figure."""
    out = run_cpu(root, scratch, 20_000)
    if not wall:
        return out
    env = dict(os.environ, PYTHONPATH=root)
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
    if metric in CPU:
        return False
    return QUEUE[metric][1] if metric in QUEUE else True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="eff11ec", help="the commit before the change (default eff11ec, "
                                                      "the parent of issue 20's first commit)")
    ap.add_argument("--head", default="HEAD", help="the commit to compare (default HEAD)")
    ap.add_argument("--pairs", type=int, default=5, help="runs of each side (default 5)")
    ap.add_argument("--jobs", type=int, default=100_000, help="jobs per bench_floor measurement")
    ap.add_argument("--dir", default=os.getcwd(), help="where the scratch directory goes (the disk under test)")
    ap.add_argument("--json", help="also write every run's figures here")
    ap.add_argument("--cpu-only", action="store_true", help="only the CPU-time child (about 5 s a run)")
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
                runs[name].append(run_side(sides[name], scratch, args.jobs, wall=not args.cpu_only))
                shutil.rmtree(scratch, ignore_errors=True)
                print(f"  .. run {i + 1} {name}: {time.perf_counter() - t:.0f} s, load {os.getloadavg()[0]:.1f}",
                      file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{'metric':<40}{'base':>10}{'head':>10}{'change':>9}{'best base':>11}{'best head':>11}{'change':>9}"
          "  runs base | head")
    worse = []
    for metric in [m for m in [*CPU, *FLOOR, *QUEUE] if m in runs["base"][0]]:
        a = statistics.median(r[metric] for r in runs["base"])
        b = statistics.median(r[metric] for r in runs["head"])
        best = max if higher_is_better(metric) else min
        a1, b1 = best(r[metric] for r in runs["base"]), best(r[metric] for r in runs["head"])
        change, change1 = [(y / x - 1) if higher_is_better(metric) else (x / y - 1) for x, y in ((a, b), (a1, b1))]
        flag = "  <-- more than 10% worse" if change < -LIMIT and change1 < -LIMIT else ""
        if flag:
            worse.append(metric)
        spread = " ".join(fmt(r[metric]) for r in runs["base"]) + " | " + " ".join(fmt(r[metric]) for r in runs["head"])
        print(f"{metric:<40}{fmt(a):>10}{fmt(b):>10}{change:>+9.1%}{fmt(a1):>11}{fmt(b1):>11}{change1:>+9.1%}"
              f"  {spread}{flag}")
    print("\nbase, head: medians; best: the best run of each side (load only slows a run down); change: head "
          "against base, negative = worse (for times and sizes, base / head - 1); flagged when both changes are "
          "more than 10% worse")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(commits=commits, runs=runs, worse=worse, load1=os.getloadavg()[0]), f, indent=2)
            f.write("\n")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
