"""The simulated file system of the fuzz harness: each fault leaves the image it should."""

from __future__ import annotations

import errno
import random

import pytest

from fuzz.simfs import FAULTS, POWER_FAULTS, SimCrash, SimFS

D = "/q"
F = "/q/f"


def fs_with_unsynced(durable: bytes = b"AAAA", writes: tuple[bytes, ...] = (b"BBBB", b"CCCC", b"DDDD")) -> SimFS:
    """A file whose create is durable, with `durable` fsynced and `writes` appended after."""
    fs = SimFS(0)
    fs.makedirs(D)
    f = fs.open(F, create=True)
    f.write(durable)
    f.fsync()
    fs.fsync_dir(D)
    for w in writes:
        f.write(w)
    return fs


def content(fs: SimFS, path: str = F) -> bytes:
    f = fs.open(path, readonly=True)
    return f.pread(f.size(), 0)


def images(fault: str, seeds: range = range(60), **kw: bytes) -> list[bytes]:
    out = []
    for seed in seeds:
        fs = fs_with_unsynced(**kw)  # type: ignore[arg-type]
        fs.crash(fault, random.Random(seed))
        out.append(content(fs))
    return out


# ------------------------------------------------------------------- faults


def test_kill9_keeps_everything_written() -> None:
    fs = fs_with_unsynced()
    fs.open("/q/new", create=True).write(b"x")
    fs.crash("kill9")
    assert content(fs) == b"AAAABBBBCCCCDDDD"
    assert content(fs, "/q/new") == b"x"


def test_kill9_keeps_unsynced_data_unsynced() -> None:
    fs = fs_with_unsynced()
    fs.crash("kill9")
    fs.crash("lose_unsynced")
    assert content(fs) == b"AAAA"


def test_lose_unsynced_keeps_only_what_was_fsynced() -> None:
    fs = fs_with_unsynced()
    fs.open("/q/new", create=True).fsync()  # data durable, its name is not
    fs.crash("lose_unsynced")
    assert content(fs) == b"AAAA"
    assert not fs.exists("/q/new")


def test_fsync_makes_data_durable() -> None:
    fs = fs_with_unsynced()
    fs.open(F).fsync()
    fs.crash("lose_unsynced")
    assert content(fs) == b"AAAABBBBCCCCDDDD"


def test_torn_write_keeps_a_prefix_torn_at_any_byte() -> None:
    full = b"AAAABBBBCCCCDDDD"
    seen = set(images("torn", range(200)))
    assert all(full.startswith(img) and len(img) >= 4 for img in seen)
    assert any(len(img) % 4 for img in seen)  # torn inside a write
    assert len(seen) > 8


def test_subset_keeps_any_subset_of_unsynced_writes() -> None:
    seen = set(images("subset", range(200)))
    for img in seen:
        assert img[:4] == b"AAAA"
        for i, w in enumerate((b"BBBB", b"CCCC", b"DDDD")):
            assert img[4 + 4 * i:8 + 4 * i] in (w, b"\0" * 4, b"")
    assert b"AAAA\0\0\0\0CCCC" in seen or b"AAAA\0\0\0\0\0\0\0\0DDDD" in seen  # later kept, earlier not


def test_zeros_keeps_the_new_size_but_not_all_the_bytes() -> None:
    seen = set(images("zeros", range(100)))
    for img in seen:
        assert len(img) == 16 and img[:4] == b"AAAA"
        cut = len(img.rstrip(b"\0"))
        assert b"AAAABBBBCCCCDDDD".startswith(img[:cut])
    assert b"AAAA" + bytes(12) in seen


def test_truncate_is_unsynced_until_fsync() -> None:
    fs = fs_with_unsynced(writes=())
    fs.open(F).truncate(1)
    fs.crash("lose_unsynced")
    assert content(fs) == b"AAAA"


