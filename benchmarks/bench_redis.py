"""Benchmark of logq on Redis against RQ and huey's RedisHuey, on one redis-server.

Run:  python benchmarks/bench_redis.py [--quick] [--url redis://host:port/0]

Without --url it starts a redis-server of its own (on a free loopback port, a
temporary data directory, appendonly yes with appendfsync everysec: the same
server for every system) and stops it after. Every figure is from one run on
that server; payloads are 100 bytes. Needs `pip install rq huey` for the peers
(a peer that is missing is left out, with a note).

Rows (jobs per second, higher is better):
  enqueue1   one job per call, 1 client      logq enqueue | RQ Queue.enqueue | huey task call
  enqueueN   batches of 1,000                logq enqueue_many | RQ enqueue_many (pipeline) | huey: no
             batch call, so one at a time
  drain      take and finish every job       logq lease_many(100)+ack_many | RQ dequeue_any +
             (1 client)                      job.set_status(FINISHED) | huey storage dequeue (no ack)
  workers    no-op tasks through each        4 x `python -m logq worker --concurrency 1` | 4 x
             system's own worker, 4 worker   `rq worker` (RQ's default worker: a forked child per
             processes                       job) | `huey_consumer -w 4 -k process`
Below the table, the CPU time per job of the client and of the server, for
the one-at-a-time rows (the load of the machine moves these far less). The
server's own limit is shown beside them: one LPUSH per round trip
(enqueue1), and LPUSH / LPOP pipelined 1,000 at a time (enqueueN; drain and
workers). The worker row queues its jobs first (not timed), starts the
workers and times from the first finished job to the last (so start-up is
not counted), reading each system's own count of finished jobs (RQ's row
runs at most 2,000 jobs: its worker forks per job and is slow and steady).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Callable

import redis

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import logq  # noqa: E402

PAYLOAD = b"x" * 100
HERE = os.path.dirname(os.path.abspath(__file__))
WORKERS = 4


def noop(*args: Any) -> None:
    """The peers' task (RQ needs an importable function)."""


def start_server() -> tuple[subprocess.Popen[bytes], str, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (bash scripts/redis-server.sh as root), or pass --url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tempfile.mkdtemp(prefix="logq-bench-redis-")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", data, "--appendonly", "yes",
                             "--appendfsync", "everysec", "--save", ""], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(500):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.01)
    return proc, url, data


COSTS: dict[str, tuple[float, float]] = {}  # "system row" -> least (client, server) CPU µs per job seen
SERVER: list[redis.Redis] = []  # the server measured, for its CPU time


def server_cpu() -> float:
    info = SERVER[0].info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def rate(n: int, fn: Callable[[], None], label: str = "") -> float:
    """Jobs per second of `fn` doing `n` jobs; with `label`, also keep its CPU time per job,
    this process's and the server's (INFO cpu), which the load of the machine moves far less than
    the wall-clock rate."""
    cpu, server = time.process_time(), server_cpu() if label and SERVER else 0.0
    started = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - started
    if label and SERVER:
        got = ((time.process_time() - cpu) / n * 1e6, (server_cpu() - server) / n * 1e6)
        old = COSTS.get(label, got)
        COSTS[label] = (min(old[0], got[0]), min(old[1], got[1]))
    return n / elapsed


def server_rows(r: redis.Redis, n: int) -> dict[str, float]:
    key = "bench:" + uuid.uuid4().hex

    def one() -> None:
        for _ in range(n):
            r.lpush(key, PAYLOAD)

    def piped_push() -> None:
        for start in range(0, n, 1000):
            pipe = r.pipeline(transaction=False)
            for _ in range(min(1000, n - start)):
                pipe.lpush(key, PAYLOAD)
            pipe.execute()

    def piped_pop() -> None:
        for start in range(0, 2 * n, 1000):
            pipe = r.pipeline(transaction=False)
            for _ in range(1000):
                pipe.rpop(key)
            pipe.execute()
    rows = {"enqueue1": rate(n, one, "server limit enqueue1"), "enqueueN": rate(n, piped_push),
            "drain": rate(2 * n, piped_pop, "server limit drain")}
    return rows | {"workers": rows["drain"]}


def logq_rows(url: str, n: int) -> dict[str, float]:
    q = logq.Queue(url, name="bench-" + uuid.uuid4().hex[:8], sync="batch", retain_done=0)

    def one() -> None:
        for _ in range(n):
            q.enqueue("t", PAYLOAD)

    def many() -> None:
        for start in range(0, n, 1000):
            q.enqueue_many([("t", PAYLOAD)] * min(1000, n - start))

    def drain() -> None:
        while jobs := q.lease_many(100):
            q.ack_many(jobs)
    rows = {"enqueue1": rate(n, one, "logq enqueue1"), "enqueueN": rate(n, many), "drain": rate(2 * n, drain, "logq drain")}
    q.close()
    return rows


def rq_rows(url: str, n: int) -> dict[str, float]:
    import rq
    from rq.job import JobStatus
    conn = redis.Redis.from_url(url)
    queue = rq.Queue("bench-" + uuid.uuid4().hex[:8], connection=conn)

    def one() -> None:
        for _ in range(n):
            queue.enqueue("builtins.len", PAYLOAD)

    def many() -> None:
        for start in range(0, n, 1000):
            queue.enqueue_many([rq.Queue.prepare_data("builtins.len", (PAYLOAD,)) for _ in range(min(1000, n - start))])

    def drain() -> None:
        while (found := rq.Queue.dequeue_any([queue], None, connection=conn)) is not None:
            found[0].set_status(JobStatus.FINISHED)
    return {"enqueue1": rate(n, one, "RQ enqueue1"), "enqueueN": rate(n, many), "drain": rate(2 * n, drain, "RQ drain")}


