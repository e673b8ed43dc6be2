"""A real redis-server for the tests: started on a free loopback port with its own data directory.

`RedisServer.start()` runs `redis-server` with an append-only file fsynced on every
write (appendfsync always), so `sync="always"` is honoured; `kill()` sends SIGKILL
and `start()` again restarts it on the same data; `RedisServer(..., replica_of=other)` is a
replica of `other` (`replication_ready` waits until it has everything). `find()` locates the binary:
under CI=true a missing server fails the run, elsewhere the Redis tests skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

MISSING = ("redis-server is not installed, so the Redis backend is not tested: install it "
           "(as root: `bash scripts/redis-server.sh`, or `apt-get install -y redis-server`)")


def find() -> str:
    """The redis-server binary; fail under CI=true, else skip, if there is none."""
    found = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if os.access(p, os.X_OK)), None)
    if found is None:
        give_up(MISSING)
    return found


def give_up(reason: str) -> None:
    """Skip the test with `reason`, or fail it under CI=true (where the server must be there)."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI=true: this fails the run)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1:`port`, keeping its data in `directory`."""

    def __init__(self, binary: str, directory: str, replica_of: "RedisServer | None" = None) -> None:
        self.binary, self.directory, self.replica_of = binary, directory, replica_of
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.directory,
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--protected-mode", "no", "--logfile", os.path.join(self.directory, "redis.log"),
             "--repl-diskless-sync-delay", "0"]
            + ([] if self.replica_of is None else ["--replicaof", "127.0.0.1", str(self.replica_of.port)]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # ready once it answers PING (and has loaded its data)
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see "
                                   f"{os.path.join(self.directory, 'redis.log')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within 30 s")

    def kill(self) -> None:
        """SIGKILL: what a crash of the server leaves."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def pause(self) -> None:
        """SIGSTOP: the process stays, its connections open, and it answers nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def log_tail(self, lines: int = 8) -> str:
        try:
            with open(os.path.join(self.directory, "redis.log"), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError as exc:
            return str(exc)


def replication_ready(primary_url: str, replicas: int, timeout: float = 20.0) -> bool:
    """Whether `replicas` replicas of the server at `primary_url` confirm a fresh write within
    `timeout` seconds (the server's own WAIT: no polling)."""
    import redis
    r = redis.Redis.from_url(primary_url, socket_timeout=timeout + 5)
    try:
        r.set("replication-check", os.urandom(8))
        return int(r.execute_command("WAIT", replicas, int(timeout * 1000))) >= replicas
    finally:
        r.close()
