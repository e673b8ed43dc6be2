"""The README's code runs as written."""

from __future__ import annotations

import logging
import os
import re
import sys
import textwrap
import threading

import logq

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def blocks() -> list[str]:
    with open(README, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_tutorial_runs(tmp_path, monkeypatch):
    """app.py (the first block) imported, a worker on its queue, and the producer block (the
    second) run as it stands; here in one process (tests/test_cli_worker.py runs it in two)."""
    monkeypatch.chdir(tmp_path)
    app, producer = blocks()[0], blocks()[1]
    (tmp_path / "app.py").write_text(app)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "app", raising=False)
    import app as module  # type: ignore[import-not-found]
    worker = module.q.worker(concurrency=2)
    t = threading.Thread(target=worker.run)
    t.start()
    namespace: dict[str, object] = {}
    try:
        exec(compile(producer.replace("timeout=10", "timeout=60"), "README", "exec"), namespace)
        assert namespace["h"].result(timeout=60) == "a.png@200"  # type: ignore[attr-defined]
    finally:
        worker.stop()
        t.join()
        module.q.close()
        sys.modules.pop("app", None)


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
