"""The public Queue: the job lifecycle on top of the log.

Theory of operation
-------------------
Every call that changes a job follows the same steps, under the queue lock:
validate (arguments, then `Index.check` for the transition), append the
record to the log (written, not yet fsynced), `Index.apply` it. Then, outside
the lock, wait for the durability its sync mode asks for. So the index never
holds a change the log has not been handed, and concurrent callers in
`always` mode share fsyncs (group commit).

A change is visible to other threads as soon as it is applied, possibly before
it is durable; a caller's own call returns only once its record is durable
(per mode), and since the log is written in order, anything a durable record
depends on (the enqueue before its ack) is durable too.

Opening replays the log through `Index.apply`, or, after a clean close,
restores the index from the checkpoint that close left (`_snapshot`) and
replays only the records after it. Jobs still active at the end
of the replay lost their lease with the process that held it: the queue
appends an EXPIRE record for each (pending again, or dead with "lease lost"
once max_attempts is used up), so a job that kills its process cannot loop
forever.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import itertools
import json
import logging
import math
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, TypeVar, cast

from .clock import Clock, SystemClock
from .errors import ClosedError, InvalidArgument, InvalidTransition, LeaseLostError, LogqError
from .core.records import (
    ACK, CANCEL, ENCODERS, ENQUEUE, EXPIRE, EXTEND, FAIL, LEASE, RELEASE, RETRY, TYPE_NAMES, Enqueue, JobAt,
    JobRecord, Lease, Outcome, decode_enqueue, encode_enqueue, encode_job_at, encode_outcome,
    enqueue_head, enqueue_time_and_payload,
)
from .core.jobs import (
    ACTIVE, FINAL_STATES, PENDING, STATES, Backoff, CompactionReport, Job, JobInfo, Stats, new_job,
)
from .log.log import DEFAULT_SEGMENT_SIZE, Appended, ClosesOnExit, Log, RecoveryReport
from .log.fs import FileSystem
from .log.codec import Record
from .tuples import new_tuple as _new_tuple
from .core.index import Entry, Index
from .core import snapshot as _snapshot
from .runtime.tasks import Serializer, Task, TaskOptions, WaitTimeout

if TYPE_CHECKING:
    from .runtime.worker import Metrics, Worker

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
Change = tuple[Entry, int, JobRecord]  # a job, the type of the record that changes it, the record
EnqueueFields = tuple[float, float, int, int, str, "str | None", "tuple[float, float, float, float] | None"]
"""An ENQUEUE record's fields but the payload, in order: enqueued_at, run_at, priority,
max_attempts, name, key, backoff."""

MAX_NAME = 1000
_I32 = (-(2**31), 2**31 - 1)


class Queue(ClosesOnExit):
    """A persistent job queue in directory `path` (created if missing).

    Options are keyword-only and checked at construction:
    `sync` ("always", "batch", "none") is the default durability of every call,
    which a call can raise with its own `sync=`; `max_attempts`, `lease_time`
    and `backoff` are defaults for jobs; `max_payload` caps payload bytes.
    Thread-safe. Only one open Queue per directory (others get `LockedError`).
    """

    def __init__(self, path: str | os.PathLike[str], *, sync: str = "batch",
                 sync_interval: float = 0.005, segment_size: int = DEFAULT_SEGMENT_SIZE,
                 compression: str | None = None, compress_threshold: int = 512,
                 max_payload: int = 16 << 20, max_attempts: int = 3, lease_time: float = 30.0,
                 backoff: Backoff | None = None, clock: Clock | None = None,
                 retain_done: float = 3600.0, retain_dead: float = 7 * 86400.0,
                 compact_threshold: float | None = 0.5,
                 salvage: bool = False, fs: FileSystem | None = None) -> None:
        _check_int("max_payload", max_payload, 0, 1 << 28)
        _check_seconds("retain_done", retain_done)
        _check_seconds("retain_dead", retain_dead)
        if compact_threshold is not None and (not isinstance(compact_threshold, (int, float))
                                              or not 0 < compact_threshold <= 1):
            raise InvalidArgument(f"compact_threshold must be in (0, 1] or None, not {compact_threshold!r}")
        self.retain_done, self.retain_dead = float(retain_done), float(retain_dead)
        self.compact_threshold = compact_threshold
        _check_int("max_attempts", max_attempts, 1, 2**32 - 1)
        _check_seconds("lease_time", lease_time, positive=True)
        if backoff is not None and not isinstance(backoff, Backoff):
            raise InvalidArgument(f"backoff must be a logq.Backoff, not {type(backoff).__name__}")
        self.max_payload, self.max_attempts, self.lease_time = max_payload, max_attempts, lease_time
        self.backoff = backoff or Backoff()
        self.clock: Clock = clock or SystemClock()
        self._index = Index()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waiters = 0  # threads in _changed.wait: appends notify only when there are some
        self._encoded_names: dict[str, bytes] = {}  # task names already checked, with their UTF-8 bytes
        self._finished = threading.Condition(self._lock)  # `wait`: a watched job became final
        self._watched: dict[int, int] = {}  # job id -> threads in `wait` for it
        self._closed = False
        self._tasks: dict[str, Task[Any]] = {}
        self._periodic: dict[str, tuple[float, bool]] = {}  # name -> (seconds, run_now)
        self._metrics: Metrics | None = None
        self._compacting = threading.Lock()
        self._compact_wanted = threading.Event()
        self._compactor: threading.Thread | None = None
        self._compactions = 0
        self._compacted = threading.Condition()
        collecting = gc.isenabled()
        gc.disable()  # replay creates millions of objects and no cycles: collections only cost
        try:
            self._log = Log(path, replay=self._index.replay, sync=sync, sync_interval=sync_interval,
                            segment_size=segment_size, compression=compression,
                            compress_threshold=compress_threshold, salvage=salvage, fs=fs,
                            on_rollover=self._compact_wanted.set if compact_threshold is not None else None,
                            restore=functools.partial(_snapshot.restore, self._index))
        finally:
            if collecting:
                gc.enable()
        gc.freeze()  # keep the index out of later collections
        if max(self._log.report.records, len(self._index.jobs)) >= TRIM_AFTER_RECORDS:
            _return_free_memory()
        self.path = self._log.path
        try:
            self._recover_leases()
        except BaseException:
            self._log.close()
            raise
        if compact_threshold is not None:
            self._compactor = threading.Thread(target=self._auto_compact, name="logq-compact", daemon=True)
            self._compactor.start()

    @property
    def recovery(self) -> RecoveryReport:
        """What opening found: torn tails cut, ranges lost in salvage mode."""
        return self._log.report

    def _recover_leases(self) -> None:
        lost = self._index.active_jobs()
        if not lost:
            return
        now = self.clock.time()
        changes = [self._expiry(e, now, "lease lost") for e in lost]
        with self._lock:
            appended = self._change_all_locked(changes, "always")
        self._log.commit(appended)

    # ----------------------------------------------------------------- enqueue

    def enqueue(self, name: str, payload: bytes = b"", *, delay: float = 0.0, priority: int = 0,
                max_attempts: int | None = None, key: str | None = None,
                backoff: Backoff | None = None, sync: str | None = None) -> int:
        """Add a job and return its id; ids increase with every enqueue.

        With `key`, if a pending or active job already holds that key, its id
        is returned and nothing is written. The job becomes due `delay`
        seconds from now.
        """
        head, fields = self._enqueue_record(name, delay, priority, max_attempts, key, backoff)
        record = head + self._checked_payload(payload)
        with self._lock:
            self._check_open()
            if key is not None and key in self._index.keys:
                return self._index.keys[key]
            appended = self._log.write_one(ENQUEUE, record, sync=sync)
            job_id = appended.first_seq
            self._index.add(job_id, appended.segment, appended.offsets[0] << 32 | appended.sizes[0], *fields)
            self._notify_locked(False)
        self._log.commit(appended)
        return job_id

    def enqueue_many(self, items: Iterable[tuple[str, bytes]], *, delay: float = 0.0,
                     priority: int = 0, max_attempts: int | None = None,
                     sync: str | None = None) -> list[int]:
        """Add (name, payload) jobs as one atomic batch with one fsync; return their ids.

        After a crash either every job of the batch exists or none does. All
        its jobs share one enqueue time.
        """
        records: list[tuple[int, bytes]] = []
        heads: dict[str, bytes] = {}  # per task name, the ENQUEUE bytes before the payload
        head = functools.partial(self._enqueue_record, delay=delay, priority=priority,
                                 max_attempts=max_attempts, key=None, backoff=None, now=self.clock.time())
        for item in items:
            if type(item) is not tuple or len(item) != 2:
                raise InvalidArgument(f"enqueue_many takes (name, payload) pairs, not {item!r:.60}")
            name, payload = item
            prefix = heads.get(name) if type(name) is str else None
            if prefix is None:
                prefix = heads[name] = head(name)[0]
            records.append((ENQUEUE, prefix + self._checked_payload(payload)))
        if not records:
            return []
        with self._lock:
            self._check_open()
            appended = self._append_locked(records, sync)
        self._log.commit(appended)
        return list(range(appended.first_seq, appended.last_seq + 1))

    def _enqueue_record(self, name: str, delay: float, priority: int, max_attempts: int | None,
                        key: str | None, backoff: Backoff | None,
                        now: float | None = None) -> tuple[bytes, EnqueueFields]:
        """Check an enqueue's arguments; return the bytes of its ENQUEUE record up to the
        job payload (`enqueue_head`), and the record's fields but the payload, in
        order (what `Index.add` takes after the job's id and place)."""
        encoded = self._encoded_names.get(name) if type(name) is str else None
        if encoded is None:
            _check_name("name", name)
            name = str(name)
            encoded = name.encode()
            if len(self._encoded_names) < MAX_CACHED_NAMES:
                self._encoded_names[name] = encoded
        if type(delay) is not float or not 0.0 <= delay < math.inf:  # (the common case passes at once)
            delay = _check_seconds("delay", delay)
        if type(priority) is not int or not _I32[0] <= priority <= _I32[1]:
            _check_int("priority", priority, *_I32)
        if max_attempts is not None:
            _check_int("max_attempts", max_attempts, 1, 2**32 - 1)
        if key is not None:
            _check_name("key", key)
            key = str(key)
        if backoff is not None and not isinstance(backoff, Backoff):
            raise InvalidArgument(f"backoff must be a logq.Backoff, not {type(backoff).__name__}")
        now = self.clock.time() if now is None else now
        run_at, attempts = now + delay, max_attempts or self.max_attempts
        delays = backoff.as_tuple() if backoff else None
        head = enqueue_head(now, run_at, priority, attempts, encoded, None if key is None else key.encode(), delays)
        return head, (now, run_at, priority, attempts, name, key, delays)

    def _checked_payload(self, payload: object) -> bytes:
        if type(payload) is not bytes:
            if not isinstance(payload, (bytes, bytearray, memoryview)):
                raise InvalidArgument(f"payload must be bytes, not {type(payload).__name__}: encode it first")
            payload = bytes(payload)
        if len(payload) > self.max_payload:
            raise InvalidArgument(f"payload of {len(payload)} bytes exceeds max_payload={self.max_payload}: "
                                  "store large data elsewhere and enqueue a reference")
        return payload

    # ------------------------------------------------------------------- lease

    def lease(self, names: str | Iterable[str] | None = None, *, lease_time: float | None = None,
              wait: float = 0.0, sync: str | None = None) -> Job | None:
        """Take the next due job, or None if none is due within `wait` seconds.

        Order: higher priority first, then earlier run_at, then lower id. The
        attempt is counted now; the job returns to pending if the lease
        (`lease_time`, default the queue's) expires before ack/fail/release.
        """
        jobs = self._lease(1, names, lease_time, wait, sync)
        return jobs[0] if jobs else None

    def lease_many(self, n: int, names: str | Iterable[str] | None = None, *,
                   lease_time: float | None = None, wait: float = 0.0, sync: str | None = None) -> list[Job]:
        """Take up to `n` due jobs at once, in lease order; [] if none is due within `wait`.

        Like `n` calls of `lease` that found their jobs at the same moment,
        written as one atomic batch (one write, and one fsync in `always`
        mode): after a crash either every lease of the batch counts or none.
        It does not wait for more than the first due job.
        """
        _check_int("n", n, 1, MAX_LEASE_MANY)
        return self._lease(n, names, lease_time, wait, sync)

    def _lease(self, n: int, names: str | Iterable[str] | None, lease_time: float | None,
               wait: float, sync: str | None) -> list[Job]:
        wanted = None if names is None else _names(names)
        lease_time = self.lease_time if lease_time is None else _check_seconds("lease_time", lease_time, True)
        if type(wait) is not float or not 0.0 <= wait < math.inf:  # (the common case passes at once)
            _check_seconds("wait", wait)
        deadline = None  # time.monotonic() + wait, once it waits
        appended: list[Appended] = []  # this call's batches, expiries and leases: committed before it returns
        try:
            with self._lock:
                while True:
                    self._check_open()
                    now = self.clock.time()
                    expired = self._expire_locked(now)
                    if expired is not None:
                        appended.append(expired)
                    self._index.promote(now)
                    taken = self._index.take_ready(wanted, n)
                    if taken:
                        break
                    for done in appended:  # do not hold a group commit open while waiting
                        self._log.commit(done)
                    appended.clear()
                    if deadline is None:
                        deadline = time.monotonic() + wait
                    if not self._wait_locked(deadline, now):
                        return []
                expires = now + lease_time
                try:
                    if len(taken) == 1:
                        e = taken[0]
                        rec = _new_tuple(Lease, (e.id, e.attempts + 1, now, expires))
                        appended.append(self._change_locked(e, LEASE, rec, sync))
                    else:
                        appended.append(self._change_all_locked(_leases(taken, now, expires), sync))
                except BaseException:
                    self._index.put_back(taken)
                    raise
                return self._leased_jobs(taken, expires)
        finally:
            for done in appended:
                self._log.commit(done)

    def _leased_jobs(self, taken: list[Entry], expires: float) -> list[Job]:
        """The jobs just leased, their ENQUEUE records read back a segment at a time (one
        read when they lie close together, as jobs leased in order mostly do)."""
        if len(taken) == 1:
            e = taken[0]
            return [self._job(e, self._log.read(e.segment, e.offset, e.size).payload, expires)]
        jobs: list[Job] = []
        for segment, group in itertools.groupby(taken, key=_segment_of):
            entries = list(group)
            records = self._log.read_many(segment, [(e.offset, e.size) for e in entries])
            jobs.extend(self._job(e, rec.payload, expires) for e, rec in zip(entries, records))
        return jobs

    @staticmethod
    def _job(e: Entry, enqueue_payload: bytes, expires: float) -> Job:
        """The `Job` for leased entry `e`, given the payload of its ENQUEUE record (the
        index knows name, priority and max_attempts; the record adds the rest)."""
        enqueued_at, payload = enqueue_time_and_payload(enqueue_payload)
        return new_job(e.id, e.name, payload, e.attempts, e.priority, enqueued_at, expires, e.max_attempts)

    def _wait_locked(self, deadline: float, now: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        wake = self._index.next_wakeup()
        self._wait_changed(remaining if wake is None else min(remaining, max(0.001, wake - now)))
        return True

    # -------------------------------------------------------- finishing a lease

    def ack(self, job: Job | int, result: bytes = b"", *, sync: str | None = None) -> None:
        """Finish a leased job. Final: a durably acked job is never delivered again."""
        if type(result) is not bytes:
            if not isinstance(result, (bytearray, memoryview)):
                raise InvalidArgument(f"result must be bytes, not {type(result).__name__}")
            result = bytes(result)
        self._on_lease(job, ACK, _job_at_now, result, sync)

    def ack_many(self, jobs: Iterable[Job | int], *, sync: str | None = None) -> None:
        """`ack` each of `jobs` (no result), as one atomic batch: one write, and one fsync
        in `always` mode. If any of them cannot be acked (unknown, not active, its
        lease lost, or given twice), raise for the first such and ack none."""
        if isinstance(jobs, (Job, int)) or not isinstance(jobs, Iterable):
            raise InvalidArgument(f"ack_many takes a list of jobs or ids, not {type(jobs).__name__}: "
                                  "use ack for one job")
        jobs = list(jobs)  # before taking the lock: the iterable may call the queue
        with self._lock:
            self._check_open()
            now = self.clock.time()
            changes: list[Change] = []
            seen: set[int] = set()
            for job in jobs:
                e = self._leased_entry(job, ACK)
                if e.id in seen:
                    raise InvalidTransition(f"job {e.id} is twice in ack_many: give each job once; nothing was acked")
                seen.add(e.id)
                changes.append((e, ACK, _job_at_now(e, now, b"")))
            if not changes:
                return
            appended = self._change_all_locked(changes, sync)
        self._log.commit(appended)

    def fail(self, job: Job | int, error: str | BaseException = "", *, retry: bool = True,
             sync: str | None = None) -> None:
        """Record a failed attempt: pending again after the backoff delay, or dead.

        The job is dead when its attempts reach max_attempts, or at once with
        `retry=False`.
        """
        text = _error_text(error)
        self._on_lease(job, FAIL, self._failure, (text, retry), sync)

    def release(self, job: Job | int, *, delay: float = 0.0, sync: str | None = None) -> None:
        """Give a leased job back without counting the attempt; due after `delay`."""
        _check_seconds("delay", delay)
        self._on_lease(job, RELEASE, _job_at_later, delay, sync)

    def extend(self, job: Job | int, *, lease_time: float | None = None, sync: str | None = None) -> float:
        """Renew a lease for `lease_time` seconds from now; return the new expiry."""
        seconds = self.lease_time if lease_time is None else _check_seconds("lease_time", lease_time, True)
        return cast(JobAt, self._on_lease(job, EXTEND, _job_at_later, seconds, sync)).at

    def _on_lease(self, job: Job | int, rtype: int, build: Callable[[Entry, float, T], JobRecord], arg: T,
                  sync: str | None) -> JobRecord:
        """Change one job with the `rtype` record that `build(entry, now, arg)` makes; return it."""
        with self._lock:
            self._check_open()
            e = self._leased_entry(job, rtype)
            rec = build(e, self.clock.time(), arg)
            appended = self._change_locked(e, rtype, rec, sync)
        self._log.commit(appended)
        return rec

    def _leased_entry(self, job: Job | int, rtype: int) -> Entry:
        """The entry a `rtype` record for `job` would change; raise if the caller's lease is
        lost (a `Job` names its attempt) or the transition is illegal."""
        if not isinstance(job, Job):
            return self._index.check(rtype, _plain_id(job))
        e = self._index.check_exists(job.id)
        if e.state != ACTIVE or e.attempts != job.attempts:
            raise LeaseLostError(f"the lease of job {job.id} (attempt {job.attempts}) was lost: it "
                                 f"is now {e.state}, attempt {e.attempts}; do not {_verb(rtype)} it")
        return self._index.check_entry(rtype, e)

    def _failure(self, e: Entry, now: float, how: tuple[str, bool]) -> Outcome:
        """The FAIL outcome for a leased job: `how` is (error text, retry allowed)."""
        error, retry = how
        if not retry or e.attempts >= e.max_attempts:
            return Outcome(e.id, now, True, now, error)
        backoff = e.extra.backoff if e.extra is not None and e.extra.backoff else None
        delay = (Backoff(*backoff) if backoff else self.backoff).delay(e.attempts)
        return Outcome(e.id, now, False, now + delay, error)

    def _expiry(self, e: Entry, now: float, reason: str) -> Change:
        """The EXPIRE change of a lost lease: pending again, or dead."""
        return e, EXPIRE, Outcome(e.id, now, e.attempts >= e.max_attempts, now, reason)

    def expire_leases(self) -> int:
        """Return expired leases to pending (or dead); `lease` does this by itself. Returns the count."""
        with self._lock:
            self._check_open()
            appended = self._expire_locked(self.clock.time())
        if appended is None:
            return 0
        self._log.commit(appended)
        return appended.last_seq - appended.first_seq + 1

    def _expire_locked(self, now: float) -> Appended | None:
        expired = self._index.expired(now)
        if not expired:
            return None
        return self._change_all_locked([self._expiry(e, now, "lease expired") for e in expired], None)

    # ------------------------------------------------------ cancel, retry, read

    def cancel(self, job_id: int, *, sync: str | None = None) -> None:
        """Cancel a pending job; it will never be delivered. Active or final jobs raise."""
        self._on_lease(_plain_id(job_id), CANCEL, _job_at_now, b"", sync)

    def retry(self, job_id: int, *, sync: str | None = None) -> None:
        """Make a dead job pending again, due now, with a fresh count of attempts."""
        self._on_lease(_plain_id(job_id), RETRY, _job_at_now, b"", sync)

    def get(self, job_id: int) -> JobInfo | None:
        """Everything known about a job, or None if there is no such job."""
        _plain_id(job_id)
        with self._lock:
            self._check_open()
            e = self._index.jobs.get(job_id)
            return None if e is None else self._info(e)

    def jobs(self, state: str | None = None, name: str | None = None, limit: int | None = 100) -> list[JobInfo]:
        """Jobs in id order, filtered by `state` and task `name`, at most `limit`."""
        if state is not None and state not in STATES:
            raise InvalidArgument(f"state must be one of {STATES}, not {state!r}")
        if limit is not None:
            _check_int("limit", limit, 0, 2**63)
        with self._lock:
            self._check_open()
            picked: list[JobInfo] = []
            for e in self._index.select(state, name):
                if limit is not None and len(picked) >= limit:
                    break
                picked.append(self._info(e))
            return picked

    def _enqueue_of(self, e: Entry) -> Enqueue:
        """The job's ENQUEUE record, read back from the log (under the queue lock, so
        that a compaction cannot move it between finding and reading it)."""
        return decode_enqueue(self._log.read(e.segment, e.offset, e.size).payload)

    def _info(self, e: Entry) -> JobInfo:
        enq, extra = self._enqueue_of(e), e.extra
        return JobInfo(e.id, enq.name, enq.payload, e.attempts, enq.priority, enq.enqueued_at, e.expires,
                       enq.max_attempts, e.state, e.run_at,  # type: ignore[arg-type]
                       extra.last_error if extra else None, extra.result if extra else None, enq.key)

    def stats(self) -> Stats:
        """Counts per state, due jobs, oldest pending age, disk use, durable sequence number."""
        with self._lock:
            self._check_open()
            now = self.clock.time()
            self._index.promote(now)
            oldest = self._index.oldest(PENDING)
            age = None if oldest is None else now - self._enqueue_of(oldest).enqueued_at
            counts, due, live = dict(self._index.counts), self._index.n_ready, self._index.live_bytes
            segments = self._log.segments()
        return Stats(counts, due, age, len(segments), sum(size for _, size, _ in segments), live,
                     self._log.durable_seq, self._log.last_seq)

    def wait(self, job_id: int, timeout: float | None = None) -> JobInfo:
        """Block until the job is done, dead or cancelled, and return its info.

        Raises `JobNotFound` for an unknown id, `WaitTimeout` after `timeout` seconds.
        """
        _plain_id(job_id)
        deadline = None if timeout is None else time.monotonic() + _check_seconds("timeout", timeout)
        with self._lock:
            while True:
                self._check_open()
                e = self._index.check_exists(job_id)
                if e.state in FINAL_STATES:
                    return self._info(e)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WaitTimeout(f"job {job_id} is still {e.state} after {timeout}s")
                self._watched[job_id] = self._watched.get(job_id, 0) + 1
                try:
                    self._finished.wait(remaining)
                finally:
                    left = self._watched.pop(job_id) - 1
                    if left:
                        self._watched[job_id] = left

    # -------------------------------------------------------------------- tasks

    def task(self, name: str | None = None, *, max_attempts: int | None = None,
             timeout: float | None = None, backoff: Backoff | None = None, priority: int = 0,
             serializer: Serializer | None = None) -> Callable[[Callable[..., Any]], Task[Any]]:
        """Decorator: register a function as a task (named by its qualified name by default).

        `fn.enqueue(*args, **kwargs)` then queues a call (arguments serialized as
        JSON unless `serializer` is given) and returns a `Handle`.
        """
        def register(fn: Callable[..., Any]) -> Task[Any]:
            return self._add_task(name or _task_name(fn), fn, TaskOptions(
                max_attempts, _optional_seconds("timeout", timeout), backoff, priority), serializer, raw=False)
        return register

    def register(self, name: str, fn: Callable[[bytes], bytes | None], *, max_attempts: int | None = None,
                 timeout: float | None = None, backoff: Backoff | None = None) -> Task[Any]:
        """Register `fn(payload: bytes) -> bytes | None` for jobs enqueued under `name`."""
        return self._add_task(name, fn, TaskOptions(max_attempts, _optional_seconds("timeout", timeout),
                                                    backoff), None, raw=True)

    def every(self, seconds: float, fn: Callable[[], Any], *, name: str | None = None,
              run_now: bool = False, timeout: float | None = None) -> Task[Any]:
        """Run `fn()` every `seconds`, on a schedule kept in the log.

        The next run is a pending job; finishing a run and queueing the next are
        one atomic batch, so a restart neither skips nor doubles a run, and runs
        missed while stopped collapse into one. The first run is due `seconds`
        from the first registration (at once with `run_now`).
        """
        _check_seconds("seconds", seconds, positive=True)
        task = self._add_task(name or _task_name(fn), fn, TaskOptions(
            None, _optional_seconds("timeout", timeout), None, 0, every=float(seconds)), None, raw=False)
        self._periodic[task.name] = (float(seconds), run_now)
        return task

    def _add_task(self, name: str, fn: Callable[..., Any], options: TaskOptions,
                  serializer: Serializer | None, raw: bool) -> Task[Any]:
        _check_name("task name", name)
        if not callable(fn):
            raise InvalidArgument(f"a task must be callable, not {type(fn).__name__}")
        if options.max_attempts is not None:
            _check_int("max_attempts", options.max_attempts, 1, 2**32 - 1)
        if name in self._tasks:
            raise InvalidArgument(f"a task named {name!r} is already registered: pass name= to tell them apart")
        task: Task[Any] = Task(self, name, fn, options, serializer, raw=raw)
        self._tasks[name] = task
        return task

    def _task_names(self) -> frozenset[str]:
        return frozenset(self._tasks)

    def worker(self, **options: Any) -> "Worker":
        """A `Worker` for the registered tasks; see `run_worker` for the options."""
        from .runtime.worker import Worker
        return Worker(self, **options)

    def run_worker(self, concurrency: int = 4, *, kind: str = "thread", names: list[str] | None = None,
                   grace: float = 30.0, **hooks: Any) -> None:
        """Run registered tasks until SIGINT/SIGTERM (in the main thread) or `Worker.stop`.

        `kind` is "thread", "process" or "async"; `grace` is how long running
        tasks may finish after the first stop signal before they are released;
        hooks: `on_success(job, value)`, `on_failure(job, exc)`, `on_dead(job, exc)`.
        """
        self.worker(concurrency=concurrency, kind=kind, names=names, grace=grace, **hooks).run()

    @property
    def metrics(self) -> "Metrics":
        """Per-task counts and run times of the workers in this process."""
        if self._metrics is None:
            from .runtime.worker import Metrics
            self._metrics = Metrics()
        return self._metrics

    def _schedule_periodic(self) -> None:
        """Make sure every periodic task has its next run queued (idempotent)."""
        now = self.clock.time()
        for name, (seconds, run_now) in self._periodic.items():
            slot = now if run_now else now + seconds
            self.enqueue(name, _slot_payload(slot), delay=slot - now, key=_periodic_key(name))

    def _complete(self, job: Job, *, result: bytes = b"", error: BaseException | str | None = None) -> None:
        """Ack (no `error`) or fail a leased job; see `_complete_many`."""
        failed = self._complete_many([(job, result, error)])[0]
        if failed is not None:
            raise failed

    def _complete_many(self, outcomes: Sequence[tuple[Job, bytes, BaseException | str | None]]
                       ) -> list[LogqError | None]:
        """Ack (error None) or fail leased jobs, all in one atomic batch.

        For a periodic task whose run is now final, its next run is queued in
        the same batch. A job whose lease was lost (or is no longer active)
        gets its error in the returned list, at its position, and the others
        are recorded all the same. A closed or failed queue raises.
        """
        with self._lock:
            self._check_open()
            now = self.clock.time()
            items: list[tuple[int, bytes]] = []
            changes: list[tuple[Entry, JobRecord] | None] = []
            errors: list[LogqError | None] = []
            seen: set[int] = set()  # a job twice in one batch: its second outcome finds it final
            for job, result, error in outcomes:
                rtype = ACK if error is None else FAIL
                try:
                    if job.id in seen:
                        raise LeaseLostError(f"job {job.id} is twice in one batch of outcomes: the first counts")
                    e = self._leased_entry(job, rtype)
                except LogqError as exc:
                    errors.append(exc)
                    continue
                errors.append(None)
                seen.add(job.id)
                rec: JobRecord
                if error is None:
                    rec = _job_at_now(e, now, result if type(result) is bytes else bytes(result))
                    items.append((ACK, encode_job_at(rec)))
                    final = True
                else:
                    rec = self._failure(e, now, (_error_text(error), True))
                    items.append((FAIL, encode_outcome(rec)))
                    final = rec.dead
                changes.append((e, rec))
                if final and self._tasks:
                    for record in self._next_run(job, e, now):
                        items.append(record)
                        changes.append(None)
            appended = self._append_locked(items, None, changes) if items else None
        if appended is not None:
            self._log.commit(appended)
        return errors

    def _next_run(self, job: Job, e: Entry, now: float) -> list[tuple[int, bytes]]:
        """The ENQUEUE of a periodic task's next run, for a run that is final (none if
        `job` is not of a periodic task)."""
        task = self._tasks.get(job.name)
        every = task.options.every if task is not None else None
        if every is None:
            return []
        slot = _next_slot(json.loads(job.payload)["slot"], every, now)
        return [(ENQUEUE, encode_enqueue(Enqueue(now, slot, e.priority, e.max_attempts, job.name,
                                                 _periodic_key(job.name), None, _slot_payload(slot))))]

    # --------------------------------------------------------------- compaction

    def compact(self, *, include_active: bool = False) -> CompactionReport:
        """Rewrite the sealed segments without the jobs that are final and past retention.

        Producers and consumers keep working meanwhile; only the final swap takes
        the queue lock. Swept jobs disappear from `get` and `jobs`. Safe to repeat;
        one compaction runs at a time. `include_active` seals the active segment
        first, so that its records are compacted too (what `python -m logq compact` does).
        """
        started = time.monotonic()
        with self._compacting:
            if include_active:
                self._log.roll()
            with self._lock:
                self._check_open()
                prefix = self._log.sealed_prefix()
                if not prefix:
                    return CompactionReport(0, 0, 0, 0, 0, 0, time.monotonic() - started)
                doomed = self._index.sweepable(self.clock.time(), self.retain_done, self.retain_dead,
                                               prefix[-1][1])
            bases = [base for base, _ in prefix]
            out = self._log.compact(bases, lambda rec: _job_of(rec) in doomed)
            with self._lock:
                if self._closed or any(self._index.jobs[j].last != last for j, last in doomed.items()):
                    self._log.discard(out)
                    return CompactionReport(len(bases), out.read_bytes, 0, 0, 0, 0,
                                            time.monotonic() - started, aborted=True)
                self._log.install(out, bases)
                self._index.forget(doomed)
                self._index.relocate(out.base, out.moved)
        with self._compacted:
            self._compactions += 1
            self._compacted.notify_all()
        return CompactionReport(len(bases), out.read_bytes, out.size, out.kept, out.dropped, len(doomed),
                                time.monotonic() - started)

    def _wait_compactions(self, n: int, timeout: float) -> bool:
        """Test seam: wait until `n` compactions have completed in this process."""
        with self._compacted:
            return self._compacted.wait_for(lambda: self._compactions >= n, timeout)

    def _auto_compact(self) -> None:
        """Background compaction after a rollover, when garbage passes `compact_threshold`."""
        while True:
            self._compact_wanted.wait()
            self._compact_wanted.clear()
            if self._closed:
                return
            try:
                if self._worth_compacting():
                    self.compact()
            except ClosedError:
                return
            except LogqError as exc:  # the log is poisoned, or damage: the next call reports it
                logging.getLogger("logq").error("background compaction failed: %s", exc)
                return

    def _worth_compacting(self) -> bool:
        """True when the sealed bytes that no unfinished job needs (an estimate) reach
        `compact_threshold` of the sealed bytes, or two segments: the second rule keeps
        the disk within live data plus a few segments when the backlog is large."""
        with self._lock:
            segments = self._log.segments()[:-1]
            sealed = sum(size for _, size, _ in segments)
            garbage = max(0, sealed - self._index.live_bytes)
        share = 0.0 if sealed == 0 else garbage / sealed
        return share >= (self.compact_threshold or 1.0) or garbage >= 2 * self._log.segment_size

    # ---------------------------------------------------------------- lifecycle

    def sync(self) -> None:
        """Make everything done so far durable (fsync), whatever the mode."""
        self._check_open()
        self._log.sync()

    def close(self) -> None:
        """Make everything durable and release the directory. Safe to repeat.

        It leaves a checkpoint of the job index (spec/format.md §11), so that the
        next open loads it rather than replaying the whole log.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
            self._finished.notify_all()
        self._compact_wanted.set()
        if self._compactor is not None and self._compactor is not threading.current_thread():
            self._compactor.join()
        with self._compacting:  # let a compaction started by another thread finish first
            self._log.close(checkpoint=self._final_snapshot)

    def _final_snapshot(self) -> bytes:
        """The index for the checkpoint that close leaves (no call changes it once closed)."""
        with self._lock:
            return _snapshot.encode(self._index)

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<logq.Queue {self.path!r}{' closed' if self._closed else ''}>"

    # ------------------------------------------------------------------ helpers

    def _change_locked(self, e: Entry, rtype: int, rec: JobRecord, sync: str | None) -> Appended:
        """Write the one record `rec` that changes job `e` (which passed `Index.check` for
        `rtype`) and apply it: `_append_locked` for the common single change, shorter."""
        appended = self._log.write_one(rtype, ENCODERS[rtype](rec), sync=sync)
        self._index.transition(e, rtype, appended.first_seq, rec)
        self._notify_locked(e.id in self._watched and e.state in FINAL_STATES)
        return appended

    def _change_all_locked(self, changes: Sequence[Change], sync: str | None) -> Appended:
        """`_change_locked` for several changes (job, record type, record) as one batch."""
        return self._append_locked([(rtype, ENCODERS[rtype](rec)) for _, rtype, rec in changes], sync,
                                   [(e, rec) for e, _, rec in changes])

    def _append_locked(self, items: Sequence[tuple[int, bytes]], sync: str | None,
                       changes: Sequence[tuple[Entry, JobRecord] | None] = ()) -> Appended:
        """Write records (type, payload bytes) as one batch and apply each to the index.
        A record with a `changes` entry (job, decoded record: checked by the caller for
        its type, as for `_change_locked`) goes to `Index.transition`, undecoded; the
        others (ENQUEUEs) to `Index.apply`."""
        appended = self._log.write(items, sync=sync)
        index, watched, finished = self._index, self._watched, False
        seq, segment, offsets, sizes = appended.first_seq, appended.segment, appended.offsets, appended.sizes
        for i, (rtype, payload) in enumerate(items):
            change = changes[i] if changes else None
            if change is None:
                e = index.apply(rtype, seq + i, payload, segment, offsets[i], sizes[i])
            else:
                e = change[0]
                index.transition(e, rtype, seq + i, change[1])
            if watched and e.id in watched and e.state in FINAL_STATES:
                finished = True
        self._notify_locked(finished)
        return appended

    def _notify_locked(self, finished: bool) -> None:
        """After a change: wake waiting leases, and `wait` callers if a watched job is `finished`."""
        if self._waiters:
            self._changed.notify_all()
        if finished:
            self._finished.notify_all()

    def _wait_changed(self, timeout: float | None) -> None:
        """Wait (queue lock held) until an append or close, or `timeout` seconds (`lease`)."""
        self._waiters += 1
        try:
            self._changed.wait(timeout)
        finally:
            self._waiters -= 1

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the queue at {self.path} is closed: open a new logq.Queue")
        self._log.check_usable()


MAX_CACHED_NAMES = 10_000  # task names kept checked and encoded for enqueue
MAX_LEASE_MANY = 100_000  # jobs per lease_many call (one batch record each)
TRIM_AFTER_RECORDS = 100_000  # a replay this long leaves freed heap pages worth returning


def _return_free_memory() -> None:
    """Give the heap pages that replay used and freed back to the OS (glibc's
    malloc_trim; a no-op where it does not exist)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _leases(taken: list[Entry], now: float, expires: float) -> list[Change]:
    """The LEASE changes of a `lease_many` batch."""
    return [(e, LEASE, _new_tuple(Lease, (e.id, e.attempts + 1, now, expires))) for e in taken]


def _job_at_now(e: Entry, now: float, data: bytes) -> JobAt:
    """ACK (with the result as data), CANCEL and RETRY: the job, and now."""
    return _new_tuple(JobAt, (e.id, now, data))


def _job_at_later(e: Entry, now: float, seconds: float) -> JobAt:
    """RELEASE (due then) and EXTEND (lease until then): the job, `seconds` from now."""
    return _new_tuple(JobAt, (e.id, now + seconds, b""))


def _job_of(rec: Record) -> int:
    """The job a record belongs to: its own seq for ENQUEUE, else the id it starts with."""
    return rec.seq if rec.type == ENQUEUE else int.from_bytes(rec.payload[:8], "little")


def _segment_of(e: Entry) -> int:
    return e.segment


def _task_name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '') or ''}.{getattr(fn, '__qualname__', repr(fn))}".lstrip(".")


