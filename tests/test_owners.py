"""Leases name their owner (spec/format.md §14.8): a process whose lease holder was killed
gets the job back at its next look (within OWNER_CHECK seconds), not after the lease time,
with the attempt counted; a lease of a live process is never taken."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from logq import Queue
from logq.core.records import Lease, decode_lease, encode_lease

DEADLINE = 60.0

HOLDER = textwrap.dedent("""
    import sys, time, logq
    q = logq.Queue(sys.argv[1])
    job = q.lease("t", lease_time=3600)
    print(job.id, flush=True)
    sys.stdin.readline()  # holds the lease until killed
""")


def start_holder(path: str) -> tuple[subprocess.Popen[str], int]:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip(), "the holder process ended before it leased"
    return child, int(line)


def owner_files(path: str) -> list[str]:
    return sorted(os.listdir(os.path.join(path, "logq.owners")))


def test_a_lease_record_names_its_owner_and_old_records_decode_without_one():
    rec = Lease(7, 2, 1.5, 31.5, 0xABCDEF)
    assert decode_lease(encode_lease(rec)) == rec and len(encode_lease(rec)) == 36
    old = Lease(7, 2, 1.5, 31.5)
    assert len(encode_lease(old)) == 28 and decode_lease(encode_lease(old)) == old


def test_the_jobs_of_a_killed_process_come_back_at_once_with_the_attempt_counted(tmp_path):
    path = str(tmp_path / "q")
    with Queue(path) as q:
        job_id = q.enqueue("t", b"work")
        child, leased = start_holder(path)
        try:
            assert leased == job_id and q.get(job_id).state == "active"
            assert len(owner_files(path)) == 2
            assert q.lease("t", wait=0) is None  # a live process's lease is not taken
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=DEADLINE)
            job = q.lease("t", wait=DEADLINE)  # long before the lease's hour is up
            assert job is not None and job.id == job_id and job.attempts == 2
            assert "its process ended" in (q.get(job_id).last_error or "")
            assert len(owner_files(path)) == 1  # the dead owner's file is gone
            q.ack(job)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()


def test_a_killed_process_lease_on_its_last_attempt_makes_the_job_dead(tmp_path):
    path = str(tmp_path / "q")
    with Queue(path) as q:
        job_id = q.enqueue("t", b"work", max_attempts=1)
        child, _ = start_holder(path)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=DEADLINE)
        assert q.expire_leases() == 1  # (an explicit look: leasing looks on its own)
        assert q.get(job_id).state == "dead"


@pytest.mark.parametrize("closing", ["close", "kill"])
def test_an_opener_leaves_no_owner_file_once_gone(tmp_path, closing):
    path = str(tmp_path / "q")
    with Queue(path) as q:
        q.enqueue("t", b"x")
        child, _ = start_holder(path)
        if closing == "kill":
            child.send_signal(signal.SIGKILL)
        else:
            assert child.stdin is not None
            child.stdin.close()  # it reads end of file and exits: the queue is closed at exit
        child.wait(timeout=DEADLINE)
        q.lease("t", wait=0.5)  # a look (the dead owner's file goes; a closed one went already)
        assert len(owner_files(path)) == 1
    with Queue(path) as again:  # alone: no owner but its own
        assert len(owner_files(path)) == 1
