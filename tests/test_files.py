"""What `Queue()` and `inspect` do with files they did not make: non-regular files
(FIFOs, sockets, directories), symbolic links, unreadable files, a full disk,
another user's directory, and the permission bits of what logq creates.

A FIFO would block an open forever, so those cases run in a child process
with a timeout. Permission-denied cases need a user that permissions apply
to: as root, the child runs as `nobody` in a directory given to it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from typing import Any, Callable, Iterator

import pytest

import logq
from logq import (
    FileAccessError, InvalidArgument, LogqError, MissingFileError, NotARegularFile, Queue, UnsafeDirectoryError,
)
from logq.log.checkpoint import NAME as CHECKPOINT
from logq.log.fs import OsFileSystem, check_directory
from logq.log.directory import LOCK_NAME, META_NAME

from .helpers import segment_paths

SEG = "00000000000000000001.seg"
TIMEOUT = 60  # a child that blocks on a FIFO is killed after this many seconds
NOBODY = 65534

# A child that opens a queue and prints what happened as one JSON line.
OPEN_CHILD = textwrap.dedent("""
    import json, sys
    import logq
    path = sys.argv[1]
    try:
        q = logq.Queue(path)
    except logq.LogqError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc), "path": getattr(exc, "path", None),
                          "errno": getattr(exc, "errno", None)}))
    except OSError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc), "path": exc.filename}))
    else:
        r = q.recovery
        print(json.dumps({"error": None, "pending": q.stats().pending, "skipped": r.checkpoint_skipped,
                          "restored": r.restored_seq}))
        q.close()
