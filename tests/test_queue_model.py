"""Model-based test: the Queue against plain dicts, with clock moves, crashes and reopens.

It runs on every backend (`queue_factory`, tests/conftest.py); the close-and-reopen
and crash rules only on the durable ones. A "crash" copies the directory while the
queue is still open (what a kill -9 leaves: every written byte), abandons the old
queue and opens the copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test,
)

from logq import Backoff, InvalidTransition, Queue
from logq.testing import FakeClock

BACKOFF = Backoff(base=1, factor=2, max=8, jitter=0)
NAMES = st.sampled_from(["a", "b"])


@dataclass
class MJob:
    id: int
    name: str
    payload: bytes
    priority: int
    run_at: float
    max_attempts: int
    key: str | None
    state: str = "pending"
    attempts: int = 0
    expires: float | None = None
    last_error: str | None = None
    result: bytes | None = None


@dataclass
class Model:
    jobs: dict[int, MJob] = field(default_factory=dict)
    holders: dict[str, int] = field(default_factory=dict)  # unique key -> live job holding it

    def live_key(self, key: str) -> int | None:
        """The job that answers for `key`: the lowest id among the live jobs that have it
        (spec/semantics.md guarantee 8: a retried job holds its key again, beside a newer holder)."""
        return min((j.id for j in self.jobs.values() if j.key == key and j.state in ("pending", "active")),
                   default=None)

    def settle_keys(self) -> None:
        """Final jobs give their key up; a retried job takes it back only if it is free."""
        for key, jid in list(self.holders.items()):
            if self.jobs[jid].state not in ("pending", "active"):
                del self.holders[key]

    def expire(self, now: float, reason: str, everything: bool = False) -> None:
        for j in self.jobs.values():
            if j.state == "active" and (everything or j.expires <= now):
                j.last_error, j.expires = reason, None
                j.state = "dead" if j.attempts >= j.max_attempts else "pending"
                if j.state == "pending":
                    j.run_at = now

    def best(self, now: float, names: set[str] | None) -> MJob | None:
        due = [j for j in self.jobs.values() if j.state == "pending" and j.run_at <= now
               and (names is None or j.name in names)]
        return min(due, key=lambda j: (-j.priority, j.run_at, j.id), default=None)


def _copy_if_still_there(src: str, dst: str) -> None:
    """Copy a file for a crash copy, unless it went while the copy ran: the queue is
    still open, and its compaction thread removes its temporary file when done."""
    try:
        shutil.copy2(src, dst)
    except FileNotFoundError:
        pass


class QueueMachine(RuleBasedStateMachine):
    def __init__(self, factory) -> None:
        super().__init__()
        self.factory = factory
        self.durable = factory.capabilities.durable
        self.tmp = tempfile.mkdtemp(prefix="logq-model-")
        self.clock = FakeClock()
        self.model = Model()
        self.generation = 0
        self.abandoned: list[Queue] = []
        self.disk = {} if factory.name == "redis" else {"segment_size": 4096}  # (a server has no segments)

    def open(self) -> None:
        self.q = self.factory.at(os.path.join(self.tmp, str(self.generation)), sync="always", clock=self.clock,
                                 backoff=BACKOFF, **self.disk)

    @initialize()
    def start(self) -> None:
        self.open()

    def teardown(self) -> None:
        for q in [self.q, *self.abandoned]:
            q.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def active(self) -> list[MJob]:
        return [j for j in self.model.jobs.values() if j.state == "active"]

    @rule(name=NAMES, payload=st.binary(max_size=300), delay=st.sampled_from([0, 0, 1, 5]),
          priority=st.integers(-2, 2), max_attempts=st.integers(1, 3),
          key=st.none() | st.sampled_from(["k1", "k2"]))
    def enqueue(self, name, payload, delay, priority, max_attempts, key) -> None:
        jid = self.q.enqueue(name, payload, delay=delay, priority=priority, max_attempts=max_attempts, key=key)
        held = self.model.live_key(key) if key else None
        if held is not None:
            assert jid == held
            return
        assert jid not in self.model.jobs and all(jid > i for i in self.model.jobs)
        self.model.jobs[jid] = MJob(jid, name, payload, priority, self.clock.time() + delay, max_attempts, key)
        if key is not None:
            self.model.holders[key] = jid

    @rule(items=st.lists(st.tuples(NAMES, st.binary(max_size=50)), min_size=1, max_size=4))
    def enqueue_many(self, items) -> None:
        ids = self.q.enqueue_many(items)
        for jid, (name, payload) in zip(ids, items):
            self.model.jobs[jid] = MJob(jid, name, payload, 0, self.clock.time(), self.q.max_attempts, None)

    @rule(names=st.none() | st.sets(NAMES, min_size=1), lease_time=st.sampled_from([2, 10]))
    def lease(self, names, lease_time) -> None:
        now = self.clock.time()
        self.model.expire(now, "lease expired")
        expected = self.model.best(now, names)
        job = self.q.lease(names, lease_time=lease_time)
        if expected is None:
            assert job is None
            return
        assert job is not None and job.id == expected.id
        assert job.payload == expected.payload and job.name == expected.name
        expected.state, expected.attempts, expected.expires = "active", expected.attempts + 1, now + lease_time
        assert job.attempts == expected.attempts

    @precondition(lambda self: self.active())
    @rule(data=st.data(), result=st.binary(max_size=20))
    def ack(self, data, result) -> None:
        j = data.draw(st.sampled_from(self.active()))
        self.q.ack(j.id, result=result)
        j.state, j.result, j.expires = "done", result, None

    @rule(n=st.integers(1, 4), names=st.none() | st.sets(NAMES, min_size=1))
    def lease_many(self, n, names) -> None:
        now = self.clock.time()
        self.model.expire(now, "lease expired")
        jobs = self.q.lease_many(n, names, lease_time=10)
        expected = []
        while len(expected) < n and (best := self.model.best(now, names)) is not None:
            best.state, best.attempts, best.expires = "active", best.attempts + 1, now + 10
            expected.append(best)
        assert [(j.id, j.attempts, j.payload) for j in jobs] == [(m.id, m.attempts, m.payload) for m in expected]

    @precondition(lambda self: self.active())
    @rule(data=st.data())
    def ack_many(self, data) -> None:
        chosen = data.draw(st.lists(st.sampled_from(self.active()), min_size=1, max_size=3, unique_by=id))
        self.q.ack_many([j.id for j in chosen])
        for j in chosen:
            j.state, j.result, j.expires = "done", b"", None

    @precondition(lambda self: self.active())
    @rule(data=st.data(), retry=st.booleans())
    def fail(self, data, retry) -> None:
        j = data.draw(st.sampled_from(self.active()))
        self.q.fail(j.id, "err", retry=retry)
        j.last_error, j.expires = "err", None
        if not retry or j.attempts >= j.max_attempts:
            j.state = "dead"
        else:
            j.state, j.run_at = "pending", self.clock.time() + BACKOFF.delay(j.attempts)

    @precondition(lambda self: self.active())
    @rule(data=st.data(), delay=st.sampled_from([0, 3]))
    def release(self, data, delay) -> None:
        j = data.draw(st.sampled_from(self.active()))
        self.q.release(j.id, delay=delay)
        j.state, j.attempts, j.run_at, j.expires = "pending", j.attempts - 1, self.clock.time() + delay, None

    @precondition(lambda self: self.active())
    @rule(data=st.data())
    def extend(self, data) -> None:
        j = data.draw(st.sampled_from(self.active()))
        self.q.extend(j.id, lease_time=4)
        j.expires = self.clock.time() + 4

    @precondition(lambda self: self.model.jobs)
    @rule(data=st.data())
    def cancel(self, data) -> None:
        j = data.draw(st.sampled_from(sorted(self.model.jobs.values(), key=lambda j: j.id)))
        if j.state == "pending":
            self.q.cancel(j.id)
            j.state = "cancelled"
        else:
            before = self.q.stats().last_seq
            with pytest.raises(InvalidTransition):
                self.q.cancel(j.id)
            assert self.q.stats().last_seq == before

    @precondition(lambda self: any(j.state == "dead" for j in self.model.jobs.values()))
    @rule(data=st.data())
    def retry(self, data) -> None:
        j = data.draw(st.sampled_from([j for j in self.model.jobs.values() if j.state == "dead"]))
        self.q.retry(j.id)
        j.state, j.attempts, j.run_at = "pending", 0, self.clock.time()
        if j.key is not None and j.key not in self.model.holders:
            self.model.holders[j.key] = j.id

    @rule(seconds=st.sampled_from([0.5, 1, 3, 11]))
    def advance(self, seconds) -> None:
        self.clock.advance(seconds)

    @rule()
    def expire_leases(self) -> None:
        self.model.expire(self.clock.time(), "lease expired")
        self.q.expire_leases()

    @precondition(lambda self: self.durable)
    @rule()
    def close_and_reopen(self) -> None:
        self.q.close()
        self.open()
        self.model.expire(self.clock.time(), "lease lost", everything=True)

    @precondition(lambda self: self.durable)
    @rule()
    def crash_and_reopen(self) -> None:
        old = os.path.join(self.tmp, str(self.generation))
        self.generation += 1
        shutil.copytree(old, os.path.join(self.tmp, str(self.generation)),
                        ignore=shutil.ignore_patterns("logq.lock"), copy_function=_copy_if_still_there)
        self.abandoned.append(self.q)
        self.open()
        self.model.expire(self.clock.time(), "lease lost", everything=True)

    @invariant()
    def agrees_with_model(self) -> None:
        self.model.settle_keys()
        infos = {i.id: i for i in self.q.jobs(limit=None)}
        assert set(infos) == set(self.model.jobs)
        for jid, m in self.model.jobs.items():
            i = infos[jid]
            assert (i.state, i.attempts, i.payload, i.name, i.key) == (m.state, m.attempts, m.payload, m.name, m.key)
            assert (i.last_error, i.priority) == (m.last_error, m.priority)
            if m.state == "done":
                assert i.result == m.result
            if m.state == "pending":
                assert i.run_at == m.run_at
        counts = self.q.stats().counts
        for state in counts:
            assert counts[state] == sum(1 for m in self.model.jobs.values() if m.state == state)


def test_queue_agrees_with_the_model(queue_factory):
    run_state_machine_as_test(lambda: QueueMachine(queue_factory), settings=settings(
        max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]))
