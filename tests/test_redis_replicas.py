"""sync="always" on a Redis server with a replica: each call returns once the replica has the
change (WAITAOF on Redis 7.2+, else WAIT, once per call); a stopped replica makes such calls
raise `NotReplicatedError` while `batch` calls go on; `batch` never waits.

The module starts its own primary and replica (tests/redis_server.py) on free loopback ports.
If replication cannot be started here the tests skip with the reason (fail under CI=true)."""

from __future__ import annotations

import logging
import threading
import uuid

import pytest
import redis

from logq import JSONSerializer, NotReplicatedError, Queue, UnavailableError

from . import redis_server as _redis


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A primary (appendfsync always) and one replica of it, in sync."""
    base = tmp_path_factory.mktemp("replicas")
    primary = _redis.RedisServer(_redis.find(), str(base / "primary"))
    primary.start()
    replica = _redis.RedisServer(_redis.find(), str(base / "replica"), replica_of=primary)
    try:
        replica.start()
        if not _redis.replication_ready(primary.url, 1):
            reason = ("a replica redis-server could not be made to follow the primary on this machine, so "
                      "sync='always' with replicas is not tested; its log ends:\n" + replica.log_tail())
            _redis.give_up(reason)
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


@pytest.fixture
def replica_client(pair):
    r = redis.Redis.from_url(pair[1].url)
    yield r
    r.close()


def waits(url: str) -> int:
    """How many WAIT and WAITAOF commands the server at `url` has run."""
    r = redis.Redis.from_url(url)
    try:
        stats = r.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("wait", "waitaof"))
    finally:
        r.close()


def fresh_name() -> str:
    return "r-" + uuid.uuid4().hex[:12]


def test_an_always_enqueue_returns_only_once_the_replica_has_it(pair, replica_client):
    primary, replica = pair
    name = fresh_name()
    q = Queue(f"{primary.url}?replica_timeout=60", name=name, sync="always")
    assert q.backend.durability.replicas == 1
    replica.pause()  # connected, but it confirms nothing until resumed
    done, ids = threading.Event(), []
    worker = threading.Thread(target=lambda: (ids.append(q.enqueue("t", b"kept")), done.set()))
    try:
        worker.start()
        assert not done.wait(0.5), "the enqueue returned while the replica could not have the job"
    finally:
        replica.resume()
    worker.join(60)
    assert done.is_set()
    stored = replica_client.hgetall("{logq:%s}:j:%d" % (name, ids[0]))  # read on the replica itself
    assert stored[b"s"] == b"pending" and stored[b"e"].endswith(b"kept")
    assert replica_client.get("{logq:%s}:layout" % name) == b"1"
    q.close()


def test_batch_calls_wait_once_per_call_and_leave_every_change_on_the_replica(pair, replica_client):
    primary, _ = pair
    name = fresh_name()
    q = Queue(primary.url, name=name, sync="always")

    def calls() -> list[int]:
        ids = q.enqueue_many([("t", b"%d" % i) for i in range(200)])
        jobs = q.lease_many(200)
        q.ack_many(jobs[:100])
        q._complete_many([(job, b"r", None) for job in jobs[100:150]], {})  # how a worker records outcomes
        return ids

    calls()  # the server loads each script at its first call (then the call is sent again)
    before = waits(primary.url)
    ids = calls()
    assert waits(primary.url) - before == 4  # one per call, none per job
    states = [replica_client.hget("{logq:%s}:j:%d" % (name, i), "s") for i in ids]
    assert states == [b"done"] * 150 + [b"active"] * 50
    q.close()


def test_batch_mode_never_waits_for_replicas(pair):
    primary, _ = pair
    with Queue(primary.url, name=fresh_name(), sync="batch") as q:
        before = waits(primary.url)
        q.enqueue("t", b"1")
        q.ack_many(q.lease_many(5))
        q.enqueue_many([("t", b"2")] * 10, sync="none")
        assert waits(primary.url) == before
        q.enqueue("t", b"3", sync="always")  # a call may ask for more
        assert waits(primary.url) == before + 1


def test_a_stopped_replica_fails_always_calls_with_not_replicated_error_and_batch_calls_go_on(pair):
    primary, replica = pair
    name = fresh_name()
    strict = Queue(f"{primary.url}?replica_timeout=0.2", name=name, sync="always")
    relaxed = Queue(primary.url, name=name, sync="batch")
    replica.stop()
    try:
        with pytest.raises(NotReplicatedError, match="only 0 of its 1 replicas") as caught:
            strict.enqueue("t", b"maybe")
        assert isinstance(caught.value, UnavailableError)  # a worker backs off as for a server away
        assert relaxed.stats().pending == 1  # the change is not undone
        first = relaxed.enqueue_many([("t", b"a"), ("t", b"b")])
        relaxed.ack_many(relaxed.lease_many(3))
        assert relaxed.stats().counts["done"] == 3 and first
        with pytest.raises(NotReplicatedError):
            strict.enqueue("t", b"again", sync="batch")  # the queue's own mode still asks for always
    finally:
        replica.start()
        assert _redis.replication_ready(primary.url, 1), replica.log_tail()
    strict.close()
    relaxed.close()


def test_waitaof_is_used_where_the_server_has_it(pair):
    primary, _ = pair
    version = redis.Redis.from_url(primary.url).info("server")["redis_version"]
    has_waitaof = tuple(int(p) for p in version.split(".")[:2]) >= (7, 2)
    with Queue(primary.url, name=fresh_name(), sync="always") as q:
        durability = q.backend.durability
        assert durability.waitaof == has_waitaof
        assert durability.command()[0] == ("WAITAOF" if has_waitaof else "WAIT")


class _Seen(logging.Handler):
    """Sets `event` when a record whose message contains `text` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.event = text, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


