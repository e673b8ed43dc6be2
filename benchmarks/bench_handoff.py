"""What 8 Python threads that each wait for their own fsync can get on this machine.

Run:  python benchmarks/bench_handoff.py [--dir DIR] [--seconds S]

The log's target for `sync="always"` with 8 threads is 5x the single-thread
fsync rate. This script measures, in one run and on one file system, the
bounds that CPython threads set on any such design, next to logq itself:

  raw_fsync        1 thread: os.write(100 B) + fdatasync                 (the baseline)
  kernel_8t        8 threads, each pwrite + its own fdatasync: the kernel
                   does the grouping, no Python coordination
  handoff_8t       8 threads park on a lock each; one flushing thread wakes
                   them, with a sync that does nothing: the most round trips
                   per second the GIL and thread wake-ups let through
  sleep_8t         the same, the sync a 1/raw_fsync-second sleep (releases the
                   GIL, like fdatasync): how well parked threads' Python work
                   overlaps a sync that costs no CPU
  groupcommit_8t   the same, the sync a real fdatasync: a minimal group commit
  logq_always_8t   logq's log, sync="always", 8 threads (bench_log's figure)

Every figure is appends (or round trips) per second, and a ratio to raw_fsync.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_log import bench_raw_fsync, bench_threads, run_threads  # noqa: E402

THREADS = 8
RECORD = b"x" * 100
FILE_SIZE = 256 << 20


def _zero_file(root: str, name: str) -> int:
    """A file of FILE_SIZE zeros, synced: writes over it need no new file size."""
    fd = os.open(os.path.join(root, name), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    chunk = bytes(1 << 20)
    for offset in range(0, FILE_SIZE, len(chunk)):
        os.pwrite(fd, chunk, offset)
    os.fsync(fd)
    return fd


def _gated(body: Callable[[threading.Lock], None]) -> Callable[[int], None]:
    """`body(gate)` for thread i, each thread with a held lock of its own to park on."""
    gates = [threading.Lock() for _ in range(THREADS)]
    for gate in gates:
        gate.acquire()
    return lambda i: body(gates[i])


def bench_kernel(root: str, seconds: float) -> float:
    fd = _zero_file(root, "kernel")
    lock, end = threading.Lock(), [0]

    def body(gate: threading.Lock) -> None:
        with lock:
            offset = end[0]
            end[0] = offset + len(RECORD)
        os.pwrite(fd, RECORD, offset)
        os.fdatasync(fd)

    try:
        return run_threads(_gated(body), THREADS, seconds)
    finally:
        os.close(fd)


class _GroupCommit:
    """The smallest group commit: callers write, queue a gate of their own and park
    on it; one flushing thread takes every queued gate, syncs, and opens them."""

    def __init__(self, fd: int, sync: Callable[[], None]) -> None:
        self.fd, self.sync = fd, sync
        self.lock = threading.Lock()
        self.end = 0
        self.gates: list[threading.Lock] = []
        self.work = threading.Lock()  # released when there is work for an idle flusher
        self.work.acquire()
        self.idle = True
        self.flusher = threading.Thread(target=self._flush, daemon=True)
        self.flusher.start()

    def append(self, gate: threading.Lock) -> None:
        with self.lock:
            os.pwrite(self.fd, RECORD, self.end)
            self.end += len(RECORD)
            self.gates.append(gate)
            if self.idle:
                self.idle = False
                self.work.release()
        gate.acquire()

    def _flush(self) -> None:
        while True:
            self.work.acquire()
            while True:
                with self.lock:
                    gates, self.gates = self.gates, []
                    if not gates:
                        self.idle = True
                        break
                self.sync()
                for gate in gates:
                    gate.release()


def bench_group(root: str, name: str, seconds: float, sync: Callable[[int], None]) -> float:
    fd = _zero_file(root, name)
    group = _GroupCommit(fd, lambda: sync(fd))
    try:
        return run_threads(_gated(group.append), THREADS, seconds)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=".", help="where to create the temporary directory")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each measurement")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="logq-handoff-", dir=args.dir)
    try:
        raw = bench_raw_fsync(root, args.seconds)
        sync_seconds = 1.0 / raw
        figures = [
            ("raw fsync, 1 thread", raw),
            ("kernel grouping, 8 threads fdatasync", bench_kernel(root, args.seconds)),
            ("hand-off only, 8 threads (no-op sync)", bench_group(root, "noop", args.seconds, lambda fd: None)),
            ("8 threads, sync = sleep(1 / raw fsync)",
             bench_group(root, "sleep", args.seconds, lambda fd: time.sleep(sync_seconds))),
            ("minimal group commit, 8 threads", bench_group(root, "group", args.seconds, os.fdatasync)),
            ("logq log, sync=always, 8 threads", bench_threads(root, "logq", "always", THREADS, args.seconds)),
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"8 threads each waiting for their own fsync ({args.seconds:g} s per figure, "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs)\n")
    print(f"{'measurement':<44}{'per second':>12}{'vs raw fsync':>14}")
    for label, rate in figures:
        print(f"{label:<44}{rate:>12,.0f}{rate / raw:>13.2f}x")


if __name__ == "__main__":
    main()
