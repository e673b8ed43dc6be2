"""The driver: one logq Queue on a SimFS, every call accounted for in a Ledger.

Theory of operation
-------------------
Each operation method makes one queue call in three steps: compute from the
model every state the call may lead to, keyed by the result it would return
(`Outcomes`); make the call; record what happened:

* it returned: check the result against the model, push the state, mark it
  durable when the mode says so (`always`) and as far as the queue's own
  `stats().durable_seq` claims;
* it raised after an injected EIO: push the possible states as uncertain and
  mark the queue poisoned - from now until a reopen every call must raise,
  close() included (spec/semantics.md guarantee 10), and one that returns is
  a violation, as is a call that returns although an EIO hit it;
* it hit an armed crash point (the SimFS is `halted`, whatever the call
  returned or raised): push the possible states as uncertain, then crash
  with the armed fault and reopen - or, with `defer_crashes`, raise
  `Crashed` so the crash-point enumerator can try every fault on copies of
  this very moment (`clone`).

`crash` ends the process with a fault and reopens; `reopen` closes cleanly
and reopens. Reopening checks the recovered jobs against the ledger
(`Ledger.match`), then recovers a copy of the files once more and requires
the same jobs, the same last sequence number and nothing left to repair.
A crash may also be armed inside recovery (`recovery_crash`): the first
recovery dies after that many file operations, a second fault hits, and the
next recovery must still satisfy every invariant.

A killed process's threads die with it: `_kill` stops the batch-mode syncer
of an abandoned queue (the only thread it has with `compact_threshold=None`)
so that it cannot touch the simulated files of the next process.
"""

from __future__ import annotations

import copy
import inspect
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from logq import Backoff, CorruptionError, InvalidTransition, LogqError, Queue
from logq.log.checkpoint import NAME as CHECKPOINT
from logq.log import mark
from logq.log.checkpoint import decode as decode_checkpoint
from logq.log.codec import SEGMENT_HEADER_SIZE
from logq.log.recovery import Evidence
from logq.log.segment import parse_segment_name
from logq.testing import FakeClock

from . import oracle as m
from .oracle import Ledger, State, Violation
from .simfs import FAULTS, POWER_FAULTS, SimFS

BACKOFF = Backoff(base=1, factor=2, max=8, jitter=0)
DAMAGE_FAULTS = ("seal_flip", "seal_truncate", "durable_flip", "durable_cut")
# Leaders move the durable mark after every 512 bytes made durable (the library: 256 KiB), so
# that the small workloads here write marks, crash inside them, and draw damage before them.
mark.MARK_BYTES = 512
ALL_FAULTS = FAULTS + DAMAGE_FAULTS

Outcomes = Mapping[Any, State]  # expected result -> state after the call


class Crashed(Exception):
    """A crash point was hit and `defer_crashes` asked the driver to stop there."""


@dataclass(frozen=True)
class Config:
    sync: str = "always"
    seed: int = 0
    segment_size: int = 4096
    path: str = "/sim/q"


@dataclass(frozen=True)
class Armed:
    """A crash point armed for the next calls, and what happens when it is hit."""

    fault: str
    seed: int
    recovery_crash: int | None = None
    fault2: str = "kill9"


def queue_options(config: Config, fs: SimFS, clock: FakeClock) -> dict[str, Any]:
    """Queue options for the harness; no background compaction, retention 0 when supported."""
    opts: dict[str, Any] = dict(sync=config.sync, sync_interval=60.0, segment_size=config.segment_size,
                                clock=clock, backoff=BACKOFF, fs=fs)
    params = inspect.signature(Queue).parameters
    for name, value in (("compact_threshold", None), ("retain_done", 0.0), ("retain_dead", 0.0)):
        if name in params:
            opts[name] = value
    return opts


def snapshot(q: Queue) -> State:
    return {i.id: m.from_info(i) for i in q.jobs(limit=None)}


