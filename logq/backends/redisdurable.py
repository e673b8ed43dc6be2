"""What a Redis queue's sync modes wait for: the server's fsync, and its replicas.

Theory of operation
-------------------
`probe` runs once, at open. It reads the server's persistence settings (CONFIG
GET append*): `sync="always"` needs an append-only file fsynced on every write
(appendonly yes, appendfsync always) and is refused otherwise; `batch` warns
when the server keeps no append-only file. It then counts the replicas
connected to the server (INFO replication). If there are any, every
`sync="always"` call waits for all of them, that many, as counted at open:

1. the call's script runs (the server fsyncs it before it answers);
2. on the same connection, in the same round trip, follows WAITAOF 1 N ms where
   the server has it (Redis 7.2 and later: each of the N replicas has fsynced the
   change to its own append-only file), else WAIT N ms (each has received it).
   Both wait for the writes of their own connection only, hence the same one;
3. `check` raises `NotReplicatedError` if fewer than N confirmed within the
   timeout (`replica_timeout=` in the URL, default 5 s). The change is not undone:
   it is on the server and perhaps on some replicas.

Which of the two commands the server has is found by trying WAITAOF once at
open. A batch call (enqueue_many, ack_many, a worker's completions) is one
script, so it waits once. `batch` and `none` never wait for replicas.
"""

from __future__ import annotations

import logging
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument, NotReplicatedError

log = logging.getLogger("logq.redis")

DEFAULT_REPLICA_TIMEOUT = 5.0
OPTION = "replica_timeout"


def take_timeout(server: str) -> tuple[str, float]:
    """The server URL without logq's `replica_timeout=` query parameter, and its value in
    seconds (default 5)."""
    parts = urllib.parse.urlsplit(server)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    given = [v for k, v in query if k == OPTION]
    if not given:
        return server, DEFAULT_REPLICA_TIMEOUT
    try:
        timeout = float(given[-1])
    except ValueError:
        timeout = -1.0
    if not 0.001 <= timeout <= 3600:
        raise InvalidArgument(f"replica_timeout must be a number of seconds from 0.001 to 3600, "
                              f"not {given[-1]!r:.40}")
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != OPTION])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), timeout


@dataclass(frozen=True)
class Durability:
    """What the server of one queue does for `sync="always"` (see the module docstring)."""

    server: str
    fsync_always: bool
    """The server fsyncs its append-only file on every write."""
    replicas: int
    """Replicas connected at open: each `always` call waits for this many."""
    waitaof: bool
    """The server has WAITAOF (so replicas' fsyncs are waited for), else WAIT."""
    timeout: float

    def command(self) -> tuple[str, ...] | None:
        """The command that follows an `always` call's script, or None if none is needed."""
        if not self.replicas:
            return None
        ms = str(max(1, round(self.timeout * 1000)))
        if not self.waitaof:
            return ("WAIT", str(self.replicas), ms)
        local = "1" if self.fsync_always else "0"  # (WAITAOF 1 is refused by a server without an AOF)
        return ("WAITAOF", local, str(self.replicas), ms)

    def check(self, reply: Any) -> None:
        """Raise `NotReplicatedError` unless `reply` (of `command()`) says every replica confirmed."""
        acked = int(reply[1]) if self.waitaof else int(reply)
        if acked >= self.replicas:
            return
        what = "fsynced it to its append-only file" if self.waitaof else "received it"
        raise NotReplicatedError(
            f"the change was made on the Redis server at {self.server}, but only {acked} of its {self.replicas} "
            f"replicas {what} within {self.timeout:g}s (sync='always'): it is not undone, and may or may not be "
            "on the others; bring the replicas back, or reopen the queue to wait only for those connected now")


def probe(r: Any, sync_mode: str, server: str, timeout: float, refused: type[BaseException]) -> Durability:
    """What the server at `server` (redis-py client `r`) offers; refuses `always` on a server that
    does not fsync every write. `refused` is the client's error for a refused command."""
    always = _fsync_always(r, sync_mode, server, refused)
    replicas = _replicas(r, refused)
    waitaof = False
    if replicas:
        try:
            r.execute_command("WAITAOF", 0, 0, 0)
            waitaof = True
        except refused:  # before Redis 7.2: WAIT, which does not wait for the replicas' fsyncs
            pass
        if sync_mode == "always":
            log.info("sync='always' on %s waits for its %d replicas (%s)", server, replicas,
                     "WAITAOF" if waitaof else "WAIT")
    return Durability(server, always, replicas, waitaof, timeout)


def _fsync_always(r: Any, sync_mode: str, server: str, refused: type[BaseException]) -> bool:
    """Whether the server fsyncs its append-only file on every write; refuse `always` if not."""
    try:
        config = {_text(k): _text(v) for k, v in r.config_get("append*").items()}
    except refused:  # CONFIG is disabled (a managed server): nothing to check
        log.warning("cannot read the Redis server's persistence settings (CONFIG GET refused): "
                    "logq cannot check that sync=%r is honoured", sync_mode)
        return False
    aof = config.get("appendonly", "no") == "yes"
    always = aof and config.get("appendfsync", "") == "always"
    if sync_mode == "always" and not always:
        raise InvalidArgument(
            f"sync='always' needs a Redis server that fsyncs its append-only file on every write, but "
            f"{server} has appendonly={config.get('appendonly', '?')} "
            f"appendfsync={config.get('appendfsync', '?')}: set 'appendonly yes' and "
            "'appendfsync always' on the server, or use sync='batch'")
    if sync_mode == "batch" and not aof:
        log.warning("the Redis server at %s keeps no append-only file: a crash of the server loses "
                    "jobs since its last snapshot (set 'appendonly yes')", server)
    return always


def _replicas(r: Any, refused: type[BaseException]) -> int:
    """The number of replicas connected to the server (0 if it will not say)."""
    try:
        info = r.info("replication")
    except refused:
        log.warning("cannot read the Redis server's replication (INFO refused): sync='always' "
                    "will not wait for replicas")
        return 0
    return int(info.get("connected_slaves", 0))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
