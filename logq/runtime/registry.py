"""The task registry: tasks by name, periodic schedules, and the workers' metrics.

Theory of operation
-------------------
A `Queue` owns one `Registry` over its `JobSource` and hands it `task`,
`register` and `every`. A task's default name is its module and qualified
name, with `__main__` replaced by the name the module has when imported
(`default_name`), so that a script and a producer importing it agree.

A periodic task (`every`) has a `Periodic` schedule: its next run is a pending
job holding the schedule's unique key, with the run's slot on the grid
first + k * seconds in its payload. `schedule_periodic` (at worker start) queues
the first run if none is queued; the job source queues each next run in the
same write that finishes the run holding the key. A run that does not hold the
key (a call of `.enqueue()` on the task, or any job enqueued under its name) is
a one-off: it runs once and leaves the schedule as it was.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from ..core import policy
from ..core.jobs import MAX_NAME, Backoff
from ..errors import InvalidArgument
from .source import JobSource
from .tasks import Serializer, Task, TaskOptions

PERIODIC_KEY_PREFIX = "logq.every:"


@dataclass
class TaskMetrics:
    """Counts and latency of one task's runs in this process."""

    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    timeouts: int = 0
    released: int = 0
    seconds_total: float = 0.0
    seconds_max: float = 0.0


@dataclass
class Metrics:
    """Per-task metrics shared by every worker of a queue. Thread-safe."""

    tasks: dict[str, TaskMetrics] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, name: str, outcome: str, seconds: float) -> None:
        with self._lock:
            m = self.tasks.get(name) or self.tasks.setdefault(name, TaskMetrics())
            setattr(m, outcome, getattr(m, outcome) + 1)
            m.seconds_total += seconds
            m.seconds_max = max(m.seconds_max, seconds)

    def snapshot(self) -> dict[str, TaskMetrics]:
        with self._lock:
            return {n: TaskMetrics(**vars(m)) for n, m in self.tasks.items()}


@dataclass(frozen=True)
class Periodic:
    """The schedule of a periodic task: a run every `seconds`, the first `seconds` after
    the first registration (at once with `run_now`)."""

    name: str
    seconds: float
    run_now: bool

    @property
    def key(self) -> str:
        return PERIODIC_KEY_PREFIX + self.name

    def first_run(self, now: float) -> float:
        return now if self.run_now else now + self.seconds

    def next_run(self, payload: bytes, now: float) -> tuple[float, bytes]:
        """The first slot on this run's grid after `now`, and its payload. A run whose
        payload names no slot (enqueued by hand with the key) starts a grid at `now`."""
        slot = slot_of(payload)
        slot = policy.next_slot(now if slot is None else slot, self.seconds, now)
        return slot, slot_payload(slot)


def slot_payload(slot: float) -> bytes:
    return json.dumps({"slot": slot}).encode()


def slot_of(payload: bytes) -> float | None:
    """The slot a scheduled run's payload names, None if it names none."""
    try:
        slot = json.loads(payload)["slot"]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    ok = isinstance(slot, (int, float)) and not isinstance(slot, bool) and math.isfinite(slot)
    return float(slot) if ok else None


