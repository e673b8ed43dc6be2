"""Mode `multi`, simulated half: two queue handles on one directory of the simulated
file system, with interleavings that real processes reach only by chance.

Theory of operation
-------------------
A round opens one or two `Queue` objects on one SimFS directory (`open_lock`
models flock per handle, so two handles share the directory as two processes
would) and runs random steps from one seeded generator:

  * a call (soak.py's calls) on either handle, mirrored in soak's `Mirror`,
    which predicts its result exactly; after it, *every* open handle must
    show the jobs the model has: the other handle caught up with it;
  * a compaction while both are open: refused (aborted, nothing swept), or,
    if it runs, the other handle shows the same jobs without the swept ones;
  * the writer-lock holder dies with a batch past the published end: a
    handle takes its turn, writes a batch (whole or torn at a random byte, of
    records no replay could accept) or starts a rollover, and is abandoned
    as a crash would leave it; a new handle opens beside the survivor, and
    the next writer sets the batch aside: both must still show the model's
    jobs, and nothing published is lost; then `expire_leases` on a live
    handle ends the dead one's leases at once (its owner file is unlocked:
    'lease lost: its process ended'), after those past their time (a handle
    closed cleanly keeps its leases until their time);
  * a clean close of one handle, and a new one opened;
  * the end of every process (kill -9) and a reopen alone, checked as soak
    mode checks one: the jobs after some entry no earlier than the last call
    that returned, every lease lost.

A failure names its seed; `python -m fuzz --mode multi --seed S` (S odd) runs
that round first, and the trace of steps is printed.
"""

from __future__ import annotations

import random
from typing import Callable

from logq import LogqError, Queue
from logq.log.codec import SEGMENT_HEADER_SIZE

from . import oracle as m
from .driver import Config, queue_options
from .model import Failure
from .oracle import Violation
from .simfs import SimFS
from .soak import Mirror, _draw, _perform

PATH = "/sim/q"
STEPS = 60
JUNK_TYPE = 250  # a record type no replay accepts: reading an unpublished batch fails loudly


