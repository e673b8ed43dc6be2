"""Mode `multi`: several real processes on one directory under a kill -9 soak, and two
handles on one simulated directory (handles.py), in alternating rounds.

Theory of operation
-------------------
A round of real processes starts children (`python -m fuzz.multi --child ROLE
DIR SEED SYNC`): producers (enqueue, enqueue_many, some with unique keys),
consumers (lease or lease_many, then ack, fail or release what they hold)
and an admin (cancel a pending job, retry a dead one, expire_leases, sync,
stats, compact). Each prints `B {call}` before a call and `A {result}` after
it (`E {error}` if it raised), flushed at once over its pipe. Leases last
ten minutes, so no lease expires by time while the round runs: a job changes
hands only through its holder's ack, fail or release, the death of its
holder (lease owners), or a reopen that is alone.

While the round runs the parent SIGKILLs children at random moments and
starts new ones; some children end by themselves after a number of calls
(a clean close while others share the queue). In half the rounds the parent
keeps a queue open throughout (so the children always share it), in the
other half it opens only after the round (children may be alone, keeping the
writer lock, when killed). Then every child is killed, and the `Ledger`
checks what the children were told against the directory:

  * no two live children held one job's lease at once; a lease never hands
    out a job acked or cancelled (a killed child's leases end at once: the
    others find its owner file unlocked; so may those of a child that closes
    the queue, whose owner file another may find unlocked before it is gone);
  * no job was acked twice; each child's enqueue ids increase, and an
    enqueue without a key never returns an id handed out before;
  * `logq.log.verify.verify` finds no damage; what the parent's queue saw
    (when it was open throughout) is what a reopen alone gives, every lease
    lost (pending with its attempt counted, or dead after its last); every
    acknowledged enqueue exists with its payload, every acked job is done,
    every cancelled job cancelled, no job is active, and each unique key is
    held by at most one pending job that was never retried (a retried job
    takes its key again beside another: spec/semantics.md §8); a second reopen gives the same jobs and cuts
    nothing.

The next round reuses the directory and the ledger. As in soak mode, a seed
fixes every child's calls but not the moments of the kills; a failing round's
directory is kept and its path printed.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from logq import InvalidTransition, Queue
from logq.log.verify import verify

from .driver import BACKOFF
from .model import Failure
from .oracle import Violation

SEGMENT_SIZE = 16384
LEASE_TIME = 600.0  # no lease expires by time within a round
MAX_ATTEMPTS = 3
KEYS = ["k1", "k2", "k3"]


def queue_options(sync: str) -> dict[str, Any]:
    return dict(sync=sync, segment_size=SEGMENT_SIZE, lease_time=LEASE_TIME, backoff=BACKOFF,
                max_attempts=MAX_ATTEMPTS, compact_threshold=None, retain_done=0.0, retain_dead=0.0)


# ----------------------------------------------------------------- the children


def child(role: str, path: str, seed: int, sync: str) -> None:
    """Run random calls of `role` until killed or done, reporting each before and after."""
    rng = random.Random(seed)
    q = Queue(path, **queue_options(sync))
    out = sys.stdout
    _say(out, "O", {"pid": os.getpid()})
    held: list[int] = []
    for _ in range(rng.choice([30, 200, 10**9])):
        call = _draw(role, rng, q, held)
        call["t"] = time.monotonic()  # (one clock for every process: calls of children are ordered by it)
        _say(out, "B", call)
        try:
            result = _perform(q, call, held)
        except InvalidTransition as exc:  # (a pending job another process took meanwhile)
            _say(out, "E", {"error": type(exc).__name__, "message": str(exc)[:200]})
            continue
        _say(out, "A", {"result": result, "t": time.monotonic()})
    _say(out, "Q", {"t": time.monotonic()})  # closing: its leases may end from now on
    q.close()
    _say(out, "X", {})


def _say(out: TextIO, tag: str, body: dict[str, Any]) -> None:
    out.write(f"{tag} {json.dumps(body)}\n")
    out.flush()


def _draw(role: str, rng: random.Random, q: Queue, held: list[int]) -> dict[str, Any]:
    if role == "producer":
        if rng.random() < 0.2:
            return {"op": "enqueue_many", "items": [[rng.choice("ab"), rng.randbytes(rng.choice([8, 300])).hex()]
                                                    for _ in range(rng.randint(1, 30))]}
        return {"op": "enqueue", "name": rng.choice("ab"), "payload": rng.randbytes(rng.choice([0, 20, 900])).hex(),
                "priority": rng.choice([0, 0, 1]), "key": rng.choice([None] * 6 + KEYS)}
    if role == "consumer":
        if not held or (len(held) < 3 and rng.random() < 0.4):
            return {"op": rng.choice(["lease", "lease", "lease_many"]), "n": rng.randint(1, 3)}
        jid = held[rng.randrange(len(held))]
        return {"op": rng.choice(["ack", "ack", "fail", "release"]), "id": jid, "retry": rng.random() < 0.7}
    kind = rng.choices(["cancel", "retry", "expire", "sync", "stats", "compact"], [30, 20, 10, 10, 20, 10])[0]
    if kind in ("cancel", "retry"):
        ids = [j.id for j in q.jobs(state="pending" if kind == "cancel" else "dead", limit=20)]
        return {"op": kind, "id": rng.choice(ids)} if ids else {"op": "stats"}
    return {"op": kind}


def _perform(q: Queue, call: dict[str, Any], held: list[int]) -> Any:
    op = call["op"]
    if op == "enqueue":
        return q.enqueue(call["name"], bytes.fromhex(call["payload"]), priority=call["priority"], key=call["key"])
    if op == "enqueue_many":
        return q.enqueue_many([(n, bytes.fromhex(p)) for n, p in call["items"]])
    if op in ("lease", "lease_many"):
        jobs = q.lease_many(call["n"]) if op == "lease_many" else [j for j in [q.lease()] if j is not None]
        held.extend(j.id for j in jobs)
        return [[j.id, j.attempts] for j in jobs]
    if op in ("ack", "fail", "release"):
        held.remove(call["id"])
        if op == "ack":
            return q.ack(call["id"])
        if op == "fail":
            return q.fail(call["id"], "err", retry=call["retry"])
        return q.release(call["id"])
    if op == "cancel":
        return q.cancel(call["id"])
    if op == "retry":
        return q.retry(call["id"])
    if op == "expire":
        return q.expire_leases()
    if op == "sync":
        return q.sync()
    if op == "stats":
        return sum(q.stats().counts.values())
    if op == "compact":
        before = {j.id for j in q.jobs(limit=None)}
        aborted = q.compact().aborted
        return {"aborted": aborted, "swept": sorted(before - {j.id for j in q.jobs(limit=None)})}
    raise ValueError(op)


# ----------------------------------------------------------------- the ledger


@dataclass
class Hold:
    """A lease a child was told it got: from the moment its call returned (`since`) until its
    ack, fail or release began, or the child was killed (`until`; None: to the round's end)."""

    who: str
    began: float  # when the lease call began (the lease took effect after this)
    since: float
    until: float | None = None


@dataclass
class Ledger:
    """What the children were told, across rounds. The parent reads the children's reports
    in no particular order between children, so checks that compare calls of different
    children wait for the end of the round and order them by their times (CLOCK_MONOTONIC,
    one clock for every process of the machine)."""

    enqueued: dict[int, tuple[str, bytes] | None] = field(default_factory=dict)  # id -> (name, payload); keyed: None
    acked: dict[int, tuple[str, float]] = field(default_factory=dict)  # id -> (child, when its ack returned)
    cancelled: dict[int, float] = field(default_factory=dict)  # id -> when the cancel returned
    holds: dict[int, list[Hold]] = field(default_factory=dict)  # id -> leases of this round
    killed: dict[str, float] = field(default_factory=dict)  # child -> when it was killed (this round)
    ended: set[str] = field(default_factory=set)  # children that closed the queue and exited by themselves
    closing: dict[str, float] = field(default_factory=dict)  # child -> when it began to close the queue
    last_id: dict[str, int] = field(default_factory=dict)  # child -> the last id its enqueues returned
    swept: set[int] = field(default_factory=set)  # jobs a compaction removed
    compact_cut: bool = False  # a compaction was cut short: final jobs may be gone
    retried: set[int] = field(default_factory=set)  # a retried job takes its key again beside another
    calls: int = 0

    def report(self, who: str, call: dict[str, Any], result: Any, t: float) -> None:
        """Child `who` was told `result` for `call` (begun at call["t"], returned at `t`)."""
        self.calls += 1
        op = call["op"]
        if op in ("enqueue", "enqueue_many"):
            self._enqueued(who, call, [result] if op == "enqueue" else result)
        elif op in ("lease", "lease_many"):
            for jid, _attempts in result:
                self.holds.setdefault(jid, []).append(Hold(who, call["t"], t))
        elif op in ("ack", "fail", "release"):
            self._finished(who, op, call["id"], call["t"], t)
        elif op == "cancel":
            self.cancelled[call["id"]] = t
        elif op == "retry":
            self.retried.add(call["id"])
        elif op == "compact":
            self.swept |= set(result["swept"])

    def _enqueued(self, who: str, call: dict[str, Any], ids: list[int]) -> None:
        if ids != sorted(ids) or ids[0] <= self.last_id.get(who, 0) and call.get("key") is None:
            raise Violation(f"{who}: enqueue ids {ids} do not increase (last {self.last_id.get(who)})")
        self.last_id[who] = max(ids[-1], self.last_id.get(who, 0))
        items = [(call["name"], call["payload"])] if call["op"] == "enqueue" else call["items"]
        for jid, (name, payload) in zip(ids, items):
            if call.get("key") is not None:
                self.enqueued.setdefault(jid, None)
                continue
            if jid in self.enqueued:
                raise Violation(f"{who}: enqueue returned id {jid}, handed out before")
            self.enqueued[jid] = (name, bytes.fromhex(payload))

    def _finished(self, who: str, op: str, jid: int, began: float, t: float) -> None:
        mine = [h for h in self.holds.get(jid, []) if h.who == who and h.until is None]
        if not mine:
            raise Violation(f"{who}'s {op} of job {jid} returned, but it was never told it leased it")
        mine[-1].until = began
        if op == "ack":
            if jid in self.acked:
                raise Violation(f"job {jid} acked by {self.acked[jid][0]} and again by {who}")
            self.acked[jid] = (who, t)

    def error(self, who: str, call: dict[str, Any], error: str) -> None:
        """A call raised (the child goes on)."""
        if call["op"] not in ("cancel", "retry") or error != "InvalidTransition":
            raise Violation(f"{who}: {json.dumps(call)[:100]} raised {error}")

    def cut_short(self, who: str, call: dict[str, Any] | None, at: float) -> None:
        """`who` was killed at `at`; `call` (if any) was under way and may or may not have happened."""
        self.killed[who] = at
        if call is None:
            return
        if call["op"] == "retry":
            self.retried.add(call["id"])
        if call["op"] == "compact":
            self.compact_cut = True

    def check_round(self, end: float) -> None:
        """Order the leases of the round: no job was leased while a live child held it (a
        killed child's leases end with it: lease owners), or after it was acked or cancelled."""
        for jid, holds in self.holds.items():
            finals = [("acked", self.acked[jid][1])] if jid in self.acked else []
            finals += [("cancelled", self.cancelled[jid])] if jid in self.cancelled else []
            for h in holds:
                for what, when in finals:
                    if h.began > when:
                        raise Violation(f"{h.who} leased job {jid} after it was {what}: a final job came back")
                for other in holds:
                    until = min(x for x in (other.until, self.killed.get(other.who), self.closing.get(other.who), end)
                                if x is not None)
                    if other.who != h.who and other.since < h.began and h.since < until:
                        raise Violation(f"{h.who} leased job {jid} while {other.who} held its lease (leases, "
                                        f"monotonic: {holds}; killed at {self.killed.get(other.who)}, "
                                        f"ended by itself: {other.who in self.ended})")

    def check(self, jobs: dict[int, Any], live_view: dict[int, tuple[str, int]] | None) -> None:
        """After a round, on the jobs a reopen alone gives (and what the parent saw before)."""
        seen = {jid: (j.state, j.attempts) for jid, j in jobs.items()}
        if live_view is not None:
            expected = {jid: _lease_lost(s, a) for jid, (s, a) in live_view.items()}
            if expected != seen:
                diff = sorted(j for j in set(expected) | set(seen) if expected.get(j) != seen.get(j))[:8]
                raise Violation(f"a reopen alone differs from what the open queue saw, jobs {diff}: "
                                f"{[(j, live_view.get(j), seen.get(j)) for j in diff]}")
        for jid, item in self.enqueued.items():
            if jid not in jobs and (jid in self.swept or self.compact_cut):
                continue
            if jid not in jobs:
                raise Violation(f"acknowledged enqueue of job {jid} lost")
            if item is not None and (jobs[jid].name, jobs[jid].payload) != item:
                raise Violation(f"job {jid} is {jobs[jid].name}/{jobs[jid].payload[:16]!r}, enqueued as {item[0]}/"
                                f"{item[1][:16]!r}")
        for jid, (who, _) in self.acked.items():
            if jid in jobs and jobs[jid].state != "done":
                raise Violation(f"job {jid}, acked by {who}, is {jobs[jid].state}")
        for jid in self.cancelled:
            if jid in jobs and jobs[jid].state != "cancelled":
                raise Violation(f"job {jid}, cancelled, is {jobs[jid].state}")
        if any(j.state == "active" for j in jobs.values()):
            raise Violation("a job is still active after a reopen alone")
        held = [j.key for j in jobs.values() if j.key is not None and j.state == "pending" and j.id not in self.retried]
        if len(held) != len(set(held)):
            raise Violation(f"a unique key is held by two pending jobs (none of them retried): {sorted(held)}")

    def new_round(self, jobs: dict[int, Any]) -> None:
        """A reopen alone (giving `jobs`) lost every lease; what a compaction swept is gone."""
        for gone in [jid for jid in self.enqueued if jid not in jobs]:
            del self.enqueued[gone]
        self.swept.clear()
        self.compact_cut = False
        self.holds.clear()
        self.killed.clear()
        self.closing.clear()


def _lease_lost(state: str, attempts: int) -> tuple[str, int]:
    if state != "active":
        return state, attempts
    return ("dead" if attempts >= MAX_ATTEMPTS else "pending"), attempts


# ----------------------------------------------------------------- the parent


@dataclass
class Running:
    """One child process of a round, and its call under way."""

    name: str
    proc: "subprocess.Popen[bytes]"
    err: Any  # the file its stderr goes to (a pipe could fill with its warnings and stop it)
    pending: dict[str, Any] | None = None
    buffer: bytes = b""
    ended: bool = False


def _start(name: str, role: str, path: str, seed: int, sync: str) -> Running:
    cmd = [sys.executable, "-m", "fuzz.multi", "--child", role, path, str(seed), sync]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    return Running(name, proc, err)


def _take(c: Running, ledger: Ledger) -> None:
    """Feed the ledger every whole line child `c` wrote."""
    assert c.proc.stdout is not None
    if c.proc.stdout.closed:  # (killed and read to its end)
        return
    data = b""
    while True:
        try:
            chunk = os.read(c.proc.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    lines = (c.buffer + data).split(b"\n")
    c.buffer = lines.pop()  # a line cut by a kill reported nothing
    for text in lines:
        tag, _, body = text.decode().partition(" ")
        said = json.loads(body)
        if tag == "B":
            c.pending = said
        elif tag == "A":
            assert c.pending is not None, "A without B"
            try:
                ledger.report(c.name, c.pending, said["result"], said["t"])
            except (TypeError, ValueError, KeyError) as exc:  # (a report that makes no sense)
                raise Violation(f"{c.name}: {json.dumps(c.pending)[:150]} -> {said!r:.150}: {exc!r}") from exc
            c.pending = None
        elif tag == "E":
            assert c.pending is not None, "E without B"
            ledger.error(c.name, c.pending, said["error"])
            c.pending = None
        elif tag == "Q":
            ledger.closing[c.name] = said["t"]
        elif tag == "X":
            c.ended = True
            ledger.ended.add(c.name)


def _pump(children: list[Running], ledger: Ledger, seconds: float) -> None:
    """Feed the ledger what the children say for `seconds` (the random moments of the kills)."""
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        outs = [c.proc.stdout for c in children if c.proc.poll() is None]
        select.select(outs, [], [], min(left, 0.05)) if outs else time.sleep(min(left, 0.01))
        for c in children:
            _take(c, ledger)


def _kill(c: Running, ledger: Ledger) -> None:
    """SIGKILL child `c` (unless it ended), read what it said, and check how it ended."""
    killed_at = time.monotonic()  # (it holds nothing after this)
    if c.proc.poll() is None:
        os.kill(c.proc.pid, signal.SIGKILL)
    c.proc.wait()
    _take(c, ledger)
    assert c.proc.stdout is not None
    c.proc.stdout.close()
    c.err.seek(0)
    err = c.err.read().decode(errors="replace")
    c.err.close()
    if c.proc.returncode not in (0, -signal.SIGKILL) or (c.proc.returncode == 0 and not c.ended):
        raise Violation(f"{c.name} exited with {c.proc.returncode}:\n{err[-3000:]}")
    ledger.cut_short(c.name, c.pending if c.proc.returncode != 0 else None, killed_at)


def run_round(path: str, ledger: Ledger, seed: int) -> int:
    """One round of real processes (see the module docstring); returns how many were killed."""
    rng = random.Random(seed)
    sync = rng.choice(["batch", "always"])
    watcher = Queue(path, **queue_options(sync)) if rng.random() < 0.5 else None
    roles = ["producer", "producer", "consumer", "consumer"] + (["admin"] if rng.random() < 0.7 else [])
    children: list[Running] = []
    live: dict[int, Running] = {}
    kills = 0

    def begin(slot: int) -> None:
        n = len(children)
        live[slot] = _start(f"s{seed}.{roles[slot]}{slot}.{n}", roles[slot], path, seed * 1000 + n, sync)
        children.append(live[slot])

    try:
        for slot in range(len(roles)):
            begin(slot)
        for _ in range(rng.randint(1, 4)):
            _pump(children, ledger, rng.uniform(0.05, 0.5))
            slot = rng.choice(sorted(live))
            _kill(live[slot], ledger)
            kills += 1
            begin(slot)
        _pump(children, ledger, rng.uniform(0.05, 0.5))
    finally:
        for c in children:
            if c.proc.returncode is None:
                kills += c.proc.poll() is None
                _kill(c, ledger)
        if watcher is not None:
            live_view = {j.id: (j.state, j.attempts) for j in watcher.jobs(limit=None)}
            watcher.close()
    ledger.check_round(time.monotonic())
    check_directory(path, ledger, live_view if watcher is not None else None)
    return kills


def check_directory(path: str, ledger: Ledger, live_view: dict[int, tuple[str, int]] | None) -> None:
    found = verify(path)
    if not found.ok:
        raise Violation(f"verify found damage after the kills: {found.problems}")
    with Queue(path, **queue_options("batch")) as q:
        jobs = {j.id: j for j in q.jobs(limit=None)}
        last = q.stats().last_seq
    ledger.check(jobs, live_view)
    with Queue(path, **queue_options("batch")) as again:
        if {j.id: j for j in again.jobs(limit=None)} != jobs:
            raise Violation("recovering a second time gives other jobs than recovering once")
        if again.recovery.torn or again.recovery.last_seq != last:
            raise Violation(f"a second recovery still repaired something: {again.recovery}")
    ledger.new_round(jobs)


def run(seed: int, deadline: float, *, log: Callable[[str], None] = print) -> list[Failure]:
    """Rounds until `deadline`: seed s = seed + r; an even s is a round of real processes,
    an odd one a round of two handles on the simulated file system (handles.py)."""
    from . import handles
    path = tempfile.mkdtemp(prefix="logq-multi-")
    ledger, r, kills, sim = Ledger(), 0, 0, 0
    started = time.monotonic()
    try:
        while time.monotonic() < deadline:
            s, r = seed + r, r + 1
            if s % 2 == 1:
                failure = handles.run_round(s)
                if failure is not None:
                    return [failure]
                sim += 1
                continue
            try:
                kills += run_round(path, ledger, s)
            except Exception as exc:  # noqa: BLE001 - every failure is reported
                kept = shutil.copytree(path, path + "-failed")
                log(f"multi: failed in round {r - 1} after {ledger.calls} calls, {time.monotonic() - started:.0f}s")
                where = "".join(traceback.format_exception(exc)[-3:])
                return [Failure("multi", s, f"{type(exc).__name__}: {exc}",
                                f"directory kept at {kept} (a seed replays the calls, not the moments of the "
                                f"kills)\n{where}")]
        log(f"multi: {r - sim} rounds of processes ({kills} kills, {ledger.calls} acknowledged calls, "
            f"{len(ledger.enqueued)} jobs kept), {sim} rounds of two simulated handles, 0 failures")
        return []
    finally:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        raise SystemExit(0)
    raise SystemExit("usage: python -m fuzz.multi --child ROLE DIR SEED SYNC (started by python -m fuzz)")
