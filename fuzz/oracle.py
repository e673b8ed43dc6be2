"""The oracle: what a queue's jobs should be, and which recovered states are acceptable.

Theory of operation
-------------------
A `State` maps job id -> `MJob` (frozen); each transition function below
returns a new State and follows spec/semantics.md, so the model is a plain
dict the queue is compared with.

The `Ledger` is the history of one queue directory: one `Entry` per change,
holding the state after it (several alternative states when the outcome of a
call is unknown, e.g. which id an enqueue cut short by a crash would have
got) and the log's last sequence number after it when known. Two indexes
mark how much of it must survive a crash:

* `durable`: the last entry a caller was told is durable - a call that
  returned in `always` mode, a successful `sync()` or `close()`, or the
  queue's own claim `stats().durable_seq`;
* `returned`: the last entry whose call returned; a process crash (kill -9)
  keeps everything written to the OS, so it must survive that. It is also
  the entry the model stands on: the live queue must agree with it.

After a crash, `match` looks for the latest entry k >= floor whose state, with
every lease lost (pending with the attempt counted, or dead), equals the jobs
the reopened queue holds, and whose sequence numbers fit the log's recovered
last sequence number. The log keeps a prefix of the history, so some such k
must exist; if none does, `diagnose` names the broken invariant: a durable
job lost, a job or payload never written, a final job come back, a lease
not counted, a durable sequence number about to be reused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable

from logq import Backoff, JobInfo

FINAL = ("done", "dead", "cancelled")
LIVE = ("pending", "active")


class Violation(AssertionError):
    """An invariant of logq did not hold; the message names it."""


@dataclass(frozen=True)
class MJob:
    """The model of one job; field names follow `logq.JobInfo`."""

    id: int
    name: str
    payload: bytes
    priority: int
    run_at: float
    max_attempts: int
    key: str | None
    state: str = "pending"
    attempts: int = 0
    expires: float | None = None
    last_error: str | None = None
    result: bytes | None = None

    def view(self) -> tuple[Any, ...]:
        """The fields a recovered job must reproduce exactly."""
        return (self.id, self.state, self.attempts, self.name, self.payload, self.priority,
                self.max_attempts, self.key, self.last_error, self.result,
                self.run_at if self.state == "pending" else None,
                self.expires if self.state == "active" else None)


State = dict[int, MJob]  # never mutated once built


def from_info(i: JobInfo) -> MJob:
    return MJob(i.id, i.name, i.payload, i.priority, i.run_at, i.max_attempts, i.key, i.state,
                i.attempts, i.lease_expires_at, i.last_error, i.result)


def views(s: State) -> dict[int, tuple[Any, ...]]:
    return {jid: j.view() for jid, j in s.items()}


def index_view(index: Any, now: float) -> dict[str, Any]:
    """Everything a queue's job index (`logq.core.index.Index`) holds that replay defines,
    comparable with ==: every job with every field, the live items of the ready, delayed
    and lease heaps, the unique keys with their holders, the counts. Jobs due at `now`
    are promoted first, as every lease and `stats()` does (the clock is not in the log).
    A restore from the checkpoint and a full replay of the same files must give equal
    views (spec/semantics.md guarantees 8 and 12)."""
    index.timetable.promote(now)
    jobs = [(e.id, e.name, e.state, e.priority, e.run_at, e.attempts, e.max_attempts, e.key, e.expires,
             e.segment, e.loc, e.slot, e.last,
             None if e.extra is None else (e.extra.last_error, e.extra.result, e.extra.backoff,
                                           e.extra.finished_at, getattr(e.extra, "result_at", None)))
            for e in index.jobs.values()]

    def live(items: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return sorted(i for i in items if (e := index.jobs.get(i[-1])) is not None and e.slot is i)
    ready = {name: live([*r.run, *r.heap]) for name, r in index.timetable._ready.items()}
    return dict(jobs=jobs, ready={name: items for name, items in ready.items() if items},
                delayed=live(index.timetable._delayed), leases=live(index.timetable._leases), keys=dict(index.keys),
                co_holders={k: sorted(v) for k, v in getattr(index, "_co_holders", {}).items()},
                counts=dict(index.counts), live_bytes=index.live_bytes, n_ready=index.n_ready,
                ready_by_name={n: c for n, c in index.ready_by_name.items() if c})


def first_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Where two `index_view`s differ first, for a failure message."""
    for part in a:
        if a[part] != b[part]:
            if part == "jobs":
                pairs = [(x, y) for x, y in zip(a[part], b[part]) if x != y]
                return f"jobs: {pairs[0] if pairs else (len(a[part]), len(b[part]))}"
            return f"{part}: {a[part]!r} / {b[part]!r}"
    return "none"


