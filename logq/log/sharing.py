"""What a log does with the other processes that share its directory (spec/format.md §14).

A part of `Log` (log.py), apart because it is one concern: the `Follower` side
of turns (`turns.py`: catching up, where the log ends, writing before letting
go), the callbacks that tell the caller what others changed, the producer's
deferred replay, and the owner files and the compaction lock.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import TYPE_CHECKING, Callable

from .control import State
from .directory import COMPACT_LOCK_NAME
from .follow import catch_up, follow_compaction, set_aside_unpublished
from .fs import FileLock, FileSystem
from .recovery import Recovery, ReplayCallback, RestoreCallback
from .segment import KnownSegment, parse_segment_name, segment_name
from .turns import POLL

if TYPE_CHECKING:
    from .group_commit import GroupCommit
    from .owners import Owners
    from .reader import Reader
    from .turns import Turns
    from .writer import Writer


class Sharing:
    """The multi-process part of `Log` (mixed in; `Log.__init__` sets these attributes)."""

    fs: FileSystem
    path: str
    mode: int
    max_record: int
    replayed: bool
    _turns: Turns
    _writer: Writer
    _reader: Reader
    _commits: GroupCommit
    _owners: Owners | None
    _replay: ReplayCallback | None
    _restore: RestoreCallback | None
    _digests: dict[int, tuple[int, int]]
    on_caught_up: Callable[[int], None] | None
    on_compacted: Callable[[int, dict[int, tuple[int, int]], set[int]], None] | None

    @property
    def shared(self) -> bool:
        """Whether other processes (or other `Log` objects) have the log open, as far as this
        one knows: it then takes the writer lock for each change (`turn`)."""
        return self._turns.shared

    def _published_segments(self, state: State) -> list[KnownSegment]:
        """The segments up to the published one, as far as their names and sizes tell (no
        record read): each sealed one ends where the next begins."""
        bases = sorted(b for b in map(parse_segment_name, self.fs.listdir(self.path))
                       if b is not None and b <= state.base)
        segments = []
        for base, after in zip(bases, bases[1:] + [None]):
            if after is None:
                segments.append(KnownSegment(base, state.end, False, state.last_seq))
                break
            f = self.fs.open(os.path.join(self.path, segment_name(base)), readonly=True)
            try:
                segments.append(KnownSegment(base, f.size(), True, after - 1))
            finally:
                f.close()
        return segments

    def replay_all(self, replay: ReplayCallback) -> None:
        """(In a turn.) For a log opened with `defer_replay` beside others: hand every record up
        to where this log is now to `replay` (after the checkpoint's state, when one is
        usable, to the `restore` given at open), and from now on what others append too.
        It reads without the writer lock (other processes go on; no compaction runs
        meanwhile), then takes it again and catches up."""
        if self.replayed:
            return
        writer = self._writer
        with writer.lock:
            writer.check_usable()
            base, end, last = writer.segments[-1].base, writer.end, writer.written_seq
        here = State(0, self._turns.epoch, base, end, last, 0)

        def read() -> None:  # without the writer lock, unless this log keeps it (then none compacts)
            no_compaction = None
            if not self._turns.holding:
                no_compaction = self.fs.open_lock(os.path.join(self.path, COMPACT_LOCK_NAME), self.mode)
                no_compaction.acquire(shared=True)
            try:
                Recovery(self.fs, self.path, salvage=False, mode=self.mode, limit=self.max_record).run(
                    replay, self._restore, published=here)
            finally:
                if no_compaction is not None:
                    no_compaction.close()
            self._replay = replay  # before the catch-up that follows: what others appended since goes to it
        self._turns.away(read)
        self.replayed = True

    def on_change(self, callback: Callable[[], None]) -> None:
        """Have `callback` (a bound method, held weakly: the log's threads must not keep its
        owner alive) called, turn held, when records of other processes were read and when
        this log starts sharing: the caller's waiters should look again."""
        method = weakref.WeakMethod(callback)

        def call() -> None:
            bound = method()
            if bound is not None:
                bound()
        self.on_caught_up = lambda records: call()
        self._turns.on_shared = call

    def on_compaction(self, callback: Callable[[int, dict[int, tuple[int, int]], set[int]], None]) -> None:
        """Have `callback` (a bound method, held weakly) called, turn held, with (base, new
        places by sequence number, old bases) when another process's compaction moved records."""
        method = weakref.WeakMethod(callback)

        def call(first: int, moved: dict[int, tuple[int, int]], old: set[int]) -> None:
            bound = method()
            if bound is not None:
                bound(first, moved, old)
        self.on_compacted = call

    def dead_owners(self) -> list[int]:
        """(In a turn.) The owner ids of openers whose process ended (owners.py)."""
        assert self._owners is not None
        return self._owners.dead()

    def forget_owners(self, owners: list[int]) -> None:
        """(In a turn.) Remove the owner files of dead openers whose holdings are ended."""
        assert self._owners is not None
        self._owners.forget(owners)

    def compaction_lock(self) -> FileLock | None:
        """The lock one compaction at a time holds among the processes sharing the log (taken
        without waiting; None if another process compacts now). Release it with `close`."""
        lock = self.fs.open_lock(os.path.join(self.path, COMPACT_LOCK_NAME), self.mode)
        if lock.acquire(wait=False):
            return lock
        lock.close()
        return None

    def poll_interval(self) -> float | None:
        """How often a caller waiting for a change should look again (None: it is told)."""
        return POLL if self._turns.shared else None

    def follow(self, state: State) -> None:
        """`Follower.follow`: catch up with what other processes appended (writer lock held)."""
        writer = self._writer
        with writer.lock:
            writer.check_usable()
            if state.epoch != self._turns.epoch:  # another process compacted: records moved
                first, moved, old = follow_compaction(writer, state, self._replay, self.max_record)
                self._reader.forget(sorted(old | {first}))
                for base in old:
                    self._digests.pop(base, None)
                if old and self.on_compacted is not None:
                    self.on_compacted(first, moved, old)
                self._turns.epoch = state.epoch
            if (state.base, state.end) != (writer.segments[-1].base, writer.end):
                records = catch_up(writer, state, self._replay, self.max_record)
                if records and self.on_caught_up is not None:
                    self.on_caught_up(records)
            set_aside_unpublished(writer, self.mode)

    def position(self) -> tuple[int, int, int, int]:
        """`Follower.position`: active base, end, last sequence number, durable sequence number."""
        writer = self._writer
        with writer.lock:
            return writer.segments[-1].base, writer.end, writer.written_seq, self._commits.synced_seq

    def flush(self) -> None:
        """`Follower.flush`: write every pending record (mode `always`) before letting go."""
        with self._writer.lock:
            if self._writer.failed is None and not self._writer.closed:
                self._writer.flush_locked()

    def fail(self, exc: BaseException) -> None:
        """`Follower.fail`: a catch-up or publish failed; the log is poisoned."""
        logging.getLogger("logq").error("%s: taking turns with other processes failed: %s", self.path, exc)
        with self._writer.lock:
            self._writer.poison(exc)