def test_revert_dir_keeps_data_but_a_prefix_of_directory_changes() -> None:
    results = set()
    for seed in range(60):
        fs = fs_with_unsynced(writes=())
        fs.open("/q/tmp", create=True).write(b"new")  # create ...
        fs.rename("/q/tmp", "/q/final")  # ... rename ...
        fs.unlink(F)  # ... unlink, none covered by fsync_dir
        fs.crash("revert_dir", random.Random(seed))
        names = tuple(sorted(fs.listdir(D)))
        results.add(names)
        if "final" in names:
            assert content(fs, "/q/final") == b"new"
        if "f" in names:
            assert content(fs) == b"AAAA"
    assert results == {("f",), ("f", "tmp"), ("f", "final"), ("final",)}


def test_fsync_dir_makes_directory_changes_durable() -> None:
    fs = fs_with_unsynced(writes=())
    fs.rename(F, "/q/g")
    fs.fsync_dir(D)
    fs.crash("lose_unsynced")
    assert fs.listdir(D) == ["g"] and content(fs, "/q/g") == b"AAAA"


def test_rename_replaces_the_target_atomically() -> None:
    fs = fs_with_unsynced(writes=())
    fs.open("/q/g", create=True).write(b"old")
    fs.fsync_dir(D)
    fs.rename(F, "/q/g")
    assert fs.listdir(D) == ["g"] and content(fs, "/q/g") == b"AAAA"
    fs.crash("lose_unsynced")
    assert sorted(fs.listdir(D)) == ["f", "g"]


@pytest.mark.parametrize("fault", FAULTS)
def test_every_fault_is_deterministic_by_seed(fault: str) -> None:
    def run() -> dict[str, bytes]:
        fs = fs_with_unsynced()
        fs.open("/q/x", create=True).write(b"xyz")
        fs.crash(fault, random.Random(5))
        return fs.image()
    assert run() == run()


@pytest.mark.parametrize("fault", POWER_FAULTS)
def test_after_a_power_loss_the_image_is_durable(fault: str) -> None:
    fs = fs_with_unsynced()
    fs.crash(fault, random.Random(1))
    assert fs.durable_image() == fs.image()


# ------------------------------------------------------- errors and crash points


def test_eio_on_write_raises_and_may_leave_a_prefix() -> None:
    prefixes = set()
    for seed in range(30):
        fs = SimFS(seed)
        fs.makedirs(D)
        f = fs.open(F, create=True)
        fs.fail("write")
        with pytest.raises(OSError) as info:
            f.write(b"0123456789")
        assert info.value.errno == errno.EIO and fs.stats.injected == 1
        prefixes.add(content(fs))
        f.write(b"!")  # only the armed one fails
    assert all(b"0123456789".startswith(p) for p in prefixes) and len(prefixes) > 3


def test_eio_on_fsync_leaves_the_data_unsynced() -> None:
    fs = fs_with_unsynced()
    fs.fail("fsync", 2)
    fs.open(F).fsync()
    fs.open(F).write(b"E")
    with pytest.raises(OSError):
        fs.open(F).fsync()
    fs.crash("lose_unsynced")
    assert content(fs) == b"AAAABBBBCCCCDDDD"


def test_fail_at_hits_the_numbered_operation() -> None:
    fs = fs_with_unsynced()
    fs.fail_at(fs.ops + 2)
    f = fs.open(F)
    f.write(b"1")
    with pytest.raises(OSError):
        f.fsync()


def test_crash_point_halts_the_process_until_crash() -> None:
    fs = fs_with_unsynced()
    f = fs.open(F)
    fs.crash_after(fs.ops + 1)
    with pytest.raises(SimCrash):
        f.write(b"E")  # done, then the process dies
    with pytest.raises(SimCrash):
        f.write(b"F")  # nothing more reaches the disk
    with pytest.raises(SimCrash):
        fs.unlink(F)
    assert fs.halted
    fs.crash("kill9")
    assert content(fs) == b"AAAABBBBCCCCDDDDE"


def test_operations_are_numbered_and_traced() -> None:
    fs = SimFS()
    fs.makedirs(D)
    f = fs.open(F, create=True)
    f.write(b"x")
    f.fsync()
    fs.fsync_dir(D)
    assert [k for k, _ in fs.trace] == ["mkdir", "create", "write", "fsync", "fsync_dir"]
    assert fs.ops == 5


# --------------------------------------------------- handles, locks, namespace


