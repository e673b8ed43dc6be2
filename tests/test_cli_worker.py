"""`python -m logq worker MODULE:ATTR` (and the `logq` console script), run as real processes
on a temporary project: a module `app.py` that opens a queue and registers tasks.

Jobs are enqueued by the test before the worker starts, or while it runs by the test's own
open queue (a producer beside the worker); the test waits for the worker's own log lines on
stderr (or polls `inspect --json`, which takes no lock) with a deadline, then signals it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import IO

import pytest

from logq import Queue
from logq.log.verify import verify

DEADLINE = 60.0  # seconds: generous, for a loaded machine; never a timing assertion
SCRIPT = os.path.join(os.path.dirname(sys.executable), "logq")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")

APP = textwrap.dedent("""
    import os, sys, time
    import logq

    q = logq.Queue({path!r})

    @q.task(name="add")
    def add(a, b):
        return a + b

    @q.task(name="slow")
    def slow(flag):
        print("slow is running", file=sys.stderr, flush=True)
        while not os.path.exists(flag):  # the test makes the flag once the worker is stopping
            time.sleep(0.01)
        return "finished"

    def make_queue():
        return q
""")


def project(tmp_path, body: str = APP) -> tuple[str, str]:
    """A directory holding app.py (`body`, formatted with the queue's path); returns it and the queue path."""
    path = str(tmp_path / "jobs")
    with open(tmp_path / "app.py", "w", encoding="utf-8") as f:
        f.write(body.format(path=path))
    return str(tmp_path), path


def command(launcher: str, *args: str) -> list[str]:
    if launcher == "script":
        return [installed_script(), "worker", *args]
    return [sys.executable, "-m", "logq", "worker", *args]


def installed_script() -> str:
    """The `logq` console script beside this interpreter; a failure that says to reinstall if
    the environment's install predates pyproject.toml's [project.scripts]."""
    if not os.path.exists(SCRIPT):
        pytest.fail(f"no {SCRIPT}: this environment's install of logq predates its console script; "
                    "reinstall it (.venv/bin/pip install -e '.[test]')")
    return SCRIPT


_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def no_worker_left_running():
    """A test that fails while its worker runs does not leave the process behind."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Worker:
    """A worker command running in `cwd`, its stderr read line by line by a thread."""

    def __init__(self, cwd: str, *args: str, launcher: str = "module") -> None:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the command must find app.py by itself
        self.proc = subprocess.Popen(command(launcher, *args), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _started.append(self.proc)
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stderr is not None
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for(self, pattern: str) -> str:
        """The first line of stderr (read already, or to come) that matches `pattern`; fails if
        the process ends first or none comes before the deadline."""
        end = time.monotonic() + DEADLINE
        for line in self.lines:
            if re.search(pattern, line):
                return line
        while True:
            try:
                line = self._new.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} within {DEADLINE}s; stderr so far: {self.lines}")
            if line is None:
                self._new.put(None)
                pytest.fail(f"the worker ended before a line matching {pattern!r}; stderr: {self.lines}")
            self.lines.append(line)
            if re.search(pattern, line):
                return line

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        return self.wait()

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=DEADLINE)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def rest(self) -> list[str]:
        """Every stderr line, once the process has ended."""
        while (line := self._new.get(timeout=DEADLINE)) is not None:
            self.lines.append(line)
        return self.lines


def call(*args: object) -> bytes:
    """The payload of a task call with these arguments, as `Task.enqueue` writes it."""
    return json.dumps([list(args), {}]).encode()


def enqueue_adds(path: str, n: int) -> list[int]:
    with Queue(path) as q:
        return [q.enqueue("add", call(i, 100)) for i in range(n)]


def results(path: str, ids: list[int]) -> list[tuple[str, object]]:
    """The state and decoded result of each job, once the worker has ended; the directory verifies."""
    with Queue(path) as q:
        infos = [q.get(i) for i in ids]
    check = verify(path)
    assert check.ok, check.problems
    return [(info.state, json.loads(info.result) if info.result else None) for info in infos if info]


# ------------------------------------------------------------------ running

@pytest.mark.parametrize("launcher, target, kind, signum", [
    ("module", "app:q", "thread", signal.SIGTERM),
    ("module", "app:make_queue", "process", signal.SIGINT),
    ("module", "app:q", "async", signal.SIGTERM),
    ("script", "app:q", "thread", signal.SIGINT),
])
def test_worker_runs_the_enqueued_jobs_and_a_signal_stops_it_with_exit_0(tmp_path, launcher, target, kind, signum):
    cwd, path = project(tmp_path)
    ids = enqueue_adds(path, 5)
    w = Worker(cwd, target, "--kind", kind, "--concurrency", "2", "--log-level", "debug", launcher=launcher)
    started = w.wait_for(r"worker \d+ started")
    assert LOG_LINE.match(started) and f"on {path} ({target}): 2 {kind} slot(s), tasks: add, slow" in started
    for i in ids:
        w.wait_for(rf"DEBUG job {i} \(add\) done$")
    assert w.stop(signum) == 0
    assert any(re.search(r"INFO worker \d+ stopped$", line) for line in w.rest())
    assert results(path, ids) == [("done", i + 100) for i in range(5)]


def test_the_default_log_level_is_info_and_inspect_sees_the_jobs_done_while_it_runs(tmp_path):
    cwd, path = project(tmp_path)
    ids = enqueue_adds(path, 3)
    w = Worker(cwd, "app:q")
    w.wait_for(r"INFO worker \d+ started")
    end = time.monotonic() + DEADLINE
    while True:  # inspect takes no lock: it reads the log the worker writes
        r = subprocess.run([sys.executable, "-m", "logq", "inspect", path, "--json"],
                           capture_output=True, text=True, timeout=DEADLINE)
        if r.returncode == 0 and json.loads(r.stdout)["jobs"]["done"] == len(ids):
            break
        assert time.monotonic() < end, r.stdout + r.stderr
    assert w.stop() == 0
    lines = w.rest()
    assert all(LOG_LINE.match(line) for line in lines), lines
    assert not any("DEBUG" in line for line in lines)
    assert results(path, ids) == [("done", i + 100) for i in range(3)]


def test_first_signal_lets_the_running_task_finish_within_grace(tmp_path):
    cwd, path = project(tmp_path)
    flag = str(tmp_path / "flag")
    with Queue(path) as q:
        jid = q.enqueue("slow", call(flag))
    w = Worker(cwd, "app:q", "--grace", "600")
    w.wait_for("slow is running")
    w.proc.send_signal(signal.SIGTERM)
    w.wait_for(r"signal 15: finishing running jobs \(grace 600s\)")
    open(flag, "w").close()
    assert w.wait() == 0
    assert results(path, [jid]) == [("done", "finished")]


def test_a_signal_right_after_the_started_line_still_stops_it_gracefully(tmp_path):
    """The module holds the "started" record in a logging handler of its own until the test
    has sent SIGTERM: the signal comes before `Worker.run` has installed its handlers."""
    flag = str(tmp_path / "flag")
    hold = textwrap.dedent(f"""
        import logging
        class Hold(logging.Handler):
            def emit(self, record):
                while "started" in record.getMessage() and not os.path.exists({flag!r}):
                    time.sleep(0.01)
        logging.getLogger("logq").addHandler(Hold())
    """).replace("{", "{{").replace("}", "}}")
    cwd, path = project(tmp_path, APP + hold)
    ids = enqueue_adds(path, 1)
    w = Worker(cwd, "app:q")
    w.wait_for(r"worker \d+ started")
    w.proc.send_signal(signal.SIGTERM)
    w.wait_for(r"INFO signal 15: stopping$")
    open(flag, "w").close()
    assert w.wait() == 0
    assert results(path, ids) == [("pending", None)]  # stopped before it leased anything


def test_names_limits_the_worker_to_those_tasks(tmp_path):
    cwd, path = project(tmp_path)
    ids = enqueue_adds(path, 2)
    with Queue(path) as q:
        slow = q.enqueue("slow", call("never"))
    w = Worker(cwd, "app:q", "--names", "add", "--log-level", "DEBUG")
    assert w.wait_for(r"worker \d+ started").endswith("tasks: add")
    for i in ids:
        w.wait_for(rf"job {i} \(add\) done")
    assert w.stop() == 0
    assert results(path, [slow]) == [("pending", None)]


def test_the_readme_tutorial_module_runs_under_the_worker_command(tmp_path):
    """The tutorial's app.py, imported by `python -m logq worker app:q` (nothing is enqueued at
    import), runs a job enqueued before it started."""
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8") as f:
        readme = f.read()
    tutorial = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    assert "python -m logq worker app:q --concurrency 8" in readme
    cwd, path = project(tmp_path, tutorial.replace("...\n    return", "return").replace("{", "{{").replace("}", "}}"))
    path = str(tmp_path / "data" / "jobs")
    with Queue(path) as q:
        jid = q.enqueue("app.resize", call("c.png", 300))
    w = Worker(cwd, "app:q", "--log-level", "DEBUG")
    assert "tasks: app.cleanup, app.resize" in w.wait_for(r"worker \d+ started")
    w.wait_for(rf"job {jid} \(app.resize\) done")
    assert w.stop() == 0
    with Queue(path) as q:
        assert q.get(jid).result == b'"c.png@300"'
        assert {j.name for j in q.jobs(state="pending")} == {"app.cleanup"}  # the schedule's next run


def readme_quick_start_terminals() -> tuple[list[str], list[str]]:
    """The quick start's two-terminal commands (the block that runs `logq worker app:q`), as
    argument lists with this interpreter for `.venv/bin/python`."""
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8") as f:
        readme = f.read()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = next(b for b in re.findall(r"```sh\n(.*?)```", quick, re.S) if "logq worker app:q" in b)
    worker, producer = [line.split("  #")[0].strip() for line in block.strip().splitlines()]
    assert worker.startswith(".venv/bin/python ") and producer.startswith(".venv/bin/python -c '")
    return worker.split()[1:], ["-c", producer.split("-c ", 1)[1].strip("'")]


def test_the_readme_quick_start_runs_a_worker_and_a_producer_in_two_processes(tmp_path):
    """Terminal 1 runs the worker command, terminal 2 enqueues and prints the result, as the
    README's quick start shows them, with the tutorial's app.py in the current directory."""
    worker_args, producer_args = readme_quick_start_terminals()
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8") as f:
        app = re.findall(r"```python\n(.*?)```", f.read(), re.S)[0]
    cwd, _ = project(tmp_path, app.replace("{", "{{").replace("}", "}}"))
    assert worker_args[:3] == ["-m", "logq", "worker"]
    w = Worker(cwd, *worker_args[3:])
    w.wait_for(r"worker \d+ started")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    producer = [sys.executable, *producer_args]
    producer[-1] = producer[-1].replace("timeout=10", f"timeout={DEADLINE}")  # a loaded machine
    r = subprocess.run(producer, cwd=cwd, env=env, capture_output=True, text=True, timeout=DEADLINE * 2)
    assert r.returncode == 0 and r.stdout == "a.png@200\n", r.stderr
    assert w.stop() == 0


# -------------------------------------------------------------- cannot start

def run_worker(cwd: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run(command("module", *args), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=DEADLINE)


def assert_refused(r: subprocess.CompletedProcess[str], *phrases: str) -> None:
    """Exit 2 with one line on stderr (no traceback) that says each of `phrases`."""
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("logq worker: ")
    for phrase in phrases:
        assert phrase in r.stderr, r.stderr


def test_a_module_that_is_not_there_is_refused(tmp_path):
    cwd, _ = project(tmp_path)
    assert_refused(run_worker(cwd, "nosuchapp:q"), "no module named 'nosuchapp'", cwd)


def test_a_module_that_raises_on_import_is_refused_with_the_line(tmp_path):
    cwd, _ = project(tmp_path, "import logq\n\nimport no_such_dependency_xyz\n")
    assert_refused(run_worker(cwd, "app:q"),
                   "importing app raised ModuleNotFoundError: No module named 'no_such_dependency_xyz'",
                   "(at app.py:3)")
    cwd, _ = project(tmp_path, "def broken(:\n")
    assert_refused(run_worker(cwd, "app:q"), "importing app raised SyntaxError")


def test_a_module_that_runs_a_worker_when_imported_is_refused(tmp_path):
    """A module written as a script (the tutorial before its `if __name__` guard) would run a
    worker of its own inside the import, and the command's only after a first SIGTERM."""
    body = APP + "\nq.run_worker(concurrency=8)\n"
    line = body.splitlines().index("q.run_worker(concurrency=8)") + 1
    cwd, _ = project(tmp_path, body)
    assert_refused(run_worker(cwd, "app:q"), f"app calls run_worker() when it is imported (at app.py:{line})",
                   'if __name__ == "__main__":')


