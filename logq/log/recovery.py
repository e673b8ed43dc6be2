"""Recovery: what opening a log does before the first append.

Theory of operation
-------------------
`Recovery.run` finishes or undoes an interrupted compaction, drops a
checkpoint whose writing did not finish, restores a usable checkpoint
(`checkpoint.py`), then scans every segment after it in order (`scan`, a
window at a time), handing each record of a complete batch to the caller's
`replay` callback. It repairs the last segment's torn tail, and finally
makes the last segment and the directory durable (`adopt`), so that what it
accepted cannot be taken back by a power loss. The writer takes over from
the segments it found (`Writer.start`).

Recovery rules (spec/format.md §7):
  * evidence of what was durable, besides the segments: the durable mark
    (`mark.py`) and a well-formed checkpoint, usable or not (`Evidence`);
    the first segment has base 1, and a directory that had its marker has a
    segment, or segments were lost;
  * every segment but the last must verify completely and end with SEAL;
    damage there, or a gap between one segment's SEAL and the next base, is a
    `CorruptionError` naming file and offset (`salvage=True` skips the damage
    and reports the lost ranges instead);
  * the last segment must reach its durable end, and the log its durable
    sequence number: short of them, bytes some fsync covered are damaged or
    missing, never a torn write; this is checked before anything is cut;
  * the last segment is cut after its last complete batch; the cut bytes are
    first saved to `<segment>.<offset>.torn` (fsynced, directory fsynced), then
    the file is truncated and fsynced, before any new append;
  * zeros after the last complete batch are preallocated space, not a torn
    tail: they are kept (after a SEAL, cut) and nothing is reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..errors import CorruptionError, RecordTooLargeError
from . import checkpoint, compact, mark
from .control import State
from .codec import MAX_STORED, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, Record
from .directory import TMP_SUFFIX, replace_file
from .fs import DEFAULT_MODE, File, FileSystem, access_error
from .segment import (
    ZERO_CHUNK, KnownSegment, LostRange, ScanResult, is_unborn, nonzero_end, parse_segment_name, scan_file, segment_name,
)

TORN_SUFFIX = ".torn"
CHECKPOINT_TMP = checkpoint.NAME + TMP_SUFFIX

ReplayCallback = Callable[[Record, int], None]  # called as replay(record, segment base)
RestoreCallback = Callable[[bytes | memoryview], None]  # called with the state blob of a usable checkpoint


@dataclass(frozen=True)
class TornTail:
    """Bytes cut from the end of the last segment at open, and where they were kept."""

    path: str
    offset: int
    length: int
    saved_to: str


@dataclass
class RecoveryReport:
    """What opening the log found and did."""

    segments: int = 0
    records: int = 0
    last_seq: int = 0
    torn: list[TornTail] = field(default_factory=list)
    lost: list[LostRange] = field(default_factory=list)
    restored_seq: int | None = None  # the checkpoint's last sequence number, when one was restored
    checkpoint_skipped: str | None = None  # why a checkpoint that exists was not used
    # salvage: what the replay callback could not apply, as its caller reports it (the queue:
    # logq.core.salvage.UnrecoveredJob, one per job); filled by the caller after the open
    unrecovered: list[Any] = field(default_factory=list)


@dataclass
class Evidence:
    """What the directory says was durable, besides the segments (spec/format.md §7): the
    durable mark (`mark.py`) and a well-formed checkpoint, even one not usable to restore."""

    seq: int = 0  # every record up to this sequence number was durable
    ends: dict[int, int] = field(default_factory=dict)  # segment base -> bytes known durable
    sources: tuple[str, ...] = ()

    @classmethod
    def of(cls, m: mark.Mark | None, cp: checkpoint.Checkpoint | None) -> "Evidence":
        ev = cls()
        if m is not None:
            ev.seq, ev.ends[m.base] = m.seq, m.end
            ev.sources += (f"{mark.NAME}: segment {m.base} to byte {m.end}, sequence number {m.seq}",)
        if cp is not None:
            last = cp.segments[-1]
            ev.seq = max(ev.seq, cp.last_seq)
            if not last.sealed:  # only the active segment's end: compaction may rewrite sealed ones
                ev.ends[last.base] = max(ev.ends.get(last.base, 0), last.end)
            ev.sources += (f"{checkpoint.NAME}: sequence number {cp.last_seq}",)
        return ev

    def end_of(self, base: int) -> int:
        """How far segment `base`, the last one, is known to have been durable (0: unknown)."""
        return self.ends.get(base, 0)

    def describe(self) -> str:
        return "; ".join(self.sources)


class Recovery:
    """One open's recovery of the directory `path`: replays, repairs, reports.

    After `run`: `segments` (what the writer takes over), `digests` (the
    restored checkpoint's, by base), `seal_at_open` (salvage skipped damage
    inside the last segment: seal it, so a later normal open does not cut
    the records after the damage) and `report`.
    """

    def __init__(self, fs: FileSystem, path: str, *, salvage: bool, mode: int = DEFAULT_MODE,
                 limit: int = MAX_STORED) -> None:
        self.fs, self.path, self.salvage, self.mode = fs, path, salvage, mode
        self.limit = limit  # the largest record payload replay accepts (RecordTooLargeError above it)
        self.report = RecoveryReport()
        self.segments: list[KnownSegment] = []
        self.digests: dict[int, tuple[int, int]] = {}  # base -> (end, digest) of the restored checkpoint
        self.seal_at_open = False
        self.evidence = Evidence()
        self.mark: mark.Mark | None = None  # the durable mark found, if any
        self.published: State | None = None  # `run`: the state other processes published, if any

    def run(self, replay: ReplayCallback | None, restore: RestoreCallback | None, *,
            had_meta: bool = True, published: State | None = None) -> int:
        """Recover the directory; return the last sequence number found. `had_meta`: the
        directory held its marker before this open (so it held segments: §7 rule 0).

        With `published` (other processes have the log open: spec/format.md §14) it only
        reads: every segment up to the published one, that one up to the published end,
        which must be valid; it changes no file (no repair, no cut, no adopt)."""
        fs, report = self.fs, self.report
        self.published = published
        if published is None:
            compact.recover(fs, self.path, fs.listdir(self.path), parse_segment_name)
        names = fs.listdir(self.path)
        if CHECKPOINT_TMP in names and published is None:  # a close that did not finish writing its checkpoint
            try:
                fs.unlink(os.path.join(self.path, CHECKPOINT_TMP))
            except OSError as exc:  # the checkpoint is optional: do without it
                restore, report.checkpoint_skipped = None, f"{access_error(exc, self.path)}; replayed the whole log"
        bases = sorted(b for b in map(parse_segment_name, names) if b is not None)
        if published is not None:  # later segments are newer than the state: catching up reads them
            bases = [b for b in bases if b <= published.base]
        cp = self._load_checkpoint(names, report_skip=restore is not None)
        self.mark = self._load_mark()
        self.evidence = Evidence.of(self.mark, cp)
        self._check_first_segment(bases, had_meta)
        covered = [] if restore is None or cp is None else self._restore_checkpoint(cp, bases, restore)
        self.segments = [KnownSegment(c.base, c.end, c.sealed, c.last_seq) for c in covered]
        last_seq, resume = covered[-1].last_seq if covered else 0, SEGMENT_HEADER_SIZE
        if covered and not covered[-1].sealed:  # replay what was appended after the checkpoint
            self.segments.pop()
            bases, resume = bases[len(covered) - 1:], covered[-1].end
        else:
            bases = bases[len(covered):]
        for i, base in enumerate(bases):
            is_last = i == len(bases) - 1
            for lost in report.lost:  # salvage: ranges lost at the end of earlier segments end here
                lost.before_seq = base if lost.before_seq is None else lost.before_seq
            deliver = _no_replay if replay is None else _delivering(replay, base)
            last_seq = self._recover_segment(base, None if is_last else bases[i + 1], last_seq, deliver,
                                             report, resume if i == 0 else SEGMENT_HEADER_SIZE)
        if self.segments and published is None:
            self._adopt(self.segments[-1].base)
        else:  # salvage of a log whose every segment is lost: its sequence numbers are not reused
            last_seq = max(last_seq, self.evidence.seq)
        return last_seq

    def _check_first_segment(self, bases: list[int], had_meta: bool) -> None:
        """§7 rule 0: the first segment has base 1 (compaction keeps the first base), and a
        directory that held its marker holds a segment."""
        if bases and bases[0] > 1:  # (a base of 0 is a misnamed file: the scan says so)
            self._lost(self._seg_path(bases[0]), 0, 0,
                       f"the first segment starts at sequence number {bases[0]}, not 1: "
                       f"segments holding 1..{bases[0] - 1} are missing", 0, bases[0])
        elif not bases and (had_meta or self.evidence.seq):
            self._lost(self.path, 0, 0, "the directory holds no segment, though it held a queue "
                       f"({self.evidence.describe() or 'logq.meta'}): every segment is missing", 0, None)

    def _check_durable_seq(self, last_seq: int, path: str, end: int, *, unsealed: bool, told: bool = False) -> int:
        """§7 rule 7, checked before recovery changes a file: every record the evidence says
        was durable is still there, when the log ends at `last_seq` (at byte `end` of
        `path`). Salvage reports the loss and goes on after the lost sequence numbers, so
        that none is used twice (sealing an `unsealed` last segment at once)."""
        ev = self.evidence
        if last_seq >= ev.seq:
            return last_seq
        self._lost(path, end, end, f"records up to sequence number {ev.seq} were durable ({ev.describe()}), "
                   f"but the log ends at {last_seq}: a segment or its end is missing", last_seq, None, told=told)
        self.seal_at_open = self.seal_at_open or unsealed
        return ev.seq

    def _lost(self, path: str, start: int, end: int, msg: str, after_seq: int, before_seq: int | None, *,
              told: bool = False) -> None:
        """Missing durable data: a CorruptionError, or with salvage a reported loss (of the
        records numbered between `after_seq` and `before_seq`, None: to the end), unless
        a range already reported (`told`) covers it."""
        if not self.salvage:
            raise CorruptionError(msg + "; open with salvage=True to read what is left", path=path, offset=start)
        if not told:
            self.report.lost.append(LostRange(path, start, end, msg, after_seq, before_seq))

    def _recover_segment(self, base: int, next_base: int | None, last_seq: int,
                         deliver: Callable[[Record], None], report: RecoveryReport, start: int) -> int:
        """Replay segment `base` (followed by segment `next_base`, None for the last) from
        `start` (past its header, or where a checkpoint ended)."""
        path, is_last = self._seg_path(base), next_base is None
        f = self.fs.open(path, readonly=True)
        try:
            size = f.size()
            if is_last and self.published is not None:  # read only what was published
                return self._recover_published(f, size, path, base, last_seq, deliver, report, start)
            head = f.pread(min(size, SEGMENT_HEADER_SIZE), 0)
            if is_last and is_unborn(head, path) and size <= SEGMENT_HEADER_SIZE:
                last_seq = self._check_durable_seq(last_seq, path, 0, unsealed=False)
                self._keep_aside(path, 0, head, len(head), report)
                self.fs.unlink(path)
                self.fs.fsync_dir(self.path)
                return last_seq
            try:
                return self._recover_scanned(f, size, path, base, next_base, last_seq, deliver, report, start)
            except CorruptionError as exc:  # (in salvage mode scan raises only for the header)
                if not self.salvage or exc.path != path or (exc.offset or 0) >= SEGMENT_HEADER_SIZE:
                    raise
                return self._lose_segment(path, base, next_base, size, last_seq, exc, report)
        finally:
            f.close()

    def _recover_scanned(self, f: File, size: int, path: str, base: int, next_base: int | None, last_seq: int,
                         deliver: Callable[[Record], None], report: RecoveryReport, start: int) -> int:
        salvage, is_last = self.salvage, next_base is None
        if last_seq and base != last_seq + 1 and start == SEGMENT_HEADER_SIZE:
            msg = f"segment sequence broken: expected base {last_seq + 1}, found {base} (missing segment?)"
            if not salvage:
                raise CorruptionError(msg, path=path, offset=0)
            report.lost.append(LostRange(path, 0, 0, msg, last_seq, base))
        result = scan_file(f.pread, size, path, deliver, after_seq=last_seq, salvage=salvage, base=base,
                           start=start, limit=self.limit)
        if isinstance(result.damage, RecordTooLargeError):  # it verifies: not a torn write, never cut
            raise result.damage
        report.records += result.records - (1 if result.sealed else 0)
        if salvage:
            for lost in result.lost:  # a range before the segment's first delivered record
                lost.after_seq = last_seq if lost.after_seq is None else lost.after_seq
            report.lost.extend(result.lost)
            self.seal_at_open = self.seal_at_open or (is_last and any(r.start < result.end for r in result.lost))
        if next_base is not None:
            if result.damage is not None and not salvage:
                raise result.damage
            if not result.sealed:
                if not salvage:
                    raise CorruptionError("sealed segment does not end with a SEAL record",
                                          path=path, offset=result.end)
                report.lost.append(LostRange(path, result.end, size, "segment not sealed",
                                             result.last_seq if result.last_seq is not None else last_seq))
                # its SEAL was the next base - 1: no number up to it may be given out again
                result.last_seq = max(result.last_seq or 0, last_seq, next_base - 1)
        seg_last = result.last_seq if result.last_seq is not None else max(last_seq, base - 1)
        if is_last:
            return self._recover_last(f, size, path, base, result, seg_last, report)
        self.segments.append(KnownSegment(base, result.end, True, seg_last))
        return seg_last

    def _recover_published(self, f: File, size: int, path: str, base: int, last_seq: int,
                           deliver: Callable[[Record], None], report: RecoveryReport, start: int) -> int:
        """The last segment, up to the published end, when other processes have the log open."""
        published = self.published
        assert published is not None
        if published.base != base or size < published.end:
            raise CorruptionError(f"the queue's control file says the log goes on to byte {published.end} of "
                                  f"segment {published.base}, but that file holds {size} bytes", path=path, offset=size)
        result = scan_file(f.pread, published.end, path, deliver, after_seq=last_seq, base=base, start=start,
                           limit=self.limit)
        if result.end != published.end:
            raise result.damage or CorruptionError(
                f"records end at byte {result.end}, before the published end {published.end}", path=path,
                offset=result.end)
        report.records += result.records
        seg_last = published.last_seq
        self.segments.append(KnownSegment(base, result.end, False, seg_last))
        return seg_last

    def _recover_last(self, f: File, size: int, path: str, base: int, result: ScanResult, seg_last: int,
                      report: RecoveryReport) -> int:
        """§7 rules 4 and 7 for the last segment: refuse (salvage: report) if it falls short
        of what was durable, then cut a torn tail. Returns the last sequence number."""
        durable_end = self.evidence.end_of(base)
        # salvage: a range the scan reported up to the valid end already tells this loss
        told = any(r.path == path and r.end >= result.end for r in report.lost)
        if result.end < durable_end:
            damage = "" if result.damage is None else f" ({result.damage.reason})"
            self._lost(path, result.end, durable_end,
                       f"the segment is valid only up to byte {result.end}, but bytes up to {durable_end} were "
                       f"durable ({self.evidence.describe()}): damage{damage}, not a torn write", seg_last, None,
                       told=told)
            self.seal_at_open = True
        last_seq = self._check_durable_seq(seg_last, path, result.end, unsealed=not result.sealed, told=told)
        if result.end < size:
            written = nonzero_end(f.pread, result.end, size)  # the tail is read a chunk at a time
            if written == result.end:  # all zeros: preallocated space, not a torn write
                report.lost[:] = [r for r in report.lost if r.path != path or r.start < result.end]
                if result.sealed:  # a sealed segment ends at its SEAL
                    self._cut_tail(path, result.end, f, result.end, report)
            else:
                self._cut_tail(path, result.end, f, written, report)
        self.segments.append(KnownSegment(base, result.end, result.sealed, seg_last))
        return last_seq

    def _lose_segment(self, path: str, base: int, next_base: int | None, size: int, last_seq: int,
                      exc: CorruptionError, report: RecoveryReport) -> int:
        """Salvage: segment `base`'s header does not verify, so none of its records can be
        read; report it lost whole and return the last sequence number it may have held
        (up to the next segment's base; for the last segment, as many records as its bytes
        could hold, so that no number it may have used is given out again)."""
        report.lost.append(LostRange(path, 0, size, f"segment header damaged, every record in it lost: {exc.reason}",
                                     last_seq, next_base))
        seg_last = next_base - 1 if next_base is not None else max(last_seq, base + size // RECORD_HEADER_SIZE)
        self.segments.append(KnownSegment(base, size, True, seg_last))
        return seg_last

    def _load_checkpoint(self, names: list[str], *, report_skip: bool) -> checkpoint.Checkpoint | None:
        """The checkpoint file, decoded; None when there is none, or it cannot be read or is
        damaged (said in the report when it was wanted for a restore): never an error."""
        if checkpoint.NAME not in names:
            return None
        path = os.path.join(self.path, checkpoint.NAME)
        try:
            f = self.fs.open(path, readonly=True)
            try:
                return checkpoint.load(f.pread, f.size())  # checked a chunk at a time before read whole
            finally:
                f.close()
        except OSError as exc:  # the checkpoint is optional: an unusable one never blocks an open
            if report_skip:
                self.report.checkpoint_skipped = f"{access_error(exc, path)}; replayed the whole log instead"
        except CorruptionError as exc:
            if report_skip:
                self.report.checkpoint_skipped = f"{path}: {exc.reason}; replayed the whole log instead"
        return None

    def _load_mark(self) -> mark.Mark | None:
        """The durable mark; None when there is none or it cannot be read (never an error)."""
        try:
            return mark.read(self.fs, self.path)
        except OSError:
            return None

    def _restore_checkpoint(self, cp: checkpoint.Checkpoint, bases: list[int],
                            restore: RestoreCallback) -> list[checkpoint.Covered]:
        """The segments a usable checkpoint covers, after handing its state to `restore`;
        [] (and the reason in the report) when it cannot be trusted."""
        path = os.path.join(self.path, checkpoint.NAME)
        try:
            checkpoint.verify(cp, bases, lambda base: self.fs.open(self._seg_path(base), readonly=True))
            restore(cp.state)
        except CorruptionError as exc:
            self.report.checkpoint_skipped = f"{path}: {exc.reason}; replayed the whole log instead"
            return []
        self.digests = {c.base: (c.end, c.digest) for c in cp.segments}
        self.report.restored_seq = cp.last_seq
        return cp.segments

    def _adopt(self, base: int) -> None:
        """Make the last segment and the directory durable before anything is appended.

        A crashed process may have left the last segment's tail, its SEAL or
        its very name only in the page cache. Recovery replayed those records,
        so it reports them durable: fsync first, so a power loss cannot take
        back what this open accepted (nor drop a SEAL the next segment relies on).
        """
        f = self.fs.open(self._seg_path(base))
        try:
            f.fsync()
        finally:
            f.close()
        self.fs.fsync_dir(self.path)

    def _keep_aside(self, path: str, offset: int, tail: bytes | Iterable[bytes], length: int,
                    report: RecoveryReport) -> None:
        """Save the `length` bytes cut from a segment at `offset` (`tail`: the bytes, or
        chunks of them) in a side file before cutting them."""
        side = f"{path}.{offset}{TORN_SUFFIX}"
        replace_file(self.fs, self.path, side, tail, self.mode)
        report.torn.append(TornTail(path, offset, length, side))

    def _cut_tail(self, path: str, end: int, f: File, written: int, report: RecoveryReport) -> None:
        """Cut the file at `end`; first keep the cut bytes up to `written` (the zeros after
        them dropped) aside, copied from `f` a chunk at a time."""
        if written > end:
            chunks = (f.pread(min(ZERO_CHUNK, written - at), at) for at in range(end, written, ZERO_CHUNK))
            self._keep_aside(path, end, chunks, written - end, report)
        f = self.fs.open(path)
        try:
            f.truncate(end)
            f.fsync()
        finally:
            f.close()

    def _seg_path(self, base: int) -> str:
        return os.path.join(self.path, segment_name(base))


def _delivering(replay: ReplayCallback, base: int) -> Callable[[Record], None]:
    """`replay` bound to segment `base` (a closure: cheaper per record than a keyword partial)."""
    def deliver(rec: Record) -> None:
        replay(rec, base)
    return deliver


def _no_replay(rec: Record) -> None:
    pass