class Driver:
    """A queue on simulated files, checked against the model after every call and reopen."""

    def __init__(self, config: Config, *, defer_crashes: bool = False) -> None:
        self.cfg = config
        self.fs = SimFS(config.seed)
        self.clock = FakeClock()
        self.ledger = Ledger()
        self.q: Queue | None = None
        self.poisoned = False
        self.armed: Armed | None = None
        self.defer = defer_crashes
        self.trace: list[str] = []

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Create the queue (its first open is checked like any reopen)."""
        self.trace.append("start")
        self._recover(0, power=True)

    def close(self) -> None:
        """Release everything (test teardown); checks nothing."""
        self.fs.disarm()
        if self.q is not None:
            self._kill(self.q)
            try:
                self.q.close()
            except (LogqError, OSError):
                pass
            self.q = None

    def clone(self) -> "Driver":
        """A driver on a copy of the files and the ledger as they are now."""
        other = Driver(self.cfg, defer_crashes=False)
        other.fs = self.fs.fork()
        other.clock = FakeClock(self.clock.time())
        other.ledger = copy.deepcopy(self.ledger)
        other.trace = list(self.trace)
        return other

    @property
    def state(self) -> State:
        return self.ledger.state

    def active(self) -> list[int]:
        return sorted(j.id for j in self.state.values() if j.state == "active")

    def dead(self) -> list[int]:
        return sorted(j.id for j in self.state.values() if j.state == "dead")

    def queue(self) -> Queue:
        assert self.q is not None, "no open queue"
        return self.q

    # --------------------------------------------------------------- operations

    def enqueue(self, name: str, payload: bytes, *, delay: float = 0.0, priority: int = 0,
                max_attempts: int = 3, key: str | None = None) -> None:
        s, now = self.state, self.clock.time()
        held = m.key_holder(s, key) if key is not None else None
        if held is not None:
            outcomes: dict[Any, State] = {held: s}
        else:
            outcomes = {jid: m.enqueue(s, jid, name, payload, now + delay, priority, max_attempts, key)
                        for jid in self._next_ids(1)}
        self._call(f"enqueue({name!r}, {len(payload)}B, delay={delay}, prio={priority}, "
                   f"max={max_attempts}, key={key!r})",
                   lambda: self.queue().enqueue(name, payload, delay=delay, priority=priority,
                                                max_attempts=max_attempts, key=key), outcomes)

    def enqueue_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        s, now = self.state, self.clock.time()
        outcomes = {}
        for first in self._next_ids(1):
            ids = tuple(range(first, first + len(items)))
            after = s
            for jid, (name, payload) in zip(ids, items):
                after = m.enqueue(after, jid, name, payload, now, 0, 3, None)
            outcomes[ids] = after
        self._call(f"enqueue_many({len(items)} jobs)",
                   lambda: self.queue().enqueue_many(list(items)), outcomes, key=tuple)

    def lease(self, names: Sequence[str] | None = None, lease_time: float = 10.0) -> None:
        s0, now = self.state, self.clock.time()
        gone = m.expired(s0, now)
        s1 = m.expire(s0, now, "lease expired")
        job = m.due(s1, now, names)
        outcomes = {None: s1} if job is None else {job.id: m.lease(s1, job.id, now, lease_time)}
        before = [(f"expire {[j.id for j in gone]} (in lease)", s1)] if gone else []

        def check(result: Any) -> None:
            if result is not None and job is not None:
                want = (job.name, job.payload, job.attempts + 1)
                if (result.name, result.payload, result.attempts) != want:
                    raise Violation(f"lease returned {result!r}, the model expected {want!r}")
        self._call(f"lease(names={names}, lease_time={lease_time})",
                   lambda: self.queue().lease(names, lease_time=lease_time), outcomes,
                   key=lambda r: None if r is None else r.id, check=check, before=before)

    def lease_many(self, n: int, lease_time: float = 10.0) -> None:
        s0, now = self.state, self.clock.time()
        gone = m.expired(s0, now)
        s = m.expire(s0, now, "lease expired")
        before = [(f"expire {[j.id for j in gone]} (in lease_many)", s)] if gone else []
        taken: list[Any] = []
        while len(taken) < n:
            job = m.due(s, now, None)
            if job is None:
                break
            taken.append(job)
            s = m.lease(s, job.id, now, lease_time)

        def check(result: Any) -> None:
            got = [(j.id, j.name, j.payload, j.attempts) for j in result]
            want = [(j.id, j.name, j.payload, j.attempts + 1) for j in taken]
            if got != want:
                raise Violation(f"lease_many returned {got!r}, the model expected {want!r}")
        self._call(f"lease_many({n}, lease_time={lease_time})",
                   lambda: self.queue().lease_many(n, lease_time=lease_time),
                   {tuple(j.id for j in taken): s},
                   key=lambda r: tuple(j.id for j in r), check=check, before=before)

    def ack(self, jid: int, result: bytes = b"") -> None:
        self._call(f"ack({jid})", lambda: self.queue().ack(jid, result=result),
                   {None: m.ack(self.state, jid, result)})

    def ack_many(self, jids: Sequence[int]) -> None:
        after = self.state
        for jid in jids:
            after = m.ack(after, jid, b"")
        self._call(f"ack_many({list(jids)})", lambda: self.queue().ack_many(list(jids)), {None: after})

    def fail(self, jid: int, retry: bool = True) -> None:
        after = m.fail(self.state, jid, "err", retry, self.clock.time(), BACKOFF)
        self._call(f"fail({jid}, retry={retry})", lambda: self.queue().fail(jid, "err", retry=retry),
                   {None: after})

    def release(self, jid: int, delay: float = 0.0) -> None:
        after = m.release(self.state, jid, self.clock.time(), delay)
        self._call(f"release({jid}, delay={delay})", lambda: self.queue().release(jid, delay=delay),
                   {None: after})

    def cancel(self, jid: int) -> None:
        if self.state[jid].state == "pending":
            self._call(f"cancel({jid})", lambda: self.queue().cancel(jid), {None: m.cancel(self.state, jid)})
        else:
            self._refused(f"cancel({jid}) of a {self.state[jid].state} job", lambda: self.queue().cancel(jid))

    def retry(self, jid: int) -> None:
        self._call(f"retry({jid})", lambda: self.queue().retry(jid), {None: m.retry(self.state, jid, self.clock.time())})

    def expire_leases(self) -> None:
        s, now = self.state, self.clock.time()
        count = len(m.expired(s, now))
        self._call("expire_leases()", lambda: self.queue().expire_leases(),
                   {count: m.expire(s, now, "lease expired")})

    def advance(self, seconds: float) -> None:
        self.trace.append(f"advance({seconds})")
        self.clock.advance(seconds)

    def sync(self) -> None:
        self.trace.append("sync()")
        injected = self.fs.stats.injected
        _, error = self._attempt(lambda: self.queue().sync())
        if self.fs.halted:
            self._on_crash()
            return
        if error is not None:
            self._failed("sync()", error, injected, {})
            return
        self._no_ack_after_error("sync()", None, injected)
        self.ledger.acknowledge()

    def compact(self) -> None:
        """Compaction (when the Queue has it): only final jobs may go, and they stay gone."""
        if not hasattr(Queue, "compact"):
            return
        self.trace.append("compact()")
        s, injected = self.state, self.fs.stats.injected
        final = {jid for jid, j in s.items() if j.state in m.FINAL}
        report, error = self._attempt(lambda: getattr(self.queue(), "compact")())
        if self.fs.halted:
            self.ledger.maybe_swept |= final
            self._on_crash()
            return
        if error is not None:
            self.ledger.maybe_swept |= final
            self._failed("compact()", error, injected, {})
            self._compaction_poisoned(error)
            return
        self._no_ack_after_error("compact()", report, injected)
        self._swept(s, final, report)

    def _compaction_poisoned(self, error: BaseException) -> None:
        """An EIO before compaction's commit point (C2) may leave the log usable: only a
        private temp file was hit. Ask the log (a sync) instead of assuming it is poisoned."""
        if (isinstance(error, LogqError) and not isinstance(error, OSError)) or not self.poisoned:
            return  # an OSError, named (FileAccessError) or not, may have hit only the temp file
        _, probe = self._attempt(lambda: self.queue().sync())
        if self.fs.halted:
            self._on_crash()
        elif probe is None:
            self.trace.append("  compaction failed before its commit point; the log stays usable")
            self.poisoned = False
            self.ledger.acknowledge()

    def _swept(self, s: State, final: set[int], report: Any) -> None:
        gone = set(s) - set(snapshot(self.queue()))
        if gone - final:
            raise Violation(f"compaction removed jobs that were not final: {sorted(gone - final)}")
        if len(gone) != getattr(report, "jobs_swept", len(gone)):
            raise Violation(f"compaction reports {report.jobs_swept} jobs swept, {len(gone)} vanished")
        self.ledger.swept |= gone
        self._returned("compact()", m.sweep(s, gone), [])

    # ------------------------------------------------------------ fault rules

    def arm_eio(self, kind: str, nth: int) -> None:
        self.trace.append(f"arm EIO on {kind} #{nth}")
        self.fs.fail(kind, nth)

    def arm_crash(self, nth: int, armed: Armed) -> None:
        self.trace.append(f"arm crash after {nth} more file operations: {armed}")
        self.fs.crash_after(self.fs.ops + nth)
        self.armed = armed

    def crash(self, fault: str, seed: int, recovery_crash: int | None = None, fault2: str = "kill9") -> bool:
        """Crash now with `fault`, reopen and check; False if `recovery_crash` was never reached."""
        self.trace.append(f"crash({fault}, seed={seed}, recovery_crash={recovery_crash}, fault2={fault2})")
        self.fs.disarm()
        self.armed = None
        self._kill(self.q)
        return self._die_and_recover(fault, seed, recovery_crash, fault2)

    def reopen(self) -> None:
        """Close cleanly (everything durable, unless poisoned) and open again."""
        self.trace.append("reopen()")
        self.fs.disarm()
        self.armed = None
        try:
            self.queue().close()
            closed = True
        except (LogqError, OSError):
            closed = False
        if closed and self.poisoned:
            raise Violation("close() returned normally after an I/O error poisoned the queue: "
                            "it promises everything is durable, and it is not")
        if closed and not self.poisoned:
            self.ledger.acknowledge()
        self._kill(self.q)
        self.q, self.poisoned = None, False
        self._recover(self.ledger.returned, power=False)

    # ----------------------------------------------------------------- checks

    def check_live(self) -> None:
        """The open queue agrees with the model (skipped while poisoned)."""
        if self.q is None or self.poisoned:
            return
        seen, want = m.views(snapshot(self.q)), m.views(self.state)
        if seen != want:
            diff = {jid: (want.get(jid), seen.get(jid)) for jid in set(seen) | set(want)
                    if seen.get(jid) != want.get(jid)}
            raise Violation(f"live queue disagrees with the model (expected, actual): {diff}")

    # -------------------------------------------------------- call bookkeeping

    def _call(self, label: str, fn: Callable[[], Any], outcomes: Outcomes, *,
              key: Callable[[Any], Any] = lambda r: r, check: Callable[[Any], None] | None = None,
              before: list[tuple[str, State]] | None = None) -> None:
        self.trace.append(label)
        injected = self.fs.stats.injected
        result, error = self._attempt(fn)
        if self.fs.halted:
            self._push_uncertain(label, outcomes, before)
            self._on_crash()
            return
        if error is not None:
            self._failed(label, error, injected, outcomes, before)
            return
        self._no_ack_after_error(label, result, injected)
        if key(result) not in outcomes:
            raise Violation(f"{label} returned {result!r}; the model expected one of {list(outcomes)}")
        if check is not None:
            check(result)
        self._returned(label, outcomes[key(result)], before or [])

    @staticmethod
    def _attempt(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
        try:
            return fn(), None
        except (LogqError, OSError) as exc:
            return None, exc

    def _refused(self, label: str, fn: Callable[[], Any]) -> None:
        self.trace.append(label)
        try:
            fn()
        except InvalidTransition:
            return
        except LogqError:
            if self.poisoned:
                return
            raise
        raise Violation(f"{label} was accepted; only pending jobs can be cancelled")

    def _returned(self, label: str, state: State, before: list[tuple[str, State]]) -> None:
        stats, wrote_before = self.queue().stats(), self.ledger.last_seq
        for lbl, s in before:
            self.ledger.push(lbl, [s], None)
        self.ledger.push(label, [state], stats.last_seq)
        if self.cfg.sync == "always" and stats.last_seq > wrote_before:  # a call that wrote nothing fsyncs nothing
            self.ledger.durable = self.ledger.returned
        self._check_sealed_durable()
        self.ledger.claim(stats.durable_seq)

    def _push_uncertain(self, label: str, outcomes: Outcomes, before: list[tuple[str, State]] | None) -> None:
        for lbl, s in before or []:
            self.ledger.push(lbl + " (cut short)", [s], None, certain=False)
        if outcomes:
            self.ledger.push(label + " (cut short)", list(outcomes.values()), None, certain=False)

    def _failed(self, label: str, exc: BaseException, injected: int, outcomes: Outcomes,
                before: list[tuple[str, State]] | None = None) -> None:
        if self.poisoned:
            return
        if self.fs.stats.injected == injected:
            raise Violation(f"{label} raised {exc!r} with no fault injected") from exc
        self.trace.append(f"  -> {type(exc).__name__}: {exc}")
        self.poisoned = True
        self._push_uncertain(label, outcomes, before)

    def _no_ack_after_error(self, label: str, result: Any, injected: int) -> None:
        if self.poisoned:
            raise Violation(f"{label} returned {result!r} after an injected I/O error poisoned the "
                            "queue: nothing may be acknowledged until it is reopened")
        if self.fs.stats.injected > injected:
            raise Violation(f"{label} returned {result!r} although an injected I/O error hit it")

    def _next_ids(self, n: int) -> list[int]:
        """The ids a new job may get: the next sequence number, or the one after a rollover's SEAL."""
        last = self.ledger.last_seq
        return [last + 1, last + 2]

    # ----------------------------------------------------------------- crashes

    def _on_crash(self) -> None:
        self._kill(self.q)
        if self.defer:
            raise Crashed(self.fs.trace[-1][0] if self.fs.trace else "crash")
        armed, self.armed = self.armed or Armed("kill9", 0), None
        self._die_and_recover(armed.fault, armed.seed, armed.recovery_crash, armed.fault2)

    def _die_and_recover(self, fault: str, seed: int, recovery_crash: int | None, fault2: str) -> bool:
        rng = random.Random(seed)
        self.q, self.poisoned = None, False
        self.fs.crash("kill9" if fault in DAMAGE_FAULTS else fault, rng)
        if fault in DAMAGE_FAULTS:
            self._refuse_damage(fault, rng)
        floor = self.ledger.durable if fault in POWER_FAULTS else self.ledger.returned
        return self._recover(floor, power=fault in POWER_FAULTS, recovery_crash=recovery_crash,
                             fault2=fault2, rng=rng)

    def _recover(self, floor: int, *, power: bool, recovery_crash: int | None = None,
                 fault2: str = "kill9", rng: random.Random | None = None) -> bool:
        """Open, check against the ledger and for idempotence; True if the recovery crash point was hit."""
        hit = False
        if recovery_crash is not None:
            self.fs.crash_after(self.fs.ops + recovery_crash)
        injected = self.fs.stats.injected
        q, error = self._attempt(lambda: self._open(self.fs))
        if error is not None and self.fs.stats.injected > injected and not self.fs.halted:
            self.trace.append(f"  open failed on the injected EIO ({error}); opening again")
            self.fs.disarm(crash=False)
            q, error = self._attempt(lambda: self._open(self.fs))
        if self.fs.halted:
            self._kill(q)
            if recovery_crash is None:  # a crash point armed before the first open
                if self.defer:
                    raise Crashed("crash in the first open")
                raise AssertionError("crash point hit outside a call") from error
            hit = True
            self.trace.append(f"  crashed inside recovery after op {self.fs.ops}; then {fault2}")
            self.fs.crash(fault2, rng)
            if fault2 in POWER_FAULTS:
                floor, power = min(floor, self.ledger.durable), True
            else:
                power = False
            q, error = self._attempt(lambda: self._open(self.fs))
        if error is not None:
            raise Violation(f"recovery failed: {type(error).__name__}: {error}") from error
        if recovery_crash is not None:
            self.fs.crash_after(None)  # the recovery ended before its crash point
        self.q = q
        self._check_recovered(q, floor, power, hit)
        return hit

    def _check_sealed_durable(self) -> None:
        """Every segment but the last must be durable, or a power loss leaves the log unopenable."""
        for path in self._sealed_segments():
            if self.fs.synced(path):
                continue
            raise Violation(f"{path} is followed by another segment but holds unsynced bytes (its "
                            "SEAL?): a power loss now leaves a log that does not open")

    def _check_recovered(self, q: Queue, floor: int, power: bool, interrupted: bool) -> None:
        observed = snapshot(q)
        match = self.ledger.match(observed, q.recovery.last_seq, self.clock.time(), floor, interrupted)
        lost_leases = any(j.state == "active" for j in
                          self.ledger.entries[match.index].states[match.alternative].values())
        stats = q.stats()
        self.ledger.recovered(match, stats.last_seq, durable=lost_leases or power)
        self._check_sealed_durable()
        self.ledger.claim(stats.durable_seq)
        self._check_idempotent(q, observed)

    def _check_idempotent(self, q: Queue, observed: State) -> None:
        again = self._open(self.fs.fork())
        try:
            self._check_replay_agrees(again)
            if m.views(snapshot(again)) != m.views(observed):
                raise Violation("recovering a second time gives other jobs than recovering once")
            if again.recovery.torn:
                raise Violation(f"a second recovery still cut a torn tail: {again.recovery.torn}")
            if again.recovery.last_seq != q.stats().last_seq:
                raise Violation(f"a second recovery ends at seq {again.recovery.last_seq}, "
                                f"the first at {q.stats().last_seq}")
        finally:
            again.close()

    def _check_replay_agrees(self, restored: Queue) -> None:
        """The index opened from the checkpoint (if there is one) equals the one a full replay
        of the same files gives, unique keys included (spec/semantics.md guarantees 8, 12)."""
        fs = self.fs.fork()
        checkpoint = f"{self.cfg.path}/{CHECKPOINT}"
        if fs.exists(checkpoint):
            fs.unlink(checkpoint)
        replayed = self._open(fs)
        try:
            now = self.clock.time()
            a, b = m.index_view(restored._backend._index, now), m.index_view(replayed._backend._index, now)
            if a != b:
                raise Violation("the index restored from the checkpoint differs from a full replay "
                                f"(restored / replayed): {m.first_difference(a, b)}")
        finally:
            replayed.close()

    def _refuse_damage(self, fault: str, rng: random.Random) -> None:
        """Damage at rest: a sealed segment, or the last one before its durable end (what the
        durable mark or the checkpoint say was fsynced: damage followed by valid records
        there is never a torn tail). Opening must refuse it and change nothing; then undo."""
        if not self.fs.isdir(self.cfg.path) or any(
                n.endswith((".swap", ".compacting")) for n in self.fs.listdir(self.cfg.path)):
            return  # a committed compaction may legitimately replace the damaged file
        if fault.startswith("durable"):
            path, durable_end = self._durable_last_segment()
            if durable_end <= SEGMENT_HEADER_SIZE:
                return
            original = self.fs.read_file(path)
            damaged, where = _damage(original[:durable_end], fault.replace("durable", "seal"), rng)
            damaged += original[durable_end:] if fault == "durable_flip" else b""
        else:
            sealed = self._sealed_segments()
            if not sealed:
                return
            path = rng.choice(sealed)
            original = self.fs.read_file(path)
            damaged, where = _damage(original, fault, rng)
        self.trace.append(f"  {fault} in {path}: {where}")
        self.fs.replace_at_rest(path, damaged)
        before = self.fs.image()
        try:
            q = self._open(self.fs)
        except CorruptionError:
            pass
        else:
            q.close()
            raise Violation(f"{fault} in segment {path} ({where}) was accepted by recovery")
        if _segments(self.fs.image()) != _segments(before):
            raise Violation(f"an open refused for corruption ({fault}, {where}) changed the segments")
        self._salvage_opens(f"{fault} in segment {path} ({where})")
        self.fs.replace_at_rest(path, original)

    def _salvage_opens(self, damage: str) -> None:
        """On a copy of the damaged files, `salvage=True` opens (spec/semantics.md guarantee 13)."""
        try:
            Queue(self.cfg.path, salvage=True, **queue_options(self.cfg, self.fs.fork(), self.clock)).close()
        except (LogqError, OSError) as exc:
            raise Violation(f"salvage=True refused to open after {damage}: {exc!r}") from exc

    def _durable_last_segment(self) -> tuple[str, int]:
        """The last segment and how far the evidence (mark, checkpoint) says it was durable."""
        names = sorted((b, n) for n in self.fs.listdir(self.cfg.path) if (b := parse_segment_name(n)) is not None)
        if not names:
            return "", 0
        files = self.fs.image()
        data = files.get(f"{self.cfg.path}/{mark.NAME}")
        cp = None
        try:
            raw = files.get(f"{self.cfg.path}/{CHECKPOINT}")
            cp = decode_checkpoint(raw) if raw is not None else None
        except CorruptionError:
            pass
        ev = Evidence.of(mark.decode(data) if data is not None else None, cp)
        base, name = names[-1]
        return f"{self.cfg.path}/{name}", ev.end_of(base)

    def _sealed_segments(self) -> list[str]:
        if not self.fs.isdir(self.cfg.path):
            return []
        names = sorted((b, n) for n in self.fs.listdir(self.cfg.path) if (b := parse_segment_name(n)) is not None)
        return [f"{self.cfg.path}/{n}" for _, n in names[:-1]]

    def _open(self, fs: SimFS) -> Queue:
        return Queue(self.cfg.path, **queue_options(self.cfg, fs, self.clock))

    @staticmethod
    def _kill(q: Queue | None) -> None:
        """Stop the background syncer of a queue a crash abandoned (its threads die with it)."""
        commits = getattr(getattr(getattr(q, "_backend", None), "_log", None), "_commits", None)
        if commits is not None:
            commits.stopping.set()


def _damage(data: bytes, fault: str, rng: random.Random) -> tuple[bytes, str]:
    if fault == "seal_flip":
        offset, bit = rng.randrange(len(data)), rng.randrange(8)
        out = bytearray(data)
        out[offset] ^= 1 << bit
        return bytes(out), f"bit {bit} of byte {offset} flipped"
    size = rng.randrange(len(data))
    return data[:size], f"truncated from {len(data)} to {size} bytes"


def _segments(image: dict[str, bytes]) -> dict[str, bytes]:
    """The segment files of an image (a refused open may still drop an uncommitted temp file)."""
    return {p: b for p, b in image.items() if p.endswith(".seg")}
