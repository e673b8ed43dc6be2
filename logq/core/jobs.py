"""The public value types: Job, JobInfo, Stats, Backoff, and the job states."""

from __future__ import annotations

import math
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



Completion = tuple[Job, bytes, "BaseException | str | None"]
"""A finished run: the leased job, its encoded result, and its error (None for success)."""

MAX_NAME = 1000  # bytes of UTF-8 in a task name or a unique key

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
    due_by_name: dict[str, int] = field(default_factory=dict)
    """The due jobs (`due`) per task name: a name no worker knows waits here forever."""

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


MAX_BACKOFF = 1e12  # seconds (about 31,700 years): the longest wait `Backoff.delay` returns, jitter aside


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: the wait before retry number `n` (n >= 1).

    delay(n) = min(max, base * factor ** (n - 1), MAX_BACKOFF), scaled by a random
    factor in [1 - jitter, 1 + jitter]. The arithmetic saturates: any retry number
    and any parameters (an infinite `max`, a huge `factor`) give a finite delay. The
    parameters are kept as floats (an int beyond a float's range counts as infinite).
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
                raise InvalidArgument(f"Backoff.{name} must be a non-negative number, not {v!r:.60}")
            object.__setattr__(self, name, _saturated_float(v))
        if self.jitter > 1 or self.factor < 1:
            raise InvalidArgument("Backoff needs factor >= 1 and 0 <= jitter <= 1")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry): finite,
        at most min(max, MAX_BACKOFF) * (1 + jitter), for any `retry`."""
        return self.undrawn(retry) * (1 + self.jitter * (2 * self._rng.random() - 1))

    def undrawn(self, retry: int) -> float:
        """`delay(retry)` before the jitter: min(max, base * factor ** (retry - 1), MAX_BACKOFF)."""
        cap = min(self.max, MAX_BACKOFF)
        if self.base == 0:  # (0 * inf would be NaN)
            return 0.0
        try:
            return min(cap, self.base * self.factor ** max(0, retry - 1))
        except OverflowError:  # factor ** n beyond a float: the cap, as any large power would give
            return cap

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.base, self.factor, self.max, self.jitter)


def _saturated_float(v: int | float) -> float:
    """`v` as a float; an int too large for one is infinite (`v` is not negative)."""
    try:
        return float(v)
    except OverflowError:
        return math.inf
