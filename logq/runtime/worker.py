"""The worker runtime: lease jobs, run their tasks, record the outcome.

Theory of operation
-------------------
`Worker.run` starts `concurrency` slots of one kind and blocks until stopped:

* thread (default): each slot is a thread that leases and runs tasks inline.
  A task with a timeout runs in a helper thread; if it overruns, the attempt
  fails with a timeout, the slot moves on, and the helper thread - which
  Python cannot kill - runs to its end with its result discarded.
* process: each slot thread feeds one child process (forked, so the task
  registry is inherited) through a pipe; the queue stays in the parent, and
  the child keeps none of its files or locks and dies with it (`child`). On a
  timeout the child is killed and replaced.
* async: one event loop runs `concurrency` coroutines; `async def` tasks are
  awaited (plain functions run in a thread pool); a timeout cancels the
  coroutine. Queue calls run in a thread pool, off the loop.

While a thread or process slot's tasks are fast (under FAST_TASK_SECONDS),
it leases ahead: up to PREFETCH_MAX jobs in one `lease_many` batch, runs
them one after the other, and records their outcomes (acks, failures) in
one batch once it has run them all, so an ack waits for at most
PREFETCH_MAX fast runs. A slow task puts the slot back to one job at a time
and gives back what it leased ahead, so jobs wait behind a slow task for at
most one run. Jobs leased ahead count as running: the heartbeat extends
them, a stop releases them (attempt not counted), and a crash returns them
with their attempt counted, like any lease; so does a crash before a
batch of outcomes is recorded (the jobs run again: at-least-once).

A heartbeat thread extends the lease of every running job each third of the
lease time, so long tasks keep their lease. Stopping (first SIGINT/SIGTERM,
or `Worker.stop()`): slots stop leasing; running tasks get `grace` seconds to
finish; what is still running then is released (attempt not counted). A
second signal releases at once. Outcomes go through the queue, so every rule
of spec/semantics.md (retries, dead jobs, lost leases) applies unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, NamedTuple

from ..errors import InvalidArgument, LeaseLostError, LogqError, UnavailableError
from ..core.jobs import Job
from .child import ProcessSlotChild, Stopped
from .registry import Metrics, Registry, TaskMetrics
from .tasks import Task, TaskTimeout

log = logging.getLogger("logq")
KINDS = ("thread", "process", "async")
PREFETCH_MAX = 16  # jobs a slot leases at once while its tasks are fast
FAST_TASK_SECONDS = 0.001  # a task at least this quick lets its slot lease ahead
UNKNOWN_CHECK_SECONDS = 60.0  # how often an idle worker looks for due jobs of tasks it does not know
Hook = Callable[[Job, Any], None]


class _Outcome(NamedTuple):
    """A finished run, waiting to be recorded in the queue."""

    task: Task[Any]
    job: Job
    value: Any  # the task's return value (None if it raised)
    error: BaseException | None
    seconds: float
    result: bytes  # the encoded value, as stored by the ack

    @classmethod
    def ok(cls, task: Task[Any], job: Job, value: Any, started: float) -> "_Outcome":
        """A run that returned `value` (raises if the task cannot encode it)."""
        return cls(task, job, value, None, time.monotonic() - started, task.encode_result(value))

    @classmethod
    def failed(cls, task: Task[Any], job: Job, error: BaseException, started: float) -> "_Outcome":
        return cls(task, job, None, error, time.monotonic() - started, b"")


__all__ = ["KINDS", "Metrics", "TaskMetrics", "TaskTimeout", "Worker"]


UNAVAILABLE_MAX_WAIT = 5.0  # the longest back-off between leases while the queue's server is away


class Worker:
    """Runs the tasks of `registry`, leased from its job source. Create with
    `Queue.worker` or `Queue.run_worker`."""

    def __init__(self, registry: Registry, *, concurrency: int = 4, kind: str = "thread",
                 names: list[str] | None = None, grace: float = 30.0, poll: float = 0.5,
                 on_success: Hook | None = None, on_failure: Hook | None = None,
                 on_dead: Hook | None = None, owner: object = None) -> None:
        if kind not in KINDS:
            raise InvalidArgument(f"kind must be one of {KINDS}, not {kind!r}")
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise InvalidArgument(f"concurrency must be a positive int, not {concurrency!r}")
        if not isinstance(grace, (int, float)) or grace < 0:
            raise InvalidArgument(f"grace must be a non-negative number of seconds, not {grace!r}")
        self.registry, self.source, self.metrics = registry, registry.source, registry.metrics
        self._owner = owner  # kept alive while the worker is (the queue that made it)
        self.kind, self.concurrency, self.grace, self.poll = kind, concurrency, grace, poll
        self.names = frozenset(names) if names is not None else None
        self.hooks = {"succeeded": on_success, "failed": on_failure, "dead": on_dead}
        self.stopping = threading.Event()  # no new leases
        self._away = 0.0  # seconds the last lease backed off for (an unreachable server)
        self.stopped = threading.Event()  # release what runs, now
        self._running: dict[int, Job] = {}
        self._lock = threading.Lock()
        self._next_unknown_check = 0.0  # time.monotonic() of the next look at unknown task names
        self._check_async_tasks()

    # ------------------------------------------------------------------ control

    def stop(self, *, now: bool = False) -> None:
        """Ask the worker to stop: gracefully, or `now` (release running jobs at once)."""
        self.stopping.set()
        if now:
            self.stopped.set()

    def run(self) -> None:
        """Work until stopped. In the main thread, SIGINT and SIGTERM stop it (twice: at once)."""
        self._check_async_tasks()  # (tasks registered after the worker was made, too)
        self.registry.schedule_periodic()
        restore = self._install_signals()
        heartbeat = threading.Thread(target=self._heartbeat, name="logq-heartbeat", daemon=True)
        heartbeat.start()
        try:
            if self.kind == "async":
                asyncio.run(self._run_async())
            else:
                self._run_threads()
        finally:
            self.stopping.set()
            self.stopped.set()
            restore()
            heartbeat.join()

    def _check_async_tasks(self) -> None:
        """Refuse `async def` tasks unless this is an async worker: a thread or a child
        process would call them, get a coroutine, and never run it."""
        if self.kind == "async":
            return
        for name, task in self.registry.tasks.items():
            if (self.names is None or name in self.names) and inspect.iscoroutinefunction(task.fn):
                raise InvalidArgument(f"task {name!r} is an async def function, which a {self.kind} worker "
                                      f"cannot run: use kind=\"async\" (q.run_worker(kind=\"async\")), "
                                      "or make it a plain function")

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: object) -> None:
            if self.stopping.is_set():
                log.warning("second signal: releasing running jobs now")
                self.stopped.set()
            else:
                log.info("signal %d: finishing running jobs (grace %.0fs); again to stop now", signum, self.grace)
                self.stopping.set()

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)
        return restore

    def _run_threads(self) -> None:
        slot = self._process_slot if self.kind == "process" else self._thread_slot
        threads = [threading.Thread(target=slot, name=f"logq-worker-{i}", daemon=True)
                   for i in range(self.concurrency)]
        for t in threads:
            t.start()
        while not self.stopping.wait(1.0):
            if not any(t.is_alive() for t in threads):  # (a slot contains its errors: a bug)
                log.error("every worker slot has ended; the worker stops")
                self.stopping.set()
        deadline = time.monotonic() + self.grace
        for t in threads:
            while t.is_alive() and not self.stopped.is_set() and time.monotonic() < deadline:
                t.join(min(0.1, max(0.0, deadline - time.monotonic())))
        self.stopped.set()
        self._release_running("worker stopped")
        for t in threads:
            t.join(1.0)

    # -------------------------------------------------------------------- slots

    def _lease(self, n: int) -> list[Job]:
        names = self.names if self.names is not None else self.registry.names()
        if not names:
            self._warn_unknown_tasks()
            self.stopping.wait(self.poll)
            return []
        jobs = self.source.lease_many(n, names, wait=self.poll, stop=self.stopping)
        if not jobs:
            self._warn_unknown_tasks()
        with self._lock:
            for job in jobs:
                self._running[job.id] = job
        return jobs

    def _warn_unknown_tasks(self) -> None:
        """While idle, at most every UNKNOWN_CHECK_SECONDS: log a warning for due jobs whose
        task name no task of this process has (`Stats.due_by_name` counts them), such as a
        task registered as `__main__.f` here and enqueued as `tasks.f` elsewhere."""
        now = time.monotonic()
        if now < self._next_unknown_check:
            return
        self._next_unknown_check = now + UNKNOWN_CHECK_SECONDS
        try:
            due = self.source.stats().due_by_name
        except Exception:  # closed meanwhile: the next lease finds out
            return
        known = self.registry.names()
        unknown = {name: n for name, n in due.items() if name not in known}
        if unknown:
            listed = ", ".join(f"{name!r} ({n})" for name, n in sorted(unknown.items())[:10])
            log.warning("%d due jobs wait for tasks that this worker does not know: %s; its tasks are %s. "
                        "Register them here, or make the names agree (q.task(name=...))",
                        sum(unknown.values()), listed, sorted(known)[:10])

    def _thread_slot(self) -> None:
        self._slot_loop(self._call_in_thread)

    def _process_slot(self) -> None:
        child = ProcessSlotChild(self.registry.tasks, self.stopped)
        try:
            self._slot_loop(child.call)
        finally:
            child.close()

    def _slot_loop(self, call: Callable[[Task[Any], Job, "Worker"], Any]) -> None:
        """Lease and run jobs until stopped. An unexpected error is logged and the slot
        goes on: a slot never dies silently while `run` still waits for it."""
        ahead: collections.deque[Job] = collections.deque()  # leased, not started yet
        done: list[_Outcome] = []  # finished, not recorded yet (fast tasks only)
        prefetch = 1
        try:
            while not self.stopping.is_set():
                job: Job | None = None
                try:
                    if not ahead:
                        self._record(done)
                        ahead.extend(self._lease_or_stop(prefetch))
                        continue
                    job = ahead.popleft()
                    outcome = self._run(job, call)
                    if outcome is not None:
                        done.append(outcome)
                    if outcome is not None and outcome.seconds < FAST_TASK_SECONDS:
                        prefetch = min(prefetch * 2, PREFETCH_MAX)
                    else:  # slow tasks: one at a time, and the others' jobs go back to the queue
                        prefetch = 1
                        self._record(done)
                        self._give_back(ahead, "its slot met a slow task")
                        ahead.clear()
                except Exception:  # a bug: contain it, give back what has no outcome, go on
                    log.exception("a worker slot met an unexpected error; it goes on")
                    prefetch = 1
                    self._record(done)
                    if job is not None:
                        ahead.appendleft(job)  # (released only if it is still running)
                    self._give_back(ahead, "its slot met an unexpected error")
                    ahead.clear()
        finally:
            self._record(done)
            self._give_back(ahead, "worker stopped before it started")

    def _lease_or_stop(self, n: int = 1) -> list[Job]:
        try:
            jobs = self._lease(n)
            self._away = 0.0
            return jobs
        except UnavailableError as exc:  # the queue's server (Redis) is away: back off, try again
            self._away = min(UNAVAILABLE_MAX_WAIT, max(0.05, 2 * self._away))
            log.warning("leasing failed: %s; trying again in %.2fs", exc, self._away)
            self.stopping.wait(self._away)
        except LogqError as exc:  # the queue is closed or its log failed: nothing more to do
            log.error("worker stops: %s", exc)
            self.stopping.set()
        except Exception:
            log.exception("leasing failed; trying again in %.1fs", self.poll)
            self.stopping.wait(self.poll)
        return []

    def _run(self, job: Job, call: Callable[[Task[Any], Job, "Worker"], Any]) -> _Outcome | None:
        """Run a leased job's task (in `_running` since `_lease`); None if a hard stop
        released it meanwhile."""
        task = self.registry.tasks.get(job.name)
        if task is None:
            self._unknown(job)
            return None
        started = time.monotonic()
        try:
            return _Outcome.ok(task, job, call(task, job, self), started)
        except Stopped:
            return None  # released by _release_running
        except BaseException as exc:  # the task's own error (or its unencodable result) is data
            return _Outcome.failed(task, job, exc, started)
        finally:  # finished: a stop no longer releases it, its outcome is about to be recorded
            with self._lock:
                self._running.pop(job.id, None)

    def _unknown(self, job: Job) -> None:
        """A job leased under `names=` whose task this process did not register: released."""
        log.warning("job %d: no task named %r is registered here; releasing it", job.id, job.name)
        self._give_back([job], "no such task here")

    @staticmethod
    def _call_in_thread(task: Task[Any], job: Job, worker: "Worker") -> Any:
        args, kwargs = task.decode(job.payload)
        timeout = task.options.timeout
        if timeout is None:
            return task.fn(*args, **kwargs)
        box: list[Any] = []
        done = threading.Event()

        def target() -> None:
            try:
                box.append((True, task.fn(*args, **kwargs)))
            except BaseException as exc:
                box.append((False, exc))
            done.set()

        threading.Thread(target=target, name=f"logq-task-{job.id}", daemon=True).start()
        if not done.wait(timeout):
            raise TaskTimeout(f"task {task.name} ran longer than its timeout of {timeout}s "
                              "(its thread was left to finish; the result is discarded)")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    # ----------------------------------------------------------------- outcomes

    def _record(self, done: list[_Outcome]) -> None:
        """Ack or fail finished jobs in one batch, then count them and call the hooks.
        Empties `done`; an error is logged, never raised (the slot goes on)."""
        if not done:
            return
        outcomes, done[:] = list(done), []
        try:
            errors: list[LogqError | None] = self.source.complete_many(
                [(o.job, o.result, o.error) for o in outcomes], self.registry.schedules)
        except LogqError as exc:
            errors = [exc] * len(outcomes)
        except Exception:
            log.exception("recording a batch of %d outcomes failed; recording them one by one", len(outcomes))
            errors = [self._record_alone(o) for o in outcomes]
        for o, err in zip(outcomes, errors):
            try:
                self._report(o, err)
            except Exception:
                log.exception("job %d: reporting its outcome failed", o.job.id)

    def _record_alone(self, o: _Outcome) -> LogqError | None:
        """Record one outcome; if even that fails, release its job (attempt not counted) so
        that it runs again rather than wait for its lease to expire."""
        try:
            return self.source.complete_many([(o.job, o.result, o.error)], self.registry.schedules)[0]
        except LogqError as exc:
            return exc
        except Exception as exc:
            log.exception("job %d: recording its outcome failed; releasing it", o.job.id)
            self._release([o.job], "its outcome could not be recorded")
            return LogqError(f"its outcome could not be recorded ({type(exc).__name__}: {exc}); released")

    def _report(self, o: _Outcome, err: LogqError | None) -> None:
        job, task = o.job, o.task
        if o.error is None:
            if isinstance(err, LeaseLostError):
                log.warning("job %d finished but its lease was lost; result discarded: %s", job.id, err)
            elif err is not None:
                log.error("job %d finished but could not be acked: %s", job.id, err)
            else:
                self.metrics.record(task.name, "succeeded", o.seconds)
                self._hook("succeeded", job, o.value)
            return
        if err is not None:
            log.warning("job %d failed but the failure could not be recorded: %s", job.id, err)
            return
        dead = job.attempts >= job.max_attempts
        outcome = "dead" if dead else "failed"
        if isinstance(o.error, TaskTimeout):
            self.metrics.record(task.name, "timeouts", 0.0)
        self.metrics.record(task.name, outcome, o.seconds)
        log.log(logging.ERROR if dead else logging.WARNING, "job %d (%s) attempt %d failed%s: %r",
                job.id, task.name, job.attempts, ", now dead" if dead else "", o.error)
        self._hook(outcome, job, o.error)

    def _hook(self, outcome: str, job: Job, value: Any) -> None:
        hook = self.hooks.get(outcome)
        if hook is not None:
            try:
                hook(job, value)
            except Exception:
                log.exception("the on_%s hook raised", "success" if outcome == "succeeded" else outcome[:-2] if outcome == "failed" else outcome)

    def _release_running(self, reason: str) -> None:
        with self._lock:
            running = list(self._running.values())
            self._running.clear()
        self._release(running, reason)

    def _give_back(self, jobs: Iterable[Job], reason: str) -> None:
        """Release jobs a slot leased ahead, unless a hard stop released them already."""
        with self._lock:
            mine = [job for job in jobs if self._running.pop(job.id, None) is not None]
        self._release(mine, reason)

    def _release(self, jobs: list[Job], reason: str) -> None:
        for job in jobs:
            try:
                self.source.release(job)
                self.metrics.record(job.name, "released", 0.0)
                log.info("released job %d (%s): %s", job.id, job.name, reason)
            except LogqError as exc:
                log.warning("could not release job %d: %s", job.id, exc)
            except Exception:  # its lease expires in time and it runs again
                log.exception("could not release job %d", job.id)

    def _heartbeat(self) -> None:
        interval = max(0.05, self.source.lease_time / 3)
        while not self.stopped.wait(interval):
            with self._lock:
                running = list(self._running.values())
            for job in running:
                try:
                    self.source.extend(job)
                except LogqError:
                    pass  # finished meanwhile, or lost: the slot finds out when it acks
                except Exception:
                    log.exception("could not extend the lease of job %d", job.id)

    # -------------------------------------------------------------------- async

    async def _run_async(self) -> None:
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(max_workers=self.concurrency + 2, thread_name_prefix="logq-async")
        slots = [asyncio.ensure_future(self._async_slot(loop, pool)) for _ in range(self.concurrency)]
        try:
            await loop.run_in_executor(pool, self.stopping.wait)
            done, pending = await asyncio.wait(slots, timeout=self.grace)
            for s in pending:
                s.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await loop.run_in_executor(pool, self._release_running, "worker stopped")
        finally:
            self.stopping.set()
            pool.shutdown(wait=True)

    async def _async_slot(self, loop: asyncio.AbstractEventLoop, pool: ThreadPoolExecutor) -> None:
        while not self.stopping.is_set():
            jobs = await loop.run_in_executor(pool, self._lease_or_stop)
            if not jobs:
                continue
            job = jobs[0]  # in `_running` since `_lease`
            task = self.registry.tasks.get(job.name)
            if task is None:
                await loop.run_in_executor(pool, self._unknown, job)
                continue
            started = time.monotonic()
            try:
                outcome = _Outcome.ok(task, job, await self._await_task(loop, pool, task, job), started)
            except asyncio.CancelledError:
                raise  # hard stop: _release_running gives the job back
            except BaseException as exc:
                outcome = _Outcome.failed(task, job, exc, started)
            with self._lock:
                self._running.pop(job.id, None)
            await loop.run_in_executor(pool, self._record, [outcome])

    @staticmethod
    async def _await_task(loop: asyncio.AbstractEventLoop, pool: ThreadPoolExecutor,
                          task: Task[Any], job: Job) -> Any:
        args, kwargs = task.decode(job.payload)
        if inspect.iscoroutinefunction(task.fn):
            call = task.fn(*args, **kwargs)
        else:
            call = loop.run_in_executor(pool, functools.partial(task.fn, *args, **kwargs))
        timeout = task.options.timeout
        try:
            return await asyncio.wait_for(call, timeout)
        except asyncio.TimeoutError:
            raise TaskTimeout(f"task {task.name} ran longer than its timeout of {timeout}s "
                              "(the coroutine was cancelled)") from None
