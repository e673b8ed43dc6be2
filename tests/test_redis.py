"""The Redis backend beyond the contract suite: its address and options, durability checks,
faults (a worker killed with SIGKILL, the server killed and restarted, the server away), and
the layout of its keys. Each test uses a real redis-server (tests/redis_server.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

import logq
from logq import InvalidArgument, LeaseLostError, Queue, UnavailableError
from logq.backends.redis import split_url
from logq.testing import FakeClock

from . import redis_server as _redis


def fresh_name() -> str:
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture
def url(redis_server) -> str:
    return redis_server.url


@pytest.fixture
def own_server(tmp_path):
    """A redis-server of this test's own (it may be killed and restarted)."""
    server = _redis.RedisServer(_redis.find(), str(tmp_path / "redis"))
    server.start()
    yield server
    server.stop()


def test_the_url_and_name_pick_the_queue(url):
    name = fresh_name()
    with Queue(url, name=name) as q, Queue(f"{url}?name={name}") as same, Queue(url, name=fresh_name()) as other:
        job_id = q.enqueue("t", b"x")
        assert same.get(job_id).payload == b"x"
        assert other.get(job_id) is None and other.stats().pending == 0
        assert Queue(q.path).get(job_id).payload == b"x"  # path names the queue again
    assert split_url("redis://h:1/0", None) == ("redis://h:1/0", "default")


@pytest.mark.parametrize("kw", [dict(segment_size=1 << 20), dict(compression="zstd"), dict(salvage=True),
                                dict(mode=0o660)])
def test_options_that_shape_files_are_refused(url, kw):
    with pytest.raises(InvalidArgument, match="mean nothing on Redis"):
        Queue(url, name=fresh_name(), **kw)


def test_a_name_for_a_directory_is_refused(tmp_path):
    with pytest.raises(InvalidArgument, match="name= picks a queue on a Redis server"):
        Queue(str(tmp_path / "q"), name="jobs")


def test_sync_always_is_refused_on_a_server_that_does_not_fsync_every_write(url, redis_server):
    import redis
    r = redis.Redis.from_url(url)
    r.config_set("appendfsync", "everysec")
    try:
        with pytest.raises(InvalidArgument, match="appendfsync always"):
            Queue(url, name=fresh_name(), sync="always")
        with Queue(url, name=fresh_name(), sync="batch") as q:  # batch takes what the server does
            with pytest.raises(InvalidArgument, match="appendfsync always"):
                q.enqueue("t", b"", sync="always")
    finally:
        r.config_set("appendfsync", "always")
        r.close()
    Queue(url, name=fresh_name(), sync="always").close()


def test_an_unreachable_server_raises_unavailable_error():
    port = _redis.free_port()  # nothing listens there
    with pytest.raises(UnavailableError, match="cannot be reached"):
        Queue(f"redis://127.0.0.1:{port}/0")
    assert issubclass(UnavailableError, logq.LogqError)


def test_calls_raise_unavailable_error_while_the_server_is_down_and_work_once_it_is_back(own_server):
    q = Queue(own_server.url, name=fresh_name(), sync="always")
    first = q.enqueue("t", b"1")
    own_server.kill()
    with pytest.raises(UnavailableError):
        q.enqueue("t", b"2")
    with pytest.raises(UnavailableError):
        q.lease()
    own_server.start()
    second = q.enqueue("t", b"3")
    assert second > first and [j.id for j in q.lease_many(5)] == [first, second]
    q.close()


