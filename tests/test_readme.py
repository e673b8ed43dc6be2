"""The README's code runs as written."""

from __future__ import annotations

import logging
import os
import re
import textwrap
import threading

import logq

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def blocks() -> list[str]:
    with open(README, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_tutorial_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tutorial, status = blocks()[0], blocks()[1]
    results = []

    def run_worker(self, concurrency=4, **kw):  # run until the first task is done, then stop
        worker = self.worker(concurrency=concurrency, **kw)
        t = threading.Thread(target=worker.run)
        t.start()
        results.append(eval(status.splitlines()[1].split("#")[0], namespace))
        worker.stop()
        t.join()

    monkeypatch.setattr(logq.Queue, "run_worker", run_worker)
    namespace: dict[str, object] = {"__name__": "__main__"}  # run as `python app.py`
    exec(compile(tutorial.replace("...\n    return", "return"), "README", "exec"), namespace)
    assert results == ["a.png@200"]
    namespace["q"].close()


def test_direct_queue_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = next(b for b in blocks() if 'key="order-42"' in b)
    namespace = {"logq": logq, "do_the_work": lambda payload: payload.upper()}
    exec(compile(code, "README", "exec"), namespace)
    with logq.Queue("data/jobs") as q:
        assert q.get(namespace["jid"]).key == "order-42"
        assert len(namespace["ids"]) == 2


def test_logging_example_runs_and_shows_the_workers_warnings(capsys):
    code = next(b for b in blocks() if "basicConfig" in b)
    root, ours = logging.getLogger(), logging.getLogger("logq")
    before = (list(root.handlers), root.level, list(ours.handlers))
    try:
        exec(compile(textwrap.dedent(code), "README", "exec"), {})
        ours.warning("a warning from the worker")
    finally:
        root.handlers[:], ours.handlers[:] = before[0], before[2]
        root.setLevel(before[1])
    assert "a warning from the worker" in capsys.readouterr().err