def _periodic_key(name: str) -> str:
    return f"logq.every:{name}"


def _slot_payload(slot: float) -> bytes:
    return json.dumps({"slot": slot}).encode()


def _next_slot(slot: float, every: float, now: float) -> float:
    """The first time on the grid slot + k * every that is after `now` (k >= 1)."""
    return slot + every * max(1, math.floor((now - slot) / every) + 1)


def _optional_seconds(what: str, value: float | None) -> float | None:
    return None if value is None else _check_seconds(what, value, positive=True)


def _plain_id(job_id: int) -> int:
    if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id < 1:
        raise InvalidArgument(f"a job id is a positive int, not {job_id!r}")
    return job_id


def _verb(rtype: int) -> str:
    return TYPE_NAMES[rtype]


def _names(names: str | Iterable[str] | None) -> frozenset[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = (names,)
    out = frozenset(names)
    for n in out:
        _check_name("names", n)
    return out


def _error_text(error: str | BaseException) -> str:
    """The text a FAIL record stores: valid UTF-8 (a lone surrogate becomes "?"), so
    that the text replay decodes is the text the live call applied."""
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}"
    elif not isinstance(error, str):
        raise InvalidArgument(f"error must be a str or an exception, not {type(error).__name__}")
    try:
        error.encode()
    except UnicodeEncodeError:
        error = error.encode("utf-8", "replace").decode()
    return error


def _check_name(what: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what} must be a non-empty str, not {value!r:.60}")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME:
        raise InvalidArgument(f"{what} is longer than {MAX_NAME} bytes")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} must be valid Unicode text (no lone surrogates)") from None


def _check_int(what: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidArgument(f"{what} must be an int in [{lo}, {hi}], not {value!r:.60}")
    return value


def _check_seconds(what: str, value: object, positive: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):  # type: ignore[operator]
        kind = "positive" if positive else "non-negative"
        raise InvalidArgument(f"{what} must be a {kind} finite number of seconds, not {value!r:.60}")
    return float(value)  # type: ignore[arg-type]
