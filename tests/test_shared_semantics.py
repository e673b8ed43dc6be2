"""spec/semantics.md, "Several processes", and spec/format.md §14: what holds when several
openers share one queue directory.

Most tests use two `Queue` objects in one process, which take turns exactly as two processes
do (each has its own handles on the lock files, so its own flocks); where a process must
die, it is a real one, killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading

import pytest
import xxhash

from logq import InvalidTransition, LeaseLostError, LockedError, Queue
from logq.log.verify import verify
from logq.testing import FakeClock

DEADLINE = 60.0  # seconds a waiting call may take on a loaded machine; never a timing assertion


def test_a_lease_survives_another_process_opening_the_queue(qdir):
    with Queue(qdir) as first:
        jid = first.enqueue("t", b"x")
        job = first.lease("t")
        assert job is not None
        with Queue(qdir) as second:  # not alone: it expires no one's lease
            info = second.get(jid)
            assert info is not None and info.state == "active" and info.attempts == 1
            assert not second.recovery.torn
        first.ack(job)  # the lease is still the first queue's
        assert first.get(jid).state == "done"


LEASE_AND_WAIT = textwrap.dedent("""
    import sys, logq
    q = logq.Queue(sys.argv[1], lease_time=float(sys.argv[2]))
    job = q.lease("t")
    print(job.id, flush=True)
    sys.stdin.readline()