def test_async_tasks_on_a_thread_worker_are_refused(tmp_path):
    cwd, _ = project(tmp_path, APP + "\n@q.task(name='co')\nasync def co():\n    pass\n")
    assert_refused(run_worker(cwd, "app:q"), "task 'co' is an async def function", "async")


def test_a_missing_attribute_is_refused_and_the_queues_of_the_module_are_named(tmp_path):
    cwd, _ = project(tmp_path)
    assert_refused(run_worker(cwd, "app:queue"), "module app has no attribute 'queue'", "app:q")


@pytest.mark.parametrize("attr, phrase", [
    ("add", "app:add is a Task, not a logq.Queue"),
    ("os", "app:os is a module, not a logq.Queue"),
    ("logq.Queue", "app:logq.Queue is the class Queue, not a logq.Queue"),
    ("none", "app:none() returned None, not a logq.Queue"),
])
def test_an_attribute_that_is_not_a_queue_is_refused(tmp_path, attr, phrase):
    cwd, _ = project(tmp_path, APP + "\ndef none():\n    return None\n")
    assert_refused(run_worker(cwd, f"app:{attr}"), phrase)


def test_a_worker_runs_the_jobs_a_producer_process_enqueues_while_both_have_the_queue_open(tmp_path):
    cwd, path = project(tmp_path)
    with Queue(path) as q:  # this test process is the producer: it keeps the queue open throughout
        w = Worker(cwd, "app:q", "--log-level", "debug")
        w.wait_for(r"worker \d+ started")
        ids = [q.enqueue("add", call(i, 100)) for i in range(5)]
        infos = [q.wait(i, timeout=DEADLINE) for i in ids]  # done by the worker, seen here
        assert [(info.state, json.loads(info.result)) for info in infos] == [("done", i + 100) for i in range(5)]
        assert w.stop() == 0
    assert results(path, ids) == [("done", i + 100) for i in range(5)]


