"""The job index: a pure state machine over job records. No I/O, no clock.

Theory of operation
-------------------
`Index.apply(type, seq, payload, segment, offset, size)` takes a record as the
log holds it: an ENQUEUE adds a job; any other record is decoded
(`records.CODECS`), `check`ed for a legal transition, and handed to
`transition`, the one place where a job changes. Replay at open calls `apply`
for every record in the log. A live call `check`s first, builds the decoded
record, appends its encoding, and then hands that same record to `transition`
(a batch of changes too; a live ENQUEUE hands its fields to `add`, as
`apply` does after decoding, and a batch of them hands the bytes to
`apply`): one state machine either way, and encode/decode are exact
inverses. (Opening after a clean close loads the state replay had reached
from a checkpoint, `snapshot`, and replay goes on from there.)

The legal transitions are one table, `ALLOWED`; spec/semantics.md follows it:

    record   from            to
    ENQUEUE  (new)           pending
    LEASE    pending         active      (attempt counted)
    ACK      active          done
    FAIL     active          pending at a later run_at, or dead
    EXPIRE   active          pending, or dead (lease expired or lost)
    RELEASE  active          pending     (attempt given back)
    EXTEND   active          active      (new lease expiry)
    CANCEL   pending         cancelled
    RETRY    dead            pending     (attempts start again from 0)

Records carry the outcome the live call decided (retry time, dead or not), so
applying them needs no clock or randomness. Time enters only as arguments
(`promote(now)`, `expired(now)`).

Each pending or active job waits in the index's `Timetable` (timetable.py):
a ready queue per task name, the delayed heap or the lease heap, in the order
it will be taken. The transitions here move jobs between its queues; the
timetable never changes a job's state.
Payloads are not held: `Entry.segment` and `Entry.loc` say where the ENQUEUE
record lies (loc = offset << 32 | size). Nor are results longer than
INLINE_RESULT bytes, once the caller says where their ACK record lies
(`keep_result_at`; replay does so itself): `Extra.result_at` holds its place,
and `_results` maps the ACK's sequence number to its job, so that compaction
can move it (`relocate`).
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict
from typing import Any, Callable, Iterable, Iterator, Protocol

from ..errors import CorruptionError, InvalidTransition, JobNotFound
from .records import (
    ACK, CANCEL, CODECS, ENQUEUE, ENQUEUE_HEAD, EXPIRE, EXTEND, FAIL, LEASE, RELEASE, RETRY, TYPE_NAMES,
    JobAt, JobRecord, Lease, Outcome, enqueue_backoff, enqueue_meta,
)
from .entry import Entry, Extra
from .jobs import ACTIVE, CANCELLED, DEAD, DONE, PENDING, STATES
from .timetable import PRUNE_SLACK, Ready, ReadyItem, Timetable, _ready_item

__all__ = ["ALLOWED", "INLINE_RESULT", "PRUNE_SLACK", "Entry", "Extra", "Index", "LoggedRecord", "Ready", "ReadyItem"]

ALLOWED: dict[int, frozenset[str]] = {
    LEASE: frozenset((PENDING,)),
    ACK: frozenset((ACTIVE,)),
    FAIL: frozenset((ACTIVE,)),
    EXPIRE: frozenset((ACTIVE,)),
    RELEASE: frozenset((ACTIVE,)),
    EXTEND: frozenset((ACTIVE,)),
    CANCEL: frozenset((PENDING,)),
    RETRY: frozenset((DEAD,)),
}


INLINE_RESULT = 64  # results up to this many bytes are held in the index; longer ones are read back


class LoggedRecord(Protocol):
    """What replay reads of a record from the log (the log's `Record` has these fields)."""

    @property
    def seq(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def payload(self) -> bytes | memoryview: ...
    @property
    def offset(self) -> int: ...
    @property
    def size(self) -> int: ...


class Index:
    """All jobs, their states, and the queues that order them."""

    def __init__(self) -> None:
        self.jobs: dict[int, Entry] = {}
        # unique keys: each key that live (pending or active) jobs have, to the lowest id
        # among them (its owner, whose id a keyed enqueue returns); `_co_holders` lists the
        # others, for the rare key that several live jobs have (`_hold_key`)
        self.keys: dict[str, int] = {}
        self._co_holders: dict[str, set[int]] = {}
        self._results: dict[int, int] = {}  # sequence number of an ACK holding a result -> its job
        self.counts: dict[str, int] = dict.fromkeys(STATES, 0)
        self.live_bytes = 0
        self.owners: dict[int, int] = {}  # active job id -> the owner its lease names, when it names one
        self.timetable = Timetable(self.jobs)  # where pending and active jobs wait, in order
        self._names: dict[bytes, str] = {}  # task names by their UTF-8 bytes: decoded once, shared

    @property
    def n_ready(self) -> int:
        """How many jobs are due (in a ready queue)."""
        return self.timetable.n_ready

    @property
    def ready_by_name(self) -> dict[str, int]:
        """`n_ready` per task name (names once ready stay, at 0)."""
        return self.timetable.ready_by_name

    # ------------------------------------------------------------- transitions

    def check_exists(self, job_id: int) -> Entry:
        e = self.jobs.get(job_id)
        if e is None:
            raise JobNotFound(f"no job with id {job_id}: check the id (or it was compacted away)")
        return e

    def check(self, rtype: int, job_id: int) -> Entry:
        """The job a `rtype` record would change; raise if the transition is illegal."""
        return self.check_entry(rtype, self.check_exists(job_id))

    def check_entry(self, rtype: int, e: Entry) -> Entry:
        """`check` for a job already looked up: `e`, if a `rtype` record may change it."""
        if e.state not in ALLOWED[rtype]:
            allowed = " or ".join(sorted(ALLOWED[rtype]))
            raise InvalidTransition(
                f"cannot {TYPE_NAMES[rtype]} job {e.id}: it is {e.state}, and only {allowed} jobs can be")
        return e

    def apply(self, rtype: int, seq: int, payload: bytes | memoryview, segment: int, offset: int,
              size: int) -> Entry:
        """Apply one record, as the log holds it, and return the job it changed: decode,
        `check`, `transition`."""
        if rtype == ENQUEUE:
            return self._enqueue(seq, payload, segment, offset << 32 | size)
        codec = CODECS.get(rtype)
        if codec is None:
            raise CorruptionError(f"unknown job record type {rtype} at sequence {seq}: "
                                  "written by a newer logq? upgrade logq")
        rec = codec[1](bytes(payload))
        e = self.check(rtype, rec.job_id)
        self.transition(e, rtype, seq, rec)
        if rtype == ACK and len(rec.data) > INLINE_RESULT:
            self.keep_result_at(e, segment, offset << 32 | size)
        return e

    def keep_result_at(self, e: Entry, segment: int, loc: int) -> None:
        """Job `e` was just acked (`transition`) by the record at `segment` and `loc`
        (offset << 32 | size): if its result is longer than INLINE_RESULT, drop it from
        memory and keep where it lies; the caller reads it back from there."""
        x = e.extra
        if x is not None and x.result is not None and len(x.result) > INLINE_RESULT:
            x.result, x.result_at = None, (segment, loc)
            self._results[e.last] = e.id

    def transition(self, e: Entry, rtype: int, seq: int, rec: JobRecord) -> None:
        """Apply record `rec` (decoded, of type `rtype`, sequence number `seq`) to job `e`,
        which `check(rtype, rec.job_id)` returned. A live call that wrote `rec`'s
        encoding calls this directly, as `apply` does after decoding it."""
        _TRANSITIONS[rtype](self, e, rec)
        e.last = seq

    def replay(self, rec: LoggedRecord, base: int) -> None:
        """`apply` for a record read back from segment `base` (the log's replay callback)."""
        if rec.type == ENQUEUE:
            self._enqueue(rec.seq, rec.payload, base, rec.offset << 32 | rec.size)
        else:
            self.apply(rec.type, rec.seq, rec.payload, base, rec.offset, rec.size)

    def _enqueue(self, seq: int, payload: bytes | memoryview, segment: int, loc: int) -> Entry:
        """Decode an ENQUEUE record's payload (task names decoded once and shared) and `add` it."""
        try:
            enq_at, run_at, prio, max_att, opts, nlen, klen = ENQUEUE_HEAD.unpack_from(payload, 0)
        except struct.error:
            raise CorruptionError(f"malformed enqueue record at sequence {seq}") from None
        at = ENQUEUE_HEAD.size
        raw_name = payload[at:at + nlen]
        name = self._names.get(raw_name)  # type: ignore[arg-type]
        if name is None:
            _, _, _, _, decoded, _, _ = enqueue_meta(payload)
            name = self._names[bytes(raw_name)] = decoded
        key = backoff = None
        if opts:
            _, _, _, _, _, key, payload_at = enqueue_meta(payload)
            backoff = enqueue_backoff(payload, payload_at)
        return self.add(seq, segment, loc, enq_at, run_at, prio, max_att, name, key, backoff)

    def add(self, seq: int, segment: int, loc: int, enq_at: float, run_at: float, prio: int, max_att: int,
            name: str, key: str | None, backoff: tuple[float, float, float, float] | None) -> Entry:
        """Apply the ENQUEUE record of job `seq`, stored at `segment` and `loc` (offset
        << 32 | size), given as its decoded fields but the payload (which the index
        does not keep), in the record's order; return the new entry. A live enqueue
        that wrote the record calls this directly, as `apply` does after decoding it."""
        e = Entry(seq, name, prio, run_at, max_att, key, segment, loc)
        if backoff is not None:
            self._extra(e).backoff = backoff
        self.jobs[seq] = e
        self.counts[PENDING] += 1
        self.live_bytes += loc & 0xFFFFFFFF
        if key is not None:
            self._hold_key(e)
        self.timetable.schedule(e, run_at, enq_at)
        return e

    def adopt(self, jobs: dict[int, Entry], delayed: set[int]) -> None:
        """Take over the jobs of a snapshot (`snapshot`: in id order, slots not set):
        each pending job goes in a ready queue, or in the delayed heap if its id is in
        `delayed`, each active one in the lease heap, and is counted; the unique keys
        are derived from the live jobs, as replay leaves them (`_hold_key`). The ready
        queues are built at once (`Ready.of`), the heaps with the methods replay uses.
        The index must be empty."""
        self.jobs = self.timetable.jobs = jobs
        counts, ready, live = self.counts, defaultdict(list), 0
        for e in jobs.values():
            state = e.state
            counts[state] += 1
            if state == PENDING:
                if e.id in delayed:
                    self.timetable.schedule(e, e.run_at, -math.inf)
                else:
                    e.slot = item = _ready_item(e)
                    ready[e.name].append(item)
            elif state == ACTIVE:
                self.timetable.push_lease(e, self.counts[ACTIVE])
            else:
                if e.extra is not None and e.extra.result_at is not None:
                    self._results[e.last] = e.id
                continue
            live += e.size
            if e.key is not None:
                self._hold_key(e)
        self.live_bytes += live
        self.timetable.adopt(ready)

    def _lease(self, e: Entry, rec: Lease) -> None:
        self._move(e, ACTIVE)
        e.attempts, e.expires = rec.attempt, rec.expires_at
        if rec.owner:
            self.owners[e.id] = rec.owner
        self.timetable.push_lease(e, self.counts[ACTIVE])

    def _extend(self, e: Entry, rec: JobAt) -> None:
        e.expires = rec.at
        self.timetable.push_lease(e, self.counts[ACTIVE])

    def _ack(self, e: Entry, rec: JobAt) -> None:
        self._finish(e, DONE, rec.at).result = rec.data

    def _cancel(self, e: Entry, rec: JobAt) -> None:
        self._finish(e, CANCELLED, rec.at)

    def _fail(self, e: Entry, rec: Outcome) -> None:
        if rec.dead:
            self._finish(e, DEAD, rec.at).last_error = rec.error
            return
        self._extra(e).last_error = rec.error
        self._move(e, PENDING)
        e.expires = None
        self.timetable.schedule(e, rec.run_at, rec.at)

    def _release(self, e: Entry, rec: JobAt) -> None:
        self._move(e, PENDING)
        e.attempts, e.expires = max(0, e.attempts - 1), None
        self.timetable.schedule(e, rec.at, -1.0)

    def _retry(self, e: Entry, rec: JobAt) -> None:
        self._move(e, PENDING)
        self.live_bytes += e.size
        e.attempts = 0
        if e.key is not None:
            self._hold_key(e)
        self.timetable.schedule(e, rec.at, rec.at)

    # ----------------------------------------------------------------- helpers

    def _finish(self, e: Entry, state: str, at: float) -> Extra:
        self._move(e, state)
        e.expires = None
        self.live_bytes -= e.size
        if e.key is not None:
            self._drop_key(e)
        extra = self._extra(e)
        extra.finished_at = at
        return extra

    def _hold_key(self, e: Entry) -> None:
        """Job `e`, live now (enqueued or retried), holds its key. A key that several live
        jobs have (a dead job retried after another took its key, a periodic run queued
        beside a retried one) is owned by the lowest id among them. Who owns a key is so
        a function of the live jobs alone, not of the order of past changes: a replay of
        a compacted log, which lacks the records of the jobs swept, and a snapshot
        restore both give the keys the live index has."""
        key, keys = e.key, self.keys
        assert key is not None
        owner = keys.get(key)
        if owner is None:
            keys[key] = e.id
        elif owner != e.id:
            keys[key] = min(owner, e.id)
            self._co_holders.setdefault(key, set()).add(max(owner, e.id))

    def _drop_key(self, e: Entry) -> None:
        """Job `e`, final now, no longer holds its key: the lowest id of the other live
        jobs that have it owns it next; with none, the key is free."""
        key, keys = e.key, self.keys
        assert key is not None
        others = self._co_holders.get(key)
        if keys.get(key) == e.id:
            if others:
                keys[key] = heir = min(others)
                others.discard(heir)
            else:
                del keys[key]
        elif others:
            others.discard(e.id)
        if others is not None and not others:
            del self._co_holders[key]

    def _move(self, e: Entry, state: str) -> None:
        """Take job `e` out of the queue it sits in, if any, and into `state`, counted."""
        self.timetable.unslot(e)
        if e.state == ACTIVE and self.owners:
            self.owners.pop(e.id, None)
        counts = self.counts
        counts[e.state] -= 1
        counts[state] += 1
        e.state = state

    def _extra(self, e: Entry) -> Extra:
        if e.extra is None:
            e.extra = Extra()
        return e.extra

    # ------------------------------------------------------------------ queries

    def sweepable(self, now: float, retain_done: float, retain_dead: float, through_seq: int) -> dict[int, int]:
        """Final jobs past retention whose every record has a sequence number <= `through_seq`.

        Returns {job id: sequence number of its last record}.
        """
        out = {}
        for e in self.jobs.values():
            if e.state in (PENDING, ACTIVE) or e.last > through_seq or e.extra is None:
                continue
            keep = retain_dead if e.state == DEAD else retain_done
            finished = e.extra.finished_at
            if finished is not None and finished + keep <= now:
                out[e.id] = e.last
        return out

    def forget(self, job_ids: Iterable[int]) -> None:
        """Drop final jobs whose records compaction removed."""
        for job_id in job_ids:
            e = self.jobs.pop(job_id)
            self.counts[e.state] -= 1
            if e.extra is not None and e.extra.result_at is not None:
                del self._results[e.last]

    def leases_of(self, owners: Iterable[int]) -> list[Entry]:
        """The active jobs whose lease names one of `owners`."""
        wanted, jobs = set(owners), self.jobs
        return [jobs[job_id] for job_id, owner in self.owners.items() if owner in wanted]

    def drop_swept(self, segment: int, moved: dict[int, tuple[int, int]], old: set[int]) -> int:
        """After another process's compaction (`relocate` done): drop the jobs whose ENQUEUE
        lay in the `old` segments and was not kept. The compaction swept them as final;
        this index may not have seen them finish (it lagged behind), so they leave whatever
        state they are in. Returns how many."""
        swept = [e for e in self.jobs.values() if e.segment in old and e.id not in moved]
        for e in swept:
            if e.state in (PENDING, ACTIVE):
                self._finish(e, DONE, 0.0)
        self.forget(e.id for e in swept)
        return len(swept)

    def relocate(self, segment: int, moved: dict[int, tuple[int, int]]) -> None:
        """Point jobs at the new place of their ENQUEUE record, and of the ACK record that
        holds a result kept out of memory (seq -> (offset, size))."""
        jobs, results = self.jobs, self._results
        for seq, (offset, size) in moved.items():
            e = jobs.get(seq)
            if e is not None:
                e.segment, e.loc = segment, offset << 32 | size
            acked = results.get(seq)
            if acked is not None:
                jobs[acked].extra.result_at = (segment, offset << 32 | size)  # type: ignore[union-attr]

    def oldest(self, state: str) -> Entry | None:
        """The job with the lowest id in `state`."""
        return next((e for e in self.jobs.values() if e.state == state), None)

    def select(self, state: str | None, name: str | None) -> Iterator[Entry]:
        for e in self.jobs.values():
            if (state is None or e.state == state) and (name is None or e.name == name):
                yield e


_TRANSITIONS: dict[int, Callable[[Index, Entry, Any], None]] = {
    LEASE: Index._lease,
    ACK: Index._ack,
    FAIL: Index._fail,
    EXPIRE: Index._fail,
    RELEASE: Index._release,
    EXTEND: Index._extend,
    CANCEL: Index._cancel,
    RETRY: Index._retry,
}
assert _TRANSITIONS.keys() == CODECS.keys()
