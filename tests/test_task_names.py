"""Task names: stable however the module is loaded, and due jobs of unknown names made visible."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading

import pytest

from logq import Queue
from logq.testing import FakeClock

TASKS = textwrap.dedent("""
    import logq
    q = logq.Queue(":memory:")

    @q.task()
    def resize(path):
        return path

    class Images:
        @staticmethod
        def crop(path):
            return path

    crop = q.task()(Images.crop)
    if __name__ == "__main__":
        print(resize.name, crop.name)
""")


def names_when(tmp_path, *args: str) -> str:
    (tmp_path / "tasks.py").write_text(TASKS)
    out = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_task_is_named_alike_run_as_a_script_run_with_m_and_imported(tmp_path):
    imported = names_when(tmp_path, "-c", "import tasks; print(tasks.resize.name, tasks.crop.name)")
    assert imported == "tasks.resize tasks.Images.crop"
    assert names_when(tmp_path, "tasks.py") == imported
    assert names_when(tmp_path, "-m", "tasks") == imported


class WarningSeen(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.seen.set()


def test_a_worker_warns_of_due_jobs_whose_task_it_does_not_know(qdir):
    q = Queue(qdir)
    q.register("__main__.resize", lambda payload: payload)
    q.enqueue("tasks.resize", b"a.png")
    q.enqueue("tasks.resize", b"b.png")
    q.enqueue("__main__.resize", b"c.png")
    seen = WarningSeen()
    logger = logging.getLogger("logq")
    logger.addHandler(seen)
    worker = q.worker(concurrency=1, poll=0.01)
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    try:
        assert seen.seen.wait(30)
    finally:
        worker.stop()
        t.join(30)
        logger.removeHandler(seen)
    assert "2 due jobs" in seen.messages[0] and "'tasks.resize' (2)" in seen.messages[0]
    assert "__main__.resize" in seen.messages[0]  # what this worker does know
    assert q.stats().due_by_name == {"tasks.resize": 2}
    q.close()


@pytest.mark.parametrize("reopen", [False, True])
def test_due_jobs_are_counted_per_task_name(qdir, reopen):
    clock = FakeClock()
    q = Queue(qdir, clock=clock)
    a = [q.enqueue("a", b"") for _ in range(4)]
    q.enqueue("b", b"", delay=10)
    q.enqueue("b", b"")
    q.cancel(a[1])
    leased = q.lease("a")
    assert leased is not None
    assert q.stats().due_by_name == {"a": 2, "b": 1}
    q.release(leased)
    clock.advance(10)
    if reopen:
        q.close()
        q = Queue(qdir, clock=clock)
    stats = q.stats()
    assert stats.due_by_name == {"a": 3, "b": 2} and stats.due == 5
    q.close()
    out = subprocess.run([sys.executable, "-m", "logq", "inspect", qdir, "--json"], capture_output=True,
                         text=True, timeout=120)
    shown = json.loads(out.stdout)["due_by_name"]
    assert shown == {"a": 3, "b": 2}
    text = subprocess.run([sys.executable, "-m", "logq", "inspect", qdir], capture_output=True,
                          text=True, timeout=120).stdout
    assert "due now, by task: 'a' 3, 'b' 2" in text
