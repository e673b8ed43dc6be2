"""The child process of a process-worker slot: forked, holding nothing of its parent but its pipe.

Theory of operation
-------------------
`ProcessSlotChild` is what a process slot calls to run a task: it starts its
child (`TaskProcess`) on first use, waits for the answer while watching for a
timeout, a hard stop and the child's death, and kills and replaces the child
when one of them happens. A process slot forks one child (fork, so that the task registry is inherited
and functions never cross the pipe) and sends it (task name, payload) over a
duplex pipe; the child answers (ok, value) and waits for the next. Right after
the fork, before anything else, the child:

1. closes every file descriptor it inherited but 0-2 and its end of the pipe:
   the queue's lock files and segments (a child keeping them would keep the
   worker's locks held after the worker died: the other openers would take
   turns with a dead one, or wait for its writer lock), and the pipe ends of the other
   slots' children (which would keep those children from ever reading EOF);
2. resets signals: SIGTERM to the default (the parent's handler would make the
   child ignore it), SIGINT ignored (the parent decides when its children stop);
3. on Linux, asks for SIGKILL when the thread that forked it ends
   (PR_SET_PDEATHSIG), then checks that its parent is still the one that forked
   it (it may have died before the request): a killed worker takes its
   running tasks with it, as a thread worker does;
4. everywhere, exits on end-of-file of its pipe, which it reads once its parent
   is gone: at once while idle, and after a running task (whose answer cannot
   be sent).

The child ends with `os._exit`: no finalizer, atexit hook or buffered output
inherited from the parent runs twice.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any, Mapping

from ..core.jobs import Job
from ..errors import LogqError
from .tasks import Task, TaskTimeout

PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


class Stopped(Exception):
    """Internal: the worker stopped hard while this job ran; it is released."""


class TaskProcess:
    """One forked child that runs task functions sent through its pipe."""

    def __init__(self, tasks: Mapping[str, Task[Any]]) -> None:
        self.tasks = tasks
        self.pid = 0
        self.conn: Any = None
        self.exitcode: int | None = None

    def start(self) -> None:
        parent_end, child_end = multiprocessing.Pipe()
        _flush_std_streams()  # what the parent buffered is written once
        parent_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                _detach(child_end.fileno(), parent_pid)
                code = _serve(child_end, self.tasks)
            finally:
                _flush_std_streams()  # what the tasks printed
                os._exit(code)
        child_end.close()
        self.pid, self.conn, self.exitcode = pid, parent_end, None

    def alive(self) -> bool:
        """True while the child runs (reaps it once it has exited)."""
        if self.exitcode is not None:
            return False
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.exitcode = -1
            return False
        if pid == 0:
            return True
        self.exitcode = os.waitstatus_to_exitcode(status)
        return False

    def kill(self) -> None:
        """Kill the child at once and reap it; close the pipe."""
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
                _, status = os.waitpid(self.pid, 0)
                self.exitcode = os.waitstatus_to_exitcode(status)
            except (ProcessLookupError, ChildProcessError):
                self.exitcode = -1
        self.conn.close()

    def close(self, timeout: float = 5.0) -> None:
        """Ask the child to exit and wait up to `timeout` seconds for it; then kill what is left."""
        try:
            self.conn.send(None)
            self.conn.poll(timeout)  # readable at end-of-file, once the child has exited
        except OSError:
            pass
        self.kill()


class ProcessSlotChild:
    """A process slot's child (`TaskProcess`), started on first use and replaced after it
    is killed (a timeout, a hard stop: `stopped` set) or dies."""

    def __init__(self, tasks: Mapping[str, Task[Any]], stopped: threading.Event) -> None:
        self._process = TaskProcess(tasks)
        self._stopped = stopped
        self._started = False

    def call(self, task: Task[Any], job: Job, worker: object) -> Any:
        """Run `task` on `job` in the child; raise what the task raised, `TaskTimeout`,
        or `Stopped` after a hard stop (the child is killed then)."""
        p = self._process
        if not self._started or not p.alive():
            p.start()
            self._started = True
        p.conn.send((task.name, job.payload))
        deadline = None if task.options.timeout is None else time.monotonic() + task.options.timeout
        while not p.conn.poll(0.1):
            if self._stopped.is_set():
                self.kill()
                raise Stopped()
            if deadline is not None and time.monotonic() > deadline:
                self.kill()
                raise TaskTimeout(f"task {task.name} ran longer than its timeout of "
                                  f"{task.options.timeout}s (its process was killed)")
            if not p.alive():
                self.kill()
                raise LogqError(f"the process running task {task.name} died (exit code {p.exitcode})")
        ok, value = p.conn.recv()
        if not ok:
            raise value
        return value

    def kill(self) -> None:
        if self._started:
            self._process.kill()
            self._started = False

    def close(self) -> None:
        if self._started:
            self._process.close()
            self._started = False


def _detach(keep: int, parent_pid: int) -> None:
    """Steps 1-3 of the theory of operation, in the child; and fresh standard streams."""
    _close_fds_but(keep)
    _fresh_std_streams()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the request (or it is not Linux)
        os._exit(0)


_INHERITED: list[Any] = []  # the parent's stream objects, kept so that nothing flushes them


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


def _fresh_std_streams() -> None:
    """Line-buffered stdout and stderr over fds 1 and 2. The inherited objects may hold
    half a line that another thread of the parent was printing at the fork: written by
    the child, it would garble its output (and repeat the parent's)."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        _INHERITED.append(old)
        try:
            new = open(fd, "w", buffering=1, closefd=False, encoding=getattr(old, "encoding", None),
                       errors=getattr(old, "errors", None))
        except (OSError, ValueError, LookupError):
            continue
        setattr(sys, name, new)


def _close_fds_but(keep: int) -> None:
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        os.closerange(3, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536)
        return
    for fd in fds:
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:  # the listing's own descriptor, closed already
                pass


def _serve(conn: Any, tasks: Mapping[str, Task[Any]]) -> int:
    """Run what the pipe asks until it says stop (None) or ends; the exit code."""
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return 0
        if msg is None:
            return 0
        name, payload = msg
        try:
            task = tasks[name]
            args, kwargs = task.decode(payload)
            answer: tuple[bool, Any] = (True, task.fn(*args, **kwargs))
        except BaseException as exc:
            answer = (False, exc)
        try:
            try:
                conn.send(answer)
            except (OSError, EOFError):
                return 0  # the parent is gone
            except Exception:  # the value or the exception does not pickle
                conn.send((False, LogqError(f"{type(answer[1]).__name__}: {answer[1]}")))
        except (OSError, EOFError):
            return 0
