"""Group commit: callers that asked for an fsync share one (append protocol steps 3 and 4).

Theory of operation
-------------------
  3. Mode `always`: the caller waits until a fdatasync covers its last record.
     Callers form cohorts: a caller parks on a gate of its own while a sync
     is in flight or while its cohort is still filling (as many callers as
     the last sync covered; for at most three times as long as the last
     cohort took to fill, within GATHER_SECONDS). The caller that fills
     the cohort leads: it writes everything pending in one write
     (`Writer.flush_locked`), notes the last written sequence number,
     fdatasyncs outside the lock and wakes the callers the sync covered, one
     after another.
  4. Mode `batch`: a background thread does step 3 at most every
     `sync_interval` seconds while there are unsynced records.
A failed fdatasync poisons the log (`Writer.poison`) and is never retried,
because the kernel may already have dropped the dirty pages.

Every field here is guarded by the log's lock (`Writer.lock`, see
`writer.py`); `cond` is a condition on that lock, notified whenever a sync
in flight ends (rollover and close wait on it).
"""

from __future__ import annotations

import threading
import weakref
from _thread import LockType, allocate_lock as _allocate_lock
from collections import deque
from time import monotonic as _monotonic

from ..errors import ClosedError, WriterFailedError
from .mark import MarkWriter
from .turns import Turns
from .writer import Appended, Writer

GATHER_SECONDS = (0.00005, 0.001)  # bounds of how long a parked caller waits for its cohort to fill