def test_nothing_acked_under_sync_always_is_lost_when_the_server_is_killed(own_server):
    name = fresh_name()
    q = Queue(own_server.url, name=name, sync="always")
    ids = q.enqueue_many([("t", b"%d" % i) for i in range(50)])
    leased = q.lease_many(30, lease_time=600)
    q.ack_many(leased[:20])
    for job in leased[20:25]:
        q.ack(job, b"result")
    q.fail(leased[25], "boom", retry=False)
    own_server.kill()  # SIGKILL: no shutdown, no final fsync
    own_server.start()  # on the same data
    q2 = Queue(own_server.url, name=name, sync="always")
    states = {j.id: j.state for j in q2.jobs(limit=None)}
    assert sorted(states) == ids
    assert all(states[j.id] == "done" for j in leased[:25])
    assert q2.get(leased[22].id).result == b"result" and states[leased[25].id] == "dead"
    assert all(states[j.id] == "active" for j in leased[26:])
    rest = q2.lease_many(100)
    assert [j.id for j in rest] == ids[30:]  # no acked job comes back
    q.close()
    q2.close()


WORKER = """
import sys, logq
q = logq.Queue(sys.argv[1], name=sys.argv[2], sync="always")
jobs = q.lease_many(3, lease_time=float(sys.argv[3]))
print(" ".join(str(j.id) for j in jobs), flush=True)
sys.stdin.read()  # hold the leases until killed
"""


