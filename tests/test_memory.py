"""The memory backend's own promises: no disk, the disk options checked and unused, nothing kept after close.

Its semantics are the contract suite's (tests/test_queue.py and the others run on it
through `queue_factory`); these tests cover what differs from a directory.
"""

from __future__ import annotations

import os
import re

import pytest

import logq
from logq import ClosedError, InvalidArgument, Queue
from logq.testing import FakeClock

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_a_memory_queue_touches_no_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Queue(":memory:", segment_size=4096, compression="zstd", sync="always") as q:
        q.enqueue_many([("t", b"x" * 5000)] * 3)
        q.ack(q.lease())
        s = q.stats()
        assert (s.segments, s.bytes_on_disk, s.durable_seq, s.last_seq) == (0, 0, 0, 5)
        assert s.live_bytes > 0 and q.path == ":memory:"
        assert q.recovery == logq.RecoveryReport()
        caps = q.backend.capabilities
        assert (caps.durable, caps.compaction, caps.inspectable) == (False, True, False)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kw", [dict(segment_size=100), dict(compression="lz4"), dict(sync_interval=0),
                                dict(compress_threshold=-1), dict(sync="sometimes")])
def test_options_that_shape_the_disk_are_checked_as_for_a_directory(tmp_path, kw):
    with pytest.raises(InvalidArgument) as on_disk:
        Queue(str(tmp_path / "q"), **kw)
    with pytest.raises(InvalidArgument) as in_memory:
        Queue(":memory:", **kw)
    assert str(in_memory.value) == str(on_disk.value)


def test_each_memory_queue_is_its_own_and_close_discards_it():
    a, b = Queue(":memory:"), Queue(":memory:")
    jid = a.enqueue("t", b"x")
    assert b.get(jid) is None and b.lease() is None
    a.close()
    with pytest.raises(ClosedError, match="closed"):
        a.get(jid)
    c = Queue(":memory:")
    assert c.stats().counts["pending"] == 0
    b.close()
    c.close()


def test_compact_forgets_final_jobs_past_retention():
    clock = FakeClock()
    with Queue(":memory:", clock=clock, retain_done=10) as q:
        done, kept = q.enqueue("t", b"done"), q.enqueue("t", b"kept", delay=100)
        q.ack(q.lease())
        assert q.compact().jobs_swept == 0  # not yet past retention
        clock.advance(10)
        report = q.compact()
        assert report.jobs_swept == 1 and not report.aborted
        assert q.get(done) is None and q.get(kept).payload == b"kept"
        assert q.stats().counts["done"] == 0


def test_readme_memory_example_runs():
    with open(README, encoding="utf-8") as f:
        [code] = [b for b in re.findall(r"```python\n(.*?)```", f.read(), re.S) if '":memory:"' in b]
    exec(compile(code, "README", "exec"), {"logq": logq})
