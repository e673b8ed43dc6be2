"""The README's code runs as written."""

from __future__ import annotations

import os
import re
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
    namespace: dict[str, object] = {}
    exec(compile(tutorial.replace("...\n    return", "return"), "README", "exec"), namespace)
    assert results == ["a.png@200"]
    namespace["q"].close()


def test_direct_queue_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = blocks()[2]
    namespace = {"logq": logq, "do_the_work": lambda payload: payload.upper()}
    exec(compile(code, "README", "exec"), namespace)
    with logq.Queue("data/jobs") as q:
        assert q.get(namespace["jid"]).key == "order-42"
        assert len(namespace["ids"]) == 2
