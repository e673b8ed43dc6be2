"""The Prometheus collector: what a scrape shows, and that it stays optional."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest

import logq
import logq.prometheus
from logq import Queue
from logq.prometheus import QueueCollector, register
from logq.testing import FakeClock

from .helpers import FaultyFS
from .test_readme import blocks


@pytest.fixture
def registry():
    return CollectorRegistry()


def sample(registry, name, **labels):
    return registry.get_sample_value(name, labels)


# ------------------------------------------------------------------ optional import


def test_import_logq_does_not_import_prometheus_client():
    code = "import logq, sys; assert 'prometheus_client' not in sys.modules"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_importing_the_collector_without_prometheus_client_says_what_to_install():
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "import logq\n"
            "try:\n"
            "    import logq.prometheus\n"
            "except ImportError as exc:\n"
            "    assert isinstance(exc, logq.LogqError), type(exc)\n"
            "    print(exc)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "pip install 'logq[prometheus]'" in run.stdout


# ------------------------------------------------------------------- queue gauges


def test_queue_gauges_follow_stats(qdir, registry):
    clock = FakeClock(1000.0)
    q = Queue(qdir, clock=clock, sync="none", backoff=logq.Backoff(base=100.0, jitter=0))
    try:
        register(q, registry, name="jobs")
        a, b, c = (q.enqueue("t", b"x") for _ in range(3))
        q.enqueue("t", b"later", delay=60)         # pending, not due
        cancelled = q.enqueue("t", b"never")
        clock.advance(5)
        q.enqueue("t", b"fresh")                   # pending and due
        leased = [q.lease() for _ in range(3)]
        assert [job.id for job in leased] == [a, b, c]
        q.ack(leased[0])                           # a: done
        q.fail(leased[1], "boom")                  # b: pending again, due in 100 s
        q.cancel(cancelled)                        # c stays active
        clock.advance(2)

        counts = {s: sample(registry, "logq_jobs", queue="jobs", state=s)
                  for s in ("pending", "active", "done", "dead", "cancelled")}
        assert counts == {"pending": 3.0, "active": 1.0, "done": 1.0, "dead": 0.0, "cancelled": 1.0}
        assert sample(registry, "logq_jobs_due", queue="jobs") == 1.0      # only `fresh`
        assert sample(registry, "logq_oldest_pending_age_seconds", queue="jobs") == 7.0  # b, enqueued at 1000
        stats = q.stats()
        assert stats.bytes_on_disk != stats.live_bytes  # so that a swap of the two would show
        assert sample(registry, "logq_segments", queue="jobs") == stats.segments == 1
        assert sample(registry, "logq_disk_bytes", queue="jobs") == stats.bytes_on_disk
        assert sample(registry, "logq_live_bytes", queue="jobs") == stats.live_bytes
        assert sample(registry, "logq_last_sequence", queue="jobs") == stats.last_seq == 12
        assert sample(registry, "logq_durable_sequence", queue="jobs") == 0.0  # sync="none": nothing fsynced
        q.sync()
        assert sample(registry, "logq_durable_sequence", queue="jobs") == 12.0
    finally:
        q.close()


def test_oldest_pending_age_is_zero_when_nothing_is_pending(qdir, registry):
    with Queue(qdir, clock=FakeClock(1000.0)) as q:
        register(q, registry)
        assert sample(registry, "logq_oldest_pending_age_seconds", queue=q.path) == 0.0
        assert sample(registry, "logq_jobs", queue=q.path, state="pending") == 0.0


def test_the_queue_label_defaults_to_the_path_and_the_prefix_is_applied(qdir, registry):
    with Queue(qdir) as q:
        q.enqueue("t", b"x")
        register(q, registry, prefix="app_queue")
        assert sample(registry, "app_queue_jobs", queue=q.path, state="pending") == 1.0
        assert sample(registry, "logq_jobs", queue=q.path, state="pending") is None


# -------------------------------------------------------------------- task metrics


def test_task_counters_come_from_the_metrics_snapshot(qdir, registry):
    with Queue(qdir) as q:
        register(q, registry, name="jobs")
        for outcome, seconds in (("succeeded", 0.5), ("succeeded", 1.5), ("failed", 2.0), ("dead", 0.25),
                                 ("timeouts", 0.0), ("released", 0.0)):
            q.metrics.record("resize", outcome, seconds)
        q.metrics.record("email", "succeeded", 3.0)

        def task(name, **labels):
            return sample(registry, name, queue="jobs", task="resize", **labels)
        assert [task("logq_task_runs_total", outcome=o) for o in ("succeeded", "failed", "dead")] == [2, 1, 1]
        assert task("logq_task_timeouts_total") == 1.0
        assert task("logq_task_released_total") == 1.0
        assert task("logq_task_run_seconds_total") == 4.25
        assert task("logq_task_run_seconds_max") == 2.0
        assert sample(registry, "logq_task_run_seconds_max", queue="jobs", task="email") == 3.0


def test_a_real_worker_shows_up_in_the_scrape(qdir, registry):
    with Queue(qdir) as q:
        register(q, registry, name="jobs")
        done, finished, unblock = threading.Condition(), [], threading.Event()

        @q.task("ok")
        def ok():
            return 1

        @q.task("boom", max_attempts=1)
        def boom():
            raise RuntimeError("boom")

        @q.task("slow", max_attempts=1, timeout=0.1)
        def slow():
            unblock.wait(30)

        def note(job, value):
            with done:
                finished.append(job.name)
                done.notify_all()
        for task in (ok, ok, boom, slow):
            task.enqueue()
        worker = q.worker(concurrency=2, on_success=note, on_dead=note)
        t = threading.Thread(target=worker.run, daemon=True)
        t.start()
        try:
            with done:
                assert done.wait_for(lambda: len(finished) == 4, timeout=30), finished
        finally:
            worker.stop(now=True)
            unblock.set()
            t.join(30)

        def runs(task, outcome):
            return sample(registry, "logq_task_runs_total", queue="jobs", task=task, outcome=outcome)
        assert [runs("ok", o) for o in ("succeeded", "failed", "dead")] == [2, 0, 0]
        assert [runs("boom", o) for o in ("succeeded", "failed", "dead")] == [0, 0, 1]
        assert [runs("slow", o) for o in ("succeeded", "failed", "dead")] == [0, 0, 1]
        assert sample(registry, "logq_task_timeouts_total", queue="jobs", task="slow") == 1.0
        assert sample(registry, "logq_task_timeouts_total", queue="jobs", task="boom") == 0.0
        assert sample(registry, "logq_task_run_seconds_max", queue="jobs", task="slow") >= 0.1
        assert sample(registry, "logq_jobs", queue="jobs", state="done") == 2.0
        assert sample(registry, "logq_jobs", queue="jobs", state="dead") == 2.0


# ---------------------------------------------------------- exposition, several queues


def test_the_exposition_has_one_family_per_metric_for_two_queues(tmp_path, registry):
    with Queue(tmp_path / "a") as qa, Queue(tmp_path / "b") as qb:
        collector = register(qa, registry, name="a")
        collector.add(qb, name="b")
        qa.enqueue("t", b"x")
        qb.enqueue_many([("t", b"x"), ("t", b"y")])
        qb.metrics.record("t", "succeeded", 1.0)
        text = generate_latest(registry).decode()
    assert text.count("# TYPE logq_jobs gauge") == 1
    assert text.count("# TYPE logq_task_runs_total counter") == 1
    assert 'logq_jobs{queue="a",state="pending"} 1.0' in text
    assert 'logq_jobs{queue="b",state="pending"} 2.0' in text
    assert 'logq_task_runs_total{outcome="succeeded",queue="b",task="t"} 1.0' in text
    assert 'queue="a",task=' not in text  # no worker ran on queue a


def test_a_second_collector_with_the_same_prefix_is_refused_by_the_registry(tmp_path, registry):
    with Queue(tmp_path / "a") as qa, Queue(tmp_path / "b") as qb:
        register(qa, registry)
        with pytest.raises(ValueError, match="logq_jobs"):
            register(qb, registry)
        register(qb, registry, prefix="other")


def test_register_uses_the_global_registry_by_default(qdir):
    with Queue(qdir) as q:
        collector = register(q, name="global-test")
        try:
            assert prometheus_client.REGISTRY.get_sample_value(
                "logq_jobs", {"queue": "global-test", "state": "pending"}) == 0.0
        finally:
            prometheus_client.REGISTRY.unregister(collector)


# ----------------------------------------------------------- closed and failed queues


def test_a_closed_queue_leaves_the_scrape_empty(qdir, registry):
    q = Queue(qdir)
    q.enqueue("t", b"x")
    q.metrics.record("t", "succeeded", 1.0)
    register(q, registry)
    assert sample(registry, "logq_jobs", queue=q.path, state="pending") == 1.0
    q.close()
    assert list(registry.collect()) == []
    assert generate_latest(registry) == b""


def test_a_closed_or_failed_queue_drops_out_and_the_others_stay(tmp_path, registry):
    fs = FaultyFS()
    open_q, closed_q = Queue(tmp_path / "open"), Queue(tmp_path / "closed")
    failed_q = Queue(tmp_path / "failed", sync="always", fs=fs)
    collector = register(open_q, registry, name="open")
    collector.add(closed_q, name="closed")
    collector.add(failed_q, name="failed")
    closed_q.close()
    fs.fail_on("fsync")
    with pytest.raises(logq.WriterFailedError):
        failed_q.enqueue("t", b"x")
    text = generate_latest(registry).decode()
    assert set(re.findall(r'queue="([^"]+)"', text)) == {"open"}
    with pytest.raises(logq.WriterFailedError):
        failed_q.close()
    open_q.close()


# ---------------------------------------------------------------- argument checks


def test_bad_arguments_are_refused_up_front(qdir):
    with Queue(qdir) as q:
        for bad in ("", "1logq", "logq-jobs", None):
            with pytest.raises(logq.InvalidArgument):
                QueueCollector(q, prefix=bad)
        with pytest.raises(logq.InvalidArgument):
            QueueCollector("not a queue")  # type: ignore[arg-type]
        collector = QueueCollector(q, name="jobs")
        with pytest.raises(logq.InvalidArgument):
            collector.add(q, name="jobs")
        with pytest.raises(logq.InvalidArgument):
            QueueCollector(q, name="")


# ------------------------------------------------------------------------- README


def test_readme_metrics_example_runs(tmp_path, monkeypatch, registry):
    monkeypatch.chdir(tmp_path)
    code = next(b for b in blocks() if "start_http_server" in b)
    ports = []
    monkeypatch.setattr(prometheus_client, "start_http_server", lambda port, *a, **kw: ports.append(port))
    monkeypatch.setattr(logq.prometheus, "REGISTRY", registry)
    namespace: dict[str, object] = {}
    exec(compile(code, "README", "exec"), namespace)
    q = namespace["q"]
    assert isinstance(q, Queue)
    try:
        assert ports == [8000]
        assert sample(registry, "logq_segments", queue=q.path) == 1.0
    finally:
        q.close()