def test_jobs_of_a_worker_killed_with_sigkill_come_back_after_the_lease_with_attempts_counted(url):
    name = fresh_name()
    q = Queue(url, name=name, sync="always")
    ids = q.enqueue_many([("t", b"a"), ("t", b"b"), ("t", b"c")])
    proc = subprocess.Popen([sys.executable, "-c", WORKER, url, name, "1.0"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        leased = [int(x) for x in proc.stdout.readline().split()]
        assert leased == ids
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    back = []
    deadline = time.monotonic() + 30
    while len(back) < 3 and time.monotonic() < deadline:
        back += q.lease_many(3, wait=5.0, lease_time=60)
    assert sorted(j.id for j in back) == ids
    assert all(j.attempts == 2 for j in back)
    assert all(q.get(j.id).last_error == "lease expired" for j in back)
    q.close()


def test_a_stale_worker_cannot_finish_an_attempt_another_took_over(url):
    clock = FakeClock()
    one = Queue(url, name=fresh_name(), clock=clock)
    two = Queue(one.path, clock=clock)
    one.enqueue("t", b"")
    stale = one.lease(lease_time=5)
    clock.advance(6)
    fresh = two.lease(lease_time=5)  # the other client reclaims the expired lease
    assert fresh.id == stale.id and fresh.attempts == 2
    for call in (lambda: one.ack(stale), lambda: one.fail(stale, "x"), lambda: one.release(stale),
                 lambda: one.extend(stale)):
        with pytest.raises(LeaseLostError):
            call()
    two.ack(fresh)
    assert one.get(fresh.id).state == "done"
    one.close()
    two.close()


def test_an_idle_lease_waits_on_the_server_and_wakes_for_an_enqueue_from_another_client(url):
    name = fresh_name()
    waiting, got = Queue(url, name=name), []
    thread = threading.Thread(target=lambda: got.append(waiting.lease(wait=30)))
    thread.start()
    with Queue(url, name=name) as other:
        time.sleep(0.2)  # (not synchronisation: the lease finds the job whether it waits already or not)
        job_id = other.enqueue("t", b"x")
    thread.join(30)
    assert got and got[0].id == job_id
    waiting.close()


def test_keys_of_one_queue_share_one_hash_slot_and_history_is_kept(url):
    import redis
    name = fresh_name()
    with Queue(url, name=name) as q:
        q.enqueue("t", b"", key="k")
        q.ack(q.lease(), b"r")
        r = redis.Redis.from_url(url)
        keys = [k.decode() for k in r.scan_iter(match=f"{{logq:{name}}}:*")]
        assert keys and all(k.startswith("{logq:%s}:" % name) for k in keys)
        assert len({r.cluster_keyslot(k) if hasattr(r, "cluster_keyslot") else _slot(k) for k in keys}) == 1
        history = q.backend.history(1)
        assert [rec[0] for rec in history] == [17, 18]  # LEASE, ACK (the ENQUEUE is kept with the job)
        r.close()


def _slot(key: str) -> str:
    start = key.index("{")
    return key[start:key.index("}", start) + 1]


def test_final_jobs_and_their_history_are_swept_after_retention(url):
    clock = FakeClock()
    with Queue(url, name=fresh_name(), clock=clock, retain_done=10) as q:
        job_id = q.enqueue("t", b"")
        q.ack(q.lease())
        clock.advance(11)
        assert q.compact().jobs_swept == 1
        assert q.get(job_id) is None and q.backend.history(job_id) == []


def test_a_worker_backs_off_while_the_server_is_away_and_resumes(own_server, caplog):
    q = Queue(own_server.url, name=fresh_name())
    done = threading.Event()

    @q.task(name="job")
    def job():
        done.set()

    worker = q.worker(concurrency=1, poll=0.2)
    thread = threading.Thread(target=worker.run)
    own_server.kill()
    with caplog.at_level("WARNING", logger="logq"):
        thread.start()
        deadline = time.monotonic() + 30
        while "unavailable" not in caplog.text.lower() and "cannot be reached" not in caplog.text and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert "cannot be reached" in caplog.text
    own_server.start()
    job.enqueue()
    assert done.wait(30)
    worker.stop()
    thread.join(30)
    assert not thread.is_alive()
    q.close()


def test_without_the_redis_client_logq_works_and_a_redis_url_says_what_to_install(tmp_path):
    script = f"""
import sys
sys.modules["redis"] = None  # as if the client were not installed
import logq
with logq.Queue({str(tmp_path / 'q')!r}) as q:
    q.enqueue("t", b"")
try:
    logq.Queue("redis://127.0.0.1:1/0")
except logq.InvalidArgument as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "pip install 'logq[redis]'" in out


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "logq", *args], capture_output=True, text=True, timeout=60)


def test_the_command_line_reads_and_requeues_a_redis_queue(url):
    import json
    name = fresh_name()
    with Queue(url, name=name) as q:
        done, dead, waiting = q.enqueue("send", b"a"), q.enqueue("send", b"b", key="k"), q.enqueue("other", b"c")
        q.ack(q.lease("send"), b"ok")
        q.fail(q.lease("send"), "boom", retry=False)
        stats = json.loads(cli("stats", url, "--name", name, "--json").stdout)
        assert stats["counts"] == {"pending": 1, "active": 0, "done": 1, "dead": 1, "cancelled": 0}
        assert "1 dead" in cli("stats", f"{url}?name={name}").stdout
        summary = cli("inspect", url, "--name", name)
        assert summary.returncode == 0 and "1 done" in summary.stdout and "'other' 1" in summary.stdout
        history = json.loads(cli("inspect", url, "--name", name, "--job", str(dead), "--json").stdout)
        assert [(r["type"], r["state"]) for r in history["history"]] == [
            ("enqueue", "pending"), ("lease", "active"), ("fail", "dead")]
        assert history["job"]["last_error"] == "boom" and history["history"][2]["seq"] > dead
        text = cli("inspect", url, "--name", name, "--job", str(done)).stdout
        assert "done" in text and "ack" in text
        assert cli("inspect", url, "--name", name, "--job", "999").returncode == 1
        out = cli("requeue-dead", url, "--queue", name)
        assert out.returncode == 0 and "requeued 1" in out.stdout
        assert q.get(dead).state == "pending" and q.get(waiting).state == "pending"
        assert cli("inspect", url, "--name", name, "--verify").returncode == 2  # nothing to verify on Redis


def test_a_worker_waiting_for_jobs_survives_a_server_restart(own_server):
    q = Queue(own_server.url, name=fresh_name())
    ran = []

    @q.task(name="job")
    def job(n):
        ran.append(n)
        return n

    worker = q.worker(concurrency=2, poll=5.0)  # idle slots block on the server for up to a second
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert job.enqueue(1).result(timeout=30) == 1  # run and acked; the slots go back to waiting
        own_server.kill()
        own_server.start()  # (append-only file fsynced on every write: the queue is as it was)
        assert job.enqueue(2).result(timeout=30) == 2
        assert ran == [1, 2] and q.stats().counts["done"] == 2
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()
    q.close()


def test_the_worker_command_runs_the_tasks_of_a_redis_queue(url, tmp_path):
    name = fresh_name()
    (tmp_path / "redisapp.py").write_text(
        f"import logq\nq = logq.Queue({url!r}, name={name!r})\n\n"
        "@q.task(name='double')\ndef double(x):\n    return x * 2\n")
    proc = subprocess.Popen([sys.executable, "-m", "logq", "worker", "redisapp:q", "--concurrency", "2"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        sys.path.insert(0, str(tmp_path))
        import redisapp
        assert redisapp.double.enqueue(21).result(timeout=30) == 42
        redisapp.q.close()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("redisapp", None)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_closing_the_queue_ends_a_lease_waiting_on_the_server(url):
    q = Queue(url, name=fresh_name())
    raised = []

    def waiting() -> None:
        try:
            q.lease(wait=60)
        except logq.ClosedError as exc:
            raised.append(exc)
    thread = threading.Thread(target=waiting)
    thread.start()
    q.close()
    thread.join(30)
    assert not thread.is_alive() and len(raised) == 1


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_missing_redis_server_fails_under_ci_and_skips_elsewhere_with_the_reason(monkeypatch, ci, outcome):
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PATH", "")  # no redis-server on the path ...
    monkeypatch.setattr(_redis.os, "access", lambda path, mode: False)  # ... nor in the usual places
    with pytest.raises(outcome, match="redis-server is not installed"):
        _redis.find()
    with pytest.raises(outcome, match="could not be made to follow"):  # so does a replica that will not sync
        _redis.give_up("a replica redis-server could not be made to follow the primary")


def test_each_script_carries_only_the_helpers_it_uses():
    from logq.backends.rediswire import split_scripts
    text = ("-- header\nlocal P = 1\n\n-- doubles\nlocal function twice(x) return 2 * x end\n\n"
            "local function quad(x) return twice(twice(x)) end\n\nlocal function unused() return 0 end\n"
            "\n-- @op a\nreturn quad(P)\n\n-- @op b\nreturn P\n")
    scripts = split_scripts(text)
    assert "function quad" in scripts["a"] and "function twice" in scripts["a"]  # twice: through quad
    assert "function unused" not in scripts["a"] and "local P = 1" in scripts["a"]
    assert "function" not in scripts["b"] and scripts["b"].rstrip().endswith("return P")


def test_the_scripts_and_the_client_agree_after_the_server_lost_its_scripts(url):
    import redis
    with Queue(url, name=fresh_name()) as q:
        q.enqueue("t", b"1")
        redis.Redis.from_url(url).script_flush()
        job_id = q.enqueue("t", b"2")  # NOSCRIPT: loaded again, the call made once
        assert [j.payload for j in q.lease_many(5)] == [b"1", b"2"] and job_id == 2


def test_a_lease_batch_and_a_finished_batch_follow_each_job_of_them(url):
    """A lease_many is one entry for all its jobs (and so is each batch of finished jobs): a job
    acked, released or extended out of that lease is not expired with it, and a dead job retried
    and dead again is not swept when its first retention ends."""
    clock = FakeClock()
    with Queue(url, name=fresh_name(), clock=clock, lease_time=10, retain_done=100, retain_dead=50,
               max_attempts=1) as q:
        ids = [q.enqueue("t", b"%d" % i) for i in range(4)]
        acked, released, extended, lost = q.lease_many(4)
        q.ack(acked)
        q.release(released)
        clock.advance(5)
        q.extend(extended, lease_time=20)
        clock.advance(6)  # the lease of the batch has ended: only `lost` was still under it
        assert q.expire_leases() == 1
        assert [q.get(i).state for i in ids] == ["done", "pending", "active", "dead"]
        assert q.stats().counts == {"pending": 1, "active": 1, "done": 1, "dead": 1, "cancelled": 0}
        q.retry(lost.id)
        again = [j for j in q.lease_many(2) if j.id == lost.id][0]
        clock.advance(40)  # 51 s after `lost` first died: its first retention is over
        q.fail(again, "boom", retry=False)
        assert q.compact().jobs_swept == 0 and q.get(lost.id).state == "dead"
        clock.advance(60)  # past the done job's retention and the second death's
        assert q.compact().jobs_swept == 2
        assert q.get(acked.id) is None and q.get(lost.id) is None
        assert q.stats().counts["done"] == 0 and q.stats().counts["dead"] == 0
        assert [j.id for j in q.jobs(state="active")] == [released.id, extended.id]  # leased again; extended
        assert q.expire_leases() == 2 and q.stats().counts["active"] == 0 and q.jobs(state="active") == []


def test_a_dead_job_retried_and_done_is_swept_once_on_its_done_retention(url):
    clock = FakeClock()
    with Queue(url, name=fresh_name(), clock=clock, retain_done=100, retain_dead=10, max_attempts=1) as q:
        job_id = q.enqueue("t", b"")
        q.fail(q.lease(), "boom", retry=False)
        q.retry(job_id)
        q.ack(q.lease())
        clock.advance(11)  # its time as a dead job has come: it is done now, and kept
        assert q.compact().jobs_swept == 0 and q.get(job_id).state == "done"
        clock.advance(100)
        assert q.compact().jobs_swept == 1 and q.get(job_id) is None
        assert q.stats().counts == {"pending": 0, "active": 0, "done": 0, "dead": 0, "cancelled": 0}


def test_a_queue_is_stamped_with_its_layout_by_its_first_enqueue_and_another_layout_is_refused(url):
    import redis
    from logq import LayoutVersionError
    from logq.backends.redislayout import LAYOUT
    r = redis.Redis.from_url(url)
    name = fresh_name()
    stamp = "{logq:%s}:layout" % name
    with Queue(url, name=name) as q:
        assert r.exists(stamp) == 0  # opening writes nothing
        job_id = q.enqueue("t", b"x")
        assert r.get(stamp) == str(LAYOUT).encode()
    with Queue(url, name=name) as q:  # its own layout opens
        assert q.get(job_id).payload == b"x"
    r.set(stamp, str(LAYOUT + 1))
    with pytest.raises(LayoutVersionError, match=f"written in layout '{LAYOUT + 1}'.*drain it with the logq "
                                                 "that wrote it, or delete its keys"):
        Queue(url, name=name)
    r.delete(stamp)  # jobs but no stamp: written before the layout had a version
    with pytest.raises(LayoutVersionError, match="an older layout"):
        Queue(url, name=name, sync="always")
    assert r.hget("{logq:%s}:j:%d" % (name, job_id), "s") == b"pending"  # nothing was changed
    r.delete(*r.scan_iter(match="{logq:%s}:*" % name))  # its keys deleted: it opens as new
    with Queue(url, name=name) as q:
        assert q.stats().pending == 0 and q.enqueue_many([("t", b"")] * 3) == [1, 2, 3]
        assert r.get(stamp) == str(LAYOUT).encode()
    r.close()


def test_replica_timeout_in_the_url_is_checked_and_kept_in_the_path(url):
    with Queue(f"{url}?replica_timeout=2.5", name=fresh_name(), sync="always") as q:
        assert q.backend.durability.timeout == 2.5 and "replica_timeout=2.5" in q.path
        assert q.backend.durability.replicas == 0 and q.backend.durability.command() is None
        with Queue(q.path) as again:
            assert again.backend.durability.timeout == 2.5
    for bad in ("0", "x", "-1"):
        with pytest.raises(InvalidArgument, match="replica_timeout must be"):
            Queue(f"{url}?replica_timeout={bad}", name=fresh_name())