def huey_rows(url: str, n: int) -> dict[str, float]:
    from huey import RedisHuey
    huey = RedisHuey("bench-" + uuid.uuid4().hex[:8], url=url)
    task = huey.task()(noop)

    def one() -> None:
        for _ in range(n):
            task(PAYLOAD)

    def drain() -> None:  # exactly the jobs queued: a dequeue of an empty queue blocks a second
        for _ in range(2 * n):
            huey.storage.dequeue()
    first = rate(n, one, "huey enqueue1")
    return {"enqueue1": first, "enqueueN": rate(n, one), "drain": rate(2 * n, drain, "huey drain")}


def app(system: str, url: str, name: str) -> Any:
    """bench_redis_app set up for `system` on queue `name` (as its workers will import it)."""
    os.environ.update(BENCH_REDIS_URL=url, BENCH_REDIS_NAME=name, BENCH_REDIS_SYSTEM=system)
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    return importlib.reload(importlib.import_module("bench_redis_app"))


def worker_row(system: str, url: str, n: int) -> float:
    """Jobs/s of `n` no-op tasks through 4 worker processes of `system`'s own worker command."""
    name = f"bench-w-{system}-" + uuid.uuid4().hex[:8]
    mod = app(system, url, name)
    bindir = os.path.dirname(sys.executable)
    if system == "logq":
        mod.q.enqueue_many([("noop", mod.logq_noop.serializer.dumps([[], {}]))] * n)
        done: Callable[[], int] = lambda: mod.q.stats().counts["done"]
        cmds = [[sys.executable, "-m", "logq", "worker", "bench_redis_app:q", "--concurrency", "1",
                 "--log-level", "WARNING"]] * WORKERS
    elif system == "RQ":
        import rq
        n = min(n, 2_000)  # its worker forks a child per job: about 100 jobs/s, and the rate is steady
        queue = rq.Queue(name, connection=redis.Redis.from_url(url))
        for start in range(0, n, 1000):
            queue.enqueue_many([rq.Queue.prepare_data("bench_redis_app.noop") for _ in range(min(1000, n - start))])
        done = lambda: queue.finished_job_registry.count
        cmds = [[os.path.join(bindir, "rq"), "worker", "--url", url, "--quiet", name]] * WORKERS
    else:
        for _ in range(n):
            mod.huey_noop()
        done = lambda: n - mod.huey.pending_count()
        cmds = [[os.path.join(bindir, "huey_consumer"), "bench_redis_app.huey", "-w", str(WORKERS), "-k", "process",
                 "-q"]]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.path.dirname(HERE)]))
    procs = [subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for cmd in cmds]
    try:
        first = 0
        while (first := done()) == 0:
            time.sleep(0.002)
        started = time.perf_counter()
        while (count := done()) < n:
            time.sleep(0.005)
        return (count - first) / (time.perf_counter() - started)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if system == "logq":
            mod.q.close()


def measure(url: str, n: int, rounds: int, quick: bool) -> dict[str, dict[str, float]]:
    """Every row of every system, in `rounds` rounds that take the systems in turn (the machine's
    load changes from one minute to the next); each figure is the best of its rounds. The worker
    row runs once per system and round, RQ's in the first round only (its worker is slow and steady)."""
    fns: dict[str, Callable[[str, int], dict[str, float]]] = {
        "server limit": lambda u, k: server_rows(redis.Redis.from_url(u), k), "logq": logq_rows}
    for peer, fn, module in (("RQ", rq_rows, "rq"), ("huey", huey_rows, "huey")):
        try:
            importlib.import_module(module)
            fns[peer] = fn
        except ImportError as exc:
            print(f"({peer} left out: {exc})")
    results: dict[str, dict[str, float]] = {system: {} for system in fns}
    for r in range(rounds):
        for system, fn in fns.items():
            got = fn(url, n)
            if system != "server limit" and (system != "RQ" or r == 0):
                got["workers"] = worker_row(system, url, min(n, 500) if quick and system == "RQ" else n)
            for row, value in got.items():
                results[system][row] = max(results[system].get(row, 0.0), value)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 jobs per row instead of 20,000")
    parser.add_argument("--url", help="an existing Redis server (default: start one)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds, best kept (default 3, quick 2)")
    ns = parser.parse_args()
    n = 2_000 if ns.quick else 20_000
    rounds = ns.rounds or (2 if ns.quick else 3)
    proc = data = None
    url = ns.url
    if url is None:
        proc, url, data = start_server()
    try:
        SERVER.append(redis.Redis.from_url(url))
        results = measure(url, n, rounds, ns.quick)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
            shutil.rmtree(data or "", ignore_errors=True)
    rows = ("enqueue1", "enqueueN", "drain", "workers")
    print(f"best of {rounds} alternating rounds, {n:,} jobs per row")
    print(f"{'jobs/s':<14}" + "".join(f"{name:>14}" for name in results) + f"{'logq/best peer':>16}")
    for row in rows:
        peers = [v[row] for k, v in results.items() if k not in ("logq", "server limit")]
        ratio = results["logq"][row] / max(peers) if peers else float("nan")
        print(f"{row:<14}" + "".join(f"{v[row]:>14,.0f}" for v in results.values()) + f"{ratio:>16.2f}")
    print("\nCPU µs per job, this client / the server (least of the rounds; the server's from INFO cpu):")
    for row in ("enqueue1", "drain"):
        print(f"{row:<14}" + "".join(f"{'%.1f / %.1f' % COSTS[f'{k} {row}'] if f'{k} {row}' in COSTS else '':>14}"
                                    for k in results))


if __name__ == "__main__":
    main()
