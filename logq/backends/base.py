"""The backend seam: the job operations the `Queue` facade asks of whatever keeps the jobs.

Theory of operation
-------------------
The facade checks every argument (types, ranges, sizes, names) and resolves the
queue's defaults (max_attempts, lease_time), then calls one backend method.
A backend receives valid, complete arguments, carries the operation out
atomically, and returns once its change is as durable as `sync` (or the
queue's mode) asks, as far as the backend has durability at all
(`Capabilities.durable`). Decisions that are policy (when a failed job is
retried, when an expired lease makes it dead) come from `core.policy`, so that
every backend decides alike; every backend keeps spec/semantics.md.

Operations are on jobs, not bytes: enqueue one or many, lease up to n,
complete a batch of outcomes (with a periodic task's next run in the same
atomic write), change one job (ack, fail, release, extend, cancel, retry),
read (get, select, stats), wait for a job to finish, compact, sync, close.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from ..core.jobs import Backoff, CompactionReport, Completion, Job, JobInfo, Stats
from ..core.records import Enqueue
from ..errors import LogqError
from ..log.log import RecoveryReport

NextRun = Callable[[Job, float], "Enqueue | None"]
"""Given a job whose run is final and the time, the ENQUEUE of its next run (a periodic
task), or None: `complete` queues it in the same atomic write, if the finished job holds
the next run's key (a run without the key, queued by hand, is a one-off)."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend offers beyond the semantics every backend keeps."""

    durable: bool
    """Jobs survive close and reopen, and a crash loses only what its sync mode allows."""
    compaction: bool
    """`compact` reclaims the space of final jobs past retention (by itself, too)."""
    inspectable: bool
    """`path` is a directory that `python -m logq inspect/verify` can read."""


class Backend(Protocol):
    """The job operations. Arguments arrive checked; `sync` is None (the queue's mode) or a
    valid mode name. Every method raises `ClosedError` once the backend is closed."""

    capabilities: Capabilities
    path: str

    @property
    def recovery(self) -> RecoveryReport:
        """What opening found (torn tails cut, ranges lost in salvage mode)."""
        ...

    @property
    def closed(self) -> bool: ...

    def enqueue(self, name: str, payload: bytes, delay: float, priority: int, max_attempts: int,
                key: str | None, backoff: Backoff | None, sync: str | None) -> int:
        """Add a job due `delay` seconds from now and return its id (ids increase); with
        `key` held by a live job, return that job's id and write nothing."""
        ...

    def enqueue_many(self, items: Sequence[tuple[str, bytes]], delay: float, priority: int,
                     max_attempts: int, sync: str | None) -> list[int]:
        """Add (name, payload) jobs, all or none, with one enqueue time; return their ids."""
        ...

    def lease(self, n: int, names: frozenset[str] | None, lease_time: float, wait: float,
              sync: str | None, stop: threading.Event | None = None) -> list[Job]:
        """Take up to `n` due jobs (expired leases reclaimed first), in lease order, as one
        atomic batch; [] if none is due within `wait` seconds, or once `stop` is set
        (checked before each look for due jobs, waiting included: a worker's first stop
        signal ends its leases)."""
        ...

    def complete(self, outcomes: Sequence[Completion], next_run: NextRun | None) -> list[LogqError | None]:
        """Ack or fail leased jobs in one atomic write, with the next run of each periodic
        run that became final; per outcome, None or the error that kept it out."""
        ...

    def ack(self, job: Job | int, result: bytes, sync: str | None) -> None: ...

    def ack_many(self, jobs: Sequence[Job | int], sync: str | None) -> None:
        """Ack every job, all or none (raise for the first that cannot be acked)."""
        ...

    def fail(self, job: Job | int, error: str, retry: bool, sync: str | None) -> None: ...

    def release(self, job: Job | int, delay: float, sync: str | None) -> None: ...

    def extend(self, job: Job | int, lease_time: float, sync: str | None) -> float: ...

    def cancel(self, job_id: int, sync: str | None) -> None: ...

    def retry(self, job_id: int, sync: str | None) -> None: ...

    def expire_leases(self) -> int: ...

    def get(self, job_id: int) -> JobInfo | None: ...

    def select(self, state: str | None, name: str | None, limit: int | None) -> list[JobInfo]: ...

    def stats(self) -> Stats: ...

    def wait(self, job_id: int, timeout: float | None) -> JobInfo:
        """Block until the job is final; `WaitTimeout` after `timeout` seconds."""
        ...

    def compact(self, include_active: bool) -> CompactionReport: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...

