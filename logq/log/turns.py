"""Turns: which process may change a log that several processes have open.

Theory of operation
-------------------
Any number of processes (and `Log` objects in one process) may open a log
directory at once (spec/format.md §14). The log is the truth and each
opener's picture of it (the caller's index) follows it. Three files
coordinate them, besides the segments:

  * `logq.lock`, the writer lock: an exclusive flock. A process changes the
    log only while it holds it, after bringing its picture up to the
    published state (`Follower.follow`); it publishes the new end before it
    lets go.
  * `logq.open`, the registry: every opener holds a shared flock on it for as
    long as the log is open. A process holding the writer lock that can
    take the registry's lock exclusively is alone (`alone`). Registering and
    that test both happen under the writer lock, so no opener slips between.
  * `logq.control` (control.py): the published state, and the knock counter.

A process that opens the log alone recovers it (repairs a torn tail, expires
its leases: the work that needs the directory to itself) and then keeps the
writer lock between calls ("sticky"): its calls cost no system call for
turns at all. An opener that finds the lock kept knocks (bumps the counter)
while it waits; the keeper's watcher thread notices within KNOCK_POLL
seconds, publishes and lets go, and from then on takes the lock for each
change ("shared"). A sharing process that finds itself alone again keeps the
lock once more (checked at most every RESTICK_AFTER seconds).

`Turn` is the lock the caller (the engine) takes around each operation: the
thread lock of this log, plus, when shared, the writer lock with a catch-up
on taking and a publish on letting go. Taking a turn never raises: a
catch-up that fails poisons the log (`Follower.fail`), and the change the
caller then tries raises `WriterFailedError`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Callable, Protocol

from ..errors import LockedError
from .control import Control, State, decode
from .directory import LOCK_NAME, REGISTRY_NAME
from .fs import DEFAULT_MODE, File, FileSystem

KNOCK_POLL = 0.005  # seconds between a keeper's looks at the knock counter
RESTICK_AFTER = 0.5  # seconds between a sharing process's checks whether it is alone again
OPEN_PATIENCE = 30.0  # seconds an opener waits for the writer lock before LockedError
POLL = 0.004  # seconds between a waiting caller's looks for other processes' changes (shared)

log = logging.getLogger("logq")


class Follower(Protocol):
    """What turns ask of the log they coordinate (`Log` provides it)."""

    def follow(self, state: State) -> None:
        """Bring the log's writer and the caller's picture up to `state` (writer lock held)."""

    def position(self) -> tuple[int, int, int, int]:
        """(active base, end, last sequence number, durable sequence number), all written."""

    def flush(self) -> None:
        """Write every pending record before the writer lock is let go."""

    def fail(self, exc: BaseException) -> None:
        """A catch-up or publish failed: poison the log."""


class Turns:
    """The writer lock, registry and control file of one open log (one opener's handles)."""

    def __init__(self, fs: FileSystem, path: str, mode: int = DEFAULT_MODE) -> None:
        self.path = path
        self.mutex = threading.Lock()  # this opener's threads take turns on it first
        self.shared = False  # True: the writer lock is taken per turn; False: kept (or not yet taken)
        self.holding = False  # this opener holds the writer lock now
        self.epoch = 0
        self.follower: Follower | None = None
        self.on_shared: Callable[[], None] | None = None  # called (mutex held) when a keeper lets go
        self._writer_lock = fs.open_lock(os.path.join(path, LOCK_NAME), mode)
        try:
            self._registry = fs.open_lock(os.path.join(path, REGISTRY_NAME), mode)
            self.control = Control(fs, path, mode)
        except BaseException:
            self._writer_lock.close()
            raise
        self._seen_knocks = 0
        self._checked_alone = 0.0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    # ------------------------------------------------------------------ opening

    def open(self) -> tuple[bool, State | None]:
        """Take the writer lock (knocking while a keeper has it), register, and return whether
        this opener is alone and the published state. The writer lock stays held: the caller
        recovers (alone) or reads up to the state, then calls `keep` or `share`."""
        self._take_writer_lock()
        self.holding = True
        self.control.initialize()
        alone = self._registry.acquire(wait=False)
        if not self._registry.acquire(shared=True, wait=False):  # only writer-lock holders take it exclusively
            raise LockedError(f"{self.path}: could not register with the queue's other processes", path=self.path)
        state = self.control.read()
        self.epoch = state.epoch if state is not None else 0
        return alone, state

    def retake(self) -> State | None:
        """At open, after letting go to wait for something else: take the writer lock again
        and return the published state."""
        self._take_writer_lock()
        self.holding = True
        state = self.control.read()
        self.epoch = state.epoch if state is not None else 0
        return state

    def _take_writer_lock(self) -> None:
        """Wait for the writer lock, knocking so that a keeper lets go (LockedError after
        OPEN_PATIENCE seconds)."""
        deadline = time.monotonic() + OPEN_PATIENCE
        delay = 0.0005
        while not self._writer_lock.acquire(wait=False):
            self.control.knock()
            if time.monotonic() > deadline:
                state = self.control.read()
                holder = state.holder if state is not None and state.holder else None
                raise LockedError(f"{self.path}: process {holder or '(unknown)'} keeps the queue's writer lock and "
                                  f"did not let go within {OPEN_PATIENCE:.0f}s: is it stopped or hung?",
                                  path=self.path, pid=holder)
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def keep(self, follower: Follower, *, new_epoch: bool) -> None:
        """Alone: publish the recovered log and keep the writer lock between calls."""
        self.follower = weakref.proxy(follower)  # the log owns these turns; threads hold them
        if new_epoch:
            self.epoch += 1
        self._publish(holder=os.getpid())
        self._seen_knocks = self.control.knocks()
        self._start_watcher()

    def share(self, follower: Follower) -> None:
        """Not alone: from now on take the writer lock for each turn."""
        self.follower = weakref.proxy(follower)
        self.shared = True
        self._let_go_lock()
        self._start_watcher()

    def release_at_open(self) -> None:
        """Let go of the writer lock without publishing (a not-alone opener reads without it)."""
        self._let_go_lock()

    # -------------------------------------------------------------------- turns

    def begin(self) -> None:
        """Shared mode, mutex held: take the writer lock and catch up. Never raises."""
        follower = self.follower
        assert follower is not None
        try:
            self._writer_lock.acquire()
            self.holding = True
            state = self.control.read()
            if state is None:
                raise LockedError(f"{self.path}: the control file lost its state while the queue was shared", path=self.path)
            follower.follow(state)
        except BaseException as exc:  # noqa: BLE001 - the log fails; the caller's change raises
            follower.fail(exc)
            self._let_go_lock()

    def end(self) -> None:
        """Shared mode, mutex held: publish what this turn wrote and let go. Never raises."""
        if not self.holding:
            return
        follower = self.follower
        assert follower is not None
        try:
            follower.flush()
            self._publish()
            if time.monotonic() - self._checked_alone > RESTICK_AFTER and self._alone_again():
                return  # keeps the writer lock: sticky again
        except BaseException as exc:  # noqa: BLE001
            follower.fail(exc)
        self._let_go_lock()

    def _publish(self, holder: int = 0) -> None:
        assert self.follower is not None
        base, end, last_seq, durable = self.follower.position()
        last = self.control.last
        if last is not None:
            durable = max(durable, last.durable_seq)
            if (last.epoch, last.base, last.end, last.last_seq, last.durable_seq, last.holder) == \
                    (self.epoch, base, end, last_seq, durable, holder):
                return
        self.control.publish(self.epoch, base, end, last_seq, durable, holder)

    def new_epoch(self) -> None:
        """Writer lock held, before records move (a compaction's swap): publish a new epoch,
        so that every other opener re-reads where its records are before its next change."""
        assert self.holding
        self.epoch += 1
        self._publish(holder=os.getpid() if not self.shared else 0)

    def away(self, work: Callable[[], None]) -> None:
        """Mutex held (a turn): do `work` without the writer lock, so that other processes go
        on meanwhile (this opener's threads wait on the mutex), then take it and catch up."""
        if not self.shared or not self.holding:
            work()
            return
        self.end()  # publishes nothing new; may keep the lock (alone again): then it works holding it
        try:
            work()
        finally:
            if self.shared:
                self.begin()

    def publish_final(self) -> None:
        """Closing while holding the writer lock: publish where the log ends now."""
        self._publish()

    def publish_durable(self, seq: int) -> None:
        """A fsync made every record up to `seq` durable: tell the others, if this thread can
        take a turn at once (otherwise the turn in progress publishes it when it ends)."""
        if not self.shared or not self.mutex.acquire(False):
            return
        try:
            if not self._writer_lock.acquire(wait=False):
                return
            try:
                last = self.control.read()
                if last is not None and seq > last.durable_seq:
                    self.control.publish(last.epoch, last.base, last.end, last.last_seq, seq, last.holder)
            finally:
                if not self.holding:
                    self._writer_lock.release()
        except OSError:
            pass  # only an optimisation: the next turn publishes it
        finally:
            self.mutex.release()

    def durable_elsewhere(self) -> int:
        """The durable sequence number published by any process (shared mode; else 0)."""
        if not self.shared:
            return 0
        try:
            return max(self.control.peek_durable(), self.control.durable_word())
        except OSError:
            return 0

    def fsync_shared(self, f: File, target: int, base: int) -> tuple[int, bool]:
        """Shared mode: make every record up to `target` (written to `f`, the file of segment
        `base`) durable, unless another process's fsync already did. An fsync covers what
        every process had published in that file before it began; that is written to the
        durable word, so that the others' callers skip theirs. Fsyncs are not serialized (the
        kernel merges concurrent ones); the word is written without a lock, so a slower
        process may write a smaller value over a larger one, which only costs someone an
        fsync: every value written is true. Returns the sequence number known durable, and
        whether this call fsynced (the caller may then move its durable mark)."""
        durable = self.control.durable_word()
        if durable >= target:
            return durable, False
        state = decode(self.control.peek_bytes())
        covered = state.last_seq if state is not None and state.base == base and state.last_seq > target \
            else target
        f.fdatasync()
        if covered > self.control.durable_word():
            self.control.set_durable_word(covered)
        return covered, True

    # ------------------------------------------------------------- being alone

    def alone(self) -> bool:
        """Writer lock held: whether no other opener is registered."""
        assert self.holding
        alone = self._registry.acquire(wait=False)
        if not self._registry.acquire(shared=True, wait=False):
            raise LockedError(f"{self.path}: lost the registration with the queue's other processes", path=self.path)
        return alone

    def _alone_again(self) -> bool:
        """Shared mode, writer lock held: if alone and no one knocked, keep the lock from now on."""
        self._checked_alone = time.monotonic()
        knocks = self.control.knocks()
        if knocks != self._seen_knocks or not self.alone():
            self._seen_knocks = knocks
            return False
        self.shared = False
        self._publish(holder=os.getpid())
        return True

    def _start_watcher(self) -> None:
        if self._watcher is None:  # it holds these turns weakly: a log dropped without close is freed
            self._watcher = threading.Thread(target=_watch, args=(weakref.ref(self), self._stopping),
                                             name="logq-turns", daemon=True)
            self._watcher.start()

    def _look(self) -> None:
        """The watcher's look: keeping the writer lock, let go of it if someone knocked."""
        if self.shared or self.control.knocks() == self._seen_knocks:
            return
        while not self.mutex.acquire(timeout=0.05):
            if self._stopping.is_set():
                return
        try:
            if not self.shared and self.holding and not self._stopping.is_set():
                self._yield_turn()
        finally:
            self.mutex.release()

    def _yield_turn(self) -> None:
        """Mutex held, writer lock kept: publish, let go, and share from now on."""
        assert self.follower is not None
        try:
            self.follower.flush()
            self._publish()
        except BaseException as exc:  # noqa: BLE001
            self.follower.fail(exc)
        self.shared = True
        self._seen_knocks = self.control.knocks()
        self._checked_alone = time.monotonic()
        self._let_go_lock()
        log.debug("%s: another process opened the queue; taking turns with it", self.path)
        if self.on_shared is not None:
            self.on_shared()

    def _let_go_lock(self) -> None:
        if self.holding:
            self.holding = False
            try:
                self._writer_lock.release()
            except OSError:
                pass

    # ----------------------------------------------------------------- closing

    def take_for_close(self) -> bool:
        """Mutex held: hold the writer lock (caught up) for a close; return whether alone."""
        if self.shared:
            self.begin()
        return self.alone()

    def close(self) -> None:
        """Stop the watcher and let go of every file (the locks go with them)."""
        self._stopping.set()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join()
        self.holding = False
        for closing in (self._registry.close, self._writer_lock.close, self.control.close):
            try:
                closing()
            except OSError:
                pass


def _watch(ref: "weakref.ref[Turns]", stopping: threading.Event) -> None:
    """The watcher thread: every KNOCK_POLL seconds, look for knocks (until closed or dropped)."""
    while not stopping.wait(KNOCK_POLL):
        turns = ref()
        if turns is None:
            return
        try:
            turns._look()
        except OSError:
            return
        del turns


class Turn:
    """The caller's lock around each operation on a log that may be shared (see the module
    docstring); usable with `threading.Condition`, whose waits let go of the turn."""

    __slots__ = ("_mutex", "_turns")

    def __init__(self, turns: Turns) -> None:
        self._mutex, self._turns = turns.mutex, turns

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self._mutex.acquire(blocking, timeout):
            return False
        if self._turns.shared:
            self._turns.begin()
        return True

    def release(self) -> None:
        if self._turns.shared:
            self._turns.end()
        self._mutex.release()

    __enter__ = acquire  # (one call per `with`, not two: this lock is taken on every operation)

    def __exit__(self, *exc: object) -> None:
        if self._turns.shared:
            self._turns.end()
        self._mutex.release()

    def locked(self) -> bool:
        return self._mutex.locked()

    def _is_owned(self) -> bool:  # for threading.Condition (as it judges a plain Lock)
        return self._mutex.locked()