class GroupCommit:
    """The fsyncs of one log: who waits for which sequence number, who leads the next sync."""

    def __init__(self, writer: Writer, *, sync_interval: float, marks: MarkWriter | None = None,
                 turns: Turns | None = None) -> None:
        self._writer = writer
        self._turns = turns  # when other processes share the log: their fsyncs count too
        self._marks = marks  # the durable mark, moved on by a leader now and then (mark.py)
        self._lock = writer.lock
        self.cond = threading.Condition(self._lock)
        self.sync_interval = sync_interval
        self.synced_seq = writer.written_seq  # the highest sequence number known to be fsynced
        self.syncing = False  # a leader is between flushing and the end of its lead
        self._waiters: list[tuple[int, LockType]] = []  # (sequence number, gate) parked in sync_through
        self._chain: deque[LockType] = deque()  # gates of synced callers not yet woken
        self._cohort = 1  # callers the next sync waits for: as many as the last one covered
        self._gather = GATHER_SECONDS[1]  # how long they wait: 3x the time the last cohort took to fill
        self._lead_ended = 0.0  # time.monotonic() when the last sync woke its callers
        self._syncer: threading.Thread | None = None
        self.stopping = threading.Event()

    def commit(self, appended: Appended) -> None:
        """Step 3: return once `appended` is as durable as its mode promised."""
        if appended.sync == "always":
            self.sync_through(appended.last_seq)
        elif self._writer.failed is not None:
            raise self._writer.failure()

    def sync(self) -> None:
        """Make every record appended so far durable."""
        with self._lock:
            self._writer.check_usable()
            last = self._writer.next_seq - 1
        self.sync_through(last)

    def sync_through(self, seq: int) -> None:
        """Return once every record up to `seq` is fsynced (group commit).

        Callers gather into cohorts: each parks on a gate of its own until a
        sync covers it, and the caller that completes the cohort (as many
        callers as the last sync covered) leads the next sync. A cohort that
        does not fill in time (`_gather`) shrinks to the callers present, so a
        caller that joined once does not hold the others back for long.
        """
        lock, writer = self._lock, self._writer
        turns = self._turns
        if turns is not None and turns.shared and turns.durable_elsewhere() >= seq:
            return  # another process's fsync covered it
        lock.acquire()
        while True:
            if self.synced_seq >= seq:
                lock.release()
                return
            if writer.failed is not None or writer.closed:
                lock.release()
                writer.check_usable()
            if not self.syncing and len(self._waiters) + 1 >= self._cohort:
                took = 3 * (_monotonic() - self._lead_ended)  # the cohort filled: learn how fast
                self._gather = min(max(took, GATHER_SECONDS[0]), GATHER_SECONDS[1])
                break
            gate = _allocate_lock()
            gate.acquire()
            waiter = (seq, gate)
            self._waiters.append(waiter)
            # behind a sync in flight, the longest wait: a slow fsync should not wake it often
            wait = GATHER_SECONDS[1] if self.syncing else self._gather
            lock.release()
            woken = gate.acquire(True, wait)
            lock.acquire()
            if not woken and gate in self._chain:  # covered just as it timed out: not a link now
                self._chain.remove(gate)
            if self._chain:  # every caller that wakes passes the wake-up on
                self._wake_next_locked()
            if not woken and waiter in self._waiters:  # the cohort did not fill: lead those present
                self._waiters.remove(waiter)
                if not self.syncing:
                    self._cohort = len(self._waiters) + 1
        self.syncing = True
        self._lead()

    def _lead(self) -> None:
        """Step 3 as leader: entered holding the lock with `syncing` claimed; returns
        without the lock once the sync is done and the callers it covered are woken."""
        lock, writer = self._lock, self._writer
        try:
            writer.flush_locked()
        except BaseException:
            self._end_lead_locked()
            lock.release()
            raise
        target, f, base, end = writer.written_seq, writer.active, writer.segments[-1].base, writer.end
        lock.release()
        turns = self._turns
        try:
            fsynced = True
            if turns is not None and turns.shared:  # another process's fsync may have covered it
                covered, fsynced = turns.fsync_shared(f, target, base)
                target = max(target, covered)
            else:
                f.fdatasync()
            if fsynced and self._marks is not None and self._marks.due(base, end):
                self._marks.write(base, end, target)
        except OSError as exc:
            with lock:
                writer.poison(exc)
                self._end_lead_locked()
            raise writer.failure() from exc
        with lock:
            if target > self.synced_seq:
                self.synced_seq = target
            covered = self._wake_covered_locked()
            self._cohort = covered + 1 + len(self._waiters)
            self._lead_ended = _monotonic()
            self._end_lead_locked()
        if self._turns is not None:
            self._turns.publish_durable(target)

    def _end_lead_locked(self) -> None:
        self.syncing = False
        self.cond.notify_all()  # rollover and close wait for the sync in flight

    # ------------------------------------------------- what the writer asks (SyncHooks)

    def idle_locked(self) -> None:
        """Return once no sync is in flight (waits on `cond`, which releases the lock)."""
        while self.syncing:
            self.cond.wait()

    def sealed_locked(self, seq: int) -> None:
        """A SEAL's fsync made every record up to `seq` durable: wake whom it covers."""
        self.synced_seq = seq
        self._wake_covered_locked()

    def _wake_covered_locked(self) -> int:
        """Wake the parked callers whose records are synced; return how many.

        They are woken one after another: each, once running, wakes the next
        (`_wake_next_locked`), so they do not all wake at once only to queue
        for the interpreter lock.
        """
        synced, keep, chain = self.synced_seq, [], self._chain
        for waiter in self._waiters:
            if waiter[0] <= synced:
                chain.append(waiter[1])
            else:
                keep.append(waiter)
        woken = len(self._waiters) - len(keep)
        self._waiters = keep
        if chain:
            self._wake_next_locked()
        return woken

    def _wake_next_locked(self) -> None:
        """Release the next gate of the wake-up chain. (A caller's own gate is never in
        it: a woken gate was taken off before its release, and one that timed out is
        removed by its caller.)"""
        if self._chain:
            self._chain.popleft().release()

    def wake_all_locked(self) -> None:
        """Wake every parked caller (the log failed or closed: they raise)."""
        for _, gate in self._waiters:
            gate.release()
        self._waiters = []
        while self._chain:
            self._chain.popleft().release()

    # ------------------------------------------------------------- batch mode

    def start_syncer(self) -> None:
        """Step 4: start the background fsync of `batch` mode (it holds this object weakly, so
        that a log dropped without close is freed)."""
        self._syncer = threading.Thread(target=_sync_loop, args=(weakref.ref(self), self.stopping,
                                                                 self.sync_interval),
                                        name="logq-sync", daemon=True)
        self._syncer.start()

    def stop_syncer(self) -> None:
        """Stop the background fsync (if any) and wait for it, unless called from it."""
        self.stopping.set()
        if self._syncer is not None and self._syncer is not threading.current_thread():
            self._syncer.join()

    def sync_if_dirty(self) -> bool:
        """One round of the background fsync; False once the log failed or closed."""
        with self._lock:
            dirty = self._writer.written_seq > self.synced_seq and self._writer.failed is None
            last = self._writer.written_seq
        if dirty:
            try:
                self.sync_through(last)
            except (WriterFailedError, ClosedError):
                return False
        return True


def _sync_loop(ref: "weakref.ref[GroupCommit]", stopping: threading.Event, interval: float) -> None:
    while not stopping.wait(interval):
        commits = ref()
        if commits is None or not commits.sync_if_dirty():
            return
        del commits
