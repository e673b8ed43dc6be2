"""Prometheus metrics for logq queues (install with `pip install 'logq[prometheus]'`).

Theory of operation
-------------------
`QueueCollector` keeps no state of its own: every scrape calls `Queue.stats()`
and `Queue.metrics.snapshot()` on each of its queues and builds the metric
families fresh, so what a scrape shows is what the queue said at that moment.
Every sample carries a `queue` label (the queue's path, or the name given), and
one collector can hold several queues (`add`) so that each metric is one family.
A queue that is closed, or whose writer failed, is left out of the scrape: its
series disappear instead of the whole scrape failing.

`import logq` never imports this module; importing it without prometheus_client
installed raises `PrometheusClientMissing` (an `ImportError` and a `LogqError`).

Metrics, with the default prefix `logq` (labels in braces):

    logq_jobs{queue,state}                 gauge    jobs in each state
    logq_jobs_due{queue}                   gauge    pending jobs whose run time has come
    logq_oldest_pending_age_seconds{queue} gauge    age of the oldest pending job, 0 if none
    logq_segments{queue}                   gauge    segment files
    logq_disk_bytes{queue}                 gauge    bytes in segment files
    logq_live_bytes{queue}                 gauge    bytes of records that unfinished jobs need
    logq_durable_sequence{queue}           gauge    last sequence number known to be fsynced
    logq_last_sequence{queue}              gauge    last sequence number written
    logq_task_runs_total{queue,task,outcome}    counter  runs ended: succeeded, failed, dead
    logq_task_timeouts_total{queue,task}        counter  runs that timed out (also in failed/dead)
    logq_task_released_total{queue,task}        counter  runs released when a worker stopped
    logq_task_run_seconds_total{queue,task}     counter  seconds spent in runs counted in runs_total
    logq_task_run_seconds_max{queue,task}       gauge    longest such run

Task metrics count the workers of this process since the queue was opened, so
the mean run time is rate(run_seconds_total) / rate(runs_total).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

from .errors import ClosedError, InvalidArgument, LogqError, WriterFailedError


class PrometheusClientMissing(LogqError, ImportError):
    """logq.prometheus needs prometheus_client: pip install 'logq[prometheus]'."""


try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
except ImportError as exc:
    raise PrometheusClientMissing(
        "logq.prometheus needs prometheus_client: pip install 'logq[prometheus]'") from exc

from .core.jobs import STATES, Stats
from .queue import Queue
from .runtime.worker import TaskMetrics

_Family = GaugeMetricFamily | CounterMetricFamily

_PREFIX = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_OUTCOMES = ("succeeded", "failed", "dead")


class QueueCollector:
    """Exports `Queue.stats()` and the per-task worker metrics of one or more queues.

    `name` is the value of the `queue` label (default: the queue's path); it must
    differ between the queues of one collector. `prefix` starts every metric name.
    Both are checked here and raise `InvalidArgument`. Thread-safe: scrapes and
    `add` may run at the same time.
    """

    def __init__(self, queue: Queue, *, name: str | None = None, prefix: str = "logq") -> None:
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            raise InvalidArgument(f"prefix must be a Prometheus metric name, not {prefix!r}")
        self.prefix = prefix
        self._queues: dict[str, Queue] = {}
        self._adding = threading.Lock()
        self.add(queue, name=name)

    def add(self, queue: Queue, *, name: str | None = None) -> None:
        """Export `queue` too, labelled `name` (default: its path)."""
        if not isinstance(queue, Queue):
            raise InvalidArgument(f"queue must be a logq.Queue, not {type(queue).__name__}")
        label = queue.path if name is None else name
        if not isinstance(label, str) or not label:
            raise InvalidArgument(f"name must be a non-empty str, not {name!r}")
        with self._adding:
            if label in self._queues:
                raise InvalidArgument(f"this collector already exports a queue named {label!r}")
            self._queues = {**self._queues, label: queue}  # a scrape keeps the dict it started with

    def describe(self) -> list[Metric]:
        """The metric names, without reading any queue (the registry checks them for clashes)."""
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        """Metric families built now; queues that are closed or failed are left out, and
        so is a family without samples (a scrape of only closed queues yields nothing)."""
        families = self._families()
        for label, queue in self._queues.items():
            try:
                stats = queue.stats()
            except (ClosedError, WriterFailedError):
                continue
            _add_stats(families, label, stats)
            _add_tasks(families, label, queue.metrics.snapshot())
        yield from (f for f in families.values() if f.samples)

    def _families(self) -> dict[str, _Family]:
        p, q, qt = self.prefix, ["queue"], ["queue", "task"]
        return {
            "jobs": GaugeMetricFamily(f"{p}_jobs", "Jobs in each state.", labels=q + ["state"]),
            "due": GaugeMetricFamily(f"{p}_jobs_due", "Pending jobs whose run time has come.", labels=q),
            "age": GaugeMetricFamily(f"{p}_oldest_pending_age_seconds",
                                     "Age of the oldest pending job (0 if none is pending).", labels=q),
            "segments": GaugeMetricFamily(f"{p}_segments", "Segment files of the queue.", labels=q),
            "disk": GaugeMetricFamily(f"{p}_disk_bytes", "Bytes in the queue's segment files.", labels=q),
            "live": GaugeMetricFamily(f"{p}_live_bytes", "Bytes of records unfinished jobs need.", labels=q),
            "durable": GaugeMetricFamily(f"{p}_durable_sequence",
                                         "Last sequence number known to be fsynced.", labels=q),
            "last": GaugeMetricFamily(f"{p}_last_sequence", "Last sequence number written.", labels=q),
            "runs": CounterMetricFamily(f"{p}_task_runs", "Task runs that ended, by outcome.",
                                        labels=qt + ["outcome"]),
            "timeouts": CounterMetricFamily(f"{p}_task_timeouts",
                                            "Task runs that timed out (also counted as failed or dead).",
                                            labels=qt),
            "released": CounterMetricFamily(f"{p}_task_released",
                                            "Task runs released unfinished when a worker stopped.", labels=qt),
            "seconds": CounterMetricFamily(f"{p}_task_run_seconds",
                                           "Seconds spent in the runs counted by task_runs.", labels=qt),
            "max": GaugeMetricFamily(f"{p}_task_run_seconds_max", "Longest task run, in seconds.", labels=qt),
        }


def register(queue: Queue, registry: CollectorRegistry | None = None, *, name: str | None = None,
             prefix: str = "logq") -> QueueCollector:
    """Register a `QueueCollector` for `queue` with `registry` (default: prometheus_client's
    global one) and return it; export more queues with its `add`. A second collector with
    the same prefix in one registry is refused by the registry (a `ValueError`)."""
    collector = QueueCollector(queue, name=name, prefix=prefix)
    (REGISTRY if registry is None else registry).register(collector)
    return collector


def _add_stats(f: dict[str, _Family], label: str, stats: Stats) -> None:
    for state in STATES:
        f["jobs"].add_metric([label, state], stats.counts.get(state, 0))
    age = stats.oldest_pending_age
    for key, value in (("due", stats.due), ("age", 0.0 if age is None else max(0.0, age)),
                       ("segments", stats.segments), ("disk", stats.bytes_on_disk),
                       ("live", stats.live_bytes), ("durable", stats.durable_seq), ("last", stats.last_seq)):
        f[key].add_metric([label], value)


def _add_tasks(f: dict[str, _Family], label: str, tasks: dict[str, TaskMetrics]) -> None:
    for task, m in sorted(tasks.items()):
        for outcome in _OUTCOMES:
            f["runs"].add_metric([label, task, outcome], getattr(m, outcome))
        for key, value in (("timeouts", m.timeouts), ("released", m.released),
                           ("seconds", m.seconds_total), ("max", m.seconds_max)):
            f[key].add_metric([label, task], value)


__all__ = ["PrometheusClientMissing", "QueueCollector", "register"]