def test_a_worker_backs_off_while_a_replica_is_away_and_finishes_its_jobs_once_it_is_back(pair):
    primary, replica = pair
    name = fresh_name()
    q = Queue(f"{primary.url}?replica_timeout=0.2", name=name, sync="always", lease_time=1.0)
    ran = threading.Event()

    @q.task(name="job")
    def job():
        ran.set()

    seen = _Seen("replicas received it")
    logging.getLogger("logq").addHandler(seen)
    worker = q.worker(concurrency=1, poll=0.1)
    thread = threading.Thread(target=worker.run)
    replica.stop()
    try:
        with Queue(primary.url, name=name, sync="batch") as producer:  # batch calls go on meanwhile
            job_id = producer.enqueue("job", JSONSerializer().dumps([[], {}]), max_attempts=20)
        thread.start()
        assert seen.event.wait(30), "the worker did not report the missing replica"
        assert thread.is_alive()  # it backs off; it does not crash
    finally:
        replica.start()
        assert _redis.replication_ready(primary.url, 1), replica.log_tail()
        logging.getLogger("logq").removeHandler(seen)
    assert ran.wait(60)
    worker.stop()
    thread.join(30)
    assert not thread.is_alive()
    info = q.wait(job_id, timeout=30)
    # its first lease (taken while the replica was away, whose wait failed) expired and counted
    assert info.state == "done" and info.attempts >= 2
    q.close()


def test_the_wait_command_and_its_reply_on_servers_with_and_without_waitaof():
    """Without a server: this machine's may be older than 7.2 (the tests above use what it has)."""
    from logq.backends.redisdurable import Durability
    new = Durability("redis://h", True, 2, True, 1.5)
    assert new.command() == ("WAITAOF", "1", "2", "1500")
    new.check([1, 2])
    with pytest.raises(NotReplicatedError, match="only 1 of its 2 replicas fsynced it"):
        new.check([1, 1])
    old = Durability("redis://h", True, 2, False, 0.25)
    assert old.command() == ("WAIT", "2", "250")
    old.check(3)
    with pytest.raises(NotReplicatedError, match="only 0 of its 2 replicas received it within 0.25s"):
        old.check(0)
    assert Durability("redis://h", True, 0, True, 5).command() is None  # no replicas: nothing to wait for
    assert Durability("redis://h", False, 1, True, 5).command()[1] == "0"  # the server's own AOF unknown
