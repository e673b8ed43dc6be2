"""The engine shared by the local and memory backends: job operations over an Index and a record store.

Theory of operation
-------------------
Every operation that changes a job follows the same steps, under the engine
lock: check the transition (`Index.check`), write the record to the store
(handed over, not yet durable), hand the same record to the index
(`Index.transition`, or `Index.add` for an ENQUEUE). Then, outside the lock,
`commit` waits for the durability its sync mode asks for. So the index never
holds a change the store has not been handed, and concurrent callers in
`always` mode share fsyncs (group commit, in the log).

A change is visible to other threads as soon as it is applied, possibly before
it is durable; a caller's own call returns only once its record is durable
(per mode), and since the store keeps records in order, anything a durable
record depends on (the enqueue before its ack) is durable too.

The store is the log (`LocalBackend`) or records kept in memory
(`MemoryBackend`): `Store` says what the engine asks of it. Arguments arrive
checked by the facade; outcomes of failures and expiries come from
`core.policy`.
"""

from __future__ import annotations

import itertools
import threading
import time
from time import monotonic as _monotonic
from typing import Callable, Sequence, TypeVar, cast

from ..clock import Clock
from ..core import policy
from ..core.index import INLINE_RESULT, Entry, Index
from ..core.jobs import ACTIVE, FINAL_STATES, Backoff, Job, new_job
from ..core.records import (
    ACK, CANCEL, ENCODERS, ENQUEUE, EXPIRE, EXTEND, FAIL, LEASE, RELEASE, RETRY, TYPE_NAMES, JobAt,
    JobRecord, Lease, encode_enqueue, encode_job_at, encode_outcome, enqueue_head, enqueue_time_and_payload,
)
from ..errors import ClosedError, InvalidTransition, LeaseLostError, LogqError
from ..log.log import Appended
from ..log.turns import Turn
from ..tuples import new_tuple as _new_tuple
from ..core.jobs import Completion
from .base import NextRun
from .queries import MAX_WAIT, Queries
from .store import Store

T = TypeVar("T")
Change = tuple[Entry, int, JobRecord]  # a job, the type of the record that changes it, the record


