"""Bad arguments get a named logq error that says what to do, and change nothing (every backend).

Issue 19 item 10: these raised OverflowError, TypeError or ValueError before.
Durations too long for the platform's waits are not bad input: they wait in slices.
"""

from __future__ import annotations

import os
import threading

import pytest

from logq import InvalidArgument, LogqError, Queue


@pytest.fixture
def q(queue_factory):
    queue = queue_factory()
    yield queue
    queue.close()


def refused(call, *match: str) -> InvalidArgument:
    """`call()` raises InvalidArgument (a LogqError, a ValueError and a TypeError) whose
    message holds each of `match`."""
    with pytest.raises(InvalidArgument) as info:
        call()
    assert isinstance(info.value, LogqError) and isinstance(info.value, ValueError)
    for text in match:
        assert text in str(info.value)
    return info.value


def test_a_delay_too_large_for_a_float_is_refused(q):
    refused(lambda: q.enqueue("t", delay=10**400), "delay", "finite number of seconds")
    refused(lambda: q.enqueue_many([("t", b"")], delay=10**400), "delay")
    refused(lambda: q.lease(wait=10**400), "wait")
    assert q.stats().last_seq == 0


@pytest.mark.parametrize("call", ["enqueue", "enqueue_many", "lease", "lease_many", "ack", "ack_many", "fail",
                                  "release", "extend", "cancel", "retry"])
@pytest.mark.parametrize("sync", [[], {}, 5, "sometimes"])
def test_a_sync_mode_that_is_not_one_is_refused_before_anything_changes(q, call, sync):
    jid = q.enqueue("t", b"x")
    job = q.lease() if call not in ("cancel", "lease", "lease_many") else None
    before = q.stats()
    calls = {
        "enqueue": lambda: q.enqueue("t", sync=sync), "enqueue_many": lambda: q.enqueue_many([("t", b"")], sync=sync),
        "lease": lambda: q.lease(sync=sync), "lease_many": lambda: q.lease_many(2, sync=sync),
        "ack": lambda: q.ack(job, sync=sync), "ack_many": lambda: q.ack_many([job], sync=sync),
        "fail": lambda: q.fail(job, "e", sync=sync), "release": lambda: q.release(job, sync=sync),
        "extend": lambda: q.extend(job, sync=sync), "cancel": lambda: q.cancel(jid, sync=sync),
        "retry": lambda: q.retry(jid, sync=sync),
    }
    refused(calls[call], "sync must be one of")
    after = q.stats()
    assert (after.counts, after.last_seq) == (before.counts, before.last_seq)


@pytest.mark.parametrize("names", [5, b"t", 1.5, object()])
def test_lease_names_that_are_not_names_are_refused(q, names):
    q.enqueue("t", b"x")
    refused(lambda: q.lease(names), "names takes a task name or an iterable of names")
    refused(lambda: q.lease_many(1, names), "names takes")
    refused(lambda: q.lease([["t"]]), "names must be a non-empty str")
    assert q.stats().counts["pending"] == 1


@pytest.mark.parametrize("items", [5, None, b"ab", "ab"])
def test_enqueue_many_of_something_that_is_not_pairs_is_refused(q, items):
    refused(lambda: q.enqueue_many(items), "enqueue_many takes (name, payload) pairs")
    assert q.stats().last_seq == 0


def waiting_in(condition, monkeypatch) -> threading.Event:
    """An event set once a thread is inside `condition.wait` (the backend's lock held)."""
    entered, real_wait = threading.Event(), condition.wait

    def wait(timeout=None):
        entered.set()
        return real_wait(timeout)
    monkeypatch.setattr(condition, "wait", wait)
    return entered


def in_thread(call) -> tuple[threading.Thread, list]:
    """Run `call()` in a thread; the list gets its result or its exception."""
    box: list = []

    def run():
        try:
            box.append(call())
        except BaseException as exc:
            box.append(exc)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


@pytest.mark.needs("engine")
def test_a_lease_may_wait_longer_than_a_platform_wait(q, monkeypatch):
    jid = q.enqueue("t", b"x")
    assert q.lease(wait=1e10).id == jid  # due at once
    entered = waiting_in(q._backend._changed, monkeypatch)
    t, got = in_thread(lambda: q.lease(wait=1e10))
    assert entered.wait(30)  # it waits: the enqueue below wakes it
    later = q.enqueue("t", b"y")
    t.join(30)
    assert not t.is_alive() and got[0].id == later


@pytest.mark.parametrize("how", ["wait", "handle"])
@pytest.mark.needs("engine")
def test_wait_and_a_handle_may_wait_longer_than_a_platform_wait(q, monkeypatch, how):
    @q.task()
    def square(x):
        return x * x

    handle = square.enqueue(3)
    job = q.lease()
    entered = waiting_in(q._backend._finished, monkeypatch)
    t, got = in_thread((lambda: q.wait(handle.id, timeout=1e10).result) if how == "wait"
                       else (lambda: handle.result(timeout=1e10)))
    assert entered.wait(30)  # it waits: the ack below wakes it
    q.ack(job, result=b"9")
    t.join(30)
    assert not t.is_alive() and got == [b"9" if how == "wait" else 9]
    refused(lambda: q.wait(handle.id, timeout=10**400), "timeout")
    refused(lambda: handle.result(timeout=10**400), "timeout")


@pytest.mark.parametrize("path, match", [
    (None, "path must be a str or os.PathLike"), (5, "path must be a str or os.PathLike"),
    (b"jobs", "path must be text"), ("", "non-empty"), ("jobs\0x", "without NUL bytes"),
])
def test_a_path_that_cannot_name_a_directory_is_refused(tmp_path, monkeypatch, path, match):
    monkeypatch.chdir(tmp_path)
    refused(lambda: Queue(path), match)
    assert os.listdir(tmp_path) == []


def test_a_clock_without_time_is_refused(queue_factory):
    refused(lambda: queue_factory(clock=5), "clock must have a time() method")


def test_task_arguments_nested_too_deeply_are_refused_and_nothing_is_queued(q):
    @q.task(name="deep")
    def deep(arg):  # type: ignore[no-untyped-def]
        return None

    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(InvalidArgument, match="nested too deeply"):
        deep.enqueue(nested)
    assert q.stats().counts["pending"] == 0


def test_a_payload_nested_too_deeply_to_decode_is_a_named_error(q):
    from logq.runtime.tasks import JSONSerializer

    with pytest.raises(InvalidArgument, match="nested too deeply"):
        JSONSerializer().loads(b"[" * 200_000 + b"]" * 200_000)
