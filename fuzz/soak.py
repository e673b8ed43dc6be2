"""Mode `soak`: a real child process, a real directory, SIGKILL at random moments.

Theory of operation
-------------------
Each round the parent starts `python -m fuzz.soak --child DIR SEED SYNC NOW`.
The child opens the queue on the real file system (with a fake clock
starting at NOW, so the parent can mirror time exactly), then runs random
calls forever, printing for each one a line `B {call}` before it and
`A {result, last_seq}` once it returned, flushed at once over a pipe.

The parent mirrors every line in a `Ledger` (oracle.py): on `B` it computes
the states the call may lead to, on `A` it checks the result and makes that
state the acknowledged one. After a random time it sends SIGKILL, drains the
pipe (a `B` without its `A` is a call cut short: it may or may not have
happened), and then checks the directory: `logq.log.verify.verify` finds no
damage, the reopened queue matches the ledger with every acknowledged call
kept (a process crash keeps everything written), a second recovery gives the
same jobs and cuts nothing, and - checked once per round while the child
lives - a second opener gets in beside it (which makes the child take turns
for the writer lock from then on). The next round reuses the same
directory and ledger.

Timing makes a soak run only roughly reproducible from its seed (the seed
fixes every call, not the moment of the kill); a failing round's directory is
kept and its path printed.
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
from typing import Any, Callable, TextIO

from logq import LockedError, Queue
from logq.log.verify import verify
from logq.testing import FakeClock

from . import oracle as m
from .driver import BACKOFF
from .model import Failure
from .oracle import Ledger, State, Violation

SEGMENT_SIZE = 8192
START = 1_700_000_000.0


def queue_options(sync: str, clock: FakeClock) -> dict[str, Any]:
    import inspect
    opts: dict[str, Any] = dict(sync=sync, segment_size=SEGMENT_SIZE, clock=clock, backoff=BACKOFF)
    params = inspect.signature(Queue).parameters
    for name, value in (("compact_threshold", None), ("retain_done", 0.0), ("retain_dead", 0.0)):
        if name in params:
            opts[name] = value
    return opts


# ----------------------------------------------------------------- the child


def child(path: str, seed: int, sync: str, now: float) -> None:
    """Run random calls until killed, reporting each before and after (never returns)."""
    rng, clock = random.Random(seed), FakeClock(now)
    q = Queue(path, **queue_options(sync, clock))
    out = sys.stdout
    _say(out, "O", {"last_seq": q.stats().last_seq})
    while True:
        call = _draw(rng, q)
        _say(out, "B", call)
        result = _perform(q, clock, call)
        _say(out, "A", {"result": result, "last_seq": q.stats().last_seq})


def _say(out: TextIO, tag: str, body: dict[str, Any]) -> None:
    out.write(f"{tag} {json.dumps(body)}\n")
    out.flush()


def _draw(rng: random.Random, q: Queue) -> dict[str, Any]:
    kind = rng.choices(["enqueue", "enqueue_many", "lease", "finish", "cancel", "advance", "sync", "compact"],
                       [30, 8, 25, 25, 4, 4, 3, 1])[0]
    if kind == "enqueue":
        return {"op": "enqueue", "name": rng.choice("ab"), "payload": _payload(rng),
                "delay": rng.choice([0, 0, 2]), "max_attempts": rng.randint(1, 3),
                "key": rng.choice([None] * 8 + ["k1", "k2"])}
    if kind == "enqueue_many":
        return {"op": "enqueue_many", "items": [[rng.choice("ab"), _payload(rng)] for _ in range(rng.randint(1, 4))]}
    if kind == "lease":
        return {"op": "lease", "lease_time": rng.choice([2, 10])}
    if kind in ("finish", "cancel"):
        state = "active" if kind == "finish" else "pending"
        ids = [j.id for j in q.jobs(state=state, limit=8)]
        if not ids:
            return {"op": "advance", "seconds": 1}
        if kind == "cancel":
            return {"op": "cancel", "id": rng.choice(ids)}
        return {"op": rng.choice(["ack", "ack", "fail", "release"]), "id": rng.choice(ids),
                "retry": rng.random() < 0.7, "delay": rng.choice([0, 3])}
    if kind == "advance":
        return {"op": "advance", "seconds": rng.choice([1, 3])}
    return {"op": kind}


def _payload(rng: random.Random) -> str:
    return rng.randbytes(rng.choice([0, 10, 200, 1500])).hex()


def _perform(q: Queue, clock: FakeClock, call: dict[str, Any]) -> Any:
    op = call["op"]
    if op == "enqueue":
        return q.enqueue(call["name"], bytes.fromhex(call["payload"]), delay=call["delay"],
                         max_attempts=call["max_attempts"], key=call["key"])
    if op == "enqueue_many":
        return q.enqueue_many([(n, bytes.fromhex(p)) for n, p in call["items"]])
    if op == "lease":
        job = q.lease(lease_time=call["lease_time"])
        return None if job is None else [job.id, job.attempts]
    if op == "ack":
        return q.ack(call["id"])
    if op == "fail":
        return q.fail(call["id"], "err", retry=call["retry"])
    if op == "release":
        return q.release(call["id"], delay=call["delay"])
    if op == "cancel":
        return q.cancel(call["id"])
    if op == "advance":
        return clock.advance(call["seconds"]) and None
    if op == "sync":
        return q.sync()
    if op == "compact":
        if not hasattr(q, "compact"):
            return []
        before = {j.id for j in q.jobs(limit=None)}
        q.compact()
        return sorted(before - {j.id for j in q.jobs(limit=None)})
    raise ValueError(op)


# ---------------------------------------------------------------- the parent


class Mirror:
    """The parent's copy of the child's queue: a clock and a ledger fed by the child's lines."""

    def __init__(self) -> None:
        self.clock = FakeClock(START)
        self.ledger = Ledger()
        self.pending: tuple[str, dict[Any, State], list[tuple[str, State]], dict[str, Any]] | None = None
        self.calls = 0

    def line(self, text: str) -> None:
        tag, _, body = text.partition(" ")
        data = json.loads(body)
        if tag == "B":
            self._before(data)
        elif tag == "A":
            self._after(data)

    def _before(self, call: dict[str, Any]) -> None:
        s, now, op = self.ledger.state, self.clock.time(), call["op"]
        before: list[tuple[str, State]] = []
        if op == "advance":
            self.clock.advance(call["seconds"])
            outcomes: dict[Any, State] = {None: s}
        elif op == "enqueue":
            outcomes = self._enqueue(s, now, call)
        elif op == "enqueue_many":
            outcomes = {}
            for first in (self.ledger.last_seq + 1, self.ledger.last_seq + 2):
                after = s
                for i, (name, payload) in enumerate(call["items"]):
                    after = m.enqueue(after, first + i, name, bytes.fromhex(payload), now, 0, 3, None)
                outcomes[tuple(range(first, first + len(call["items"])))] = after
        elif op == "lease":
            s1 = m.expire(s, now, "lease expired")
            if s1 != s:
                before = [("expire (in lease)", s1)]
            job = m.due(s1, now)
            outcomes = {None: s1} if job is None else {
                (job.id, job.attempts + 1): m.lease(s1, job.id, now, call["lease_time"])}
        elif op in ("sync", "compact"):
            outcomes = {}
        else:
            outcomes = {None: self._finish(s, now, call)}
        self.pending = (json.dumps(call)[:120], outcomes, before, call)

    def _enqueue(self, s: State, now: float, call: dict[str, Any]) -> dict[Any, State]:
        held = m.key_holder(s, call["key"]) if call["key"] else None
        if held is not None:
            return {held: s}
        payload = bytes.fromhex(call["payload"])
        return {jid: m.enqueue(s, jid, call["name"], payload, now + call["delay"], 0, call["max_attempts"],
                               call["key"]) for jid in (self.ledger.last_seq + 1, self.ledger.last_seq + 2)}

    def _finish(self, s: State, now: float, call: dict[str, Any]) -> State:
        op, jid = call["op"], call["id"]
        want = "pending" if op == "cancel" else "active"
        if s.get(jid) is None or s[jid].state != want:
            raise Violation(f"the child's queue let it {op} job {jid}, which the model has as "
                            f"{s[jid].state if jid in s else 'missing'}")
        if op == "ack":
            return m.ack(s, jid, b"")
        if op == "fail":
            return m.fail(s, jid, "err", call["retry"], now, BACKOFF)
        if op == "release":
            return m.release(s, jid, now, call["delay"])
        return m.cancel(s, jid)

    def _after(self, data: dict[str, Any]) -> None:
        assert self.pending is not None, "A without B"
        label, outcomes, before, call = self.pending
        self.pending, self.calls = None, self.calls + 1
        result = data["result"]
        key = tuple(result) if isinstance(result, list) and call["op"] != "compact" else result
        if call["op"] == "sync":
            self.ledger.acknowledge()
            return
        if call["op"] == "compact":
            self.ledger.swept |= set(result)
            state = m.sweep(self.ledger.state, result)
            outcomes, key = {None: state}, None
        if key not in outcomes:
            raise Violation(f"{label} returned {result!r}; the model expected one of {list(outcomes)}")
        for lbl, s in before:
            self.ledger.push(lbl, [s], None)
        self.ledger.push(label, [outcomes[key]], data["last_seq"])

    def killed(self) -> None:
        """The child died; a call it had begun may or may not have happened."""
        if self.pending is not None:
            label, outcomes, before, _ = self.pending
            for lbl, s in before:
                self.ledger.push(lbl + " (cut short)", [s], None, certain=False)
            if outcomes:
                self.ledger.push(label + " (cut short)", list(outcomes.values()), None, certain=False)
            if _op(label) == "compact":
                self.ledger.maybe_swept |= {j.id for j in self.ledger.state.values() if j.state in m.FINAL}
        self.pending = None


