"""Lost segments and damaged durable records are refused, never accepted silently (issue 19
items 2 and 3; spec/format.md §7 rules 0, 4 and 7).

Each test builds a queue whose jobs were acknowledged, removes or damages what held them
(as a careless cleanup, a bad copy or the disk would), and checks that opening refuses
with the file and what is missing, that `inspect --verify` exits 1, and that salvage opens,
reports the loss and never hands out an id twice. Directories are damaged on purpose, so
the tests use `tmp_path` rather than the verifying `qdir` fixture.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from logq import CorruptionError, Queue
from logq.log.codec import SEGMENT_HEADER_SIZE

from .helpers import abandon, flip_bit, segment_paths, truncate


def cli_verify(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "logq", "inspect", str(path), "--verify"],
                          capture_output=True, text=True, timeout=120)


def acked_queue(path: str, n: int = 120) -> list[int]:
    """n jobs enqueued and acked over several segments, closed cleanly (with its checkpoint)."""
    with Queue(path, segment_size=4096, sync="always") as q:
        ids = [q.enqueue("t", b"job %d" % i) for i in range(n)]
        for _ in ids:
            q.ack(q.lease())
    return ids


def refused(path: str, match: str) -> CorruptionError:
    with pytest.raises(CorruptionError, match=match) as info:
        Queue(path)
    r = cli_verify(path)
    assert r.returncode == 1, r.stdout + r.stderr
    return info.value


@pytest.mark.parametrize("checkpoint", [True, False], ids=["with-checkpoint", "without-checkpoint"])
def test_missing_first_segment_is_refused(tmp_path, checkpoint):
    acked_queue(tmp_path)
    if not checkpoint:
        os.unlink(os.path.join(tmp_path, "logq.checkpoint"))
    os.unlink(segment_paths(tmp_path)[0])
    error = refused(tmp_path, "are missing")
    assert error.path == segment_paths(tmp_path)[0]


def test_missing_every_segment_is_refused_and_ids_never_restart(tmp_path):
    ids = acked_queue(tmp_path)
    for p in segment_paths(tmp_path):
        os.unlink(p)
    refused(tmp_path, "every segment is missing")
    with Queue(tmp_path, salvage=True) as q:
        assert q.recovery.lost and q.enqueue("t", b"new") > max(ids)


def test_missing_last_segment_is_refused(tmp_path):
    ids = acked_queue(tmp_path)
    os.unlink(segment_paths(tmp_path)[-1])
    refused(tmp_path, "a segment or its end is missing")
    with Queue(tmp_path, salvage=True) as q:
        assert q.recovery.lost and q.enqueue("t", b"new") > max(ids)


def test_last_segment_cut_back_to_its_header_is_refused(tmp_path):
    ids = acked_queue(tmp_path)
    last = segment_paths(tmp_path)[-1]
    truncate(last, SEGMENT_HEADER_SIZE)
    error = refused(tmp_path, "were durable")
    assert (error.path, error.offset) == (last, SEGMENT_HEADER_SIZE)
    with Queue(tmp_path, salvage=True) as q:
        assert q.recovery.lost and q.enqueue("t", b"new") > max(ids)


def test_flipped_bit_early_in_the_active_segment_is_refused(tmp_path):
    """The acks after the damage were fsynced (sync="always") and the checkpoint lists the
    segment's end: cutting them as a torn tail would un-ack those jobs."""
    acked_queue(tmp_path)
    last = segment_paths(tmp_path)[-1]
    before = open(last, "rb").read()
    flip_bit(last, SEGMENT_HEADER_SIZE + 20)  # the first record's header
    error = refused(tmp_path, "not a torn write")
    assert (error.path, error.offset) == (last, SEGMENT_HEADER_SIZE)
    assert os.path.getsize(last) == len(before)  # nothing was cut
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".torn")]


def test_flipped_bit_in_what_an_open_recovered_is_refused_after_a_crash(tmp_path):
    """No clean close, so no checkpoint: the mark the last open wrote is the evidence."""
    q = Queue(tmp_path, sync="always")
    for i in range(20):
        q.ack(q.lease()) if i % 2 else q.enqueue("t", b"job %d" % i)
    abandon(q)
    q = Queue(tmp_path)  # recovers and marks what it recovered as durable
    abandon(q)
    seg = segment_paths(tmp_path)[-1]
    flip_bit(seg, SEGMENT_HEADER_SIZE + 20)
    error = refused(tmp_path, "not a torn write")
    assert (error.path, error.offset) == (seg, SEGMENT_HEADER_SIZE)
