"""How fast lease + ack could go in this Python on this machine: logq against two flat floors.

Run:  python benchmarks/bench_floor.py [--dir DIR] [--jobs N]

One run, one file system, N queued jobs of 100 B each, drained one job at a
time by one thread (sync="batch": records are stored before a call returns;
nothing here waits for an fsync):

  logq lease + ack          Queue.lease() then Queue.ack(job), one call each
  logq lease_many + ack_many   the same jobs 100 at a time (one batch each way)
  flat: disk work only      one function per call, no layers, no queue: frame a
                            LEASE and an ACK record the way the log does
                            (header, xxh32 of the header, xxh64 of the payload),
                            store them into a memory map, read the job's ENQUEUE
                            record back and verify both checks
  flat: + bookkeeping       the same plus what the queue's promises need at the
                            least: a lock, the ready heap ordered by (priority,
                            run_at, id), the lease-expiry heap, due-delayed and
                            expired-lease checks, per-state counts, the lease
                            owner check on ack, the enqueue time decoded and a
                            Job with every field

The flat floors still leave out what logq also does on every call: task-name
filtering, sync modes, failure and close checks, segment rollover, reads of
sealed segments, waiters and watchers, argument checks. Each figure is jobs
per second and a ratio to logq's one-call-at-a-time figure; the queue issue's
aim for that figure is 50,000/s.
"""

from __future__ import annotations

import argparse
import heapq
import mmap
import os
import platform
import shutil
import struct
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import xxhash

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import logq  # noqa: E402

PAYLOAD = b"x" * 100
NAME = "job"
HEADER = struct.Struct("<IIQBBHIQ")  # check, stored len, seq, type, flags, reserved, raw len, payload check
BODY = struct.Struct("<IQBBHIQ")
CHECK = struct.Struct("<I")
ENQ = struct.Struct("<ddiIBHH")  # enqueued_at, run_at, priority, max_attempts, opts, name len, key len
LEASE = struct.Struct("<QIdd")
ACK = struct.Struct("<Qd")
SALT = 0x5EED
ENQUEUE, LEASE_T, ACK_T = 16, 17, 18
xxh32, xxh64 = xxhash.xxh32_intdigest, xxhash.xxh64_intdigest
ZEROS = bytes(8)


def frame(seq: int, rtype: int, payload: bytes) -> bytes:
    """One record as the log frames it: header with both checks, payload, zero padding."""
    n = len(payload)
    body = BODY.pack(n, seq, rtype, 0x04, 0, n, xxh64(payload, SALT))
    return CHECK.pack(xxh32(body, SALT & 0xFFFFFFFF)) + body + payload + ZEROS[:-n & 7]


def verified_payload(buf: bytes) -> bytes:
    """The payload of the record in `buf`, both checks verified."""
    check, n, _, _, _, _, _, pcheck = HEADER.unpack_from(buf, 0)
    payload = buf[32:32 + n]
    if check != xxh32(buf[4:32], SALT & 0xFFFFFFFF) or pcheck != xxh64(payload, SALT):
        raise ValueError("record check mismatch")
    return payload


