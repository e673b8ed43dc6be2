"""`python -m logq demo`: a CLI that works through a list of jobs and resumes after a stop.

Theory of operation
-------------------
The first run enqueues `jobs` simulated downloads into the queue directory.
A worker with `workers` threads runs the `fetch` task: it "downloads" (sleeps
a little, hashes the URL); one attempt in twenty fails with a simulated
network error, to show retries with backoff. The main thread draws a progress line. Ctrl-C stops
leasing and lets running jobs finish (twice: releases them at once); kill -9
loses nothing either: the next run replays the log, re-runs the interrupted
jobs (their lease was lost) and carries on.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import threading
import time

from ..errors import LogqError
from ..core.jobs import Backoff
from ..queue import Queue
from ..runtime.worker import Worker

TASK = "fetch"


def run(dir: str, workers: int = 4, jobs: int = 200, enqueue: bool = False) -> int:
    """Run the demo; return the process exit status."""
    try:
        q = Queue(dir, sync="batch", max_attempts=5, lease_time=30, backoff=Backoff(base=0.5, max=5))
    except LogqError as exc:
        print(f"logq demo: {exc}", file=sys.stderr)
        return 2
    with q:
        q.task(name=TASK)(_fetch)
        _announce(q, jobs, enqueue)
        return _work(q, q.worker(concurrency=workers, grace=10))


def _fetch(url: str) -> str:
    """The simulated download: a short wait, then a digest of the URL; 5% of attempts fail."""
    time.sleep(random.uniform(0.02, 0.15))
    if random.random() < 0.05:
        raise ConnectionError(f"simulated network error fetching {url}")
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _announce(q: Queue, jobs: int, enqueue: bool) -> None:
    counts = q.stats().counts
    if sum(counts.values()) == 0 or enqueue:
        q.enqueue_many([(TASK, f'[["https://example.invalid/page/{i}"],{{}}]'.encode()) for i in range(jobs)])
        print(f"queued {jobs} jobs in {q.path}; press Ctrl-C at any time, then run the same command to resume")
        return
    interrupted = sum(1 for j in q.jobs(state="pending", limit=None) if j.last_error == "lease lost")
    print(f"resuming {q.path}: {counts['done']} done, {counts['pending']} to go"
          + (f", {interrupted} interrupted jobs will run again" if interrupted else ""))


def _work(q: Queue, worker: Worker) -> int:
    started = time.monotonic()
    finished = threading.Event()  # waited on, not joined: a Ctrl-C that interrupts Thread.join can
    #                               leave the thread looking finished while its jobs still run

    def run() -> None:
        try:
            worker.run()
        finally:
            finished.set()
    threading.Thread(target=run, name="logq-demo-worker", daemon=True).start()
    try:
        while not finished.is_set():
            counts = q.stats().counts
            _progress(q, counts, time.monotonic() - started)
            if counts["pending"] == 0 and counts["active"] == 0:
                worker.stop()
            finished.wait(0.2)
    except KeyboardInterrupt:
        worker.stop()
        print("\nstopping: letting running jobs finish (Ctrl-C again to stop at once)...")
        try:
            finished.wait()
        except KeyboardInterrupt:  # second Ctrl-C: release the running jobs now
            worker.stop(now=True)
            finished.wait()
    return _summary(q, time.monotonic() - started)


def _progress(q: Queue, counts: dict[str, int], elapsed: float) -> None:
    total = sum(counts.values())
    finished = counts["done"] + counts["dead"] + counts["cancelled"]
    width = 30
    filled = width * finished // total if total else width
    m = q.metrics.snapshot().get(TASK)
    done_now, retried = (m.succeeded, m.failed) if m else (0, 0)
    rate = done_now / elapsed if elapsed > 0 else 0.0
    sys.stdout.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {finished}/{total} done, "
                     f"{counts['active']} running, {retried} retried, {rate:.1f} jobs/s ")
    sys.stdout.flush()


def _summary(q: Queue, elapsed: float) -> int:
    counts = q.stats().counts
    m = q.metrics.snapshot().get(TASK)
    print()
    if counts["pending"] or counts["active"]:
        print(f"stopped after {elapsed:.1f}s: {counts['done']} done, {counts['pending'] + counts['active']} "
              "left; run the same command again to continue where it stopped")
        return 130
    print(f"all done in {elapsed:.1f}s this run: {counts['done']} jobs done, {counts['dead']} dead, "
          f"{m.failed if m else 0} retried after a failure. Results: {_python()} -m logq inspect {q.path}")
    return 0


def _python() -> str:
    """This interpreter, as a user would type it: relative when it lies under the current
    directory (`.venv/bin/python` after the quick start), since a bare `python` may be
    another one, without logq."""
    path = sys.executable
    relative = os.path.relpath(path)
    return relative if not relative.startswith(os.pardir) else path
