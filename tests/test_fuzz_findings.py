"""Regressions for the six bugs the crash-recovery fuzz harness found (fuzz/README.md).

Each test replays one finding on the harness's simulated file system, shrunk
to a few calls: a fault at a named step, then a crash (`kill9` keeps what was
written to the OS, `lose_unsynced` is a power loss that keeps only what was
fsynced), then a reopen. The first line of each docstring says what the bug was.
"""

from __future__ import annotations

from typing import Any

import pytest

from fuzz.simfs import SimFS
from logq import Queue, WriterFailedError
from logq.testing import FakeClock

PATH = "/sim/q"
ROLLOVER: dict[str, Any] = {"sync": "always", "segment_size": 4096}


def fill_first_segment(q: Queue) -> None:
    """Enqueue until the next 900-byte job no longer fits the first segment."""
    while q.stats().bytes_on_disk < 3000:
        q.enqueue("a", b"x" * 900)


def reopen(fs: SimFS, fault: str, **options: Any) -> Queue:
    """End the simulated process with `fault` and open the queue again."""
    fs.crash(fault)
    return Queue(PATH, fs=fs, **options)


# ------------------------------------------- recovery makes durable what it adopts


def test_recovery_makes_a_segment_born_in_a_crashed_rollover_durable() -> None:
    """Bug: recovery appended to a segment whose directory entry was never fsynced.

    A crash between rollover steps R3 (create the next segment, write its
    header) and R4 (fsync the directory) left a valid header in the page cache;
    the next open adopted the file, and a power loss then took the whole
    segment with a job acknowledged in `always` mode.
    """
    fs = SimFS(0)
    q = Queue(PATH, fs=fs, **ROLLOVER)
    fill_first_segment(q)
    fs.crash_after(fs.ops + 5)  # rollover: SEAL write, cut the zeros after it, fsync, create, header write | crash
    with pytest.raises(WriterFailedError):  # does not fit: rolls over, and the process dies
        q.enqueue("a", b"y" * 900)
    assert fs.halted and [kind for kind, _ in fs.trace[-2:]] == ["create", "write"]  # its header
    q = reopen(fs, "kill9", **ROLLOVER)
    job = q.enqueue("a", b"acknowledged")  # always mode: returns after fdatasync
    q = reopen(fs, "lose_unsynced", **ROLLOVER)
    info = q.get(job)
    assert info is not None and info.payload == b"acknowledged"
    q.close()


def test_sync_after_a_reopen_makes_the_recovered_records_durable() -> None:
    """Bug: after a process crash, sync() and stats().durable_seq claimed records durable that were not.

    Recovery took the records a dead batch-mode process had only written to
    the OS as already fsynced, so sync() on the reopened queue did nothing and
    a power loss afterwards lost them.
    """
    opts: dict[str, Any] = {"sync": "batch", "sync_interval": 60}
    fs = SimFS(0)
    q = Queue(PATH, fs=fs, **opts)
    job = q.enqueue("a", b"payload")  # written to the OS, not fsynced
    q = reopen(fs, "kill9", **opts)
    q.sync()
    assert q.stats().durable_seq >= job
    q = reopen(fs, "lose_unsynced", **opts)
    assert [j.id for j in q.jobs(limit=None)] == [job]
    q.close()


def test_recovery_fsyncs_a_seal_before_it_starts_the_next_segment() -> None:
    """Bug: recovery trusted a SEAL only in the page cache, and a power loss left a log that did not open.

    The rollover's fsync of its SEAL (step R2) failed; the next open took the
    segment as sealed and durably created the next one, so after a power loss
    that dropped the SEAL every open raised CorruptionError ("sealed segment
    does not end with a SEAL record").
    """
    fs = SimFS(0)
    q = Queue(PATH, fs=fs, **ROLLOVER)
    fill_first_segment(q)
    ids = [j.id for j in q.jobs(limit=None)]
    fs.fail("fsync")  # the SEAL's fsync
    with pytest.raises(WriterFailedError):
        q.enqueue("a", b"x" * 900)
    q = reopen(fs, "kill9", **ROLLOVER)
    assert q.stats().segments == 2
    q = reopen(fs, "lose_unsynced", **ROLLOVER)
    assert [j.id for j in q.jobs(limit=None)] == ids
    q.close()


# ------------------------------------------------ a poisoned queue refuses every call


def test_close_raises_on_a_queue_poisoned_by_a_failed_fsync() -> None:
    """Bug: close() returned normally after a failed fsync, promising durability it could not give."""
    fs = SimFS(0)
    q = Queue(PATH, sync="always", fs=fs)
    fs.fail("fsync")
    with pytest.raises(WriterFailedError):
        q.enqueue("a", b"payload")
    with pytest.raises(WriterFailedError):
        q.close()


def test_enqueue_with_a_unique_key_raises_on_a_queue_poisoned_by_a_failed_write() -> None:
    """Bug: retrying enqueue(key=...) after a failed write returned the id of a job never written.

    The failed enqueue had been applied to the index before its write, so the
    retry found its key held and returned that id without touching the log.
    """
    fs = SimFS(0)
    q = Queue(PATH, sync="always", fs=fs)
    fs.fail("write")
    with pytest.raises(WriterFailedError):
        q.enqueue("send", b"mail", key="order-1")
    with pytest.raises(WriterFailedError):
        q.enqueue("send", b"mail", key="order-1")
    fs.crash("kill9")


# ----------------------------------------------------- lease commits what it expires


def test_lease_commits_the_expiries_it_makes_when_no_job_is_due() -> None:
    """Bug: lease() in always mode left its EXPIRE records uncommitted; a kill -9 lost them.

    A lease() that reclaimed an expired lease and found no job to hand out
    returned with the EXPIRE only in memory (and the group commit's appender
    count one too high), so after a crash the job showed "lease lost" where it
    had shown "lease expired".
    """
    fs, clock = SimFS(0), FakeClock()
    q = Queue(PATH, sync="always", fs=fs, clock=clock)
    job = q.enqueue("a", b"", max_attempts=1)
    q.lease(lease_time=2)
    clock.advance(3)
    assert q.lease(lease_time=2) is None
    before = q.get(job)
    assert before is not None and (before.state, before.last_error) == ("dead", "lease expired")
    q = reopen(fs, "kill9", sync="always", clock=clock)
    after = q.get(job)
    assert after is not None and (after.state, after.attempts, after.last_error) == ("dead", 1, "lease expired")
    q.close()
