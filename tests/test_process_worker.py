"""Process workers and their children, with real processes and real signals."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap

import pytest

from logq import Queue

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux pidfd_open")

SCRIPT = textwrap.dedent("""
    import os, sys, time, logq
    q = logq.Queue(sys.argv[1], sync="always")

    @q.task(name="quick")
    def quick():
        return os.getpid()

    @q.task(name="slow", priority=1)  # leased first: the other slot's child runs quick, then idles
    def slow():
        print("slow", os.getpid(), flush=True)
        time.sleep(120)

    slow.enqueue()
    quick.enqueue()
    q.run_worker(concurrency=2, kind="process", on_success=lambda job, pid: print("quick", pid, flush=True))
""")


def children_of(pid: int) -> set[int]:
    """The pids whose parent is `pid` (read from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def open_files(pid: int) -> list[str]:
    """What the file descriptors of process `pid` point to."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def catches(pid: int, signum: int) -> bool:
    """True if process `pid` has a handler installed for `signum` (/proc status SigCgt)."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught >> (signum - 1) & 1)


def wait_gone(pid: int, timeout: float) -> bool:
    """True once process `pid` has exited (a zombie counts), False after `timeout` seconds."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(fd)


def test_children_of_a_killed_process_worker_exit_and_hold_no_lock(qdir):
    worker = subprocess.Popen([sys.executable, "-c", SCRIPT, qdir], stdout=subprocess.PIPE, text=True)
    children: set[int] = set()
    try:
        lines = dict(worker.stdout.readline().split() for _ in range(2))  # a busy child, an idle one
        busy, idle = int(lines["slow"]), int(lines["quick"])
        children = children_of(worker.pid)
        assert busy != idle and children == {busy, idle}
        for pid in children:
            assert not [f for f in open_files(pid) if f.startswith(os.path.realpath(qdir))]
            assert not catches(pid, signal.SIGTERM), "the child kept the parent's SIGTERM handler"
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert wait_gone(idle, 30), "the idle child outlived its parent"
        assert wait_gone(busy, 30), "the busy child outlived its parent"
        with Queue(qdir) as q:  # no LockedError naming the dead pid
            [slow] = q.jobs(name="slow")
            assert (slow.state, slow.last_error) == ("pending", "lease lost")
    finally:
        worker.kill()
        worker.wait()
        for pid in children:  # what this test started, if it failed
            if not wait_gone(pid, 0):
                os.kill(pid, signal.SIGKILL)


def test_a_child_exits_at_end_of_file_when_idle_and_after_its_running_task(tmp_path):
    """Where there is no parent-death signal, end-of-file of the pipe ends a child: the
    parent's end is its only other holder (here the test closes it, as a death would)."""
    from logq.runtime.child import TaskProcess

    go = str(tmp_path / "go")
    os.mkfifo(go)
    q = Queue(":memory:")

    @q.task(name="waits")
    def waits(path):
        with open(path) as f:  # blocks until the test opens the FIFO for writing
            return f.read()

    idle, busy = TaskProcess(q._registry.tasks), TaskProcess(q._registry.tasks)
    idle.start()
    busy.start()
    try:
        idle.conn.close()
        assert wait_gone(idle.pid, 30), "an idle child outlived the end of its pipe"
        busy.conn.send(("waits", b'[["%s"],{}]' % go.encode()))
        with open(go, "w") as f:  # the task is running: it opened the FIFO
            busy.conn.close()  # the parent is gone while the task runs
            f.write("done")
        assert wait_gone(busy.pid, 30), "a busy child outlived the end of its pipe after its task"
        for p in (idle, busy):
            _, status = os.waitpid(p.pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        for p in (idle, busy):
            if not wait_gone(p.pid, 0):
                os.kill(p.pid, signal.SIGKILL)
        q.close()


OUTPUT = textwrap.dedent("""
    import sys, logq
    q = logq.Queue(sys.argv[1])

    @q.task(name="prints")
    def prints():
        print("printed by the task")  # no flush: the child must flush it before it ends
        return id(sys.stdout)

    h = prints.enqueue()
    w = q.worker(concurrency=1, kind="process")
    import threading
    t = threading.Thread(target=w.run)
    t.start()
    child_stdout = h.result(timeout=30)
    w.stop()
    t.join(30)
    sys.stdout.write("half a line")  # left in the parent's buffer while children fork ...
    print(" of the parent:", "fresh" if child_stdout != id(sys.stdout) else "inherited")
""")


def test_a_child_writes_through_its_own_streams_and_flushes_them(qdir):
    out = subprocess.run([sys.executable, "-c", OUTPUT, qdir], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["printed by the task", "half a line of the parent: fresh"]
