"""The public Queue: checks every argument, then hands the job operation to a backend.

Theory of operation
-------------------
`Queue(path, ...)` picks the backend from the path: a directory is the local
backend (`backends.local`: an append-only log, surviving crashes), ":memory:"
the memory backend (`backends.memory`: the same semantics, no disk, for
tests). Each public method checks its arguments (types, ranges, sizes,
names), resolves the queue's defaults (max_attempts, lease_time), and calls
the backend once; a bad argument raises `InvalidArgument` before anything is
written. The backend does the rest (`backends.base.Backend` says what each
operation promises). The hot paths (enqueue, lease, ack and their batches, the
worker's completions) call a bound method of the backend kept in `__init__`.

The task methods (`task`, `register`, `every`, `metrics`) delegate to the
queue's `runtime.registry.Registry`, and `worker` builds a `runtime.worker.Worker`
over it; the runtime sees the queue only through `_Source`, its `JobSource`.
A periodic run that finishes hands the backend a `next_run` function, so that
finishing a run and queueing the next are one atomic write.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from typing import Any, Callable, Iterable, Mapping, Sequence, cast

from .backends.base import Backend
from .backends.local import LocalBackend
from .backends.memory import PATH as MEMORY, MemoryBackend
from .backends.redisurl import is_redis_url
from .clock import Clock, SystemClock
from .core import policy
from .core.jobs import MAX_NAME, STATES, Backoff, CompactionReport, Job, JobInfo, Stats
from .core.records import Enqueue, max_record_size
from .errors import InvalidArgument, LogqError, ResultTooLargeError
from .log.fs import FileSystem
from .closing import ClosesOnExit
from .log.durability import SYNC_MODES
from .log.log import DEFAULT_SEGMENT_SIZE, RecoveryReport
from .runtime.registry import Metrics, Registry
from .runtime.source import Completion, Schedule
from .runtime.tasks import Serializer, Task
from .runtime.worker import Worker

MAX_CACHED_NAMES = 10_000  # task names kept checked for enqueue
MAX_LEASE_MANY = 100_000  # jobs per lease_many call (one batch record each)
_I32 = (-(2**31), 2**31 - 1)


class Queue(ClosesOnExit):
    """A persistent job queue in directory `path` (created if missing), or, with
    `path=":memory:"`, a queue in this process's memory only (for tests: every call
    works alike, nothing is durable; the options that shape the disk are checked
    and unused).

    Options are keyword-only and checked at construction:
    `sync` ("always", "batch", "none") is the default durability of every call,
    which a call can raise with its own `sync=`; `max_attempts`, `lease_time`
    and `backoff` are defaults for jobs; `max_payload` caps payload bytes and
    `max_result` result bytes;
    `mode` gives new files their permission bits (default 0o600, the owner
    alone; 0o660 shares the queue with the group) and decides who else may
    write to the directory (anyone else: `UnsafeDirectoryError`).
    Thread-safe. Any number of processes, and of Queue objects in one process,
    may open one directory at once, each with the whole API; they take turns
    to write (spec/format.md §14, spec/semantics.md "Several processes").

    With a Redis URL (`redis://host:6379/0`, `rediss://...`, `unix:///path?db=0`),
    the jobs are on that server and `name` (default "default") picks the queue
    there; any number of processes on any hosts may open it (`backends.redis`).
    """

    def __init__(self, path: str | os.PathLike[str], *, sync: str = "batch",
                 sync_interval: float = 0.005, segment_size: int = DEFAULT_SEGMENT_SIZE,
                 compression: str | None = None, compress_threshold: int = 512,
                 max_payload: int = 16 << 20, max_result: int = 16 << 20, max_attempts: int = 3,
                 lease_time: float = 30.0,
                 backoff: Backoff | None = None, clock: Clock | None = None,
                 retain_done: float = 3600.0, retain_dead: float = 7 * 86400.0,
                 compact_threshold: float | None = 0.5,
                 salvage: bool = False, fs: FileSystem | None = None, mode: int = 0o600,
                 name: str | None = None) -> None:
        path = _check_path(path)
        _check_int("max_payload", max_payload, 0, 1 << 28)
        _check_int("max_result", max_result, 0, 1 << 28)
        self.max_result = max_result
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
        if clock is not None and not callable(getattr(clock, "time", None)):
            raise InvalidArgument(f"clock must have a time() method (a logq.Clock), not {type(clock).__name__}")
        self.clock: Clock = clock or SystemClock()
        self._names: set[str] = set()  # task names already checked
        self._registry = Registry(_Source(self))  # tasks, periodic schedules, metrics
        options = dict(clock=self.clock, backoff=self.backoff, retain_done=self.retain_done,
                       retain_dead=self.retain_dead, compact_threshold=compact_threshold, sync=sync,
                       sync_interval=sync_interval, segment_size=segment_size, compression=compression,
                       compress_threshold=compress_threshold, salvage=salvage, fs=fs, mode=mode,
                       max_record=max_record_size(max_payload, max_result))  # replay's bound too
        backend: LocalBackend | MemoryBackend | Backend
        if isinstance(path, str) and is_redis_url(path):
            from .backends.redis import RedisBackend  # imports the redis client: only when asked for
            backend = RedisBackend(path, name=name, **options)  # type: ignore[arg-type]
        elif name is not None:
            raise InvalidArgument("name= picks a queue on a Redis server: a directory or \":memory:\" is one queue")
        else:
            backend = MemoryBackend(**options) if path == MEMORY else LocalBackend(path, **options)  # type: ignore[arg-type]
        self._backend: Backend = backend
        self.path = backend.path
        # the hot paths call the backend through these, bound once
        self._enqueue, self._enqueue_many, self._lease = backend.enqueue, backend.enqueue_many, backend.lease
        self._ack, self._ack_many, self._complete_batch = backend.ack, backend.ack_many, backend.complete

    @property
    def recovery(self) -> RecoveryReport:
        """What opening found: torn tails cut, ranges lost in salvage mode (empty in memory)."""
        return self._backend.recovery

    @property
    def backend(self) -> Backend:
        """The backend that keeps the jobs; `backend.capabilities` says what it offers."""
        return self._backend

    # ----------------------------------------------------------------- enqueue

    def enqueue(self, name: str, payload: bytes = b"", *, delay: float = 0.0, priority: int = 0,
                max_attempts: int | None = None, key: str | None = None,
                backoff: Backoff | None = None, sync: str | None = None) -> int:
        """Add a job and return its id; ids increase with every enqueue.

        With `key`, if a pending or active job already holds that key, its id
        is returned and nothing is written. The job becomes due `delay`
        seconds from now.
        """
        if type(name) is not str or name not in self._names:
            name = self._checked_task_name(name)
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
        if type(payload) is not bytes or len(payload) > self.max_payload:
            payload = self._checked_payload(payload)
        if sync is not None and sync not in SYNC_MODES:
            _bad_sync(sync)
        return self._enqueue(name, payload, delay, priority, max_attempts or self.max_attempts, key, backoff, sync)

    def enqueue_many(self, items: Iterable[tuple[str, bytes]], *, delay: float = 0.0,
                     priority: int = 0, max_attempts: int | None = None,
                     sync: str | None = None) -> list[int]:
        """Add (name, payload) jobs as one atomic batch with one fsync; return their ids.

        After a crash either every job of the batch exists or none does. All
        its jobs share one enqueue time.
        """
        delay = _check_seconds("delay", delay)
        _check_int("priority", priority, *_I32)
        if max_attempts is not None:
            _check_int("max_attempts", max_attempts, 1, 2**32 - 1)
        if sync is not None and sync not in SYNC_MODES:
            _bad_sync(sync)
        checked: list[tuple[str, bytes]] = []
        names, limit = self._names, self.max_payload
        for item in _iterable("enqueue_many", "(name, payload) pairs", items):
            if type(item) is not tuple or len(item) != 2:
                raise InvalidArgument(f"enqueue_many takes (name, payload) pairs, not {item!r:.60}")
            name, payload = item
            if type(name) is not str or name not in names:
                name = self._checked_task_name(name)
            if type(payload) is not bytes or len(payload) > limit:
                payload = self._checked_payload(payload)
            checked.append((name, payload))
        if not checked:
            return []
        return self._enqueue_many(checked, delay, priority, max_attempts or self.max_attempts, sync)

    def _checked_task_name(self, name: object) -> str:
        _check_name("name", name)
        name = str(name)
        if len(self._names) < MAX_CACHED_NAMES:
            self._names.add(name)
        return name

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
        wanted = None if names is None else _names(names)
        seconds = self.lease_time if lease_time is None else _check_seconds("lease_time", lease_time, True)
        if type(wait) is not float or not 0.0 <= wait < math.inf:  # (the common case passes at once)
            wait = _check_seconds("wait", wait)
        if sync is not None and sync not in SYNC_MODES:
            _bad_sync(sync)
        jobs = self._lease(1, wanted, seconds, wait, sync)
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
        wanted = None if names is None else _names(names)
        seconds = self.lease_time if lease_time is None else _check_seconds("lease_time", lease_time, True)
        if type(wait) is not float or not 0.0 <= wait < math.inf:
            wait = _check_seconds("wait", wait)
        if sync is not None and sync not in SYNC_MODES:
            _bad_sync(sync)
        return self._lease(n, wanted, seconds, wait, sync)

    # -------------------------------------------------------- finishing a lease

    def ack(self, job: Job | int, result: bytes = b"", *, sync: str | None = None) -> None:
        """Finish a leased job. Final: a durably acked job is never delivered again."""
        if type(result) is not bytes:
            if not isinstance(result, (bytearray, memoryview)):
                raise InvalidArgument(f"result must be bytes, not {type(result).__name__}")
            result = bytes(result)
        if len(result) > self.max_result:
            raise ResultTooLargeError(_too_large(len(result), self.max_result))
        if type(job) is not Job:
            job = _job_or_id(job)
        if sync is not None and sync not in SYNC_MODES:
            _bad_sync(sync)
        self._ack(job, result, sync)

    def ack_many(self, jobs: Iterable[Job | int], *, sync: str | None = None) -> None:
        """`ack` each of `jobs` (no result), as one atomic batch: one write, and one fsync
        in `always` mode. If any of them cannot be acked (unknown, not active, its
        lease lost, or given twice), raise for the first such and ack none."""
        if isinstance(jobs, (Job, int)) or not isinstance(jobs, Iterable):
            raise InvalidArgument(f"ack_many takes a list of jobs or ids, not {type(jobs).__name__}: "
                                  "use ack for one job")
        checked = [job if type(job) is Job else _job_or_id(job) for job in jobs]  # before the backend's lock:
        self._ack_many(checked, _sync(sync))  # the iterable may call the queue

    def fail(self, job: Job | int, error: str | BaseException = "", *, retry: bool = True,
             sync: str | None = None) -> None:
        """Record a failed attempt: pending again after the backoff delay, or dead.

        The job is dead when its attempts reach max_attempts, or at once with
        `retry=False`.
        """
        if not isinstance(error, (str, BaseException)):
            raise InvalidArgument(f"error must be a str or an exception, not {type(error).__name__}")
        self._backend.fail(_job_or_id(job), policy.error_text(error), bool(retry), _sync(sync))

    def release(self, job: Job | int, *, delay: float = 0.0, sync: str | None = None) -> None:
        """Give a leased job back without counting the attempt; due after `delay`."""
        seconds = _check_seconds("delay", delay)
        self._backend.release(_job_or_id(job), seconds, _sync(sync))

    def extend(self, job: Job | int, *, lease_time: float | None = None, sync: str | None = None) -> float:
        """Renew a lease for `lease_time` seconds from now; return the new expiry."""
        seconds = self.lease_time if lease_time is None else _check_seconds("lease_time", lease_time, True)
        return self._backend.extend(_job_or_id(job), seconds, _sync(sync))

    def expire_leases(self) -> int:
        """Return expired leases to pending (or dead), and those of processes that ended while they
        held them (spec/format.md §14.8); `lease` does both by itself. Returns the count."""
        return self._backend.expire_leases()

    # ------------------------------------------------------ cancel, retry, read

    def cancel(self, job_id: int, *, sync: str | None = None) -> None:
        """Cancel a pending job; it will never be delivered. Active or final jobs raise."""
        self._backend.cancel(_plain_id(job_id), _sync(sync))

    def retry(self, job_id: int, *, sync: str | None = None) -> None:
        """Make a dead job pending again, due now, with a fresh count of attempts."""
        self._backend.retry(_plain_id(job_id), _sync(sync))

    def get(self, job_id: int) -> JobInfo | None:
        """Everything known about a job, or None if there is no such job."""
        return self._backend.get(_plain_id(job_id))

    def jobs(self, state: str | None = None, name: str | None = None, limit: int | None = 100) -> list[JobInfo]:
        """Jobs in id order, filtered by `state` and task `name`, at most `limit`."""
        if state is not None and state not in STATES:
            raise InvalidArgument(f"state must be one of {STATES}, not {state!r}")
        if limit is not None:
            _check_int("limit", limit, 0, 2**63)
        return self._backend.select(state, name, limit)

    def stats(self) -> Stats:
        """Counts per state, due jobs, oldest pending age, disk use, durable sequence number."""
        return self._backend.stats()

    def wait(self, job_id: int, timeout: float | None = None) -> JobInfo:
        """Block until the job is done, dead or cancelled, and return its info.

        Raises `JobNotFound` for an unknown id, `WaitTimeout` after `timeout` seconds.
        """
        _plain_id(job_id)
        return self._backend.wait(job_id, None if timeout is None else _check_seconds("timeout", timeout))

    # ---------------------------------------------------------------- lifecycle

    def compact(self, *, include_active: bool = False) -> CompactionReport:
        """Rewrite the sealed segments without the jobs that are final and past retention.

        Producers and consumers keep working meanwhile; only the final swap takes
        the queue lock. Swept jobs disappear from `get` and `jobs`. Safe to repeat;
        one compaction runs at a time. `include_active` seals the active segment
        first, so that its records are compacted too (what `python -m logq compact` does).
        In memory, it forgets the final jobs past retention.
        """
        return self._backend.compact(include_active)

    def sync(self) -> None:
        """Make everything done so far durable (fsync), whatever the mode."""
        self._backend.sync()

    def close(self) -> None:
        """Make everything durable and release the directory. Safe to repeat.

        It leaves a checkpoint of the job index (spec/format.md §11), so that the
        next open loads it rather than replaying the whole log. In memory, the jobs are gone.
        """
        self._backend.close()

    @property
    def closed(self) -> bool:
        return self._backend.closed

    def __repr__(self) -> str:
        return f"<logq.Queue {self.path!r}{' closed' if self.closed else ''}>"

    # -------------------------------------------------------------------- tasks

    def task(self, name: str | None = None, *, max_attempts: int | None = None,
             timeout: float | None = None, backoff: Backoff | None = None, priority: int = 0,
             serializer: Serializer | None = None) -> Callable[[Callable[..., Any]], Task[Any]]:
        """Decorator: register a function as a task (named by its qualified name by default).

        `fn.enqueue(*args, **kwargs)` then queues a call (arguments serialized as
        JSON unless `serializer` is given) and returns a `Handle`.
        """
        return self._registry.task(name, max_attempts=max_attempts, timeout=timeout, backoff=backoff,
                                   priority=priority, serializer=serializer)

    def register(self, name: str, fn: Callable[[bytes], bytes | None], *, max_attempts: int | None = None,
                 timeout: float | None = None, backoff: Backoff | None = None) -> Task[Any]:
        """Register `fn(payload: bytes) -> bytes | None` for jobs enqueued under `name`."""
        return self._registry.register(name, fn, max_attempts=max_attempts, timeout=timeout, backoff=backoff)

    def every(self, seconds: float, fn: Callable[[], Any], *, name: str | None = None,
              run_now: bool = False, timeout: float | None = None) -> Task[Any]:
        """Run `fn()` every `seconds`, on a schedule kept in the log.

        The next run is a pending job; finishing a run and queueing the next are
        one atomic batch, so a restart neither skips nor doubles a run, and runs
        missed while stopped collapse into one. The first run is due `seconds`
        from the first registration (at once with `run_now`). A run queued by
        hand (`.enqueue()` on the returned task) is a one-off: the schedule stays.
        """
        return self._registry.every(seconds, fn, name=name, run_now=run_now, timeout=timeout)

    def worker(self, **options: Any) -> Worker:
        """A `Worker` for the registered tasks; see `run_worker` for the options."""
        return Worker(self._registry, owner=self, **options)

    def run_worker(self, concurrency: int = 4, *, kind: str = "thread", names: list[str] | None = None,
                   grace: float = 30.0, **hooks: Any) -> None:
        """Run registered tasks until SIGINT/SIGTERM (in the main thread) or `Worker.stop`.

        `kind` is "thread", "process" or "async"; `grace` is how long running
        tasks may finish after the first stop signal before they are released;
        hooks: `on_success(job, value)`, `on_failure(job, exc)`, `on_dead(job, exc)`.
        """
        self.worker(concurrency=concurrency, kind=kind, names=names, grace=grace, **hooks).run()

    @property
    def metrics(self) -> Metrics:
        """Per-task counts and run times of the workers in this process."""
        return self._registry.metrics

    def _complete(self, job: Job, *, result: bytes = b"", error: BaseException | str | None = None) -> None:
        """Ack (no `error`) or fail a leased job; see `_complete_many`."""
        failed = self._complete_many([(job, result, error)])[0]
        if failed is not None:
            raise failed

    def _complete_many(self, outcomes: Sequence[Completion], schedules: Mapping[str, Schedule] | None = None
                       ) -> list[LogqError | None]:
        """Ack (error None) or fail leased jobs, all in one atomic batch.

        A result longer than `max_result` fails its attempt instead, with
        `ResultTooLargeError` as the error (as if the task had raised it).
        A run of a periodic task (in `schedules`, by name) that is now final has
        its next run queued in the same batch, if it holds its schedule's key (the
        backend checks). A job whose lease was lost (or is no longer active) gets
        its error in the returned list, at its position, and the others are
        recorded all the same. A closed or failed queue raises.
        """
        limit = self.max_result
        if any(error is None and len(result) > limit for _, result, error in outcomes):
            outcomes = [(job, b"", ResultTooLargeError(_too_large(len(result), limit)))
                        if error is None and len(result) > limit else (job, result, error)
                        for job, result, error in outcomes]  # a failed attempt, as if the task raised it
        if not schedules:
            return self._complete_batch(outcomes, None)

        def next_run(job: Job, now: float) -> Enqueue | None:
            schedule = schedules.get(job.name)
            if schedule is None:
                return None
            run_at, payload = schedule.next_run(job.payload, now)
            return Enqueue(now, run_at, job.priority, job.max_attempts, job.name, schedule.key, None, payload)
        return self._complete_batch(outcomes, next_run)

    def _wait_compactions(self, n: int, timeout: float) -> bool:
        """Test seam: wait until `n` compactions have completed in this process (local backend)."""
        return self._backend.compactor.wait_compactions(n, timeout)  # type: ignore[attr-defined, no-any-return]


class _Source:
    """The queue as the runtime's `JobSource`: its public calls, and its batch of outcomes."""

    def __init__(self, queue: Queue) -> None:
        # Held weakly: the queue holds this source (through its registry and tasks), and a
        # cycle through the queue would outlive it, frozen with the index at open
        # (`gc.freeze`), when a queue is dropped without close. A worker keeps its queue
        # alive itself (`Queue.worker`).
        self._queue: Queue = cast(Queue, weakref.proxy(queue))
        self._checked: frozenset[str] | None = None  # the last set of names checked, as given
        self._checked_names: frozenset[str] = frozenset()

    @property
    def lease_time(self) -> float:
        return self._queue.lease_time

    def now(self) -> float:
        return self._queue.clock.time()

    def enqueue(self, name: str, payload: bytes = b"", *, delay: float = 0.0, priority: int = 0,
                max_attempts: int | None = None, key: str | None = None,
                backoff: Backoff | None = None, sync: str | None = None) -> int:
        return self._queue.enqueue(name, payload, delay=delay, priority=priority, max_attempts=max_attempts,
                                   key=key, backoff=backoff, sync=sync)

    def lease_many(self, n: int, names: frozenset[str], *, wait: float,
                   stop: threading.Event | None = None) -> list[Job]:
        _check_int("n", n, 1, MAX_LEASE_MANY)
        if names is not self._checked:  # a worker passes the same set every time: check it once
            self._checked_names = _names(names)
            self._checked = names
        wait = _check_seconds("wait", wait)
        return self._queue._lease(n, self._checked_names, self._queue.lease_time, wait, None, stop)

    def complete_many(self, outcomes: Sequence[Completion],
                      schedules: Mapping[str, Schedule]) -> list[LogqError | None]:
        return self._queue._complete_many(outcomes, schedules)

    def release(self, job: Job) -> None:
        self._queue.release(job)

    def extend(self, job: Job) -> float:
        return self._queue.extend(job)

    def stats(self) -> Stats:
        return self._queue.stats()

    def get(self, job_id: int) -> JobInfo | None:
        return self._queue.get(job_id)

    def wait(self, job_id: int, timeout: float | None = None) -> JobInfo:
        return self._queue.wait(job_id, timeout)


