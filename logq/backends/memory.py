"""The memory backend, `logq.Queue(":memory:")`: every job operation, no disk. For tests.

Theory of operation
-------------------
The same `Engine` as the local backend, over the same `Index`, with a store
that keeps records in memory instead of a log: so leases, expiry by the
clock, priorities, delays, unique keys, results, `wait`, stats, periodic jobs
and the worker behave exactly as on disk. The store hands out sequence numbers
as the log does and keeps the ENQUEUE records (the index reads a job's payload
back from them); other records have done their work once applied and are not
kept. Nothing is durable: `sync` modes are accepted and checked, and all
behave alike; closing discards everything. Options that only shape the disk
(segment_size, compression, sync_interval, salvage, fs, ...) are checked as on
disk, so that switching the path switches nothing else, and then unused.
`compact` sweeps final jobs past retention out of memory (there is no
background compaction: call it when a long test wants memory back).
"""

from __future__ import annotations

import time
from typing import NamedTuple, Sequence

from ..clock import Clock
from ..core.jobs import Backoff, CompactionReport
from ..core.records import ENQUEUE
from ..errors import ClosedError
from ..log.durability import stronger
from ..log.log import Appended, RecoveryReport, check_options  # the Log's own checks of its options
from ..log.fs import check_mode
from ..tuples import new_tuple as _new_tuple
from .base import Capabilities
from .engine import Engine

PATH = ":memory:"
CAPABILITIES = Capabilities(durable=False, compaction=True, inspectable=False)


class Kept(NamedTuple):
    """A kept ENQUEUE record, as the engine reads it back."""

    payload: bytes


class MemoryStore:
    """The engine's `Store` in memory: sequence numbers, and the ENQUEUE records by sequence
    number (a record's place is segment 0, offset = its sequence number)."""

    def __init__(self, sync: str) -> None:
        self.sync_mode = stronger("none", sync)
        self.kept: dict[int, bytes] = {}
        self._next_seq = 1
        self._closed = False

    def write_one(self, rtype: int, payload: bytes, *, sync: str | None = None) -> Appended:
        mode = self.sync_mode if sync is None else stronger(self.sync_mode, sync)
        self.check_usable()
        seq = self._next_seq
        self._next_seq = seq + 1
        if rtype == ENQUEUE:
            self.kept[seq] = payload
        return _new_tuple(Appended, (seq, seq, 0, (seq,), (len(payload),), mode))

    def write(self, items: Sequence[tuple[int, bytes]], *, sync: str | None = None) -> Appended:
        mode = self.sync_mode if sync is None else stronger(self.sync_mode, sync)
        self.check_usable()
        first = self._next_seq
        for seq, (rtype, payload) in enumerate(items, first):
            if rtype == ENQUEUE:
                self.kept[seq] = bytes(payload)
        self._next_seq = first + len(items)
        return Appended(first, self._next_seq - 1, 0, tuple(range(first, self._next_seq)),
                        tuple(len(p) for _, p in items), mode)

    def commit(self, appended: Appended) -> None:
        """Nothing to wait for: there is no disk."""

    def read(self, segment: int, offset: int, size: int | None = None) -> Kept:
        return Kept(self.kept[offset])

    def read_many(self, segment: int, places: Sequence[tuple[int, int]]) -> list[Kept]:
        kept = self.kept
        return [Kept(kept[offset]) for offset, _ in places]

    def forget(self, seqs: Sequence[int]) -> int:
        """Drop the ENQUEUE records of swept jobs; return their bytes."""
        return sum(len(self.kept.pop(seq)) for seq in seqs)

    def segments(self) -> list[tuple[int, int, bool]]:
        return []

    @property
    def durable_seq(self) -> int:
        """Nothing is ever durable in memory."""
        return 0

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def check_usable(self) -> None:
        if self._closed:
            raise ClosedError("the in-memory queue is closed: its jobs are gone; open a new logq.Queue")

    def sync(self) -> None:
        """Nothing to make durable."""

    def close(self) -> None:
        self._closed = True
        self.kept.clear()


class MemoryBackend(Engine):
    """Jobs in this process's memory only, with the semantics of the local backend."""

    capabilities = CAPABILITIES

    def __init__(self, *, clock: Clock, backoff: Backoff, retain_done: float, retain_dead: float,
                 compact_threshold: float | None, sync: str, sync_interval: float, segment_size: int,
                 compression: str | None, compress_threshold: int, salvage: bool, fs: object, mode: int,
                 max_record: int) -> None:
        """Takes the local backend's options: the ones that shape the disk are checked as
        there (`check_options`), and unused."""
        check_options(sync, sync_interval, segment_size, compression, compress_threshold)
        check_mode(mode)
        super().__init__(clock, backoff, retain_done, retain_dead)
        self.path = PATH
        self.recovery = RecoveryReport()
        self._log = self.store = MemoryStore(sync)

    def compact(self, include_active: bool) -> CompactionReport:
        """Forget the final jobs past retention (all of them: every record is "sealed")."""
        started = time.monotonic()
        with self._lock:
            self._check_open()
            doomed = self._index.sweepable(self.clock.time(), self.retain_done, self.retain_dead,
                                           self.store.last_seq)
            before = sum(map(len, self.store.kept.values()))
            freed = self.store.forget(list(doomed))
            self._index.forget(doomed)
        return CompactionReport(1, before, before - freed, len(self.store.kept), len(doomed), len(doomed),
                                time.monotonic() - started)

    def close(self) -> None:
        """Discard every job. Safe to repeat."""
        if self._mark_closed():
            with self._lock:
                self.store.close()
