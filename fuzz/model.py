"""Mode `model`: a hypothesis state machine of queue calls, crashes, faults and reopens.

Theory of operation
-------------------
`CrashMachine` draws a sync mode and a file-system seed, then a sequence of
rules: the queue calls (enqueue, enqueue_many, lease, lease_many, ack, ack_many, fail, release,
cancel, retry, expire_leases, compact when the Queue has it), clock moves, `sync`,
a clean `reopen`, an immediate `crash(fault)` (optionally crashing again
inside the recovery), and two arming rules: an EIO on the nth next write /
fsync / directory fsync, or a crash after the nth next file operation, so
that faults also land in the middle of calls (rollover, group commit,
compaction). Each rule delegates to `Driver`, which checks every result and
every recovery against the ledger (see driver.py and oracle.py); the
invariant re-reads the open queue and compares it with the model.

`run` executes rounds until a deadline; round r uses seed `seed + r`, so
`--seed S` with the seed printed by a failure replays that round first.
Hypothesis shrinks a failure to a short rule sequence, which is printed as
the reproduction. Nothing is kept between runs: the example database is off
(`database=None`) and hypothesis's other caches go to a temporary directory
for the run, so no `.hypothesis/` appears in the working directory.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, seed as hseed, settings, strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.reporting import with_reporter
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test,
)

from logq import Queue

from .driver import ALL_FAULTS, Armed, Config, Driver
from .simfs import EIO_KINDS, FAULTS

NAMES = st.sampled_from(["a", "b"])
PAYLOADS = st.binary(max_size=48) | st.binary(min_size=400, max_size=1400)


class CrashMachine(RuleBasedStateMachine):
    """Queue calls interleaved with crashes and injected I/O errors, on a SimFS."""

    def __init__(self) -> None:
        super().__init__()
        self.d: Driver | None = None

    @property
    def drv(self) -> Driver:
        assert self.d is not None
        return self.d

    @initialize(sync=st.sampled_from(["always", "batch"]), fs_seed=st.integers(0, 2**32 - 1))
    def start(self, sync: str, fs_seed: int) -> None:
        self.d = Driver(Config(sync=sync, seed=fs_seed))
        self.d.start()

    def teardown(self) -> None:
        if self.d is not None:
            self.d.close()

    # ------------------------------------------------------------------ calls

    @rule(name=NAMES, payload=PAYLOADS, delay=st.sampled_from([0, 0, 2]), priority=st.integers(-1, 1),
          max_attempts=st.integers(1, 3), key=st.none() | st.sampled_from(["k1", "k2"]))
    def enqueue(self, name: str, payload: bytes, delay: float, priority: int, max_attempts: int,
                key: str | None) -> None:
        self.drv.enqueue(name, payload, delay=delay, priority=priority, max_attempts=max_attempts, key=key)

    @rule(items=st.lists(st.tuples(NAMES, PAYLOADS), min_size=1, max_size=4))
    def enqueue_many(self, items: list[tuple[str, bytes]]) -> None:
        self.drv.enqueue_many(items)

    @rule(names=st.none() | st.sets(NAMES, min_size=1).map(sorted), lease_time=st.sampled_from([2, 10]))
    def lease(self, names: list[str] | None, lease_time: float) -> None:
        self.drv.lease(names, lease_time)

    @rule(n=st.integers(1, 4), lease_time=st.sampled_from([2, 10]))
    def lease_many(self, n: int, lease_time: float) -> None:
        self.drv.lease_many(n, lease_time)

    @precondition(lambda self: self.d is not None and self.d.active())
    @rule(data=st.data(), result=st.binary(max_size=16))
    def ack(self, data: st.DataObject, result: bytes) -> None:
        self.drv.ack(data.draw(st.sampled_from(self.drv.active())), result)

    @precondition(lambda self: self.d is not None and self.d.active())
    @rule(data=st.data())
    def ack_many(self, data: st.DataObject) -> None:
        self.drv.ack_many(data.draw(st.lists(st.sampled_from(self.drv.active()), min_size=1, max_size=3,
                                             unique=True)))

    @precondition(lambda self: self.d is not None and self.d.active())
    @rule(data=st.data(), retry=st.booleans())
    def fail(self, data: st.DataObject, retry: bool) -> None:
        self.drv.fail(data.draw(st.sampled_from(self.drv.active())), retry)

    @precondition(lambda self: self.d is not None and self.d.active())
    @rule(data=st.data(), delay=st.sampled_from([0, 3]))
    def release(self, data: st.DataObject, delay: float) -> None:
        self.drv.release(data.draw(st.sampled_from(self.drv.active())), delay)

    @precondition(lambda self: self.d is not None and self.d.state)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        self.drv.cancel(data.draw(st.sampled_from(sorted(self.drv.state))))

    @precondition(lambda self: self.d is not None and self.d.dead())
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        self.drv.retry(data.draw(st.sampled_from(self.drv.dead())))

    @rule()
    def expire_leases(self) -> None:
        self.drv.expire_leases()

    @precondition(lambda self: hasattr(Queue, "compact"))
    @rule()
    def compact(self) -> None:
        self.drv.compact()

    @rule(seconds=st.sampled_from([1, 3, 11]))
    def advance(self, seconds: float) -> None:
        self.drv.advance(seconds)

    @rule()
    def sync(self) -> None:
        self.drv.sync()

    # ----------------------------------------------------------------- faults

    @rule()
    def reopen(self) -> None:
        self.drv.reopen()

    @rule(fault=st.sampled_from(ALL_FAULTS), seed=st.integers(0, 2**16),
          recovery_crash=st.none() | st.integers(1, 8), fault2=st.sampled_from(FAULTS))
    def crash(self, fault: str, seed: int, recovery_crash: int | None, fault2: str) -> None:
        self.drv.crash(fault, seed, recovery_crash, fault2)

    @rule(kind=st.sampled_from(EIO_KINDS), nth=st.integers(1, 3))
    def arm_eio(self, kind: str, nth: int) -> None:
        self.drv.arm_eio(kind, nth)

    @rule(nth=st.integers(1, 6), fault=st.sampled_from(FAULTS), seed=st.integers(0, 2**16))
    def arm_crash(self, nth: int, fault: str, seed: int) -> None:
        self.drv.arm_crash(nth, Armed(fault, seed))

    @invariant()
    def agrees_with_model(self) -> None:
        if self.d is not None:
            self.d.check_live()


@dataclass
class Failure:
    mode: str
    seed: int
    error: str
    reproduction: str


def run_round(seed: int, *, examples: int = 12, steps: int = 40) -> Failure | None:
    """One hypothesis run with a fixed seed; the shrunk failure, or None."""
    factory = hseed(seed)(lambda: CrashMachine())  # a fresh function: the seed is set on it
    config = settings(max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
                      derandomize=False, print_blob=True, report_multiple_bugs=False,
                      suppress_health_check=list(HealthCheck),
                      phases=[Phase.explicit, Phase.generate, Phase.shrink])
    lines: list[str] = []
    try:
        with with_reporter(lambda value: lines.append(str(value))):
            run_state_machine_as_test(factory, settings=config)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - every failure is reported
        notes = getattr(exc, "__notes__", [])
        steps_text = "\n".join([*lines, *notes])
        return Failure("model", seed, f"{type(exc).__name__}: {exc}", steps_text)
    return None


def run(seed: int, deadline: float, *, log: Any = print) -> list[Failure]:
    """Rounds with seeds seed, seed+1, ... until `deadline` (time.monotonic) or a failure."""
    failures: list[Failure] = []
    r, started = 0, time.monotonic()
    with tempfile.TemporaryDirectory(prefix="logq-fuzz-hypothesis-") as home:
        set_hypothesis_home_dir(home)
        try:
            while time.monotonic() < deadline:
                failure = run_round(seed + r)
                r += 1
                if failure is not None:
                    failures.append(failure)
                    break
        finally:
            set_hypothesis_home_dir(None)
    found = f", found and shrunk after {time.monotonic() - started:.0f}s" if failures else ""
    log(f"model: {r} rounds (seeds {seed}..{seed + r - 1}), {len(failures)} failure(s){found}")
    return failures