def test_a_queue_that_cannot_be_opened_is_refused_with_the_line(tmp_path):
    cwd, _ = project(tmp_path, "import logq\nq = logq.Queue({path!r}, max_attempts=0)\n")
    assert_refused(run_worker(cwd, "app:q"), "cannot open the queue of app (at app.py:2)", "max_attempts")


def test_a_closed_queue_or_one_without_tasks_is_refused(tmp_path):
    cwd, _ = project(tmp_path, "import logq\nwith logq.Queue({path!r}) as q:\n    pass\n")
    assert_refused(run_worker(cwd, "app:q"), "app:q is a closed queue")
    cwd, _ = project(tmp_path, "import logq\nq = logq.Queue({path!r})\n")
    assert_refused(run_worker(cwd, "app:q"), "app:q has no registered tasks")


def test_names_that_are_not_registered_are_refused(tmp_path):
    cwd, _ = project(tmp_path)
    assert_refused(run_worker(cwd, "app:q", "--names", "add,nosuch"),
                   "--names: no task named 'nosuch' is registered on app:q (registered: add, slow)")


@pytest.mark.parametrize("target", ["app", "app:", ":q", "app.py:q"])
def test_a_target_that_is_not_module_colon_attr_is_refused(tmp_path, target):
    cwd, _ = project(tmp_path)
    assert_refused(run_worker(cwd, target), target.split(":")[0] or target)


# ----------------------------------------------------------- console script

def test_pyproject_declares_the_logq_console_script():
    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), encoding="utf-8") as f:
        scripts = f.read().split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    assert 'logq = "logq.cli.main:script"' in scripts.splitlines()


def test_the_logq_console_script_is_installed_with_the_same_commands():
    script = installed_script()
    [entry] = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "logq"]
    assert entry.value == "logq.cli.main:script"
    r = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=DEADLINE)
    assert r.returncode == 0 and r.stdout.startswith("usage: logq ")
    for name in ("inspect", "stats", "requeue-dead", "compact", "demo", "worker"):
        assert name in r.stdout
    r = subprocess.run([script, "worker", "--help"], capture_output=True, text=True, timeout=DEADLINE)
    assert r.returncode == 0 and "MODULE:ATTR" in r.stdout