class Registry:
    """The tasks of one queue, by name; their periodic schedules; their metrics."""

    def __init__(self, source: JobSource) -> None:
        self.source = source
        self.tasks: dict[str, Task[Any]] = {}
        self.schedules: dict[str, Periodic] = {}
        self.metrics = Metrics()
        self._names: frozenset[str] = frozenset()

    def names(self) -> frozenset[str]:
        """The names of the registered tasks (the same object until one is added)."""
        return self._names

    def task(self, name: str | None = None, *, max_attempts: int | None = None,
             timeout: float | None = None, backoff: Backoff | None = None, priority: int = 0,
             serializer: Serializer | None = None) -> Callable[[Callable[..., Any]], Task[Any]]:
        """Decorator: register a function as a task; see `Queue.task`."""
        options = TaskOptions(max_attempts, _optional_seconds("timeout", timeout), backoff, priority)

        def register(fn: Callable[..., Any]) -> Task[Any]:
            return self.add(name or default_name(fn), fn, options, serializer, raw=False)
        return register

    def register(self, name: str, fn: Callable[[bytes], bytes | None], *, max_attempts: int | None = None,
                 timeout: float | None = None, backoff: Backoff | None = None) -> Task[Any]:
        """Register a raw task; see `Queue.register`."""
        options = TaskOptions(max_attempts, _optional_seconds("timeout", timeout), backoff)
        return self.add(name, fn, options, None, raw=True)

    def every(self, seconds: float, fn: Callable[[], Any], *, name: str | None = None,
              run_now: bool = False, timeout: float | None = None) -> Task[Any]:
        """Register `fn` to run every `seconds`; see `Queue.every`."""
        seconds = _seconds("seconds", seconds, positive=True)
        options = TaskOptions(None, _optional_seconds("timeout", timeout), None, 0, every=seconds)
        task = self.add(name or default_name(fn), fn, options, None, raw=False)
        self.schedules[task.name] = Periodic(task.name, seconds, run_now)
        return task

    def add(self, name: str, fn: Callable[..., Any], options: TaskOptions,
            serializer: Serializer | None, raw: bool) -> Task[Any]:
        _check_name(name)
        if not callable(fn):
            raise InvalidArgument(f"a task must be callable, not {type(fn).__name__}")
        if options.max_attempts is not None:
            m = options.max_attempts
            if not isinstance(m, int) or isinstance(m, bool) or not 1 <= m <= 2**32 - 1:
                raise InvalidArgument(f"max_attempts must be an int in [1, {2**32 - 1}], not {m!r:.60}")
        if name in self.tasks:
            raise InvalidArgument(f"a task named {name!r} is already registered: pass name= to tell them apart")
        task: Task[Any] = Task(self.source, name, fn, options, serializer, raw=raw)
        self.tasks[name] = task
        self._names = frozenset(self.tasks)
        return task

    def schedule_periodic(self) -> None:
        """Make sure every periodic task has its next run queued (idempotent)."""
        now = self.source.now()
        for s in self.schedules.values():
            slot = s.first_run(now)
            self.source.enqueue(s.name, slot_payload(slot), delay=slot - now, key=s.key)


def default_name(fn: Callable[..., Any]) -> str:
    """`module.qualname`; for a function of the script being run (module `__main__`), the
    name its module has when imported: the name given to `python -m`, else the script's
    file name without `.py`. So `python tasks.py` and a producer's `import tasks` agree on
    `tasks.resize`. (Code run with `python -c` or typed in a REPL keeps `__main__`.)"""
    module = getattr(fn, "__module__", "") or ""
    if module == "__main__":
        module = _main_module_name() or module
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}".lstrip(".")


def _main_module_name() -> str | None:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if isinstance(name, str) and name and name != "__main__":
        return name  # `python -m pkg.tasks`: pkg.tasks, as imported
    path = getattr(main, "__file__", None)
    if not isinstance(path, str) or not path.endswith(".py"):
        return None
    stem = os.path.basename(path)[:-3]
    return stem if stem.isidentifier() else None


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"task name must be a non-empty str, not {name!r:.60}")
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        raise InvalidArgument("task name must be valid Unicode text (no lone surrogates)") from None
    if size > MAX_NAME:
        raise InvalidArgument(f"task name is longer than {MAX_NAME} bytes")


def _seconds(what: str, value: object, positive: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):  # type: ignore[operator]
        kind = "positive" if positive else "non-negative"
        raise InvalidArgument(f"{what} must be a {kind} finite number of seconds, not {value!r:.60}")
    return float(value)  # type: ignore[arg-type]


def _optional_seconds(what: str, value: float | None) -> float | None:
    return None if value is None else _seconds(what, value, positive=True)