def _op(label: str) -> str:
    try:
        return str(json.loads(label).get("op"))
    except ValueError:
        return ""


def run_round(path: str, mirror: Mirror, seed: int, sync: str, rng: random.Random) -> None:
    """One child life: run, kill, check. Raises Violation."""
    cmd = [sys.executable, "-m", "fuzz.soak", "--child", path, str(seed), sync, repr(mirror.clock.time())]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    try:
        _feed(proc, mirror, path, time.monotonic() + rng.uniform(0.05, 0.6))
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    for text in proc.stdout.read().splitlines(keepends=True):  # what the child wrote before it died
        if text.endswith("\n"):  # a line cut by the kill reported nothing
            mirror.line(text.rstrip("\n"))
    err = proc.stderr.read() if proc.stderr else ""
    proc.stdout.close()
    if proc.returncode != -signal.SIGKILL:
        raise Violation(f"the child exited with {proc.returncode} before the kill:\n{err[-2000:]}")
    mirror.killed()
    check_directory(path, mirror, sync)


def _feed(proc: "subprocess.Popen[str]", mirror: Mirror, path: str, until: float) -> None:
    """Mirror the child's lines until `until`; check the lock once it has opened."""
    assert proc.stdout is not None
    locked_checked = False
    while time.monotonic() < until and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, until - time.monotonic()))
        if not ready:
            continue
        text = proc.stdout.readline()
        if not text.endswith("\n"):  # end of output, or a line cut by a death
            break
        if text.startswith("O "):
            if not locked_checked:
                _open_beside(proc, mirror, path)
                locked_checked = True
            continue
        mirror.line(text.rstrip("\n"))