# -------------------------------------------------------------- transitions


def _set(s: State, job: MJob, **changes: Any) -> State:
    out = dict(s)
    out[job.id] = dataclasses.replace(job, **changes)
    return out


def key_holder(s: State, key: str) -> int | None:
    """The job a keyed enqueue returns: the lowest id among the live jobs with the key."""
    return next((j.id for j in s.values() if j.key == key and j.state in LIVE), None)


def enqueue(s: State, jid: int, name: str, payload: bytes, run_at: float, priority: int,
            max_attempts: int, key: str | None) -> State:
    out = dict(s)
    out[jid] = MJob(jid, name, payload, priority, run_at, max_attempts, key)
    return out


def due(s: State, now: float, names: Iterable[str] | None = None) -> MJob | None:
    """The job `lease` must hand out: priority, then run_at, then id."""
    wanted = None if names is None else set(names)
    ready = [j for j in s.values() if j.state == "pending" and j.run_at <= now
             and (wanted is None or j.name in wanted)]
    return min(ready, key=lambda j: (-j.priority, j.run_at, j.id), default=None)


def expired(s: State, now: float) -> list[MJob]:
    return [j for j in s.values() if j.state == "active" and j.expires is not None and j.expires <= now]


def expire(s: State, now: float, reason: str, everything: bool = False) -> State:
    """Leases ended (or, with `everything`, lost): pending due now, or dead when attempts are used up."""
    out = s
    for j in s.values():
        if j.state == "active" and (everything or (j.expires is not None and j.expires <= now)):
            dead = j.attempts >= j.max_attempts
            out = _set(out, j, state="dead" if dead else "pending", run_at=j.run_at if dead else now,
                       expires=None, last_error=reason)
    return out


def lose_leases(s: State, now: float) -> State:
    """What reopening does to the jobs of `s`."""
    return expire(s, now, "lease lost", everything=True)


def lease(s: State, jid: int, now: float, lease_time: float) -> State:
    j = s[jid]
    return _set(s, j, state="active", attempts=j.attempts + 1, expires=now + lease_time)


def ack(s: State, jid: int, result: bytes) -> State:
    return _set(s, s[jid], state="done", result=result, expires=None)


def fail(s: State, jid: int, error: str, retry: bool, now: float, backoff: Backoff) -> State:
    j = s[jid]
    if not retry or j.attempts >= j.max_attempts:
        return _set(s, j, state="dead", last_error=error, expires=None)
    return _set(s, j, state="pending", last_error=error, expires=None,
                run_at=now + backoff.delay(j.attempts))


def release(s: State, jid: int, now: float, delay: float) -> State:
    j = s[jid]
    return _set(s, j, state="pending", attempts=j.attempts - 1, run_at=now + delay, expires=None)


def cancel(s: State, jid: int) -> State:
    return _set(s, s[jid], state="cancelled")


def retry(s: State, jid: int, now: float) -> State:
    """A dead job pending again, due now, its attempts counted from 0 (its last error kept)."""
    return _set(s, s[jid], state="pending", attempts=0, run_at=now, expires=None)


def sweep(s: State, ids: Iterable[int]) -> State:
    gone = set(ids)
    return {jid: j for jid, j in s.items() if jid not in gone}