class FlatLog:
    """A memory-mapped file holding N framed ENQUEUE records, appended to in place."""

    def __init__(self, root: str, n: int) -> None:
        self.fd = os.open(os.path.join(root, "flat.seg"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        size = (n * 3 * (32 + len(PAYLOAD) + 64) + (1 << 20)) // mmap.PAGESIZE * mmap.PAGESIZE
        os.ftruncate(self.fd, size)
        self.map = mmap.mmap(self.fd, size)
        self.end, self.seq = 0, 1
        self.places: dict[int, tuple[int, int]] = {}
        head = ENQ.pack(time.time(), 0.0, 0, 3, 0, len(NAME), 0) + NAME.encode()
        for _ in range(n):
            self.places[self.seq] = (self.end, self.append(ENQUEUE, head + PAYLOAD))

    def append(self, rtype: int, payload: bytes) -> int:
        record = frame(self.seq, rtype, payload)
        end = self.end
        self.map[end:end + len(record)] = record
        self.end, self.seq = end + len(record), self.seq + 1
        return len(record)

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


def flat_disk_only(root: str, n: int) -> float:
    log = FlatLog(root, n)
    ready = list(log.places)  # ids in order
    m = log.map

    def lease_ack(job_id: int) -> bytes:
        now = time.time()
        log.append(LEASE_T, LEASE.pack(job_id, 1, now, now + 30.0))
        offset, size = log.places[job_id]
        payload = verified_payload(m[offset:offset + size])
        log.append(ACK_T, ACK.pack(job_id, time.time()))
        return payload

    try:
        start = time.perf_counter()
        for job_id in ready:
            lease_ack(job_id)
        return n / (time.perf_counter() - start)
    finally:
        log.close()


class FlatJob:
    __slots__ = ("id", "name", "payload", "attempts", "priority", "enqueued_at", "lease_expires_at",
                 "max_attempts")


class FlatEntry:
    __slots__ = ("id", "name", "state", "priority", "run_at", "attempts", "max_attempts", "expires",
                 "offset", "size", "slot")


def flat_with_bookkeeping(root: str, n: int) -> float:
    log = FlatLog(root, n)
    m = log.map
    lock = threading.Lock()
    jobs: dict[int, FlatEntry] = {}
    ready: list[tuple[int, float, int]] = []
    leases: list[tuple[float, int]] = []
    delayed: list[tuple[float, int]] = []
    counts = {"pending": 0, "active": 0, "done": 0}
    for job_id, (offset, size) in log.places.items():
        e = FlatEntry()
        e.id, e.name, e.state, e.priority, e.run_at = job_id, NAME, "pending", 0, 0.0
        e.attempts, e.max_attempts, e.expires, e.offset, e.size = 0, 3, None, offset, size
        e.slot = item = (0, 0.0, job_id)
        ready.append(item)
        jobs[job_id] = e
        counts["pending"] += 1
    heapq.heapify(ready)

    def lease(lease_time: float = 30.0) -> FlatJob | None:
        with lock:
            now = time.time()
            while leases and leases[0][0] <= now:  # expired leases (none come due here)
                heapq.heappop(leases)
            while delayed and delayed[0][0] <= now:  # delayed jobs come due (none here)
                heapq.heappop(delayed)
            while ready:
                item = heapq.heappop(ready)
                e = jobs.get(item[2])
                if e is not None and e.slot is item:
                    break
            else:
                return None
            e.state = "active"
            counts["pending"] -= 1
            counts["active"] += 1
            e.attempts += 1
            e.expires = expires = now + lease_time
            e.slot = slot = (expires, e.id)
            heapq.heappush(leases, slot)
            log.append(LEASE_T, LEASE.pack(e.id, e.attempts, now, expires))
            buf = m[e.offset:e.offset + e.size]
        record = verified_payload(buf)
        enqueued_at, _, _, _, _, name_len, key_len = ENQ.unpack_from(record, 0)
        job = FlatJob()
        job.id, job.name, job.payload, job.attempts = e.id, e.name, record[ENQ.size + name_len + key_len:], e.attempts
        job.priority, job.enqueued_at, job.lease_expires_at, job.max_attempts = (
            e.priority, enqueued_at, expires, e.max_attempts)
        return job

    def ack(job: FlatJob) -> None:
        with lock:
            e = jobs.get(job.id)
            if e is None or e.state != "active" or e.attempts != job.attempts:
                raise ValueError("lease lost")
            log.append(ACK_T, ACK.pack(job.id, time.time()))
            e.state, e.slot, e.expires = "done", None, None
            counts["active"] -= 1
            counts["done"] += 1

    try:
        start = time.perf_counter()
        while (job := lease()) is not None:
            ack(job)
        elapsed = time.perf_counter() - start
        assert counts["done"] == n, counts
        return n / elapsed
    finally:
        log.close()


def logq_drain(root: str, n: int, batched: bool) -> float:
    path = os.path.join(root, "batched" if batched else "single")
    with logq.Queue(path, sync="batch") as q:
        for start in range(0, n, 10_000):
            q.enqueue_many([(NAME, PAYLOAD)] * min(10_000, n - start))
        q.sync()
        done = 0
        begin = time.perf_counter()
        if batched:
            while jobs := q.lease_many(100):
                q.ack_many(jobs)
                done += len(jobs)
        else:
            lease, ack = q.lease, q.ack
            while (job := lease()) is not None:
                ack(job)
                done += 1
        elapsed = time.perf_counter() - begin
    assert done == n, (done, n)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=".", help="where to create the temporary directory")
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs drained by each measurement")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="logq-floor-", dir=args.dir)
    runs: list[tuple[str, Callable[[], float]]] = [
        ("logq lease + ack", lambda: logq_drain(root, args.jobs, batched=False)),
        ("logq lease_many(100) + ack_many", lambda: logq_drain(root, args.jobs, batched=True)),
        ("flat: disk work only", lambda: flat_disk_only(root, args.jobs)),
        ("flat: + bookkeeping", lambda: flat_with_bookkeeping(root, args.jobs)),
    ]
    figures: list[tuple[str, Any]] = []
    try:
        for label, run in runs:
            figures.append((label, run()))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = figures[0][1]
    print(f"lease + ack floors, {args.jobs:,} jobs of {len(PAYLOAD)} B, one thread "
          f"(Python {platform.python_version()}, {os.cpu_count()} CPUs)\n")
    print(f"{'measurement':<36}{'jobs/s':>12}{'vs logq lease + ack':>22}")
    for label, rate in figures:
        print(f"{label:<36}{rate:>12,.0f}{rate / base:>21.2f}x")
    print("\nthe queue issue's aim for logq lease + ack: 50,000/s")


if __name__ == "__main__":
    main()
