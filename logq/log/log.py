"""The log: a directory of segment files, opened, appended to, read and closed as one.

Theory of operation
-------------------
A log is a directory holding `logq.meta` (format marker) and segment files
(`directory.py`), and the files that let several processes share it: the
writer lock `logq.lock`, the registry `logq.open`, `logq.control`,
`logq.owners/` and `logq.compact.lock` (turns.py, control.py, owners.py,
sharing.py; spec/format.md §14).
`Log` is a facade that composes the parts that do the work, each in its
module with its protocol written at its top:

  * `Recovery` (recovery.py): opening. Replays every segment after a usable
    checkpoint through `scan`, hands each record of a complete batch to the
    caller's `replay` callback, repairs a torn tail, adopts the last segment.
  * `Writer` (writer.py): append protocol steps 1-2 (framing into the active
    segment, preallocation) and rollover R1-R4. It owns the log's one lock.
  * `GroupCommit` (group_commit.py): steps 3-4, the fsyncs callers share.
  * `Reader` (reader.py): random reads of records by their place, read-ahead.
  * compaction (compact.py) and the checkpoint (checkpoint.py), which this
    facade drives: `write_compacted` (C1, outside the lock) and `install`
    (C2-C4), and the checkpoint a clean `close` leaves.

The hot calls (`write`, `write_one`, `commit`, `read`, `read_many`) are the
parts' own bound methods, set on the instance at construction: a call costs
what it did before the parts were split out, with no call in between.

Append protocol, in short (the numbers name the steps the fault tests
target): 1. sequence and encode under the lock (roll over first if the
batch does not fit); 2. modes `batch` and `none` write before returning;
3. mode `always` waits for a fdatasync it shares with other callers (group
commit); 4. mode `batch` fsyncs in the background every `sync_interval`. A
failed write or fsync poisons the log: every later call raises
`WriterFailedError` until it is reopened from what is really on disk.

A clean close may leave `logq.checkpoint` (checkpoint.py): a state blob of
the caller's and a digest of every segment. When the segments still hash to
their digests, opening hands the blob to the caller's `restore` callback and
replays only the records after it; otherwise it replays everything.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Protocol, Sequence

from ..closing import ClosesOnExit
from ..errors import CorruptionError, InvalidArgument, LockedError, WriterFailedError
from . import checkpoint, compact
from .codec import MAX_STORED, SEGMENT_HEADER_SIZE, Encoder, Record, check_limit
from .directory import COMPACT_LOCK_NAME, DIRECTORY_VERSION, prepare, replace_file, write_meta
from .durability import SYNC_MODES
from .fs import DEFAULT_MODE, FileLock, FileSystem, OsFileSystem, access_error, check_mode
from .group_commit import GroupCommit
from .mark import MarkWriter
from .owners import Owners
from .reader import Reader
from .recovery import Recovery, RecoveryReport, ReplayCallback, RestoreCallback, TornTail
from .segment import KnownSegment
from .sharing import Sharing
from .turns import Turn, Turns
from .writer import Appended, Writer

__all__ = ["Appended", "DEFAULT_SEGMENT_SIZE", "Log", "RecoveryReport", "TornTail", "check_options"]

DEFAULT_SEGMENT_SIZE = 64 << 20


class _Write(Protocol):
    def __call__(self, items: Sequence[tuple[int, bytes]], *, sync: str | None = None) -> Appended: ...


class _WriteOne(Protocol):
    def __call__(self, rtype: int, payload: bytes, *, sync: str | None = None) -> Appended: ...


class _Read(Protocol):
    def __call__(self, segment: int, offset: int, size: int | None = None) -> Record: ...


class Log(Sharing, ClosesOnExit):
    """An open, locked log directory. Thread-safe.

    Records are appended in batches; a batch is atomic (after a crash either
    all its records are replayed or none) and its records get consecutive,
    increasing sequence numbers that are never reused.

    `max_record` bounds every record payload: appending a larger one raises
    `InvalidArgument`, and replay refuses a larger one it finds on disk with
    `RecordTooLargeError` (salvage skips it), before inflating or copying it.
    """

    # Bound at construction to the part that does the work (see the module docstring).
    write: _Write  # Writer.write: steps 1-2 of a batch; pass the result to `commit`
    write_one: _WriteOne  # Writer.write_one: `write` of one record, the common case
    commit: Callable[[Appended], None]  # GroupCommit.commit: step 3, wait per the batch's mode
    sync_through: Callable[[int], None]  # GroupCommit.sync_through: until every record to seq is fsynced
    sync: Callable[[], None]  # GroupCommit.sync: make every record appended so far durable
    read: _Read  # Reader.read: the verified record at a place `Appended` gave
    read_many: Callable[[int, Sequence[tuple[int, int]]], list[Record]]  # Reader.read_many
    check_usable: Callable[[], None]  # Writer.check_usable: raise if failed or closed

    def __init__(self, path: str | os.PathLike[str], *, replay: ReplayCallback | None = None,
                 sync: str = "batch", sync_interval: float = 0.005,
                 segment_size: int = DEFAULT_SEGMENT_SIZE, compression: str | None = None,
                 compress_threshold: int = 512, salvage: bool = False,
                 fs: FileSystem | None = None, on_rollover: Callable[[], None] | None = None,
                 restore: RestoreCallback | None = None, mode: int = DEFAULT_MODE,
                 max_record: int = MAX_STORED, defer_replay: bool = False) -> None:
        check_options(sync, sync_interval, segment_size, compression, compress_threshold)
        self.max_record = check_limit(max_record)  # the largest record payload written or replayed
        self.mode = check_mode(mode)  # of new files; the directory's is `fs.dir_mode(mode)`
        self.path = os.fspath(path)
        self.sync_mode = sync
        self.sync_interval = sync_interval
        self.segment_size = segment_size
        self.fs: FileSystem = fs or OsFileSystem()
        self._template = Encoder(0, compression=compression, threshold=compress_threshold, limit=max_record)
        self._replay = replay
        self._restore = restore
        self.on_caught_up: Callable[[int], None] | None = None  # called (turn held) after records of others
        # called (turn held) after another process's compaction: (base, new places by seq, old bases)
        self.on_compacted: Callable[[int, dict[int, tuple[int, int]], set[int]], None] | None = None
        self._owners: Owners | None = None
        no_compaction: FileLock | None = None
        try:
            prepare(self.fs, self.path, mode)
            self._turns = turns = Turns(self.fs, self.path, mode)
        except OSError as exc:  # a file that cannot be used: name it and say what to do
            raise access_error(exc, self.path) from exc
        self._marks: MarkWriter | None = None
        try:
            alone, published = turns.open()
            version = prepare(self.fs, self.path, mode)  # again, under the writer lock
            had_meta = version > 0
            self._owners = Owners(self.fs, self.path, mode)
            if alone:  # made here, so that openers beside this one find the lock file there
                self.fs.open_lock(os.path.join(self.path, COMPACT_LOCK_NAME), mode).close()
            else:
                if salvage:
                    raise LockedError(f"{self.path} is open in another process: salvage needs the queue to "
                                      "itself; close the others first", path=self.path)
                # No compaction may move records while this opener reads up to the published
                # state without the writer lock: it holds the compaction lock shared meanwhile.
                no_compaction = self.fs.open_lock(os.path.join(self.path, COMPACT_LOCK_NAME), mode)
                if not no_compaction.acquire(shared=True, wait=False):  # one runs: wait for its end
                    turns.release_at_open()
                    no_compaction.acquire(shared=True)
                    published = turns.retake()
                if published is None:
                    raise LockedError(f"{self.path}: another process is opening the queue: try again",
                                      path=self.path)
                turns.release_at_open()  # others go on while this one reads up to `published`
        except BaseException as exc:
            if no_compaction is not None:
                no_compaction.close()
            if self._owners is not None:
                self._owners.close()
            turns.close()
            if isinstance(exc, OSError):
                raise access_error(exc, self.path) from exc
            raise
        self.alone_at_open = alone
        self.owner_id = self._owners.id
        recovery = Recovery(self.fs, self.path, salvage=salvage, mode=mode, limit=max_record)
        self._writer = writer = Writer(self.fs, self.path, sync_mode=sync, segment_size=segment_size,
                                       template=self._template, salt_of=lambda base: self._reader.salt(base),
                                       on_rollover=on_rollover, mode=mode)
        self._reader = reader = Reader(self.fs, self.path, writer)
        self.replayed = alone or not defer_replay
        try:
            if self.replayed:
                last_seq = recovery.run(replay, None if salvage else restore, had_meta=had_meta,
                                        published=None if alone else published)
                segments = recovery.segments
            else:  # `defer_replay` beside others: only where the log ends (`replay_all` reads it later)
                assert published is not None
                segments, last_seq = self._published_segments(published), published.last_seq
                self._replay = None
            writer.start(segments, last_seq, shared=not alone)
            if alone and version < DIRECTORY_VERSION:  # new (after its first segment: a marker without
                write_meta(self.fs, self.path, mode)  # segments is a loss), or older: raised
            self._marks = marks = MarkWriter(self.fs, self.path, recovery.mark, mode)
            self._commits = commits = GroupCommit(writer, sync_interval=sync_interval, marks=marks, turns=turns)
            writer.syncs = commits
            if recovery.seal_at_open:  # salvaged damage must not be cut by a later normal open
                with writer.lock:
                    writer.rollover_locked()
            if alone:
                marks.write(writer.segments[-1].base, writer.end, writer.written_seq)  # adopted: durable
                turns.keep(self, new_epoch=True)
            else:
                turns.share(self)
        except BaseException as exc:
            self._release_files()
            if isinstance(exc, OSError):  # as above
                raise access_error(exc, self.path) from exc
            raise
        finally:
            if no_compaction is not None:  # caught up with the published state: compactions may run
                no_compaction.close()
        self.turn = Turn(turns)
        self.report: RecoveryReport = recovery.report
        self.report.segments, self.report.last_seq = len(writer.segments), writer.next_seq - 1
        self._digests = recovery.digests  # base -> (end, digest) known this session
        self.write, self.write_one, self.check_usable = writer.write, writer.write_one, writer.check_usable
        self.commit, self.sync_through, self.sync = commits.commit, commits.sync_through, commits.sync
        self.read, self.read_many = reader.read, reader.read_many
        if sync == "batch":
            commits.start_syncer()

    def append(self, items: Sequence[tuple[int, bytes]], *, sync: str | None = None) -> Appended:
        """Append `items` (record type, payload) as one atomic batch and wait per `sync`."""
        appended = self.write(items, sync=sync)
        self.commit(appended)
        return appended

    # ---------------------------------------------------------------- state

    @property
    def durable_seq(self) -> int:
        """The highest sequence number known to be fsynced."""
        return self._commits.synced_seq

    @property
    def last_seq(self) -> int:
        """The highest sequence number handed out."""
        return self._writer.next_seq - 1

    @property
    def failed(self) -> bool:
        return self._writer.failed is not None

    def segments(self) -> list[tuple[int, int, bool]]:
        """(base sequence number, size in bytes, sealed) of every segment, oldest first."""
        writer = self._writer
        with writer.lock:
            out = [(s.base, s.size, s.sealed) for s in writer.segments[:-1]]
            return out + [(writer.segments[-1].base, writer.end, False)]

    # --------------------------------------------------------------- compaction

    def roll(self) -> None:
        """Seal the active segment now (if it holds records) and start a new one. With other
        processes sharing the log, only inside a turn (`turn`, held by the caller)."""
        writer = self._writer
        with writer.lock:
            writer.check_usable()
            if self._turns.shared and not self._turns.holding:
                raise LockedError(f"{self.path}: sealing a segment of a shared log needs a turn", path=self.path)
            if writer.end > SEGMENT_HEADER_SIZE:
                writer.rollover_locked()

    def sealed_prefix(self) -> list[tuple[int, int]]:
        """(base, SEAL sequence number) of every sealed segment, oldest first."""
        with self._writer.lock:
            self.check_usable()
            return [(s.base, s.last_seq) for s in self._writer.segments[:-1]]

    def write_compacted(self, bases: list[int], drop: Callable[[Record], bool]) -> compact.Output:
        """Compaction step C1 for the sealed prefix `bases`: write the records `drop`
        keeps to a new file, outside any lock. `install` or `discard` it after. A file
        error here leaves the log usable; it is raised named (`fs.access_error`)."""
        try:
            return compact.write_compacted(self.fs, self.path, bases, self._template, drop, mode=self.mode)
        except OSError as exc:
            raise access_error(exc, self.path) from exc

    def install(self, out: compact.Output, bases: list[int]) -> None:
        """Steps C2-C4: swap the compacted segment in. A failure after the commit
        point poisons the log (reopening rolls the swap forward)."""
        writer = self._writer
        self._turns.new_epoch()  # before the swap: others re-read their places (§14)
        with writer.lock:
            self.check_usable()
            segments = writer.segments
            if [s.base for s in segments[:len(bases)]] != bases or len(bases) >= len(segments):
                raise InvalidArgument("the compacted segments are no longer the sealed prefix")
            try:
                compact.commit(self.fs, self.path, out, bases)
            except OSError as exc:
                writer.poison(exc)
                raise writer.failure() from exc
            self._reader.forget(bases)
            for base in bases:
                self._digests.pop(base, None)
            segments[:len(bases)] = [KnownSegment(out.base, out.size, True, out.seal_seq)]

    def discard(self, out: compact.Output) -> None:
        """Remove an uncommitted compaction file."""
        if self.fs.exists(out.tmp_path):
            self.fs.unlink(out.tmp_path)

    # ---------------------------------------------------------------- lifecycle

    def close(self, checkpoint: Callable[[], bytes] | None = None) -> None:
        """Write and fsync what is pending, stop the syncer, let go of the directory. Safe to repeat.

        Alone (no other process has the log open; the caller holds its `turn`, or uses no
        turns), it also cuts the preallocated zeros and, with `checkpoint` (called, before
        the log's lock is taken, for the state blob) and everything durable, writes the
        checkpoint file, so that the next open with a `restore` callback hands it the
        blob and replays only what comes after. Failing to write it costs the next open
        time, not data: it is logged, not raised. A failed log, or one whose open skipped
        damage (salvage), writes none (and does not ask for the blob): a later normal open
        still reports the damage. Not alone, it publishes its end and leaves the files as
        they are for the others.
        """
        writer, commits, turns = self._writer, self._commits, self._turns
        alone = not writer.closed and turns.holding and writer.failed is None and turns.alone()
        state = None
        if checkpoint is not None and alone and not self.report.lost and not self.report.unrecovered:
            state = checkpoint()
        with writer.lock:
            if writer.closed:
                return
            commits.idle_locked()
            error: BaseException | None = None
            if writer.failed is None:
                try:
                    if alone:
                        writer.finish_locked()
                    else:
                        writer.flush_locked()
                        writer.active.fdatasync()
                    commits.synced_seq = writer.written_seq
                except (OSError, WriterFailedError) as exc:
                    error = exc
            if state is not None and error is None and writer.failed is None:
                self._write_checkpoint(state)
        if turns.holding and writer.failed is None and error is None:
            try:
                turns.publish_final()
            except OSError:
                pass
        with writer.lock:
            writer.closed = True
            commits.wake_all_locked()
        commits.stop_syncer()
        self._release_files()
        if writer.failed is not None and error is None:
            raise writer.failure()
        if isinstance(error, OSError):
            raise WriterFailedError(f"final fsync of {self.path} failed: {error}") from error
        if error is not None:
            raise error

    def _write_checkpoint(self, state: bytes) -> None:
        """Write `logq.checkpoint` for the log as it is now (all of it written and fsynced):
        to a temporary file, fsynced, renamed over the old one, directory fsynced."""
        writer = self._writer
        try:
            covered = []
            for s in writer.segments:
                end = s.size if s.sealed else writer.end
                last = s.last_seq if s.sealed else max(writer.written_seq, s.base - 1)
                known = self._digests.get(s.base)
                if known is None or known[0] != end:
                    f = self._reader.file(s.base) if s.sealed else writer.active
                    known = (end, checkpoint.digest(f, end))
                covered.append(checkpoint.Covered(s.base, end, last, known[1], s.sealed))
            data = checkpoint.encode(checkpoint.Checkpoint(writer.written_seq, covered, state))
            replace_file(self.fs, self.path, os.path.join(self.path, checkpoint.NAME), data, self.mode)
        except (OSError, CorruptionError) as exc:
            logging.getLogger("logq").warning(
                "could not write the checkpoint of %s (%s): the next open replays the whole log", self.path, exc)

    def _release_files(self) -> None:
        """Let go of every file; each step runs even if one before it raised."""
        try:
            if self._owners is not None:  # before the writer lock goes with the turns (owners.py)
                self._owners.close(remove=self._writer.failed is None)
        finally:
            try:
                self._reader.close()
                self._writer.close_file()
                if self._marks is not None:
                    self._marks.close()
            finally:
                self._turns.close()

    def _abandon(self) -> None:
        """For tests: stop as a crash would, with no flush, no fsync and no trim of the
        preallocated zeros; only the lock and the open files go, as with the process."""
        self._writer.closed = True
        self._commits.stopping.set()
        if self._owners is not None:  # a dead process leaves its owner file behind
            self._owners.close(remove=False)
        self._release_files()


def check_options(sync: str, sync_interval: float, segment_size: int,
                  compression: str | None, compress_threshold: int) -> None:
    """Raise InvalidArgument, naming the option, for any of `Log`'s options out of range."""
    if sync not in SYNC_MODES:
        raise InvalidArgument(f"sync must be one of {SYNC_MODES}, not {sync!r}")
    if not isinstance(sync_interval, (int, float)) or not 0 < sync_interval <= 60:
        raise InvalidArgument(f"sync_interval must be seconds in (0, 60], not {sync_interval!r}")
    if not isinstance(segment_size, int) or segment_size < 4096:
        raise InvalidArgument(f"segment_size must be an int of at least 4096 bytes, not {segment_size!r}")
    if compression not in (None, "zstd"):
        raise InvalidArgument(f"compression must be None or 'zstd', not {compression!r}")
    if not isinstance(compress_threshold, int) or compress_threshold < 0:
        raise InvalidArgument(f"compress_threshold must be a non-negative int, not {compress_threshold!r}")
