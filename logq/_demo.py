"""`python -m logq demo`: a CLI that works through a list of jobs and resumes after a stop.

Theory of operation
-------------------
The first run enqueues `jobs` simulated downloads into the queue directory.
`workers` threads lease jobs, "download" (sleep a little, hash the URL),
and ack; one job in twenty fails its first attempt to show retries. The main
thread draws a progress line. Ctrl-C stops leasing, lets running jobs finish
and closes the queue; kill -9 loses nothing either: the next run replays the
log, re-runs the interrupted jobs (their lease was lost) and carries on.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import threading
import time

from ._errors import LogqError
from ._queue import Queue

TASK = "fetch"


def run(dir: str, workers: int = 4, jobs: int = 200, enqueue: bool = False) -> int:
    """Run the demo; return the process exit status."""
    try:
        q = Queue(dir, sync="batch", max_attempts=3, lease_time=30)
    except LogqError as exc:
        print(f"logq demo: {exc}", file=sys.stderr)
        return 2
    with q:
        _announce(q, jobs, enqueue)
        return _work(q, workers)


def _announce(q: Queue, jobs: int, enqueue: bool) -> None:
    counts = q.stats().counts
    if sum(counts.values()) == 0 or enqueue:
        q.enqueue_many([(TASK, json.dumps({"url": f"https://example.invalid/page/{i}"}).encode())
                        for i in range(jobs)])
        print(f"queued {jobs} jobs in {q.path}; press Ctrl-C at any time, then run the same command to resume")
        return
    interrupted = sum(1 for j in q.jobs(state="pending", limit=None) if j.last_error == "lease lost")
    counts = q.stats().counts
    print(f"resuming {q.path}: {counts['done']} done, {counts['pending']} to go"
          + (f", {interrupted} interrupted jobs will run again" if interrupted else ""))


def _work(q: Queue, workers: int) -> int:
    stop, started = threading.Event(), time.monotonic()
    tally = {"done": 0, "retried": 0}
    lock = threading.Lock()
    threads = [threading.Thread(target=_worker, args=(q, stop, tally, lock), daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    try:
        while not stop.is_set():
            s = q.stats()
            _progress(s.counts, time.monotonic() - started, tally)
            if s.counts["pending"] == 0 and s.counts["active"] == 0:
                stop.set()
                break
            stop.wait(0.2)
    except KeyboardInterrupt:
        stop.set()
        print("\nstopping: letting running jobs finish (Ctrl-C again to quit at once)...")
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:  # second Ctrl-C: leave now; unfinished leases run again next time
        print("\nstopped at once; the interrupted jobs will run again on the next start")
        return 130
    return _summary(q, time.monotonic() - started, tally)


def _worker(q: Queue, stop: threading.Event, tally: dict[str, int], lock: threading.Lock) -> None:
    while not stop.is_set():
        try:
            job = q.lease(TASK, wait=0.2)
        except LogqError:
            return
        if job is None:
            continue
        url = json.loads(job.payload)["url"]
        time.sleep(random.uniform(0.02, 0.15))  # the simulated download
        if job.attempts == 1 and job.id % 20 == 0:
            q.fail(job, f"simulated network error fetching {url}")
            with lock:
                tally["retried"] += 1
            continue
        q.ack(job, result=hashlib.sha256(url.encode()).hexdigest()[:16].encode())
        with lock:
            tally["done"] += 1


def _progress(counts: dict[str, int], elapsed: float, tally: dict[str, int]) -> None:
    total = sum(counts.values())
    finished = counts["done"] + counts["dead"] + counts["cancelled"]
    width = 30
    filled = width * finished // total if total else width
    rate = tally["done"] / elapsed if elapsed > 0 else 0.0
    sys.stdout.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {finished}/{total} done, "
                     f"{counts['active']} running, {tally['retried']} retried, {rate:.1f} jobs/s ")
    sys.stdout.flush()


def _summary(q: Queue, elapsed: float, tally: dict[str, int]) -> int:
    counts = q.stats().counts
    print()
    if counts["pending"] or counts["active"]:
        print(f"stopped after {elapsed:.1f}s: {counts['done']} done, {counts['pending'] + counts['active']} "
              "left; run the same command again to continue where it stopped")
        return 130
    print(f"all done in {elapsed:.1f}s this run: {counts['done']} jobs done, {counts['dead']} dead, "
          f"{tally['retried']} retried after a failure. Results: python -m logq inspect {q.path}")
    return 0