def test_handles_of_a_crashed_process_are_stale() -> None:
    fs = fs_with_unsynced()
    f = fs.open(F)
    fs.crash("kill9")
    with pytest.raises(OSError) as info:
        f.write(b"late")
    assert info.value.errno == errno.EBADF
    assert content(fs) == b"AAAABBBBCCCCDDDD"


def test_locks_are_shared_or_exclusive_per_handle_and_forgotten_on_crash() -> None:
    fs = SimFS()
    fs.makedirs(D)
    a, b = fs.open_lock("/q/lock"), fs.open_lock("/q/lock")
    assert a.acquire(wait=False) and not b.acquire(wait=False) and not b.acquire(shared=True, wait=False)
    a.release()
    assert a.acquire(shared=True) and b.acquire(shared=True, wait=False) and not b.acquire(wait=False)
    fs.crash("kill9")
    again = fs.open_lock("/q/lock")
    assert again.acquire(wait=False)  # the dead process's locks are gone
    a.release()  # ... and its release does not free the new holder's lock
    assert not fs.open_lock("/q/lock").acquire(wait=False)
    again.release()
    assert fs.open_lock("/q/lock").acquire(wait=False)


def test_open_errors_follow_the_os() -> None:
    fs = fs_with_unsynced(writes=())
    with pytest.raises(FileExistsError):
        fs.open(F, create=True, exclusive=True)
    with pytest.raises(FileNotFoundError):
        fs.open("/q/missing")
    with pytest.raises(FileNotFoundError):
        fs.open("/nodir/f", create=True)
    with pytest.raises(OSError):
        fs.open(F, readonly=True).write(b"x")
    assert fs.exists(D) and fs.isdir(D) and not fs.isdir(F) and fs.listdir("/") == ["q"]


def test_fork_is_independent() -> None:
    fs = fs_with_unsynced()
    other = fs.fork()
    other.open(F).write(b"fork")
    other.crash("lose_unsynced")
    assert content(fs) == b"AAAABBBBCCCCDDDD" and content(other) == b"AAAA"


def test_logq_runs_on_the_simulated_files() -> None:
    from logq import Queue
    fs = SimFS(0)
    q = Queue("/sim/q", sync="always", fs=fs, segment_size=4096)
    ids = [q.enqueue("t", bytes(900)) for _ in range(8)]  # rolls over
    fs.crash("lose_unsynced")
    q = Queue("/sim/q", sync="always", fs=fs, segment_size=4096)
    assert [j.id for j in q.jobs(limit=None)] == ids and q.stats().segments > 1
    q.close()


def test_new_files_and_directories_keep_the_mode_asked_for() -> None:
    from logq import Queue
    fs = SimFS(0)
    with Queue("/sim/q", sync="always", fs=fs, segment_size=4096, mode=0o660) as q:
        for _ in range(8):
            q.enqueue("t", bytes(900))  # rolls over: several segments, and a checkpoint at close
    assert fs.dir_modes["/sim/q"] == 0o770
    assert {fs.inodes[i].mode for i in fs.dirs["/sim/q"].values()} == {0o660}
    assert fs.fork().inodes[fs.dirs["/sim/q"]["logq.lock"]].mode == 0o660
    fs.open("/sim/q/new", create=True)
    fs.makedirs("/sim/other")
    assert fs.inodes[fs.dirs["/sim/q"]["new"]].mode == 0o600 and fs.dir_modes["/sim/other"] == 0o700


def test_a_directory_where_the_log_keeps_a_file_is_named() -> None:
    from logq import NotARegularFile, Queue
    fs = SimFS(0)
    Queue("/sim/q", fs=fs).close()
    fs.makedirs("/sim/q/logq.checkpoint.tmp")  # optional: the open goes on without the checkpoint
    with Queue("/sim/q", fs=fs) as q:
        assert "logq.checkpoint.tmp" in (q.recovery.checkpoint_skipped or "")
    fs.makedirs("/sim/q/00000000000000000001.seg.compacting")
    with pytest.raises(NotARegularFile, match="compacting"):
        Queue("/sim/q", fs=fs)