""")


def leased_by_a_killed_process(path: str, lease_time: float = 30.0) -> int:
    """A real process leases a job of `path` and is killed with SIGKILL; return the job's id."""
    child = subprocess.Popen([sys.executable, "-c", LEASE_AND_WAIT, path, str(lease_time)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    line = child.stdout.readline()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=DEADLINE)
    child.stdout.close()
    assert child.stdin is not None
    child.stdin.close()
    return int(line)


def test_an_open_beside_others_leaves_a_killed_process_lease_to_the_owner_check(qdir):
    with Queue(qdir) as q:
        jid = q.enqueue("t", b"x")
        assert leased_by_a_killed_process(qdir) == jid
        with Queue(qdir) as late:  # opens while q is open: not alone, so it expires nothing
            assert late.get(jid).state == "active"
        assert q.get(jid).state == "active"
        assert q.expire_leases() == 1  # the owner check: the holder's owner file is unlocked
        info = q.get(jid)
        assert info.state == "pending" and info.attempts == 1
        assert info.last_error == "lease lost: its process ended"


def test_an_open_that_is_alone_expires_the_leases_of_a_killed_process(qdir):
    with Queue(qdir) as q:
        jid = q.enqueue("t", b"x")
    assert leased_by_a_killed_process(qdir) == jid
    with Queue(qdir) as q:  # alone: every lease in the log belonged to a process that is gone
        info = q.get(jid)
        assert info.state == "pending" and info.attempts == 1 and info.last_error == "lease lost"


def test_a_lease_past_its_time_is_expired_by_any_process_and_the_late_ack_raises_lease_lost(qdir):
    clock = FakeClock()
    with Queue(qdir, clock=clock) as a, Queue(qdir, clock=clock) as b:
        jid = a.enqueue("t", b"x")
        job = a.lease("t", lease_time=10)
        clock.advance(11)
        again = b.lease("t")  # b expires a's lease and leases the job itself
        assert again is not None and again.id == jid and again.attempts == 2
        with pytest.raises(LeaseLostError):
            a.ack(job)
        b.ack(again)
        assert a.get(jid).state == "done"


def test_a_killed_process_lease_past_its_time_is_expired_by_another_process(qdir):
    clock = FakeClock(start=1e10)  # far past the child's real clock: its lease is long over
    with Queue(qdir, clock=clock) as q:
        jid = q.enqueue("t", b"x")
        assert leased_by_a_killed_process(qdir) == jid
        assert q.expire_leases() == 1
        info = q.get(jid)
        assert info.state == "pending" and info.attempts == 1 and info.last_error == "lease expired"


def test_a_job_is_leased_by_one_process_at_a_time(qdir):
    with Queue(qdir) as a, Queue(qdir) as b:
        a.enqueue_many([("t", b"1"), ("t", b"2")])
        first, second = a.lease("t"), b.lease("t")
        assert first is not None and second is not None and first.id != second.id
        assert a.lease("t") is None and b.lease("t") is None


def test_ack_is_final_across_processes(qdir):
    with Queue(qdir) as a, Queue(qdir) as b:
        jid = a.enqueue("t", b"x")
        job = a.lease("t")
        a.ack(job)
        with pytest.raises(InvalidTransition):
            b.ack(jid)
        assert b.get(jid).state == "done" and b.lease("t") is None


def test_unique_keys_hold_across_processes(qdir):
    with Queue(qdir) as a, Queue(qdir) as b:
        jid = a.enqueue("t", b"x", key="order-42")
        last = b.stats().last_seq
        assert b.enqueue("t", b"y", key="order-42") == jid
        assert b.stats().last_seq == last  # nothing written
        a.ack(a.lease("t"))
        assert b.enqueue("t", b"z", key="order-42") > jid  # free again once the job is done


def test_ids_are_unique_and_increasing_across_processes(qdir):
    with Queue(qdir) as a, Queue(qdir) as b:
        ids = [(a if i % 3 else b).enqueue("t", b"%d" % i) for i in range(30)]
        assert ids == sorted(set(ids))


def test_lease_order_holds_across_processes(qdir):
    with Queue(qdir) as a, Queue(qdir) as b:
        low = a.enqueue("t", b"low")
        high = b.enqueue("t", b"high", priority=5)
        low_too = b.enqueue("t", b"low too")
        assert [a.lease("t").id for _ in range(3)] == [high, low, low_too]


def test_waits_notice_another_process_change(qdir):
    with Queue(qdir) as a, Queue(qdir) as b:
        got: dict[str, object] = {}

        def waiting_lease() -> None:
            got["job"] = a.lease("t", wait=DEADLINE)
        t = threading.Thread(target=waiting_lease)
        t.start()
        jid = b.enqueue("t", b"x")
        t.join()
        job = got["job"]
        assert job is not None and job.id == jid  # type: ignore[attr-defined]

        def waiting_result() -> None:
            got["info"] = b.wait(jid, timeout=DEADLINE)
        t = threading.Thread(target=waiting_result)
        t.start()
        a.ack(job, b"result")  # type: ignore[arg-type]
        t.join()
        info = got["info"]
        assert info.state == "done" and info.result == b"result"  # type: ignore[attr-defined]


def test_a_batch_left_after_the_published_end_is_set_aside_by_the_next_writer(qdir):
    """What a writer that died holding the writer lock leaves: bytes past the published end."""
    with Queue(qdir) as a, Queue(qdir) as b:
        first = a.enqueue("t", b"one")
        state = control_state(qdir)
        seg = os.path.join(qdir, f"{state['base']:020d}.seg")
        junk = b"\x5a" * 100
        with open(seg, "r+b") as f:  # a half-written batch: never published
            f.seek(state["end"])
            f.write(junk)
        second = b.enqueue("t", b"two")  # b's turn sets the batch aside before it appends
        kept = os.path.join(qdir, f"{os.path.basename(seg)}.{state['end']}.torn")
        with open(kept, "rb") as f:
            assert f.read() == junk
        assert [j.id for j in a.jobs("pending")] == [first, second]
    with Queue(qdir) as again:
        assert [j.id for j in again.jobs("pending")] == [first, second]


# ------------------------------------------------------- work that needs the directory alone

def files_but_control(path: str) -> dict[str, bytes]:
    out = {}
    for name in sorted(os.listdir(path)):
        # (the control file's published states and knocks, and each opener's own file in
        # logq.owners/, are the openers' running talk: §14)
        if name not in ("logq.control", "logq.owners"):
            with open(os.path.join(path, name), "rb") as f:
                out[name] = f.read()
    return out


def test_an_open_beside_another_opener_changes_no_file(qdir):
    with Queue(qdir) as a:
        a.enqueue("t", b"x")
        a.sync()
        before = files_but_control(qdir)
        late = Queue(qdir)
        assert late.get(1) is not None
        assert files_but_control(qdir) == before
        late.close()  # not the last to close: it leaves the files to the other
        assert files_but_control(qdir) == before


def test_only_the_last_to_close_writes_a_checkpoint(qdir):
    a = Queue(qdir)
    a.enqueue("t", b"x")
    with Queue(qdir) as b:
        b.enqueue("t", b"y")
    assert not os.path.exists(os.path.join(qdir, "logq.checkpoint"))
    a.close()  # alone again at close: trims the preallocated zeros, writes the checkpoint
    assert os.path.exists(os.path.join(qdir, "logq.checkpoint"))
    with Queue(qdir) as again:
        assert again.recovery.restored_seq == 2 and [j.id for j in again.jobs("pending")] == [1, 2]


def test_salvage_needs_the_directory_alone(qdir):
    with Queue(qdir) as a:
        a.enqueue("t", b"x")
        with pytest.raises(LockedError, match="salvage needs the queue to itself"):
            Queue(qdir, salvage=True)
        assert a.enqueue("t", b"y") == 2  # the refused opener disturbed nothing


# ------------------------------------------------------------ the control file (§14)

def control_state(path: str) -> dict[str, int]:
    """The newest slot of `logq.control`, decoded from the offsets spec/format.md §14 gives."""
    with open(os.path.join(path, "logq.control"), "rb") as f:
        data = f.read()
    assert len(data) == 192 and data[:8] == b"LOGQCTL1"
    best: dict[str, int] | None = None
    for at in (64, 128):
        fields = struct.unpack_from("<7Q", data, at)
        (check,) = struct.unpack_from("<Q", data, at + 56)
        if xxhash.xxh64_intdigest(data[at:at + 56]) != check:
            continue
        slot = dict(zip(("counter", "epoch", "base", "end", "last_seq", "durable_seq", "holder"), fields))
        assert at == 64 + 64 * (slot["counter"] % 2)  # counter c lives in slot c mod 2
        if best is None or slot["counter"] > best["counter"]:
            best = slot
    assert best is not None
    best["knocks"] = struct.unpack_from("<Q", data, 8)[0]
    return best


def test_the_control_file_is_laid_out_as_the_spec_says(qdir):
    with Queue(qdir, sync="always") as a:
        a.enqueue("t", b"x")
        alone = control_state(qdir)
        assert alone["holder"] == os.getpid() and alone["epoch"] >= 1  # alone: it keeps the writer lock
        with Queue(qdir, sync="always") as b:
            assert control_state(qdir)["knocks"] > alone["knocks"]  # b knocked; a let go
            jid = b.enqueue("t", b"y")
            shared = control_state(qdir)
            assert shared["holder"] == 0 and shared["counter"] > alone["counter"]
            assert shared["epoch"] == alone["epoch"]  # records moved by no one
            assert shared["last_seq"] == b.stats().last_seq and shared["durable_seq"] >= jid
            last_path, result = verify(qdir).segments[-1]
            assert result is not None and shared["base"] == result.header.base_seq
            assert shared["end"] == result.end and shared["last_seq"] == result.last_seq  # the valid end


def test_the_control_slot_example_in_the_spec_is_what_the_code_writes():
    import re

    from logq.log.control import FIRST_SLOT, SLOT_SIZE, State, decode, encode_slot
    with open(os.path.join(os.path.dirname(__file__), "..", "spec", "format.md"), encoding="utf-8") as f:
        text = f.read()
    block = re.search(r"<!-- control-example:begin -->\n```\n(.*?)```\n<!-- control-example:end -->", text, re.S)
    assert block, "format.md lost its control file example markers"
    dump, at = bytearray(), None
    for line in block.group(1).splitlines():
        offset, hexes = line.split("|")[0].split(None, 1)
        at = int(offset, 16) if at is None else at
        assert int(offset, 16) == at + len(dump)
        dump += bytes.fromhex(hexes)
    state = State(counter=3, epoch=1, base=1, end=104, last_seq=1, durable_seq=1, holder=0)
    assert at == FIRST_SLOT + (state.counter % 2) * SLOT_SIZE and bytes(dump) == encode_slot(state)
    whole = bytearray(b"LOGQCTL1" + bytes(192 - 8))
    whole[at:at + SLOT_SIZE] = dump
    assert decode(bytes(whole)) == state


# ------------------------------------------------------------ fsyncs shared (§14.5)

def test_a_caller_whose_record_another_openers_fsync_covered_does_not_fsync_again(tmp_path):
    """sync="always" beside another opener: the other's fsync covered what was published in
    the file before it began and says so in the durable word, so this caller returns at once."""
    from logq import Log

    from tests.helpers import CrashingFS

    path = str(tmp_path / "q")
    fs = CrashingFS()
    a = Log(path, sync="batch")
    b = Log(path, sync="always", fs=fs)
    try:
        with b.turn:  # a turn: written, published
            appended = b.write([(16, b"mine")])
        with a.turn:
            pass  # a catches up with b's record
        a.sync()  # a's fsync covers it and writes the durable word
        before = fs.log.count(f"fsync {os.path.basename(segment_of(path))}")
        b.commit(appended)  # durable already: no fsync of b's own
        assert fs.log.count(f"fsync {os.path.basename(segment_of(path))}") == before
    finally:
        b.close()
        a.close()


def segment_of(path: str) -> str:
    return sorted(n for n in os.listdir(path) if n.endswith(".seg"))[-1]


def test_a_rollover_cuts_the_zeros_a_dead_writer_grew_the_segment_by(tmp_path):
    """Found by the multi fuzz: a process that died after preallocating more of the active
    segment, before publishing anything, left zeros that the writer which then had the lock
    alone did not know of; its rollover must still end the sealed segment at its SEAL, or no
    later open could read the log ('bytes after the SEAL record' in a middle segment)."""
    from logq import Log
    from logq.log.verify import verify

    path = str(tmp_path / "q")
    with Log(path, segment_size=1 << 20) as log:
        log.append([(16, b"x" * 100)])
        seg = os.path.join(path, segment_of(path))
        w = log._writer
        with w.lock:  # a writer that knows the file only up to its end...
            w.cut_zeros_locked(w.end)
            with open(seg, "r+b") as f:  # ...and zeros another grew it by before dying
                f.truncate(os.path.getsize(seg) + (256 << 10))
            w.rollover_locked()
        log.append([(16, b"y")])
    assert verify(path).ok, verify(path).problems
    with Log(path) as again:  # every segment reads cleanly
        assert again.last_seq == 3