def _plain_id(job_id: int) -> int:
    if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id < 1:
        raise InvalidArgument(f"a job id is a positive int, not {job_id!r}")
    return job_id


def _job_or_id(job: Job | int) -> Job | int:
    """A leased `Job` as it is, or a checked job id."""
    return job if isinstance(job, Job) else _plain_id(job)


def _names(names: str | Iterable[str]) -> frozenset[str]:
    if isinstance(names, str):
        names = (names,)
    listed = list(_iterable("names", "a task name or an iterable of names (lease_many(n) takes a count)", names))
    for n in listed:
        _check_name("names", n)
    return frozenset(listed)


def _iterable(what: str, takes: str, value: object) -> Iterable[Any]:
    """`value`, if it can be iterated over; else InvalidArgument saying what `what` takes."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidArgument(f"{what} takes {takes}, not {type(value).__name__}")
    return value


def _sync(sync: str | None) -> str | None:
    """`sync`, if it is None or a sync mode."""
    if sync is not None and sync not in SYNC_MODES:
        _bad_sync(sync)
    return sync


def _bad_sync(sync: object) -> None:
    raise InvalidArgument(f"sync must be one of {SYNC_MODES} (or None for the queue's mode), not {sync!r:.60}")


def _check_path(path: object) -> str | os.PathLike[str]:
    """`path`, if it can name a directory (or is ":memory:")."""
    try:
        name = os.fspath(path)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidArgument(f"path must be a str or os.PathLike naming a directory (or \":memory:\"), "
                              f"not {type(path).__name__}") from None
    if not isinstance(name, str):
        raise InvalidArgument(f"path must be text, not {type(name).__name__}: decode it (os.fsdecode)")
    if not name or "\0" in name:
        raise InvalidArgument(f"path must be a non-empty directory name without NUL bytes, not {name!r:.80}")
    return path  # type: ignore[return-value]


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
    try:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:  # an int too large for a float
        ok = False
    if not ok or value < 0 or (positive and value == 0):  # type: ignore[operator]
        kind = "positive" if positive else "non-negative"
        raise InvalidArgument(f"{what} must be a {kind} finite number of seconds, not {value!r:.60}")
    return float(value)  # type: ignore[arg-type]


def _too_large(size: int, limit: int) -> str:
    return (f"result of {size} bytes exceeds max_result={limit}: store large results elsewhere "
            "and return a reference to them (or raise max_result)")