def _open_beside(proc: "subprocess.Popen[str]", mirror: Mirror, path: str) -> None:
    """A second opener beside the running child (spec/format.md §14): it gets in (the child
    lets go of the writer lock and takes turns from then on), sees no damage, changes
    nothing, and leaves; the child's later calls are checked against the ledger as before."""
    try:
        Queue(path, **queue_options("batch", FakeClock(mirror.clock.time()))).close()
    except LockedError as exc:
        if proc.poll() is None:
            raise Violation(f"a second opener was refused while the child had the directory open: {exc}") from exc


def check_directory(path: str, mirror: Mirror, sync: str) -> None:
    """Verify, reopen and match the ledger, reopen again: the checks after every kill."""
    found = verify(path)
    if not found.ok:
        raise Violation(f"verify found damage after a kill: {found.problems}")
    clock = FakeClock(mirror.clock.time())
    q = Queue(path, **queue_options(sync, clock))
    try:
        observed = {i.id: m.from_info(i) for i in q.jobs(limit=None)}
        match = mirror.ledger.match(observed, q.recovery.last_seq, clock.time(), mirror.ledger.returned)
        mirror.ledger.recovered(match, q.stats().last_seq, durable=True)
        last = q.stats().last_seq
    finally:
        q.close()
    again = Queue(path, **queue_options(sync, clock))
    try:
        if m.views({i.id: m.from_info(i) for i in again.jobs(limit=None)}) != m.views(match.state):
            raise Violation("recovering a second time gives other jobs than recovering once")
        if again.recovery.torn or again.recovery.last_seq != last:
            raise Violation(f"a second recovery still repaired something: {again.recovery}")
    finally:
        again.close()
    mirror.ledger.acknowledge()  # both closes fsynced everything


def run(seed: int, deadline: float, *, log: Callable[[str], None] = print) -> list[Failure]:
    """Rounds on one directory until `deadline`; round r uses seed seed+r."""
    path = tempfile.mkdtemp(prefix="logq-soak-")
    mirror, rng, r, started = Mirror(), random.Random(seed), 0, time.monotonic()
    try:
        while time.monotonic() < deadline:
            sync = "always" if (seed + r) % 2 == 0 else "batch"
            try:
                run_round(path, mirror, seed + r, sync, rng)
            except Exception as exc:  # noqa: BLE001 - every failure is reported
                kept = shutil.copytree(path, path + "-failed")
                history = "\n".join(f"    {e.label}" for e in mirror.ledger.entries[-12:])
                log(f"soak: failed in round {r} after {mirror.calls} calls, {time.monotonic() - started:.0f}s")
                return [Failure("soak", seed + r, f"{type(exc).__name__}: {exc}",
                                f"directory kept at {kept}; last calls:\n{history}")]
            r += 1
        log(f"soak: {r} kills (seeds {seed}..{seed + r - 1}), {mirror.calls} acknowledged calls, 0 failures")
        return []
    finally:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
    raise SystemExit("usage: python -m fuzz.soak --child DIR SEED SYNC NOW (started by python -m fuzz)")
