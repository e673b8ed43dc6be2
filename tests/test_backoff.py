"""Backoff arithmetic saturates (issue 19 item 6): any retry number and any parameters give
a finite delay, so `fail` never raises OverflowError and a job always leaves `active`."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import logq
from logq.core.jobs import MAX_BACKOFF
from logq.testing import FakeClock

HUGE = st.sampled_from([math.inf, 10**400, 1e308, 2**1024 - 1, 2**53 + 1])
PARAM = st.floats(0, 1e6) | st.integers(0, 10**6) | HUGE
FACTOR = st.floats(1, 1e6) | st.integers(1, 10**6) | HUGE


@settings(max_examples=500)
@given(base=PARAM, factor=FACTOR, cap=PARAM, jitter=st.floats(0, 1),
       retry=st.integers(-5, 2**70) | st.integers(1, 2000))
def test_every_delay_is_finite_and_within_the_cap_whatever_the_parameters(base, factor, cap, jitter, retry):
    b = logq.Backoff(base=base, factor=factor, max=cap, jitter=jitter)
    limit = min(b.max, MAX_BACKOFF)
    undrawn = b.undrawn(retry)
    assert 0 <= undrawn <= limit
    assert undrawn <= b.undrawn(retry + 1)  # never shorter for a later retry
    if retry <= 64 and b.factor < 1e4 and b.base < 1e6:  # small enough to compute directly
        assert undrawn == min(limit, b.base * b.factor ** max(0, retry - 1))
    delay = b.delay(retry)
    assert math.isfinite(delay) and 0 <= delay <= limit * (1 + jitter)
    assert all(type(v) is float for v in b.as_tuple())


def test_the_default_backoff_at_attempt_1025_is_its_max():
    b = logq.Backoff(jitter=0.0)
    assert [b.delay(n) for n in (1, 2, 9, 10, 1025, 1026, 2**40)] == [1.0, 2.0, 256.0, 300.0, 300.0, 300.0, 300.0]


def test_an_int_beyond_a_float_counts_as_infinite_and_bad_parameters_are_refused():
    b = logq.Backoff(base=1, factor=10**400, max=10**400, jitter=0)
    assert b.as_tuple() == (1.0, math.inf, math.inf, 0.0)
    assert b.delay(1) == 1.0 and b.delay(2) == MAX_BACKOFF
    for bad in (dict(base=-1), dict(factor=0.5), dict(jitter=1.5), dict(max=math.nan), dict(base=True),
                dict(factor="2")):
        with pytest.raises(logq.InvalidArgument):
            logq.Backoff(**bad)


def test_fail_on_the_1025th_attempt_retries_after_the_default_max(tmp_path):
    """Before: `2.0 ** 1024` raised a raw OverflowError in `fail` and the job stayed active."""
    clock = FakeClock()
    with logq.Queue(str(tmp_path / "q"), clock=clock, sync="none", compact_threshold=None) as q:
        jid = q.enqueue("t", max_attempts=2000)
        for attempt in range(1, 1026):
            job = q.lease()
            assert job is not None and (job.id, job.attempts) == (jid, attempt)
            q.fail(job, "again")
            clock.advance(331.0)  # past the longest default delay, 300 s + 10% jitter
        info = q.get(jid)
        assert info.state == "pending" and info.attempts == 1025
        assert 0 < info.run_at - (clock.time() - 331.0) <= 330.0


def test_a_job_with_unbounded_backoff_parameters_fails_and_reopens_with_a_finite_run_at(tmp_path):
    clock, path = FakeClock(), str(tmp_path / "q")
    unbounded = logq.Backoff(base=1e300, factor=math.inf, max=10**400, jitter=1.0)
    with logq.Queue(path, clock=clock) as q:
        jid = q.enqueue("t", max_attempts=5, backoff=unbounded)
        for _ in range(2):
            q.fail(q.lease(), "boom")
            run_at = q.get(jid).run_at
            assert math.isfinite(run_at) and run_at <= clock.time() + 2 * MAX_BACKOFF
            clock.advance(run_at - clock.time())
    with logq.Queue(path, clock=clock) as q:  # the backoff stored with the job is still unbounded
        q.fail(q.lease(), "boom")
        info = q.get(jid)
        assert info.state == "pending" and math.isfinite(info.run_at)


@settings(max_examples=300)
@given(slot=st.floats(0, 4e9), every=st.floats(5e-324, 1e12) | st.sampled_from([5e-324, 1e-300, 1e-9]),
       ahead=st.floats(-1e9, 1e12))
def test_the_next_run_of_a_periodic_task_is_finite_and_after_now_for_any_period(slot, every, ahead):
    """A period so small that the count of its steps since the last slot overflows a float
    raised OverflowError where a run finished (the same class as the backoff's)."""
    from logq.core.policy import next_slot

    now = slot + ahead
    at = next_slot(slot, every, now)
    assert math.isfinite(at) and at > now
    if every >= 1e-3 and ahead < 1e9:  # a grid floats can hold: on it, and its first point after now
        k = round((at - slot) / every)
        assert k >= 1 and math.isclose(at, slot + k * every)
        assert k == 1 or slot + (k - 1) * every <= now + 1e-6