class Round:
    """One round: the handles, the model, the generator and a trace of the steps."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fs = SimFS(seed)
        self.mirror = Mirror()
        self.config = Config(sync=self.rng.choice(["always", "batch"]), seed=seed,
                             segment_size=self.rng.choice([4096, 8192]), path=PATH)
        self.handles: list[Queue] = []
        self.holder: dict[int, Queue] = {}  # job id -> the handle that leased it (lease owners)
        self.trace: list[str] = []

    def open(self) -> Queue:
        q = Queue(PATH, **queue_options(self.config, self.fs, self.mirror.clock))
        self.handles.append(q)
        return q

    def check_all(self, what: str) -> None:
        """Every open handle shows the model's jobs."""
        want = m.views(self.mirror.ledger.state)
        for i, q in enumerate(self.handles):
            seen = m.views({j.id: m.from_info(j) for j in q.jobs(limit=None)})
            if seen != want:
                diff = sorted(k for k in set(seen) | set(want) if seen.get(k) != want.get(k))[:6]
                raise Violation(f"after {what}, handle {i} shows other jobs than the model: "
                                f"{[(k, seen.get(k), want.get(k)) for k in diff]}")

    # -------------------------------------------------------------------- steps

    def call(self) -> None:
        q = self.rng.choice(self.handles)
        call = _draw(self.rng, q)
        if call["op"] == "compact":
            return self.compact(q)
        self.trace.append(f"handle {self.handles.index(q)}: {call}"[:140])
        self.mirror._before(call)
        result = None if call["op"] == "advance" else _perform(q, _Unused(), call)
        self.mirror._after({"result": result, "last_seq": q.stats().last_seq})
        if call["op"] == "lease" and result is not None:
            self.holder[result[0]] = q
        elif "id" in call:
            self.holder.pop(call["id"], None)
        self.check_all(call["op"])

    def compact(self, q: Queue) -> None:
        self.trace.append(f"handle {self.handles.index(q)}: compact ({len(self.handles)} open)")
        before = {j.id for j in q.jobs(limit=None)}
        try:
            report = q.compact()
        except LogqError as exc:  # (LockedError: it needs the queue to itself)
            if len(self.handles) < 2:
                raise Violation(f"compaction refused with one handle open: {exc}") from exc
            self.check_all("a refused compaction")
            return
        swept = sorted(before - {j.id for j in q.jobs(limit=None)})
        if report.aborted and swept:
            raise Violation(f"an aborted compaction removed jobs {swept}")
        self.mirror._before({"op": "compact"})
        self.mirror._after({"result": swept, "last_seq": q.stats().last_seq})
        self.check_all("a compaction")

    def holder_dies(self) -> None:
        """A handle dies holding the writer lock, with an unpublished batch or rollover."""
        q = self.rng.choice(self.handles)
        alone = len(self.handles) == 1  # the next opener recovers: a whole batch would count
        how = self.rng.choice(["torn", "rollover"] if alone else ["whole", "torn", "rollover"])
        self.trace.append(f"handle {self.handles.index(q)} dies holding the writer lock ({how})")
        log = q._backend.log  # type: ignore[attr-defined]
        log.turn.acquire()  # caught up, writer lock held
        try:
            writer = log._writer
            with writer.lock:
                start = writer.end
                if how == "rollover" and writer.end > SEGMENT_HEADER_SIZE:
                    writer.rollover_locked()
                elif how != "rollover":
                    items = [(JUNK_TYPE, self.rng.randbytes(self.rng.choice([3, 100, 700])))
                             for _ in range(self.rng.randint(1, 4))]
                    start = writer._write_batch_locked(items, "batch").offsets[0]  # (after a rollover)
                    if how == "torn":  # zeros from a byte at random up to past its last nonzero byte
                        data = writer.active.pread(writer.end - start, start)
                        last = start + len(data.rstrip(b"\0")) - 1  # (records end with padding zeros)
                        cut = self.rng.randrange(start + 1, last + 1)
                        writer.active.pwrite(bytes(writer.end - cut), cut)
        finally:
            log._abandon()  # its files and locks go, as with its process
            self.handles.remove(q)
        # a rollover (asked for, or before a batch that did not fit) may count: a reopen alone keeps it
        self.mirror.ledger.push("a dying holder's rollover", [self.mirror.ledger.state], None, certain=False)
        if not self.handles:
            return self.reopen_alone(f"the death of the last handle ({how})")
        if self.rng.random() < 0.5:
            self.open()
        self.check_all(f"a holder's death ({how})")
        self.expire_orphans(q)
        if how == "whole":  # before every process ends: a reopen alone would take a whole batch for real
            self.rng.choice(self.handles).stats()  # a turn: the batch is set aside
        elif self.rng.random() < 0.5:
            self.call()

    def expire_orphans(self, dead: Queue) -> None:
        """expire_leases on a live handle finds the dead one's owner file unlocked and ends
        its leases at once ('lease lost: its process ended'), after those past their time."""
        q = self.rng.choice(self.handles)
        orphans = [jid for jid, h in self.holder.items() if h is dead]
        self.trace.append(f"handle {self.handles.index(q)}: expire_leases (orphans {orphans})")
        now, s = self.mirror.clock.time(), self.mirror.ledger.state
        after = m.expire(s, now, "lease expired")
        for jid in orphans:
            if after[jid].state == "active":
                after = m.expire({jid: after[jid]}, now, "lease lost: its process ended", everything=True) | \
                    {k: v for k, v in after.items() if k != jid}
            del self.holder[jid]
        count = q.expire_leases()
        changed = sum(after[k] != s[k] for k in after)
        if count != changed:
            raise Violation(f"expire_leases after a death ended {count} leases; the model {changed}")
        self.mirror.ledger.push("expire_leases after a death", [after], q.stats().last_seq)
        self.check_all("expire_leases after a death")

    def close_one(self) -> None:
        q = self.rng.choice(self.handles)
        self.trace.append(f"handle {self.handles.index(q)} closes")
        q.close()
        self.handles.remove(q)
        if not self.handles:
            self.reopen_alone("a clean close of the last handle")

    def kill_all(self) -> None:
        """Every process ends (kill -9); one opens alone and recovers."""
        self.trace.append(f"kill -9 of every process ({len(self.handles)} handles)")
        self.fs.crash("kill9")
        for q in self.handles:
            q._backend.log._abandon()  # type: ignore[attr-defined]
        self.handles.clear()
        self.holder.clear()
        self.reopen_alone("kill -9")

    def reopen_alone(self, why: str) -> None:
        self.holder.clear()  # an open that is alone ends every lease
        q = self.open()
        observed = {j.id: m.from_info(j) for j in q.jobs(limit=None)}
        ledger = self.mirror.ledger
        match = ledger.match(observed, q.recovery.last_seq, self.mirror.clock.time(), ledger.returned)
        ledger.recovered(match, q.stats().last_seq, durable=False)
        self.trace.append(f"reopened alone after {why}")

    def step(self) -> None:
        kinds = ["call"] * 12 + ["open"] * (2 - len(self.handles)) * 2 + ["holder_dies"] * 2 \
            + ["close"] + ["kill"] + (["compact"] * 2 if len(self.handles) > 1 else [])
        kind = self.rng.choice(kinds)
        if kind == "open":
            self.trace.append(f"handle {len(self.handles)} opens")
            self.open()
            self.check_all("an open beside another handle")
        elif kind == "holder_dies":
            self.holder_dies()
        elif kind == "close":
            self.close_one()
        elif kind == "kill":
            self.kill_all()
        elif kind == "compact":
            self.compact(self.rng.choice(self.handles))
        else:
            self.call()

    def close(self) -> None:
        for q in self.handles:
            try:
                q.close()
            except LogqError:
                pass


class _Unused:
    """The clock `soak._perform` advances (the round's advances go to the model's clock)."""

    def advance(self, seconds: float) -> None:
        raise AssertionError("advance is the model's")


def run_round(seed: int, steps: int = STEPS, log: Callable[[str], None] | None = None) -> Failure | None:
    """One round from `seed`; the failure (with the trace of steps), or None."""
    r = Round(seed)
    try:
        r.open()
        for _ in range(steps):
            r.step()
    except Exception as exc:  # noqa: BLE001 - every failure is reported
        trace = "\n".join(f"    {t}" for t in r.trace[-25:])
        return Failure("multi", seed, f"{type(exc).__name__}: {exc}",
                       f"two simulated handles ({r.config.sync}, segments of {r.config.segment_size}); "
                       f"last steps:\n{trace}")
    finally:
        r.close()
    return None


def main(argv: list[str]) -> int:
    """`python -m fuzz.handles SEED`: replay one round and print its steps."""
    failure = run_round(int(argv[0]))
    if failure is None:
        print("ok")
        return 0
    print(failure.error)
    print(failure.reproduction)
    return 1


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
