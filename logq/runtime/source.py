"""The job source: everything the runtime asks of a queue, and nothing more.

Theory of operation
-------------------
Tasks, handles, the registry and the worker hold a `JobSource`, never a queue or
a backend. `logq.Queue` hands them one (`logq.queue._Source`); a test can hand
them any object with these calls. Each call keeps the rules of
spec/semantics.md: a call that changes a job returns once the change is durable
per the queue's sync mode.

`complete_many` is the worker's batch of outcomes. With it go the periodic
schedules (`Schedule`, by task name): when a run that holds its schedule's key
becomes final, the source queues the schedule's next run in the same atomic
write, so a crash neither skips nor doubles a run.
"""

from __future__ import annotations

import threading
from typing import Mapping, Protocol, Sequence

from ..core.jobs import Backoff, Completion, Job, JobInfo, Stats
from ..errors import LogqError

__all__ = ["Completion", "JobSource", "Schedule"]


class Schedule(Protocol):
    """A periodic task's schedule, as a job source uses it in `complete_many`."""

    @property
    def key(self) -> str:
        """The unique key its queued run holds: only the run holding it has a next run."""
        ...

    def next_run(self, payload: bytes, now: float) -> tuple[float, bytes]:
        """(run_at, payload) of the run after the one whose payload is `payload`, at `now`."""
        ...


class JobSource(Protocol):
    """The calls the runtime makes on a queue."""

    @property
    def lease_time(self) -> float:
        """Seconds a lease lasts unless extended."""
        ...

    def now(self) -> float:
        """The queue's clock, in seconds since the epoch."""
        ...

    def enqueue(self, name: str, payload: bytes = b"", *, delay: float = 0.0, priority: int = 0,
                max_attempts: int | None = None, key: str | None = None,
                backoff: Backoff | None = None, sync: str | None = None) -> int:
        """Add a job (`Queue.enqueue`); return its id."""
        ...

    def lease_many(self, n: int, names: frozenset[str], *, wait: float,
                   stop: threading.Event | None = None) -> list[Job]:
        """Lease up to `n` due jobs of these task names, waiting up to `wait` for the first;
        none once `stop` is set, even if it is set while waiting."""
        ...

    def complete_many(self, outcomes: Sequence[Completion],
                      schedules: Mapping[str, Schedule]) -> list[LogqError | None]:
        """Ack or fail leased jobs in one atomic batch, with the next run of each periodic
        run that became final; a job whose lease was lost gets its error at its position,
        the others are recorded all the same. A closed or failed queue raises."""
        ...

    def release(self, job: Job) -> None:
        """Give a leased job back, attempt not counted."""
        ...

    def extend(self, job: Job) -> float:
        """Renew a job's lease for `lease_time`; return the new expiry."""
        ...

    def stats(self) -> Stats:
        """A snapshot of the queue (`Queue.stats`): the worker reads `due_by_name`."""
        ...

    def get(self, job_id: int) -> JobInfo | None:
        """What is known of a job, None if there is no such job."""
        ...

    def wait(self, job_id: int, timeout: float | None = None) -> JobInfo:
        """Block until the job is final; raise `WaitTimeout` after `timeout` seconds."""
        ...