""")


def make_queue(path: str) -> None:
    """A closed queue with 3 pending jobs and 1 acked, a checkpoint, meta, lock and one segment."""
    with Queue(path) as q:
        for i in range(4):
            q.enqueue("job", b"%d" % i)
        q.ack(q.lease())


def open_in_child(path: str) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-c", OPEN_CHILD, path], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def inspect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "logq", "inspect", *args], capture_output=True, text=True,
                          timeout=TIMEOUT)


def replace(path: str, kind: str, target: str | None = None) -> None:
    """Put a `kind` thing where file `path` is."""
    os.unlink(path)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.close()
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "symlink":
        os.symlink(target or "/dev/null", path)
    else:
        raise ValueError(kind)


# ------------------------------------------------------------------ item 9: FIFOs

@pytest.mark.parametrize("name", [META_NAME, SEG, LOCK_NAME, SEG + ".swap"])
def test_fifo_in_place_of_a_queue_file_is_refused_without_blocking(tmp_path: Any, name: str) -> None:
    path = str(tmp_path / "q")
    make_queue(path)
    if name.endswith(".swap"):  # a committed compaction's file, left by a crash
        os.mkfifo(os.path.join(path, name))
    else:
        replace(os.path.join(path, name), "fifo")
    out = open_in_child(path)
    assert out["error"] == "NotARegularFile", out
    assert out["path"] == os.path.join(path, name)
    assert "is a FIFO" in out["message"] and "move it out of the queue directory" in out["message"]


def test_fifo_in_place_of_the_checkpoint_falls_back_to_replay(tmp_path: Any) -> None:
    path = str(tmp_path / "q")
    make_queue(path)
    replace(os.path.join(path, CHECKPOINT), "fifo")
    out = open_in_child(path)
    assert out["error"] is None and out["pending"] == 3
    assert out["restored"] is None
    assert CHECKPOINT in out["skipped"] and "FIFO" in out["skipped"]


@pytest.mark.parametrize("name,status", [(META_NAME, 2), (SEG, 2), (LOCK_NAME, 0), (CHECKPOINT, 0)])
def test_inspect_does_not_block_on_a_fifo(tmp_path: Any, name: str, status: int) -> None:
    path = str(tmp_path / "q")
    make_queue(path)
    replace(os.path.join(path, name), "fifo")
    for args in ([path], [path, "--verify"], [path, "--json"]):
        r = inspect(*args)
        assert r.returncode == status, (args, r.stdout, r.stderr)
        if status == 2:
            assert f"{name} is a FIFO" in r.stderr
    if name == CHECKPOINT:
        assert "is not usable" in inspect(path).stdout


@pytest.mark.parametrize("kind", ["fifo", "socket", "directory", "symlink"])
def test_segment_that_is_not_a_regular_file_is_refused(tmp_path: Any, kind: str) -> None:
    path = str(tmp_path / "q")
    make_queue(path)
    seg = os.path.join(path, SEG)
    copy = str(tmp_path / "copy.seg")
    shutil.copyfile(seg, copy)
    replace(seg, kind, target=copy)  # a link to a good copy is refused too: links are never followed
    out = open_in_child(path)
    assert out["error"] == "NotARegularFile", out
    assert out["path"] == seg


# ------------------------------------------------------- item 10: directories, access, disk full

@pytest.mark.parametrize("name", [LOCK_NAME, META_NAME, SEG, SEG + ".compacting", SEG + ".swap"])
def test_directory_in_place_of_a_queue_file_is_a_named_error(tmp_path: Any, name: str) -> None:
    path = str(tmp_path / "q")
    make_queue(path)
    target = os.path.join(path, name)
    if os.path.exists(target):
        os.unlink(target)
    os.mkdir(target)
    with pytest.raises(NotARegularFile) as info:
        Queue(path)
    assert info.value.path == target
    assert "is a directory" in str(info.value) and "move" in str(info.value)
    assert isinstance(info.value, OSError)  # code that catches OSError still does


@pytest.mark.parametrize("name", [CHECKPOINT, CHECKPOINT + ".tmp"])
def test_directory_in_place_of_the_checkpoint_falls_back_to_replay(tmp_path: Any, name: str) -> None:
    path = str(tmp_path / "q")
    make_queue(path)
    target = os.path.join(path, name)
    if os.path.exists(target):
        os.unlink(target)
    os.mkdir(target)
    for _ in range(2):  # and the close after it (which cannot write a checkpoint) does not block the next
        with Queue(path) as q:
            assert q.stats().pending == 3
            assert q.recovery.restored_seq is None
            assert q.recovery.checkpoint_skipped is not None and target in q.recovery.checkpoint_skipped
            assert "move the directory out" in q.recovery.checkpoint_skipped or "is a directory" in \
                q.recovery.checkpoint_skipped


def test_queue_path_inside_a_file_is_a_named_error(tmp_path: Any) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(FileAccessError) as info:
        Queue(str(tmp_path / "f" / "q"))
    assert info.value.errno == errno.ENOTDIR and "check the path" in str(info.value)


def reopen_unreadable(path: str, name: str) -> dict[str, Any]:
    """Make a queue, take every permission away from `name` (the directory itself if
    empty), and open the queue again; what happened, as a dict."""
    make_queue(path)
    where = os.path.join(path, name) if name else path
    if name.endswith(".swap"):  # a committed compaction's file, left by a crash
        shutil.copyfile(os.path.join(path, SEG), where)
    os.chmod(where, 0)
    try:
        with Queue(path) as q:
            return {"error": None, "pending": q.stats().pending, "skipped": q.recovery.checkpoint_skipped}
    except LogqError as exc:
        return {"error": type(exc).__name__, "message": str(exc), "path": getattr(exc, "path", None),
                "errno": getattr(exc, "errno", None)}
    except OSError as exc:
        return {"error": type(exc).__name__, "message": str(exc), "path": exc.filename}
    finally:
        os.chmod(where, 0o700)


@pytest.fixture
def own_dir() -> Iterator[str]:
    """A directory that the child of `run_as_owner` owns (as root: `nobody`'s, under /tmp)."""
    base = tempfile.mkdtemp(prefix="logq-files-")
    if os.geteuid() == 0:
        os.chown(base, NOBODY, NOBODY)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def run_as_owner(fn: Callable[..., dict[str, Any]], *args: str) -> dict[str, Any]:
    """`fn(*args)` in a forked child process that permissions apply to (as root, it
    becomes `nobody`, who could not run this interpreter from root's home: hence a
    fork, not a new program); its result comes back as JSON through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and never return into pytest
        code = 1
        try:
            os.close(r)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            os.write(w, json.dumps(fn(*args)).encode())
            code = 0
        except BaseException as exc:
            os.write(w, json.dumps({"child failed": repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    out = json.loads(data)
    assert status == 0, out
    return out  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", [LOCK_NAME, META_NAME, SEG, SEG + ".swap", ""])
def test_unreadable_file_is_a_named_error(own_dir: str, name: str) -> None:
    path = os.path.join(own_dir, "q")
    out = run_as_owner(reopen_unreadable, path, name)
    assert out["error"] == "FileAccessError", out
    assert out["errno"] == errno.EACCES
    assert out["path"] == os.path.join(path, name) if name else path
    assert "permission denied" in out["message"] and "fix its owner or permissions" in out["message"]


def test_unreadable_checkpoint_falls_back_to_replay(own_dir: str) -> None:
    out = run_as_owner(reopen_unreadable, os.path.join(own_dir, "q"), CHECKPOINT)
    assert out["error"] is None and out["pending"] == 3
    assert CHECKPOINT in out["skipped"] and "permission denied" in out["skipped"]


class FullDiskFS(OsFileSystem):
    """The real file system, but writing a file whose name ends in `suffix` fails with ENOSPC."""

    def __init__(self, suffix: str) -> None:
        super().__init__()
        self.suffix = suffix

    def open(self, path: str, **kw: Any) -> Any:  # type: ignore[override]
        f = super().open(path, **kw)
        return _FullFile(f) if path.endswith(self.suffix) else f


class _FullFile:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def pwrite(self, data: bytes, offset: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._inner.path)

    def write(self, data: bytes) -> None:
        self.pwrite(data, 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_no_space_while_saving_a_torn_tail_is_a_named_error_and_cuts_nothing(tmp_path: Any) -> None:
    path = str(tmp_path / "q")
    make_queue(path)
    os.unlink(os.path.join(path, CHECKPOINT))
    seg = segment_paths(path)[-1]
    with open(seg, "ab") as f:
        f.write(b"\x07" * 40)  # a write torn by a crash
    size = os.path.getsize(seg)
    with pytest.raises(FileAccessError) as info:
        Queue(path, fs=FullDiskFS(".torn.tmp"))
    assert info.value.errno == errno.ENOSPC
    assert info.value.path.endswith(".torn.tmp") and "free some space" in str(info.value)
    assert os.path.getsize(seg) == size  # the tail is cut only after it was kept aside
    with Queue(path) as q:  # space freed: the next open saves the tail and cuts it
        assert q.stats().pending == 3 and len(q.recovery.torn) == 1


def test_compaction_file_that_cannot_be_made_is_a_named_error_and_the_queue_goes_on(tmp_path: Any) -> None:
    path = str(tmp_path / "q")
    with Queue(path, segment_size=4096, retain_done=0, compact_threshold=None) as q:
        for _ in range(60):
            q.enqueue("job", b"x" * 100)
        for _ in range(40):
            q.ack(q.lease())
        blocker = os.path.join(path, SEG + ".compacting")
        os.mkdir(blocker)
        with pytest.raises(NotARegularFile) as info:
            q.compact()
        assert info.value.path == blocker
        q.enqueue("job", b"after")  # only compaction's own file was refused: the log is fine
        os.rmdir(blocker)
        assert q.compact().jobs_swept > 0
        assert q.stats().pending == 21


# ------------------------------------------------------------------ item 12: links, owners, modes

def test_links_planted_by_another_user_in_their_directory_are_never_written(tmp_path: Any) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "a").write_bytes(b"precious a")
    (victim / "b").write_bytes(b"precious b")
    trap = tmp_path / "trap"  # as under /tmp: another user made it, with links to the victim's files
    trap.mkdir()
    os.symlink(victim / "a", trap / LOCK_NAME)
    os.symlink(victim / "b", trap / (META_NAME + ".tmp"))
    for p in (trap, trap / LOCK_NAME, trap / (META_NAME + ".tmp")):
        os.lchown(p, NOBODY, NOBODY)
    with pytest.raises(UnsafeDirectoryError) as info:
        Queue(str(trap))
    assert info.value.path == str(trap) and f"belongs to user {NOBODY}" in str(info.value)
    assert (victim / "a").read_bytes() == b"precious a" and (victim / "b").read_bytes() == b"precious b"
    assert sorted(os.listdir(trap)) == [LOCK_NAME, META_NAME + ".tmp"]


@pytest.mark.parametrize("bits,mode,refused", [
    (0o777, 0o600, True), (0o1777, 0o600, True), (0o770, 0o600, True), (0o702, 0o600, True),
    (0o770, 0o660, False), (0o775, 0o660, False), (0o777, 0o660, True), (0o755, 0o600, False),
])
def test_directory_others_may_write_to_is_refused(tmp_path: Any, bits: int, mode: int, refused: bool) -> None:
    path = tmp_path / "q"
    path.mkdir()
    os.chmod(path, bits)
    if refused:
        with pytest.raises(UnsafeDirectoryError) as info:
            Queue(str(path), mode=mode)
        assert "chmod" in str(info.value) and oct(bits) in str(info.value)
        assert os.listdir(path) == []  # nothing was made there
    else:
        Queue(str(path), mode=mode).close()


def dir_stat(bits: int, uid: int, gid: int) -> os.stat_result:
    return os.stat_result((stat.S_IFDIR | bits, 0, 0, 1, uid, gid, 0, 0, 0, 0))


def test_ownership_check_refuses_another_users_directory_unless_shared_with_the_group() -> None:
    me, other, my_group = os.geteuid(), os.geteuid() + 1, os.getegid()
    not_my_group = max({os.getegid(), *os.getgroups()}) + 1
    check_directory("/some/q", dir_stat(0o700, me, not_my_group), 0o600)
    for bits, gid, mode in [(0o700, my_group, 0o600), (0o770, my_group, 0o640), (0o770, not_my_group, 0o660)]:
        with pytest.raises(UnsafeDirectoryError, match="belongs to user"):
            check_directory("/some/q", dir_stat(bits, other, gid), mode)
    check_directory("/some/q", dir_stat(0o770, other, my_group), 0o660)  # a group member's shared queue
    with pytest.raises(UnsafeDirectoryError, match="other users"):
        check_directory("/some/q", dir_stat(0o777, other, my_group), 0o660)


def test_queue_shared_with_the_group_opens_in_another_members_directory(tmp_path: Any) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    path = tmp_path / "q"
    path.mkdir()
    os.chmod(path, 0o770)
    os.chown(path, NOBODY, os.getegid())  # another member of our group made it
    with pytest.raises(UnsafeDirectoryError):
        Queue(str(path))  # not shared: only our own directory will do
    Queue(str(path), mode=0o660).close()


@pytest.mark.parametrize("name", [LOCK_NAME, SEG, META_NAME])
def test_link_in_place_of_a_queue_file_is_refused_and_its_target_untouched(tmp_path: Any, name: str) -> None:
    path = str(tmp_path / "q")
    make_queue(path)
    target = tmp_path / "target"
    shutil.copyfile(os.path.join(path, name), target)
    before = target.read_bytes()
    replace(os.path.join(path, name), "symlink", target=str(target))
    with pytest.raises(NotARegularFile) as info:
        Queue(path)
    assert "is a symbolic link" in str(info.value)
    assert target.read_bytes() == before


def test_link_in_place_of_the_checkpoint_is_not_followed(tmp_path: Any) -> None:
    path = str(tmp_path / "q")
    make_queue(path)
    real = tmp_path / "checkpoint"
    shutil.copyfile(os.path.join(path, CHECKPOINT), real)
    replace(os.path.join(path, CHECKPOINT), "symlink", target=str(real))
    with Queue(path) as q:
        assert q.recovery.restored_seq is None and "symbolic link" in (q.recovery.checkpoint_skipped or "")
    assert not os.path.islink(os.path.join(path, CHECKPOINT))  # the close replaced the link by a file


@pytest.mark.parametrize("name", [CHECKPOINT + ".tmp", META_NAME + ".tmp"])
def test_temporary_file_link_is_replaced_not_written_through(tmp_path: Any, name: str) -> None:
    """A link planted where logq writes a temporary file (while the queue is open, or
    before an open that rewrites the meta file) never gets logq's bytes."""
    path = str(tmp_path / "q")
    make_queue(path)
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    q = Queue(path)
    q.enqueue("job", b"4")
    os.symlink(target, os.path.join(path, name))
    if name.startswith(META_NAME):
        q.close()
        os.unlink(os.path.join(path, META_NAME))  # the next open writes it again, through the .tmp name
        q = Queue(path)
    q.close()
    assert target.read_bytes() == b"precious"
    assert not os.path.lexists(os.path.join(path, name))
    final = os.path.join(path, name[:-len(".tmp")])
    assert stat.S_ISREG(os.lstat(final).st_mode)
    with Queue(path) as q:
        assert q.stats().pending == 4 and q.recovery.restored_seq is not None


def all_modes(path: str) -> dict[str, int]:
    out = {".": stat.S_IMODE(os.stat(path).st_mode)}
    for name in os.listdir(path):
        out[name] = stat.S_IMODE(os.lstat(os.path.join(path, name)).st_mode)
    return out


def busy_queue(path: str, **kw: Any) -> None:
    """Make every kind of file logq writes: segments (rollover), a compacted one, a torn
    tail kept aside, meta, lock and checkpoint."""
    with Queue(path, segment_size=4096, retain_done=0, compact_threshold=None, **kw) as q:
        for i in range(60):
            q.enqueue("job", b"x" * 100)
        for _ in range(40):
            q.ack(q.lease())
        q.compact()
    with open(segment_paths(path)[-1], "ab") as f:
        f.write(b"\x07" * 40)
    Queue(path, **kw).close()
    kinds = {n.rsplit(".", 1)[-1] for n in os.listdir(path)}
    assert {"seg", "torn", "lock", "meta", "checkpoint"} <= kinds, kinds


@pytest.fixture
def umask() -> Iterator[None]:
    """Let the umask take nothing away: what logq asks for is what the files get."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_new_directory_and_files_are_for_the_owner_alone(tmp_path: Any, umask: None) -> None:
    path = str(tmp_path / "q")
    busy_queue(path)
    modes = all_modes(path)
    assert modes.pop(".") == 0o700 and modes.pop("logq.owners") == 0o700  # directories
    assert modes and set(modes.values()) == {0o600}, modes


def test_mode_option_shares_the_queue_with_the_group(tmp_path: Any) -> None:
    old = os.umask(0o077)  # a umask that would take the group's bits away
    try:
        path = str(tmp_path / "q")
        busy_queue(path, mode=0o660)
        modes = all_modes(path)
    finally:
        os.umask(old)
    assert modes.pop(".") == 0o770 and modes.pop("logq.owners") == 0o770
    assert set(modes.values()) == {0o660}, modes


@pytest.mark.parametrize("mode", [0o700, 0o400, 0o200, 0o1600, -1, "0o600", True, None, 384.0])
def test_mode_must_be_file_permission_bits(tmp_path: Any, mode: Any) -> None:
    with pytest.raises(InvalidArgument, match="mode must be"):
        Queue(str(tmp_path / "q"), mode=mode)
    assert not os.path.exists(tmp_path / "q")


def test_named_file_errors_are_exported() -> None:
    for cls in (FileAccessError, NotARegularFile, UnsafeDirectoryError, MissingFileError):
        assert issubclass(cls, LogqError) and issubclass(cls, OSError)
        assert cls.__name__ in logq.__all__
    assert issubclass(MissingFileError, FileNotFoundError)
