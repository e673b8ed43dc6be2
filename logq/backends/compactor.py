"""Compaction for the local backend: which jobs to sweep, the background thread, the swap.

Theory of operation
-------------------
The log rewrites its sealed segments without the records of the jobs that the
index says are final and past retention (`Index.sweepable`); producers and
consumers go on meanwhile. Only the swap takes the engine lock: if a swept job
changed in between (a retry), the rewrite is discarded; otherwise the log
installs it and the index forgets the swept jobs and learns where the others'
ENQUEUE records moved. After a rollover the log wakes the background thread,
which compacts when garbage passes `compact_threshold` of the sealed bytes.
"""

from __future__ import annotations

import logging
import threading
import weakref
import time
from typing import TYPE_CHECKING, Protocol

from ..core.jobs import CompactionReport
from ..core.records import ENQUEUE
from ..errors import ClosedError, LogqError
from ..log.codec import Record

if TYPE_CHECKING:
    from ..clock import Clock
    from ..core.index import Index
    from ..log.log import Log
    from ..log.turns import Turn


class LocalBackend(Protocol):
    """What the compactor uses of the local backend (a protocol, not an import of .local,
    which imports this module: the layer test refuses even a type-only cycle)."""

    _lock: "threading.Lock | Turn"
    _index: Index
    _indexed: bool

    def _check_indexed(self) -> None: ...

    @property
    def log(self) -> Log: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def retain_done(self) -> float: ...
    @property
    def retain_dead(self) -> float: ...
    @property
    def closed(self) -> bool: ...
    def _check_open(self) -> None: ...


class Compactor:
    """Compacts the log of `backend`: on request (`compact`) and, with a threshold, in a
    thread after rollovers. One compaction runs at a time (`running`)."""

    def __init__(self, backend: "LocalBackend", threshold: float | None) -> None:
        # held weakly: the backend holds its compactor, and a cycle would keep a queue
        # dropped without close (frozen with its index at open) alive for good
        self.backend, self.threshold = weakref.proxy(backend), threshold
        self.running = threading.Lock()
        self._wanted = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = 0
        self._compacted = threading.Condition()

    def wanted(self) -> None:
        """Ask the background thread to look (the log calls this after a rollover)."""
        self._wanted.set()

    def start(self) -> None:
        if self.threshold is not None:
            self._thread = threading.Thread(target=self._run, name="logq-compact", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Wake the thread (the backend is closed: it ends) and wait for it."""
        self._wanted.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def compact(self, include_active: bool) -> CompactionReport:
        """Rewrite the sealed segments without the jobs that are final and past retention
        (`include_active` seals the active segment first, so that its records count too)."""
        started = time.monotonic()
        b = self.backend
        with b._lock:
            b._check_indexed()  # (before the compaction lock: building reads under it, shared)
        with self.running:
            lock = b.log.compaction_lock()  # one compaction at a time among the processes
            if lock is None:
                return CompactionReport(0, 0, 0, 0, 0, 0, time.monotonic() - started, aborted=True)
            try:
                return self._compact_locked(include_active, started)
            finally:
                lock.close()

    def _compact_locked(self, include_active: bool, started: float) -> CompactionReport:
        b = self.backend
        with b._lock:  # a turn: with other processes, the roll and the prefix are up to date
            b._check_indexed()
            if include_active:
                b.log.roll()
            prefix = b.log.sealed_prefix()
            if not prefix:
                return CompactionReport(0, 0, 0, 0, 0, 0, time.monotonic() - started)
            doomed = b._index.sweepable(b.clock.time(), b.retain_done, b.retain_dead, prefix[-1][1])
        bases = [base for base, _ in prefix]
        out = b.log.write_compacted(bases, lambda rec: _job_of(rec) in doomed)
        with b._lock:
            if b.closed or any(b._index.jobs[j].last != last for j, last in doomed.items()):
                b.log.discard(out)
                return CompactionReport(len(bases), out.read_bytes, 0, 0, 0, 0,
                                        time.monotonic() - started, aborted=True)
            b.log.install(out, bases)
            b._index.forget(doomed)
            b._index.relocate(out.base, out.moved)
        self._count_done()
        return CompactionReport(len(bases), out.read_bytes, out.size, out.kept, out.dropped, len(doomed),
                                time.monotonic() - started)

    def _count_done(self) -> None:
        with self._compacted:
            self._done += 1
            self._compacted.notify_all()

    def wait_compactions(self, n: int, timeout: float) -> bool:
        """Test seam: wait until `n` compactions have completed in this process."""
        with self._compacted:
            return self._compacted.wait_for(lambda: self._done >= n, timeout)

    def _run(self) -> None:
        """Background compaction after a rollover, when garbage passes the threshold."""
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self.backend.closed:
                return
            try:
                if self._worth_compacting():
                    self.compact(False)
            except ClosedError:
                return
            except LogqError as exc:  # the log is poisoned, or damage: the next call reports it
                logging.getLogger("logq").error("background compaction failed: %s", exc)
                return

    def _worth_compacting(self) -> bool:
        """True when the sealed bytes that no unfinished job needs (an estimate) reach the
        threshold share of the sealed bytes, or two segments: the second rule keeps the
        disk within live data plus a few segments when the backlog is large."""
        b = self.backend
        with b._lock:
            if not b._indexed:  # a producer that keeps no index leaves compaction to the others
                return False
            segments = b.log.segments()[:-1]
            sealed = sum(size for _, size, _ in segments)
            garbage = max(0, sealed - b._index.live_bytes)
        share = 0.0 if sealed == 0 else garbage / sealed
        return share >= (self.threshold or 1.0) or garbage >= 2 * b.log.segment_size


def _job_of(rec: Record) -> int:
    """The job a record belongs to: its own seq for ENQUEUE, else the id it starts with."""
    return rec.seq if rec.type == ENQUEUE else int.from_bytes(rec.payload[:8], "little")
