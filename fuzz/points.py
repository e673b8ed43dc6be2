"""Mode `points`: crash after every file operation of a small workload, under every fault.

Theory of operation
-------------------
A workload is a list of named steps on a `Driver` (the standard one below
covers enqueue, a unique key, a batch, lease/lease_many/ack/ack_many/fail/release/cancel,
expiry, rollover, sync, compaction when present, and a clean reopen). A dry
run counts its file operations N. Then for every point n in 1..N the
workload runs again on fresh simulated files until the process halts right
after operation n (`Crashed`); on copies of that very moment (`Driver.clone`)
it tries every fault (kill -9, each power loss with a few seeds, bit flip and
truncation of a sealed segment), and crashes inside the following recovery
after each of its operations in turn (then a kill -9 or a power loss), each
time reopening and checking every invariant. If operation n is a write,
fsync or directory fsync, the workload also runs with EIO injected there
instead: every later call must raise until the reopen step, and after a
crash the ledger must still match.

A `Case` names one such check; `--case` replays it with its trace. Round r
runs seed `seed + r`: round 0 the standard workload, later rounds random
workloads drawn from the seed. A failure of a random workload is shrunk by
dropping steps while the same kind of case still fails somewhere.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

from .driver import ALL_FAULTS, Config, Crashed, Driver
from .model import Failure
from .oracle import Violation
from .simfs import EIO_KINDS, POWER_FAULTS

Step = tuple[str, Callable[[Driver], None]]
RANDOM_FAULTS = POWER_FAULTS[1:] + ("seal_flip", "seal_truncate")  # drawn faults: a few seeds each
BIG = b"p" * 1300


@dataclass(frozen=True)
class Case:
    """One check: the workload crashed (or got EIO) at operation `point`, then `fault`."""

    sync: str
    workload: str  # "std" or "rand<seed>"
    point: int
    kind: str  # "crash" or "eio"
    fault: str
    fault_seed: int = 0
    recovery_crash: int | None = None
    fault2: str = "kill9"

    def __str__(self) -> str:
        rc = "" if self.recovery_crash is None else str(self.recovery_crash)
        return ",".join([self.sync, self.workload, str(self.point), self.kind, self.fault,
                         str(self.fault_seed), rc, self.fault2])

    @classmethod
    def parse(cls, text: str) -> "Case":
        sync, workload, point, kind, fault, fseed, rc, fault2 = text.split(",")
        return cls(sync, workload, int(point), kind, fault, int(fseed), int(rc) if rc else None, fault2)


# ------------------------------------------------------------------ workloads


def _on_active(d: Driver, act: Callable[[Driver, int], None]) -> None:
    if d.active():
        act(d, d.active()[0])


def _on_pending(d: Driver, act: Callable[[Driver, int], None]) -> None:
    pending = sorted(j.id for j in d.state.values() if j.state == "pending")
    if pending:
        act(d, pending[0])


def standard_workload() -> list[Step]:
    return [
        ("enqueue a", lambda d: d.enqueue("a", b"first")),
        ("enqueue_many 3", lambda d: d.enqueue_many([("a", b"m1"), ("b", BIG), ("a", b"m3")])),
        ("enqueue key k1", lambda d: d.enqueue("b", b"keyed", key="k1", max_attempts=1)),
        ("enqueue key k1 again", lambda d: d.enqueue("b", b"again", key="k1")),
        ("lease", lambda d: d.lease(lease_time=5)),
        ("ack", lambda d: _on_active(d, lambda d, j: d.ack(j, b"ok"))),
        ("lease", lambda d: d.lease(lease_time=5)),
        ("fail", lambda d: _on_active(d, lambda d, j: d.fail(j))),
        ("enqueue big", lambda d: d.enqueue("a", BIG)),
        ("enqueue big (rollover)", lambda d: d.enqueue("a", BIG)),
        ("lease b", lambda d: d.lease(["b"], lease_time=5)),
        ("release", lambda d: _on_active(d, lambda d, j: d.release(j))),
        ("cancel", lambda d: _on_pending(d, lambda d, j: d.cancel(j))),
        ("sync", lambda d: d.sync()),
        ("compact", lambda d: d.compact()),
        ("lease", lambda d: d.lease(lease_time=2)),
        ("advance 3", lambda d: d.advance(3)),
        ("expire_leases", lambda d: d.expire_leases()),
        ("lease_many 2 (left active)", lambda d: d.lease_many(2, lease_time=5)),
        ("lease_many 2, ack_many", lambda d: (d.lease_many(2, lease_time=5), d.ack_many(d.active()[-2:]))),
        ("reopen", lambda d: d.reopen()),
        ("enqueue after reopen", lambda d: d.enqueue("a", b"last")),
    ]


def random_workload(seed: int, length: int = 24) -> list[Step]:
    rng = random.Random(seed)
    menu: list[Callable[[], Step]] = [
        lambda: ("enqueue", lambda d, p=rng.choice([b"x", BIG]), k=rng.choice([None, "k"]):
                 d.enqueue("a", p, key=k)),
        lambda: ("enqueue_many", lambda d, n=rng.randint(1, 4): d.enqueue_many([("a", BIG[:300])] * n)),
        lambda: ("lease", lambda d, t=rng.choice([2, 10]): d.lease(lease_time=t)),
        lambda: ("lease_many", lambda d, n=rng.randint(1, 3): d.lease_many(n, lease_time=10)),
        lambda: ("ack", lambda d: _on_active(d, lambda d, j: d.ack(j))),
        lambda: ("fail", lambda d, r=rng.random() < 0.5: _on_active(d, lambda d, j: d.fail(j, r))),
        lambda: ("release", lambda d: _on_active(d, lambda d, j: d.release(j))),
        lambda: ("cancel", lambda d: _on_pending(d, lambda d, j: d.cancel(j))),
        lambda: ("advance", lambda d: d.advance(3)),
        lambda: ("expire_leases", lambda d: d.expire_leases()),
        lambda: ("sync", lambda d: d.sync()),
        lambda: ("compact", lambda d: d.compact()),
        lambda: ("reopen", lambda d: d.reopen()),
        lambda: ("ack_many", lambda d: d.ack_many(d.active()[:2])),
    ]
    return [rng.choice(menu)() for _ in range(length)]


def workload(name: str) -> list[Step]:
    return standard_workload() if name == "std" else random_workload(int(name[4:]))


# ---------------------------------------------------------------- running


def _run(d: Driver, steps: list[Step]) -> None:
    d.start()
    for label, step in steps:
        d.trace.append(f"[step] {label}")
        step(d)


def crashed_at(config: Config, steps: list[Step], point: int) -> Driver | None:
    """The workload run until the process halts after operation `point` (None: it ended first)."""
    d = Driver(config, defer_crashes=True)
    d.fs.crash_after(point)
    try:
        _run(d, steps)
    except Crashed:
        return d
    d.close()
    return None


def cases_at(sync: str, name: str, point: int, seed: int, op_kind: str) -> Iterator[Case]:
    """Every check made at one crash point."""
    base = Case(sync, name, point, "crash", "kill9")
    for fault in ALL_FAULTS:
        for s in range(3 if fault in RANDOM_FAULTS else 1):
            yield replace(base, fault=fault, fault_seed=seed * 7 + s)
    for fault, fault2 in (("kill9", "lose_unsynced"), ("lose_unsynced", "kill9"), ("chaos", "chaos")):
        for m in range(1, 64):
            yield replace(base, fault=fault, fault_seed=seed, recovery_crash=m, fault2=fault2)
    if op_kind in EIO_KINDS:
        for fault in ("kill9", "lose_unsynced", "chaos"):
            yield replace(base, kind="eio", fault=fault, fault_seed=seed)


def check(case: Case, config: Config, steps: list[Step], crashed: Driver | None) -> bool:
    """Run one case (raises Violation); False when a recovery crash point lies beyond the recovery."""
    if case.kind == "eio":
        d = Driver(config)
        d.fs.fail_at(case.point)
        _run(d, steps)
        d.crash(case.fault, case.fault_seed)
        d.close()
        return True
    assert crashed is not None
    d = crashed.clone()
    try:
        hit = d.crash(case.fault, case.fault_seed, case.recovery_crash, case.fault2)
    finally:
        d.close()
    return case.recovery_crash is None or hit


def run_point(config: Config, name: str, steps: list[Step], point: int, op_kind: str,
              seed: int) -> Failure | None:
    crashed = crashed_at(config, steps, point)
    if crashed is None:
        return None
    skip_rc: set[tuple[str, str]] = set()
    try:
        for case in cases_at(config.sync, name, point, seed, op_kind):
            if case.recovery_crash is not None and (case.fault, case.fault2) in skip_rc:
                continue
            try:
                if not check(case, config, steps, crashed):
                    skip_rc.add((case.fault, case.fault2))
            except (Violation, Exception) as exc:  # noqa: BLE001 - every failure is reported
                return Failure("points", seed, f"{type(exc).__name__}: {exc}", str(case))
    finally:
        crashed.close()
    return None


def run_workload(sync: str, name: str, seed: int, deadline: float,
                 log: Callable[[str], None]) -> tuple[Failure | None, int]:
    """Every point of one workload in one mode; (first failure, points checked)."""
    config = Config(sync=sync, seed=seed)
    steps = workload(name)
    try:
        kinds = _op_kinds(config, steps)
    except Exception as exc:  # noqa: BLE001 - the workload fails without any crash
        return Failure("points", seed, f"{type(exc).__name__}: {exc}",
                       str(Case(sync, name, 0, "crash", "none"))), 0
    total, done = len(kinds), 0
    for point in range(1, total + 1):
        if time.monotonic() > deadline:
            break
        failure = run_point(config, name, steps, point, kinds[point - 1], seed)
        done += 1
        if failure is not None:
            return failure, done
    log(f"points: {sync} {name}: {done}/{total} crash points checked")
    return None, done


def _op_kinds(config: Config, steps: list[Step]) -> list[str]:
    d = Driver(config)
    try:
        _run(d, steps)
        return [kind for kind, _ in d.fs.trace]
    finally:
        d.close()


def shrink(failure: Failure, deadline: float) -> Failure:
    """Drop workload steps while a case of the same kind still fails somewhere."""
    case = Case.parse(failure.reproduction)
    if case.workload == "std":
        return failure
    steps = workload(case.workload)
    config = Config(sync=case.sync, seed=failure.seed)
    i = len(steps) - 1
    while i >= 0 and time.monotonic() < deadline:
        candidate = steps[:i] + steps[i + 1:]
        if _fails_like(config, candidate, case):
            steps = candidate
        i -= 1
    labels = ", ".join(label for label, _ in steps)
    return replace(failure, reproduction=f"{failure.reproduction}\nshrunk workload: [{labels}]")


def _fails_like(config: Config, steps: list[Step], case: Case) -> bool:
    kinds = _op_kinds(config, steps)
    for point in range(1, len(kinds) + 1):
        variant = replace(case, point=point)
        if variant.kind == "eio" and kinds[point - 1] not in EIO_KINDS:
            continue
        crashed = None if variant.kind == "eio" else crashed_at(config, steps, point)
        if variant.kind == "crash" and crashed is None:
            continue
        try:
            check(variant, config, steps, crashed)
        except Exception:  # noqa: BLE001
            return True
        finally:
            if crashed is not None:
                crashed.close()
    return False


def run(seed: int, deadline: float, *, log: Callable[[str], None] = print) -> list[Failure]:
    """Rounds of both sync modes: round r has seed seed+r (standard workload first)."""
    r, points, started = 0, 0, time.monotonic()
    while time.monotonic() < deadline:
        name = "std" if r == 0 else f"rand{seed + r}"
        for sync in ("always", "batch"):
            failure, done = run_workload(sync, name, seed + r, deadline, log)
            points += done
            if failure is not None:
                log(f"points: failure found after {time.monotonic() - started:.1f}s, at crash point "
                    f"{points} of round {r + 1}")
                failure = shrink(failure, time.monotonic() + 60)
                return [failure]
        r += 1
    log(f"points: {r} round(s) (seeds {seed}..{seed + r - 1}), {points} crash points, 0 failures")
    return []


def replay(text: str, seed: int, log: Callable[[str], Any] = print) -> bool:
    """Run one case (as printed by a failure) with its trace; True if it passes."""
    case = Case.parse(text)
    config = Config(sync=case.sync, seed=seed)
    steps = workload(case.workload)
    crashed = None if case.kind == "eio" else crashed_at(config, steps, case.point)
    if case.kind == "crash" and crashed is None:
        log(f"the workload ends before operation {case.point}")
        return True
    try:
        check(case, config, steps, crashed)
    except Exception as exc:  # noqa: BLE001
        trace = crashed.trace if crashed is not None else []
        log("\n".join(trace[-40:]))
        log(f"FAILED {case}: {type(exc).__name__}: {exc}")
        return False
    log(f"passed {case}")
    return True