class Engine(Queries):
    """Job operations over `self._index` and `self._log` (a `Store`, set by the subclass).
    Each public method is the `base.Backend` operation of the same name, as promised there.

    Thread-safe: one lock for the index; `_changed` wakes waiting leases, `_finished`
    wakes `wait` callers of a job that became final."""

    path: str
    _log: Store
    results_in_store = False  # results longer than INLINE_RESULT are read back from their ACK record

    def __init__(self, clock: Clock, backoff: Backoff, retain_done: float, retain_dead: float) -> None:
        self.clock, self.backoff = clock, backoff
        self.retain_done, self.retain_dead = retain_done, retain_dead
        self._index = Index()
        self._timetable = self._index.timetable
        self._use_lock(threading.Lock())
        self._waiters = 0  # threads in _changed.wait: appends notify only when there are some
        self._watched: dict[int, int] = {}  # job id -> threads in `wait` for it
        self._names: dict[str, bytes] = {}  # task names seen, with their UTF-8 bytes
        self._closed = False
        self._indexed = True  # False: no index built yet (`_check_indexed` builds it)
        # lease owners (a store shared by processes sets these): this opener's id, named in its
        # LEASE records, and how to find and forget the openers whose process ended
        self._owner = 0
        self._owners_due_at = float("inf")
        self._log_dead_owners: Callable[[], list[int]] = list
        self._forget_owners: Callable[[list[int]], None] = _ignore

    def _use_lock(self, lock: "threading.Lock | Turn", poll: Callable[[], float | None] | None = None) -> None:
        """Guard the index with `lock` (a store shared with other processes gives its `Turn`,
        whose taking catches up with them; `poll`: how often waiters look for their changes)."""
        self._lock = lock
        self._changed = threading.Condition(lock)  # type: ignore[arg-type]
        self._finished = threading.Condition(lock)  # type: ignore[arg-type]  # `wait`: a watched job became final
        self._poll = poll or _no_poll

    def _others_changed(self) -> None:
        """(Lock held.) Other processes changed jobs, or may from now on: waiters look again."""
        self._changed.notify_all()
        self._finished.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    # ----------------------------------------------------------------- enqueue

    def enqueue(self, name: str, payload: bytes, delay: float, priority: int, max_attempts: int,
                key: str | None, backoff: Backoff | None, sync: str | None) -> int:
        now = self.clock.time()
        run_at, delays = now + delay, backoff.as_tuple() if backoff else None
        encoded = self._names.get(name) or self._name_bytes(name)
        record = enqueue_head(now, run_at, priority, max_attempts, encoded,
                              None if key is None else key.encode(), delays) + payload
        with self._lock:
            self._check_open()
            if key is not None:  # (a unique key is checked against every live job: the index)
                self._check_indexed()
                if key is not None and key in self._index.keys:
                    return self._index.keys[key]
            appended = self._log.write_one(ENQUEUE, record, sync=sync)
            job_id = appended.first_seq
            if self._indexed:  # (a producer that has not built its index keeps no job)
                self._index.add(job_id, appended.segment, appended.offsets[0] << 32 | appended.sizes[0],
                                now, run_at, priority, max_attempts, name, key, delays)
                self._notify_locked(False)
        self._log.commit(appended)
        return job_id

    def enqueue_many(self, items: Sequence[tuple[str, bytes]], delay: float, priority: int,
                     max_attempts: int, sync: str | None) -> list[int]:
        now = self.clock.time()
        heads: dict[str, bytes] = {}  # per task name, the ENQUEUE bytes before the payload
        records: list[tuple[int, bytes]] = []
        for name, payload in items:
            head = heads.get(name)
            if head is None:
                head = heads[name] = enqueue_head(now, now + delay, priority, max_attempts,
                                                  self._names.get(name) or self._name_bytes(name))
            records.append((ENQUEUE, head + payload))
        with self._lock:
            self._check_open()
            appended = self._append_locked(records, sync)
        self._log.commit(appended)
        return list(range(appended.first_seq, appended.last_seq + 1))

    def _name_bytes(self, name: str) -> bytes:
        encoded = name.encode()
        if len(self._names) < MAX_CACHED_NAMES:
            self._names[name] = encoded
        return encoded

    # ------------------------------------------------------------------- lease

    def lease(self, n: int, names: frozenset[str] | None, lease_time: float, wait: float,
              sync: str | None, stop: threading.Event | None = None) -> list[Job]:
        deadline = None  # time.monotonic() + wait, once it waits
        appended: list[Appended] = []  # this call's batches, expiries and leases: committed before it returns
        try:
            with self._lock:
                while True:
                    self._check_indexed()
                    if stop is not None and stop.is_set():
                        return []
                    now = self.clock.time()
                    expired = self._expire_locked(now)
                    if expired is not None:
                        appended.append(expired)
                    self._timetable.promote(now)
                    taken = self._timetable.take_ready(names, n)
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
                        rec = _new_tuple(Lease, (e.id, e.attempts + 1, now, expires, self._owner))
                        appended.append(self._change_locked(e, LEASE, rec, sync))
                    else:
                        appended.append(self._change_all_locked(_leases(taken, now, expires, self._owner), sync))
                except BaseException:
                    self._timetable.put_back(taken)
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
            return [_job(e, self._log.read(e.segment, e.offset, e.size).payload, expires)]
        jobs: list[Job] = []
        for segment, group in itertools.groupby(taken, key=_segment_of):
            entries = list(group)
            records = self._log.read_many(segment, [(e.offset, e.size) for e in entries])
            jobs.extend(_job(e, rec.payload, expires) for e, rec in zip(entries, records))
        return jobs

    def _wait_locked(self, deadline: float, now: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        wake = self._timetable.next_wakeup()
        self._wait_changed(min(remaining if wake is None else min(remaining, max(0.001, wake - now)),
                               self._poll() or MAX_WAIT))
        return True

    def expire_leases(self) -> int:
        with self._lock:
            self._check_indexed()
            if self._owners_due_at != float("inf"):  # asked for: look for ended processes now too
                self._owners_due_at = 0.0
            appended = self._expire_locked(self.clock.time())
        if appended is None:
            return 0
        self._log.commit(appended)
        return appended.last_seq - appended.first_seq + 1

    def _expire_locked(self, now: float) -> Appended | None:
        """Expire the leases whose time is past and, now and then, those of openers whose
        process ended (their owner files: a killed worker's jobs come back at once)."""
        expired = self._timetable.expired(now)
        dead = self._dead_owners() if self._owners_due_at <= _monotonic() else None
        if not expired and not dead:
            return None
        changes = [(e, EXPIRE, policy.expiry(e, now, "lease expired")) for e in expired]
        if dead:
            timed_out = {e.id for e in expired}
            changes += [(e, EXPIRE, policy.expiry(e, now, "lease lost: its process ended"))
                        for e in self._index.leases_of(dead) if e.id not in timed_out]
        appended = self._change_all_locked(changes, None) if changes else None
        if dead:
            self._forget_owners(dead)
        return appended

    def _dead_owners(self) -> list[int]:
        """(Lock held.) Owners found dead, looked for at most every OWNER_CHECK seconds."""
        self._owners_due_at = _monotonic() + OWNER_CHECK
        return self._log_dead_owners()

    # -------------------------------------------------------- changing one job

    def ack(self, job: Job | int, result: bytes, sync: str | None) -> None:
        with self._lock:
            self._check_indexed()
            e = self._leased_entry(job, ACK)
            appended = self._change_locked(e, ACK, _job_at_now(e, self.clock.time(), result), sync)
            if len(result) > INLINE_RESULT and self.results_in_store:
                self._index.keep_result_at(e, appended.segment, appended.offsets[0] << 32 | appended.sizes[0])
        self._log.commit(appended)

    def fail(self, job: Job | int, error: str, retry: bool, sync: str | None) -> None:
        self._on_lease(job, FAIL, self._failure, (error, retry), sync)

    def release(self, job: Job | int, delay: float, sync: str | None) -> None:
        self._on_lease(job, RELEASE, _job_at_later, delay, sync)

    def extend(self, job: Job | int, lease_time: float, sync: str | None) -> float:
        return cast(JobAt, self._on_lease(job, EXTEND, _job_at_later, lease_time, sync)).at

    def cancel(self, job_id: int, sync: str | None) -> None:
        self._on_lease(job_id, CANCEL, _job_at_now, b"", sync)

    def retry(self, job_id: int, sync: str | None) -> None:
        self._on_lease(job_id, RETRY, _job_at_now, b"", sync)

    def _on_lease(self, job: Job | int, rtype: int, build: Callable[[Entry, float, T], JobRecord], arg: T,
                  sync: str | None) -> JobRecord:
        """Change one job with the `rtype` record that `build(entry, now, arg)` makes; return it."""
        with self._lock:
            self._check_indexed()
            e = self._leased_entry(job, rtype)
            rec = build(e, self.clock.time(), arg)
            appended = self._change_locked(e, rtype, rec, sync)
        self._log.commit(appended)
        return rec

    def _leased_entry(self, job: Job | int, rtype: int) -> Entry:
        """The entry a `rtype` record for `job` would change; raise if the caller's lease is
        lost (a `Job` names its attempt) or the transition is illegal."""
        if not isinstance(job, Job):
            return self._index.check(rtype, job)
        e = self._index.check_exists(job.id)
        if e.state != ACTIVE or e.attempts != job.attempts:
            raise LeaseLostError(f"the lease of job {job.id} (attempt {job.attempts}) was lost: it "
                                 f"is now {e.state}, attempt {e.attempts}; do not {TYPE_NAMES[rtype]} it")
        return self._index.check_entry(rtype, e)

    def _failure(self, e: Entry, now: float, how: tuple[str, bool]) -> JobRecord:
        return policy.failure(e, now, how[0], how[1], self.backoff)

    # ------------------------------------------------------ changing a batch

    def ack_many(self, jobs: Sequence[Job | int], sync: str | None) -> None:
        with self._lock:
            self._check_indexed()
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

    def complete(self, outcomes: Sequence[Completion], next_run: NextRun | None) -> list[LogqError | None]:
        with self._lock:
            self._check_indexed()
            now = self.clock.time()
            items: list[tuple[int, bytes]] = []
            changes: list[tuple[Entry, JobRecord] | None] = []
            errors: list[LogqError | None] = []
            seen: set[int] = set()  # a job twice in one batch: its second outcome finds it final
            large: list[tuple[int, Entry]] = []  # (position in items, job) of results kept in the store
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
                    if len(rec.data) > INLINE_RESULT:
                        large.append((len(items), e))
                    items.append((ACK, encode_job_at(rec)))
                    final = True
                else:
                    rec = policy.failure(e, now, policy.error_text(error), True, self.backoff)
                    items.append((FAIL, encode_outcome(rec)))
                    final = rec.dead
                changes.append((e, rec))
                run = next_run(job, now) if final and next_run is not None else None
                if run is not None and (run.key is None or self._index.keys.get(run.key) == job.id):
                    items.append((ENQUEUE, encode_enqueue(run)))
                    changes.append(None)
            appended = self._append_locked(items, None, changes) if items else None
            if appended is not None and large and self.results_in_store:
                for i, e in large:
                    self._index.keep_result_at(e, appended.segment, appended.offsets[i] << 32 | appended.sizes[i])
        if appended is not None:
            self._log.commit(appended)
        return errors

    # --------------------------------------------------------------- lifecycle

    def sync(self) -> None:
        self._check_open()
        self._log.sync()

    def _mark_closed(self) -> bool:
        """Refuse further calls and wake every waiter; False if it was closed already."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            self._changed.notify_all()
            self._finished.notify_all()
        return True

    def _check_indexed(self) -> None:
        """`_check_open`, and build the index first if this opener has none yet (a producer
        that opened beside other processes keeps none until a call needs it)."""
        if self._closed:
            raise ClosedError(f"the queue at {self.path} is closed: open a new logq.Queue")
        self._log.check_usable()
        if not self._indexed:
            self._build_index_locked()

    def _build_index_locked(self) -> None:
        """(Lock held.) Build the index; the local backend overrides this."""
        self._indexed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the queue at {self.path} is closed: open a new logq.Queue")
        self._log.check_usable()

    # ------------------------------------------------------------------ writes

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
        others (ENQUEUEs) to `Index.apply` (unless no index is built: a producer's)."""
        appended = self._log.write(items, sync=sync)
        if not self._indexed:
            return appended
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
        """Wait (lock held) until an append or close, or `timeout` seconds (`lease`)."""
        self._waiters += 1
        try:
            self._changed.wait(timeout)
        finally:
            self._waiters -= 1


MAX_CACHED_NAMES = 10_000  # task names kept encoded for enqueue


OWNER_CHECK = 0.2  # seconds between looks for openers whose process ended


def _no_poll() -> float | None:
    return None


def _ignore(owners: list[int]) -> None:
    pass


def _leases(taken: list[Entry], now: float, expires: float, owner: int) -> list[Change]:
    """The LEASE changes of a `lease_many` batch."""
    return [(e, LEASE, _new_tuple(Lease, (e.id, e.attempts + 1, now, expires, owner))) for e in taken]


def _job(e: Entry, enqueue_payload: bytes, expires: float) -> Job:
    """The `Job` for leased entry `e`, given the payload of its ENQUEUE record (the
    index knows name, priority and max_attempts; the record adds the rest)."""
    enqueued_at, payload = enqueue_time_and_payload(enqueue_payload)
    return new_job(e.id, e.name, payload, e.attempts, e.priority, enqueued_at, expires, e.max_attempts)


def _job_at_now(e: Entry, now: float, data: bytes) -> JobAt:
    """ACK (with the result as data), CANCEL and RETRY: the job, and now."""
    return _new_tuple(JobAt, (e.id, now, data))


def _job_at_later(e: Entry, now: float, seconds: float) -> JobAt:
    """RELEASE (due then) and EXTEND (lease until then): the job, `seconds` from now."""
    return _new_tuple(JobAt, (e.id, now + seconds, b""))


def _segment_of(e: Entry) -> int:
    return e.segment

