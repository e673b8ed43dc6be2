"""`python -m logq worker MODULE:ATTR`: run a queue's registered tasks in a process of their own.

Theory of operation
-------------------
`run` sends the `logq` logger to stderr, puts the current directory first on
`sys.path` (as `rq worker` and `celery -A` do), imports MODULE and follows
ATTR (dots allowed) to a `logq.Queue`, or to a function that takes no
arguments and returns one, which is called once (only a function is called:
not a class, nor a task, which is callable too). It then runs
`Queue.worker(...).run()`, which returns after the graceful stop on the first
SIGINT/SIGTERM, closes the queue and returns 0.

Anything that keeps the worker from starting - the module cannot be imported
or calls `run_worker()` while it is imported (a script's worker, unguarded by
`if __name__ == "__main__":`), the attribute is missing or not an open queue,
the queue cannot be opened (a bad option, an unsafe directory, a process that
keeps the writer lock and does not let go: `LockedError`), it has no registered
tasks, or a name in `--names` is
not one of them - raises `LoadError` with a one-line reason, which `main`
prints without a traceback (exit 2).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import signal
import sys
import traceback
from types import ModuleType
from typing import Any, Iterator

from ..core.jobs import Job
from ..errors import LockedError, LogqError
from ..queue import Queue
from ..runtime.worker import Worker

log = logging.getLogger("logq")
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class LoadError(LogqError):
    """The worker cannot start: the module, the attribute or the queue cannot be loaded."""


def run(target: str, *, concurrency: int, kind: str, names: list[str] | None, grace: float,
        log_level: str) -> int:
    """Load the queue named by `target` ("MODULE:ATTR") and run its tasks until stopped.

    Returns 0 after a graceful stop (SIGINT/SIGTERM, as `Queue.run_worker`);
    raises `LoadError` (or the queue's own `LogqError`) if it cannot start, and
    closes the queue on the way out whatever happens once it is loaded.
    """
    configure_logging(log_level)
    queue = load_queue(target)
    try:
        worker = queue.worker(concurrency=concurrency, kind=kind, names=names, grace=grace,
                              on_success=_log_done)
        tasks = check_names(target, sorted(worker.registry.tasks), names)
        with stop_on_signals(worker):  # `run` installs its own; a signal before that stops it too
            log.info("worker %d started on %s (%s): %d %s slot(s), tasks: %s",
                     os.getpid(), queue.path, target, concurrency, kind, ", ".join(tasks))
            worker.run()
        log.info("worker %d stopped", os.getpid())
    finally:
        queue.close()
    return 0


def configure_logging(level: str) -> logging.Handler:
    """Send the `logq` logger's records at `level` and above to stderr, once (not also to
    the root logger's handlers, so an application's own logging set-up does not print them twice)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    return handler


@contextlib.contextmanager
def stop_on_signals(worker: Worker) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM stop `worker` as its own handlers do (the first
    gracefully, a second at once), so that a signal that comes after the "started" line
    but before `Worker.run` has installed its handlers still ends in a graceful stop."""
    def handler(signum: int, frame: object) -> None:
        log.info("signal %d: stopping%s", signum, " now" if worker.stopping.is_set() else "")
        worker.stop(now=worker.stopping.is_set())

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _log_done(job: Job, value: Any) -> None:
    log.debug("job %d (%s) done", job.id, job.name)


# ------------------------------------------------------------------- loading

def load_queue(target: str) -> Queue:
    """The open queue that `target` ("MODULE:ATTR") names, imported from the current directory."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise LoadError(f"{target!r} is not MODULE:ATTR: name the module and the queue in it, e.g. app:q")
    if module_name.endswith(".py") or os.sep in module_name:
        raise LoadError(f"{module_name!r} is a file name: name the module (app:q for app.py), "
                        "and run the command from the directory that holds it")
    module = import_module(module_name)
    obj = follow(module, attr, target)
    if inspect.isroutine(obj):
        queue = _call_factory(obj, target)
        if not isinstance(queue, Queue):
            raise LoadError(f"{target}() returned {_a(queue)}, not a logq.Queue")
    elif isinstance(obj, Queue):
        queue = obj
    else:
        raise LoadError(f"{target} is {_a(obj)}, not a logq.Queue (or a function that returns one)")
    if queue.closed:
        raise LoadError(f"{target} is a closed queue: the module must leave it open "
                        "(not close it, nor open it in a `with` block)")
    return queue


