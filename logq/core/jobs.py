"""The public value types: Job, JobInfo, Stats, Backoff, and the job states."""

from __future__ import annotations

import random as _random
from dataclasses import dataclass, field
from typing import Literal

from ..errors import InvalidArgument

PENDING, ACTIVE, DONE, DEAD, CANCELLED = "pending", "active", "done", "dead", "cancelled"
STATES = (PENDING, ACTIVE, DONE, DEAD, CANCELLED)
FINAL_STATES = frozenset((DONE, DEAD, CANCELLED))
State = Literal["pending", "active", "done", "dead", "cancelled"]


@dataclass(frozen=True, slots=True)
class Job:
    """A leased job, as `Queue.lease` hands it to a worker."""

    id: int
    name: str
    payload: bytes
    attempts: int
    priority: int
    enqueued_at: float
    lease_expires_at: float | None
    max_attempts: int = 1


_job_fields = tuple(Job.__dict__[name].__set__ for name in Job.__dataclass_fields__)
assert len(_job_fields) == 8, "new_job sets each field of Job: update it with Job"


def new_job(id: int, name: str, payload: bytes, attempts: int, priority: int, enqueued_at: float,
            lease_expires_at: float | None, max_attempts: int) -> Job:
    """`Job(...)` for the lease path, in half the time: a frozen dataclass's `__init__`
    sets each field through `object.__setattr__`; this sets the slots directly."""
    job = object.__new__(Job)
    s_id, s_name, s_payload, s_attempts, s_priority, s_enqueued, s_expires, s_max = _job_fields
    s_id(job, id)
    s_name(job, name)
    s_payload(job, payload)
    s_attempts(job, attempts)
    s_priority(job, priority)
    s_enqueued(job, enqueued_at)
    s_expires(job, lease_expires_at)
    s_max(job, max_attempts)
    return job


@dataclass(frozen=True, slots=True)
class JobInfo:
    """Everything known about a job, as `Queue.get` and `Queue.jobs` report it."""

    id: int
    name: str
    payload: bytes
    attempts: int
    priority: int
    enqueued_at: float
    lease_expires_at: float | None
    max_attempts: int
    state: State
    run_at: float
    last_error: str | None
    result: bytes | None
    key: str | None


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of a queue, as `Queue.stats` returns it."""

    counts: dict[str, int]
    due: int
    oldest_pending_age: float | None
    segments: int
    bytes_on_disk: int
    live_bytes: int
    durable_seq: int
    last_seq: int

    @property
    def pending(self) -> int:
        return self.counts[PENDING]

    @property
    def active(self) -> int:
        return self.counts[ACTIVE]


@dataclass(frozen=True, slots=True)
class CompactionReport:
    """What one compaction did."""

    segments_in: int
    bytes_in: int
    bytes_out: int
    records_kept: int
    records_dropped: int
    jobs_swept: int
    seconds: float
    aborted: bool = False  # a swept job changed meanwhile (e.g. retried); nothing was swapped


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: the wait before retry number `n` (n >= 1).

    delay(n) = min(max, base * factor ** (n - 1)), scaled by a random factor in
    [1 - jitter, 1 + jitter].
    """

    base: float = 1.0
    factor: float = 2.0
    max: float = 300.0
    jitter: float = 0.1
    _rng: _random.Random = field(default_factory=_random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("base", "factor", "max", "jitter"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or v != v:
                raise InvalidArgument(f"Backoff.{name} must be a non-negative number, not {v!r}")
        if self.jitter > 1 or self.factor < 1:
            raise InvalidArgument("Backoff needs factor >= 1 and 0 <= jitter <= 1")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        raw = min(self.max, self.base * self.factor ** max(0, retry - 1))
        return raw * (1 + self.jitter * (2 * self._rng.random() - 1))

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (float(self.base), float(self.factor), float(self.max), float(self.jitter))