# -------------------------------------------------------------------- ledger


@dataclass
class Entry:
    label: str
    states: tuple[State, ...]  # alternatives; one unless the call's outcome is unknown
    seq: int | None  # the log's last sequence number after this entry, when known
    certain: bool = True  # False: a call that raised or crashed; it may or may not have happened


@dataclass
class Match:
    index: int
    alternative: int  # which of the entry's states
    state: State  # that state, every lease lost, without the jobs compaction swept
    swept: set[int] = field(default_factory=set)  # jobs a compaction cut short did sweep


@dataclass
class Ledger:
    entries: list[Entry] = field(default_factory=lambda: [Entry("created", ({},), 0)])
    durable: int = 0
    returned: int = 0
    swept: set[int] = field(default_factory=set)  # removed by a compaction that returned
    maybe_swept: set[int] = field(default_factory=set)  # by one that raised or crashed

    @property
    def state(self) -> State:
        return self.entries[self.returned].states[0]

    @property
    def last_seq(self) -> int:
        return max((e.seq for e in self.entries if e.seq is not None), default=0)

    def push(self, label: str, states: Iterable[State], seq: int | None, *, certain: bool = True) -> None:
        self.entries.append(Entry(label, tuple(states), seq, certain))
        if certain:
            self.returned = len(self.entries) - 1

    def acknowledge(self) -> None:
        """A sync() or close() succeeded: everything so far is durable."""
        self.durable = self.returned

    def claim(self, durable_seq: int) -> None:
        """The queue says every record up to `durable_seq` is fsynced."""
        for k in range(self.returned, self.durable, -1):
            seq = self.entries[k].seq
            if seq is not None and seq <= durable_seq:
                self.durable = k
                return

    def recovered(self, m: Match, seq: int, durable: bool) -> None:
        """Reopening settled on `m`: drop the lost entries and record the reopen."""
        del self.entries[m.index + 1:]
        for e in self.entries[self.returned + 1:]:
            e.certain = True
        entry = self.entries[m.index]
        entry.states = (entry.states[m.alternative],)
        self.swept |= m.swept  # a compaction cut short is settled now
        self.maybe_swept.clear()
        self.push("reopen", [m.state], seq)
        self.durable = min(self.durable, m.index)
        if durable:
            self.durable = self.returned

    # ------------------------------------------------------------- matching

    def match(self, observed: State, last_seq: int, now: float, floor: int,
              interrupted: bool = False) -> Match:
        """The latest entry >= floor the recovered jobs and sequence number agree with.

        `interrupted`: an earlier recovery died part way, so its EXPIRE records
        (and a rollover SEAL before them) may follow the entry's records.
        """
        seen = views(observed)
        for k in range(len(self.entries) - 1, floor - 1, -1):
            for alt, state in enumerate(self.entries[k].states):
                slack = sum(j.state == "active" for j in state.values()) + 1 if interrupted else 0
                if not self._seq_fits(k, last_seq, slack):
                    continue
                expected = lose_leases(state, now)
                if self._same(seen, expected):
                    kept = {jid: j for jid, j in expected.items() if jid in seen}
                    return Match(k, alt, kept, set(expected) - set(seen) - self.swept)
        raise Violation(self.diagnose(observed, last_seq, now, floor))

    def _same(self, seen: dict[int, tuple[Any, ...]], expected: State) -> bool:
        if any(jid in seen for jid in self.swept):
            return False
        want = {jid: j.view() for jid, j in expected.items() if jid not in self.swept}
        for jid in set(want) | set(seen):
            if jid in self.maybe_swept and jid not in seen:
                continue
            if want.get(jid) != seen.get(jid):
                return False
        return True

    def _seq_fits(self, k: int, last_seq: int, slack: int = 0) -> bool:
        """Could the log end at `last_seq` with entry k the last change replayed?"""
        lo = max((e.seq for e in self.entries[:k + 1] if e.seq is not None), default=0)
        if self.entries[k].seq is None:
            hi = min((e.seq - 1 for e in self.entries[k + 1:] if e.seq is not None), default=1 << 62)
        else:
            hi = lo
            for e in self.entries[k + 1:]:
                if e.seq is None:  # a call cut short: its rollover SEAL may be there
                    hi = lo + 1
                    break
                if e.seq > lo:
                    hi = e.seq - 1
                    break
        return lo <= last_seq <= max(lo, hi) + slack

    # ------------------------------------------------------------- diagnosis

    def diagnose(self, observed: State, last_seq: int, now: float, floor: int) -> str:
        """Why no entry matched, invariant by invariant, plus the nearest candidate's differences."""
        base = lose_leases(self.entries[floor].states[0], now)
        problems = self._lost_or_returned(base, observed, floor)
        problems += self._never_written(observed)
        durable_seq = max((e.seq for e in self.entries[:floor + 1] if e.seq is not None), default=0)
        if last_seq < durable_seq:
            problems.append(f"sequence numbers up to {durable_seq} were acknowledged but the recovered "
                            f"log ends at {last_seq}: they would be reused")
        problems.append(self._nearest(observed, last_seq, now, floor))
        history = "\n".join(f"    #{i} {e.label} seq={e.seq}"
                            for i, e in enumerate(self.entries))
        return ("recovered state matches no acceptable point of the history "
                f"(floor #{floor}, recovered last_seq {last_seq}):\n  - " + "\n  - ".join(problems) +
                f"\n  history:\n{history}")

    def _lost_or_returned(self, base: State, observed: State, floor: int) -> list[str]:
        out, label = [], self.entries[floor].label
        for jid, j in base.items():
            o = observed.get(jid)
            if o is None:
                if jid not in self.swept and jid not in self.maybe_swept:
                    out.append(f"job {jid} ({j.state}), durable since #{floor} {label}, is lost")
            elif j.state in FINAL and o.state != j.state:
                out.append(f"job {jid} was durably {j.state} but came back {o.state}")
            elif j.state == "pending" and o.state == "pending" and o.attempts < j.attempts:
                out.append(f"job {jid}: attempt count went back from {j.attempts} to {o.attempts}")
        return out

    def _never_written(self, observed: State) -> list[str]:
        out, known = [], self._all_versions()
        for jid, o in observed.items():
            versions = known.get(jid)
            if versions is None:
                out.append(f"job {jid} appears but was never written")
            elif (o.name, o.payload, o.key) not in {(v.name, v.payload, v.key) for v in versions}:
                out.append(f"job {jid} has a name/payload/key that was never written: "
                           f"{o.name!r} {o.payload[:32]!r} {o.key!r}")
        return out

    def _all_versions(self) -> dict[int, list[MJob]]:
        out: dict[int, list[MJob]] = {}
        for e in self.entries:
            for s in e.states:
                for jid, j in s.items():
                    out.setdefault(jid, []).append(j)
        return out

    def _nearest(self, observed: State, last_seq: int, now: float, floor: int) -> str:
        seen, best = views(observed), None
        for k in range(floor, len(self.entries)):
            for state in self.entries[k].states:
                want = views(lose_leases(state, now))
                diff = [(jid, want.get(jid), seen.get(jid)) for jid in sorted(set(want) | set(seen))
                        if want.get(jid) != seen.get(jid) and jid not in self.maybe_swept]
                if best is None or len(diff) < len(best[1]):
                    best = (k, diff)
        assert best is not None
        k, diff = best
        fits = "fits" if self._seq_fits(k, last_seq) else "does NOT fit"
        lines = [f"nearest candidate #{k} {self.entries[k].label} (last_seq {last_seq} {fits}); "
                 "differences (job: expected / recovered), fields = "
                 "(id, state, attempts, name, payload, priority, max_attempts, key, last_error, "
                 "result, run_at, expires):"]
        lines += [f"      {jid}: {w} / {s}" for jid, w, s in diff[:8]]
        return "\n".join(lines)