def import_module(name: str) -> ModuleType:
    """Import `name` with the current directory first on the path; any failure is a `LoadError`."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        with _no_worker_at_import(name):
            return importlib.import_module(name)
    except _RunsAWorker as exc:
        raise LoadError(f"{name} calls run_worker() when it is imported{_where(exc)}: put "
                        "that call under `if __name__ == \"__main__\":` so that the command can import "
                        "the module and run the worker itself") from None
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise LoadError(f"no module named {exc.name!r} in {cwd} or on the Python path: "
                            "run the command from the directory that holds it") from None
        raise LoadError(f"importing {name} raised {_describe(exc)}{_where(exc)}") from None
    except LockedError as exc:
        raise _locked(exc) from None
    except LogqError as exc:
        raise LoadError(f"cannot open the queue of {name}{_where(exc)}: {_one_line(exc)}") from None
    except SyntaxError as exc:
        raise LoadError(f"importing {name} raised {_describe(exc)}") from None
    except Exception as exc:
        raise LoadError(f"importing {name} raised {_describe(exc)}{_where(exc)}") from None


class _RunsAWorker(Exception):
    """Internal: the module called `Queue.run_worker` while it was being imported."""


@contextlib.contextmanager
def _no_worker_at_import(name: str) -> Iterator[None]:
    """While `name` is imported, `Queue.run_worker` raises `_RunsAWorker` instead of running
    a worker (with the module's options, before the command's): a module written to be run
    as a script must keep that call under `if __name__ == "__main__":`."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise _RunsAWorker()

    original = Queue.run_worker
    Queue.run_worker = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        Queue.run_worker = original  # type: ignore[method-assign]


def follow(module: ModuleType, attr: str, target: str) -> object:
    """`module.a.b` for attr "a.b"; a missing name is a `LoadError` that lists the queues it has."""
    obj: object = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            where = f"module {module.__name__}" if i == 0 else ".".join([module.__name__, *attr.split(".")[:i]])
            raise LoadError(f"{where} has no attribute {part!r}{_queues_hint(module)}")
        obj = getattr(obj, part)
    return obj


def _call_factory(factory: Any, target: str) -> object:
    try:
        return factory()
    except LockedError as exc:
        raise _locked(exc) from None
    except LogqError as exc:
        raise LoadError(f"cannot open the queue: {target}() raised {_one_line(exc)}") from None
    except Exception as exc:
        raise LoadError(f"calling {target}() raised {_describe(exc)}{_where(exc)}") from None


def check_names(target: str, registered: list[str], names: list[str] | None) -> list[str]:
    """The task names the worker runs; a `LoadError` if there are none, or if `names` has one
    that is not registered (its jobs would be leased and given back again and again)."""
    if not registered:
        raise LoadError(f"{target} has no registered tasks: declare them in the module "
                        "(@q.task, q.register or q.every) before running a worker")
    if names is None:
        return registered
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise LoadError(f"--names: no task named {', '.join(map(repr, unknown))} is registered on {target} "
                        f"(registered: {', '.join(registered)})")
    return names


def _locked(exc: LockedError) -> LoadError:
    return LoadError(f"cannot open the queue: {_one_line(exc)}")


def _queues_hint(module: ModuleType) -> str:
    found = sorted(name for name, value in vars(module).items() if isinstance(value, Queue))
    if not found:
        return ""
    return f" (its logq.Queue: {', '.join(f'{module.__name__}:{n}' for n in found)})"


def _a(obj: object) -> str:
    if obj is None:
        return "None"
    if isinstance(obj, type):
        return f"the class {obj.__qualname__}"
    return f"a {type(obj).__name__}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _where(exc: BaseException) -> str:
    """" (at FILE:LINE)" for where `exc` was raised (see `_location`), or ""."""
    location = _location(exc)
    return f" (at {location})" if location else ""


def _location(exc: BaseException) -> str:
    """FILE:LINE of the innermost frame of `exc`'s traceback that is not importlib's or logq's:
    the line of the user's code that raised (or called what raised); "" if there is none."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(("<frozen", package + os.sep))]
    if not frames:
        return ""
    path = frames[-1].filename
    if path.startswith(os.getcwd() + os.sep):
        path = os.path.relpath(path)
    return f"{path}:{frames[-1].lineno}"
