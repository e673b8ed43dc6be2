"""The local backend: jobs in an append-only log in one directory, the index in memory.

Theory of operation
-------------------
`Engine` carries out the job operations over the `Index` and the `Log`; this
module opens and closes them. Opening replays the log through `Index.replay`,
or, after a clean close, restores the index from the checkpoint that close
left (`core.snapshot`) and replays only the records after it. Jobs still
active at the end of the replay lost their lease with the process that held
it: an EXPIRE record is appended for each (pending again, or dead with "lease
lost" once max_attempts is used up), so a job that kills its process cannot
loop forever. Replay runs with the garbage collector off and then freezes the
index out of later collections; after a long replay the freed heap pages go
back to the OS. A `Compactor` thread sweeps final jobs after rollovers.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os

from ..clock import Clock
from ..core import policy
from ..core import snapshot as _snapshot
from ..core.jobs import Backoff, CompactionReport
from ..core.records import EXPIRE
from ..core.salvage import SalvageReplay
from ..log.fs import FileSystem
from ..log.log import Log, RecoveryReport
from .base import Capabilities
from .compactor import Compactor
from .engine import Engine

CAPABILITIES = Capabilities(durable=True, compaction=True, inspectable=True)
LARGE_REPLAY = 100_000  # records: a replay this long is worth freezing, and leaves heap pages to return


class LocalBackend(Engine):
    """The jobs of directory `path`, kept in its log (options as `logq.Queue` documents them)."""

    capabilities = CAPABILITIES
    results_in_store = True

    def __init__(self, path: str | os.PathLike[str], *, clock: Clock, backoff: Backoff, retain_done: float,
                 retain_dead: float, compact_threshold: float | None, sync: str, sync_interval: float,
                 segment_size: int, compression: str | None, compress_threshold: int, salvage: bool,
                 fs: FileSystem | None, mode: int, max_record: int) -> None:
        super().__init__(clock, backoff, retain_done, retain_dead)
        self.compactor = Compactor(self, compact_threshold)
        salvaging = SalvageReplay(self._index) if salvage else None
        collecting = gc.isenabled()
        gc.disable()  # replay creates millions of objects and no cycles: collections only cost
        try:
            self._log = self.log = Log(
                path, replay=self._index.replay if salvaging is None else salvaging.replay, sync=sync, sync_interval=sync_interval,
                segment_size=segment_size, compression=compression, compress_threshold=compress_threshold,
                salvage=salvage, fs=fs, on_rollover=self.compactor.wanted if compact_threshold is not None else None,
                restore=functools.partial(_snapshot.restore, self._index), mode=mode,
                max_record=max_record,  # what replay may inflate or copy, at most
                defer_replay=not salvage)  # beside others: no index until a call needs it (a producer)
            self._froze = max(self.log.report.records, len(self._index.jobs)) >= LARGE_REPLAY
            if self._froze:  # before the collector runs again: it would walk the whole index
                _freeze_live_objects()
        finally:
            if collecting:
                gc.enable()
        if self._froze:
            _return_free_memory()
        self._indexed = self.log.replayed
        self._use_lock(self.log.turn, self.log.poll_interval)
        self.log.on_change(self._others_changed)
        self.log.on_compaction(self._others_compacted)
        self._owner, self._owners_due_at = self.log.owner_id, 0.0  # leases name their owner
        self._log_dead_owners, self._forget_owners = self.log.dead_owners, self.log.forget_owners
        self.path = self.log.path
        if salvaging is not None:  # (a queue that salvaged anything writes no checkpoint at close)
            self.log.report.unrecovered = salvaging.unrecovered
        try:
            if self.log.alone_at_open:  # (with others there, their leases are theirs)
                self._recover_leases()
        except BaseException:
            self.log.close()
            raise
        self.compactor.start()

    @property
    def recovery(self) -> RecoveryReport:
        """What opening found: torn tails cut, ranges lost in salvage mode."""
        return self.log.report

    def _recover_leases(self) -> None:
        """Open alone: every lease is of a process that ended; end them, and forget the owners."""
        lost = self._index.timetable.active_jobs()
        now = self.clock.time()
        with self._lock:
            appended = None if not lost else self._change_all_locked(
                [(e, EXPIRE, policy.expiry(e, now, "lease lost")) for e in lost], "always")
            self.log.forget_owners(self.log.dead_owners())
        if appended is not None:
            self.log.commit(appended)

    def _build_index_locked(self) -> None:
        """(Turn held.) Read the whole log into the index: the first call that needs it in an
        opener that opened beside others and has not built it (see `Log.replay_all`)."""
        self.log.replay_all(self._index.replay)
        self._indexed = True
        self._others_changed()

    def _others_compacted(self, base: int, moved: dict[int, tuple[int, int]], old: set[int]) -> None:
        """(Turn held.) Another process's compaction moved records into segment `base`."""
        self._index.relocate(base, moved)
        self._index.drop_swept(base, moved, old)
        self._others_changed()

    def compact(self, include_active: bool) -> CompactionReport:
        return self.compactor.compact(include_active)

    def close(self) -> None:
        """Make everything durable, leave a checkpoint of the index (spec/format.md §11) and
        release the directory. Safe to repeat."""
        if not self._mark_closed():
            return
        self.compactor.stop()
        with self.compactor.running:  # let a compaction started by another thread finish first
            with self._lock:  # a turn: caught up, and no other process changes the log meanwhile
                self.log.close(checkpoint=self._final_snapshot if self._indexed else None)
        if self._froze:  # give the index (and whatever else open froze) back to the collector
            gc.unfreeze()

    def _final_snapshot(self) -> bytes:
        """The index for the checkpoint that close leaves (called in close's turn)."""
        return _snapshot.encode(self._index)


def _freeze_live_objects() -> None:
    """(Called with the collector off.) Move every live object, a large index's millions among them, out of the cyclic
    collector's reach, so that later full collections do not walk them again and again.

    Freezing is process-wide: it also takes in the program's own objects, and cyclic garbage
    not yet collected stays until an unfreeze. A full collection first would cost more than the
    replay saves, so only an open that replayed a large log freezes, and close unfreezes: a
    program that opens many small queues (a test suite, the fuzz harness) freezes nothing.
    """
    gc.freeze()


def _return_free_memory() -> None:
    """Give the heap pages that replay used and freed back to the OS (glibc's
    malloc_trim; a no-op where it does not exist)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
