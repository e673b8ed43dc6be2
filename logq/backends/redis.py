"""The Redis backend, `logq.Queue("redis://host:6379/0", name="jobs")`: the same jobs on a shared server.

Theory of operation
-------------------
Every operation that changes jobs is one Lua script run atomically by the
server (redis_scripts/logq.lua), loaded once and called by its hash
(EVALSHA, loading it again if the server answers NOSCRIPT); a batch call
(`enqueue_many`, `lease_many`, `ack_many`, a worker's completions) is one
script, so one round trip. All keys of a queue share the hash tag
`{logq:NAME}`, so they live in one slot and the queue runs on Redis Cluster.
No operation lists keys or scans the key space.

Each client decides as the local engine does: times come from the queue's
clock and are passed to the scripts; a failed attempt's outcome comes from
`core.policy.failure` (the job's attempts and backoff read first, the script
fenced by the attempt); an expired lease is pending again or dead by the same
rule as `core.policy.expiry` (in the script). Leases are fenced by attempt: a
`Job` whose lease was lost gets `LeaseLostError`. Expired leases are reclaimed
by whichever client leases next (and by `expire_leases`): no process is
special. An idle `lease(wait=)` blocks on the server (BLPOP of the queue's
wake-up list, pushed by every change that can make a job due), for at most a
second at a time so that a stop signal or close is seen. `wait` listens on
the queue's "done" channel for the job it watches.

Each job is one hash: its fields and its records (the payloads of
spec/semantics.md's layouts, one field per record, written by the same command
that changes the job), so `inspect --job` shows its history; final jobs are
removed once past retention (at each lease as many as it leases and 20 more,
all of them by `compact`). A batch costs the server one entry for all its jobs
in the set of leases and in the set of jobs to sweep (the script's header says
how each job's own fields decide). The scripts' arguments and replies are
shaped to need little work (enqueue passes the ENQUEUE records alone; a
lease's jobs come back as one string of packed records), and the calls are
packed and sent by `rediswire.Scripts`, not through redis-py's per-call
machinery.

Durability is the server's (redisdurable.py): `sync="always"` needs an
append-only file fsynced on every write (appendfsync always; checked at open,
refused otherwise), and where the server has replicas an `always` call also
waits until every replica connected at open has the change (WAITAOF, or WAIT
before Redis 7.2), or raises `NotReplicatedError`; `batch` and `none` take what
the server does and never wait for replicas. A server that cannot be reached
raises `UnavailableError`.

A queue with another layout version than this logq's is refused at open
(redislayout.py).
"""

from __future__ import annotations

import functools
import logging
import math
import struct
import threading
import time
import urllib.parse
from importlib import resources
from typing import Any, Sequence

from ..clock import Clock
from ..core import policy
from ..core.index import Entry, Extra
from ..core.jobs import ACTIVE, FINAL_STATES, STATES, Backoff, CompactionReport, Job, JobInfo, Stats, new_job
from ..core.records import encode_enqueue, enqueue_backoff, enqueue_head, enqueue_meta, enqueue_time_and_payload
from ..errors import (
    ClosedError, InvalidArgument, InvalidTransition, JobNotFound, LeaseLostError, LogqError, UnavailableError,
    WaitTimeout,
)
from ..log.log import DEFAULT_SEGMENT_SIZE, RecoveryReport, check_options
from ..core.jobs import Completion
from .base import Capabilities, NextRun
from .redisurl import is_redis_url  # noqa: F401  (re-exported)
from . import redislayout
from .redisdurable import Durability, probe, take_timeout
from .rediswire import Scripts, split_scripts

log = logging.getLogger("logq.redis")

CAPABILITIES = Capabilities(durable=False, compaction=True, inspectable=False)
"""`durable` is the local sense (reopen ends the leases of the process, a directory can be
copied): a Redis queue outlives its clients, and its durability is the server's."""
MAX_BLOCK = 1.0  # the longest one blocking wait on the server (a stop or close is seen after it)
SWEEP_ALL = 1_000_000
DEFAULT_NAME = "default"
INSTALL = "pip install 'logq[redis]'"


def _client_module() -> Any:
    try:
        import redis
    except ImportError:
        raise InvalidArgument(f"a redis:// queue needs the redis client: {INSTALL}") from None
    return redis


@functools.cache
def _load_scripts() -> dict[str, str]:
    """The scripts of redis_scripts/logq.lua (see `rediswire.split_scripts`)."""
    return split_scripts(resources.files(__package__).joinpath("redis_scripts/logq.lua").read_text())


def split_url(url: str, name: str | None) -> tuple[str, str]:
    """The server URL (without logq's `name=` query parameter) and the queue name."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    named = [v for k, v in query if k == "name"]
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "name"])
    if name is None:
        name = named[-1] if named else DEFAULT_NAME
    elif named and named[-1] != name:
        raise InvalidArgument(f"the URL names queue {named[-1]!r} and name= says {name!r}: give one")
    if not isinstance(name, str) or not name or len(name) > 200 or any(c in name for c in "{}\0"):
        raise InvalidArgument(f"name must be a non-empty str of at most 200 characters without braces, "
                              f"not {name!r:.60}")
    return urllib.parse.urlunsplit(parts._replace(query=rest)), name


class RedisBackend:
    """The jobs of queue `name` on the Redis server at `url` (see the module docstring)."""

    capabilities = CAPABILITIES

    def __init__(self, url: str, *, name: str | None, clock: Clock, backoff: Backoff, retain_done: float,
                 retain_dead: float, compact_threshold: float | None, sync: str, sync_interval: float,
                 segment_size: int, compression: str | None, compress_threshold: int, salvage: bool,
                 fs: object, mode: int, max_record: int = 0) -> None:
        """Takes `logq.Queue`'s options: those that shape files are refused, `max_record`
        (the facade's bound on records read from disk) has no use here."""
        _refuse_disk_options(segment_size, compression, salvage, fs, mode)
        check_options(sync, sync_interval, segment_size, compression, compress_threshold)  # as the local queue does
        redis = _client_module()
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self._redis_error = redis.exceptions.RedisError
        server, self.name = split_url(url, name)
        server, replica_timeout = take_timeout(server)
        self.path = url if "name=" in url else url + ("&" if "?" in url else "?") + \
            urllib.parse.urlencode({"name": self.name})
        self.server = server
        self.clock, self.backoff = clock, backoff
        self.retain_done, self.retain_dead = retain_done, retain_dead
        self.sync_mode = sync
        self.prefix = "{logq:%s}:" % self.name
        self._seq_key = self.prefix + "seq"
        try:
            self._r = redis.Redis.from_url(server, socket_connect_timeout=5, socket_timeout=30,
                                           health_check_interval=10)
        except ValueError as exc:
            raise InvalidArgument(f"not a Redis URL: {url!r:.100} ({exc})") from None
        self._scripts = Scripts(self._r, _load_scripts(), self._seq_key, redis.exceptions)
        self._closed = False
        self.recovery = RecoveryReport()
        self.durability: Durability = self._call(probe, self._r, sync, server, replica_timeout,
                                                 redis.exceptions.ResponseError)
        self.fsync_always = self.durability.fsync_always
        self._call(redislayout.check, self._r, self.prefix, self.name, server)

    # ------------------------------------------------------------- plumbing

    @property
    def closed(self) -> bool:
        return self._closed

    def _call(self, fn: Any, *args: Any) -> Any:
        """`fn(*args)`, with the client's errors as `UnavailableError`."""
        if self._closed:
            raise ClosedError(f"the queue at {self.path} is closed: open a new logq.Queue")
        try:
            return fn(*args)
        except self._errors as exc:
            if self._closed:  # closed by another thread while this call waited on the server
                raise ClosedError(f"the queue at {self.path} was closed during the call") from None
            raise UnavailableError(f"the Redis server at {self.server} cannot be reached ({exc}): "
                                   "check that it runs; calls work again once it is back") from None
        except self._redis_error as exc:
            if self._closed:
                raise ClosedError(f"the queue at {self.path} was closed during the call") from None
            raise UnavailableError(f"the Redis server at {self.server} refused the command: {exc}") from None
        except Exception:
            if self._closed:  # the client's connection was torn down under the call by close()
                raise ClosedError(f"the queue at {self.path} was closed during the call") from None
            raise

    def _run(self, op: str, args: Sequence[Any]) -> Any:
        return self._call(self._scripts.call, op, args)

    def _write(self, op: str, args: Sequence[Any], sync: str | None) -> Any:
        """`_run`, and under `sync="always"` (the queue's or the call's) the wait for the
        server's replicas on the same round trip (redisdurable.py)."""
        then = self.durability.command() if "always" in (sync, self.sync_mode) else None
        if then is None:
            return self._run(op, args)
        reply, acked = self._call(self._scripts.call_then, op, args, then)
        self.durability.check(acked)
        return reply

    def _check_sync(self, sync: str | None) -> None:
        if sync == "always" and not self.fsync_always:
            raise InvalidArgument(f"sync='always' needs 'appendfsync always' on the Redis server at {self.server}")

    # ----------------------------------------------------------------- enqueue

    def enqueue(self, name: str, payload: bytes, delay: float, priority: int, max_attempts: int,
                key: str | None, backoff: Backoff | None, sync: str | None) -> int:
        self._check_sync(sync)
        now = self.clock.time()
        record = enqueue_head(now, now + delay, priority, max_attempts, name.encode(),
                              None if key is None else key.encode(), backoff.as_tuple() if backoff else None)
        reply: int = self._write("enqueue", (record + payload,), sync)
        return reply if reply > 0 else -reply  # minus: the live job that holds the key

    def enqueue_many(self, items: Sequence[tuple[str, bytes]], delay: float, priority: int,
                     max_attempts: int, sync: str | None) -> list[int]:
        self._check_sync(sync)
        now = self.clock.time()
        heads: dict[str, bytes] = {}
        args: list[bytes] = []
        for name, payload in items:
            head = heads.get(name)
            if head is None:
                head = heads[name] = enqueue_head(now, now + delay, priority, max_attempts, name.encode())
            args.append(head + payload)
        first = int(self._write("enqueue", args, sync))
        return list(range(first, first + len(items)))

    # ------------------------------------------------------------------- lease

    def lease(self, n: int, names: frozenset[str] | None, lease_time: float, wait: float,
              sync: str | None, stop: threading.Event | None = None) -> list[Job]:
        self._check_sync(sync)
        deadline = None
        args: list[Any] = ["", repr(lease_time), n, repr(self.retain_dead), "1" if names is None else "0"]
        if names:
            args += sorted(names)
        while True:
            if stop is not None and stop.is_set():
                return []
            now = self.clock.time()
            args[0] = repr(now)
            reply = self._write("lease", args, sync)
            if reply[0] == 1:
                return _jobs(float(reply[1]), reply[2])
            if deadline is None:
                deadline = time.monotonic() + wait
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            block = min(remaining, MAX_BLOCK)
            if reply[1]:
                block = min(block, max(0.001, float(reply[1]) - now))
            self._call(self._r.blpop, [self.prefix + "wake"], max(block, 0.001))

    def expire_leases(self) -> int:
        return int(self._write("expire", [repr(self.clock.time()), repr(self.retain_dead)], None))

    # -------------------------------------------------------- finishing a lease

    def complete(self, outcomes: Sequence[Completion], next_run: NextRun | None) -> list[LogqError | None]:
        if not outcomes:
            return []
        return self._complete([(job, result, error, True) for job, result, error in outcomes], next_run, False, None)

    def ack(self, job: Job | int, result: bytes, sync: str | None) -> None:
        self._check_sync(sync)
        self._strict([(job, result, None, True)], sync)

    def ack_many(self, jobs: Sequence[Job | int], sync: str | None) -> None:
        self._check_sync(sync)
        if jobs:
            self._strict([(job, b"", None, True) for job in jobs], sync)

    def fail(self, job: Job | int, error: str, retry: bool, sync: str | None) -> None:
        self._check_sync(sync)
        self._strict([(job, b"", error, retry)], sync)

    def _strict(self, outcomes: list[tuple[Job | int, bytes, str | BaseException | None, bool]],
                sync: str | None) -> None:
        for err in self._complete(outcomes, None, True, sync):
            if err is not None:
                raise err

    def _complete(self, outcomes: Sequence[tuple[Job | int, bytes, str | BaseException | None, bool]],
                  next_run: NextRun | None, strict: bool, sync: str | None) -> list[LogqError | None]:
        """Each outcome's refusal, or None where it was applied (`strict`: all or none)."""
        now = self.clock.time()
        failing = [job for job, _, error, _ in outcomes if error is not None]
        facts = self._facts(failing) if failing else {}
        parts: list[bytes] = []
        for job, result, error, retry in outcomes:
            job_id, attempt = (job.id, job.attempts) if isinstance(job, Job) else (job, -1)
            final, dead, run_at, text = True, 0, 0.0, b""
            if error is None:
                text = result
            else:
                entry = facts.get(job_id)
                message = policy.error_text(error)
                text = message.encode()
                if entry is not None:
                    outcome = policy.failure(entry, now, message, retry, self.backoff)
                    final, dead, run_at = outcome.dead, int(outcome.dead), outcome.run_at
                else:  # no such job: the script says so
                    dead, run_at = 1, now
            run = next_run(job, now) if final and next_run is not None and isinstance(job, Job) else None
            rec = b"" if run is None else encode_enqueue(run)
            parts += (_OUTCOME.pack(job_id, attempt, error is not None, dead, run_at, len(text)), text,
                      _LEN.pack(len(rec)), rec)
        args = (repr(now), "1" if strict else "0", repr(self.retain_done), repr(self.retain_dead), b"".join(parts))
        replies: list[LogqError | None] = [None] * len(outcomes)
        op = "complete" if not strict else "ack_many" if len(outcomes) > 1 else "ack"
        for refusal in self._write("complete", args, sync):
            replies[int(refusal[0]) - 1] = _error(refusal[1:], op)
        return replies

    def _facts(self, jobs: Sequence[Job | int]) -> dict[int, Entry]:
        """What `policy.failure` needs of each job (attempts, max_attempts, its own backoff), read
        in one round trip; the script that follows is fenced by the attempt."""
        pipe = self._r.pipeline(transaction=False)
        ids = [job.id if isinstance(job, Job) else job for job in jobs]
        for job_id in ids:
            pipe.hmget(self.prefix + f"j:{job_id}", "n", "a", "m", "e", "p")
        facts: dict[int, Entry] = {}
        for job_id, (name, attempts, max_attempts, record, prio) in zip(ids, self._call(pipe.execute)):
            if name is None:
                continue
            e = Entry(job_id, name.decode(), int(prio), 0.0, int(max_attempts), None, 0, 0, ACTIVE, int(attempts))
            backoff = enqueue_backoff(record)
            if backoff:
                e.extra = Extra()
                e.extra.backoff = backoff
            facts[job_id] = e
        return facts

    # -------------------------------------------------------- changing one job

    def release(self, job: Job | int, delay: float, sync: str | None) -> None:
        self._change("release", job, delay, sync)

    def extend(self, job: Job | int, lease_time: float, sync: str | None) -> float:
        return float(self._change("extend", job, lease_time, sync))

    def cancel(self, job_id: int, sync: str | None) -> None:
        self._change("cancel", job_id, 0.0, sync)

    def retry(self, job_id: int, sync: str | None) -> None:
        self._change("retry", job_id, 0.0, sync)

    def _change(self, op: str, job: Job | int, seconds: float, sync: str | None) -> Any:
        self._check_sync(sync)
        job_id, attempt = (job.id, job.attempts) if isinstance(job, Job) else (job, -1)
        reply = self._write("change", [repr(self.clock.time()), op, job_id, attempt, repr(seconds),
                                       repr(self.retain_done)], sync)
        err = _error(reply, op)
        if err is not None:
            raise err
        return reply[1]

    # ------------------------------------------------------------------- reads

    def get(self, job_id: int) -> JobInfo | None:
        found = self.select_ids([job_id])
        return found[0] if found else None

    def select_ids(self, ids: Sequence[int]) -> list[JobInfo]:
        pipe = self._r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self.prefix + f"j:{job_id}", *_INFO_FIELDS)
        return [_info(job_id, fields) for job_id, fields in zip(ids, self._call(pipe.execute)) if fields[0]]

    def select(self, state: str | None, name: str | None, limit: int | None) -> list[JobInfo]:
        rows = self._run("select", [state or "", name or "", -1 if limit is None else limit])
        return [_info(int(row[0]), row[1:]) for row in rows]

    def stats(self) -> Stats:
        counts, by_name, oldest, seq = self._run("stats", [repr(self.clock.time())])
        now = self.clock.time()
        due_by_name = {by_name[i].decode(): int(by_name[i + 1]) for i in range(0, len(by_name), 2)}
        age = None if not oldest else now - enqueue_time_and_payload(oldest)[0]
        last = int(seq)
        return Stats(dict(zip(STATES, (int(c) for c in counts))), sum(due_by_name.values()), age, 0, 0, 0,
                     last if self.fsync_always else 0, last, {k: v for k, v in due_by_name.items() if v})

    def history(self, job_id: int) -> list[bytes]:
        """The job's records after its ENQUEUE (type byte, sequence number u64 little-endian,
        payload), oldest first."""
        fields = self._call(self._r.hgetall, self.prefix + f"j:{job_id}")
        return [bytes(fields[k]) for k in sorted((k for k in fields if k[:1] == b"#"), key=lambda k: int(k[1:]))]

    def enqueue_record(self, job_id: int) -> bytes | None:
        """The job's ENQUEUE record payload, or None if there is no such job."""
        found = self._call(self._r.hget, self.prefix + f"j:{job_id}", "e")
        return None if found is None else bytes(found)

    def wait(self, job_id: int, timeout: float | None) -> JobInfo:
        deadline = None if timeout is None else time.monotonic() + timeout
        pubsub = self._r.pubsub(ignore_subscribe_messages=True)
        watch = self.prefix + "watch"
        try:
            self._call(pubsub.subscribe, self.prefix + "done")
            self._call(self._r.hincrby, watch, job_id, 1)
            while True:
                info = self.get(job_id)
                if info is None:
                    raise JobNotFound(f"no job with id {job_id}: check the id (or it was swept after retention)")
                if info.state in FINAL_STATES:
                    return info
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WaitTimeout(f"job {job_id} is still {info.state} after {timeout}s")
                self._call(pubsub.get_message, True, min(MAX_BLOCK, math.inf if remaining is None else remaining))
        finally:
            try:
                if not self._closed and self._r.hincrby(watch, job_id, -1) <= 0:
                    self._r.hdel(watch, job_id)
                pubsub.close()
            except self._redis_error:
                pass

    # --------------------------------------------------------------- lifecycle

    def compact(self, include_active: bool) -> CompactionReport:
        started = time.monotonic()
        swept = int(self._run("compact", [repr(self.clock.time())]))
        return CompactionReport(0, 0, 0, 0, swept, swept, time.monotonic() - started)

    def sync(self) -> None:
        """Nothing to wait for: each call returned once the server wrote it as its
        persistence settings say (with appendfsync always, fsynced)."""
        self._call(self._r.ping)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._r.close()
            self._r.connection_pool.disconnect()


_INFO_FIELDS = ("n", "e", "a", "p", "x", "m", "s", "r", "err", "res", "k")


def _info(job_id: int, f: Sequence[Any]) -> JobInfo:
    enqueued_at, payload = enqueue_time_and_payload(bytes(f[1]))
    expires = float(f[4]) if f[4] else None
    return JobInfo(job_id, f[0].decode(), payload, int(f[2]), int(f[3]), enqueued_at, expires, int(f[5]),
                   f[6].decode(), float(f[7]), None if f[8] is None else f[8].decode(),
                   None if f[9] is None else bytes(f[9]), f[10].decode() if f[10] else None)


_LEASED = struct.Struct("<QII")  # per leased job: id, attempts, length of its ENQUEUE record
_OUTCOME = struct.Struct("<QiBBdI")  # per outcome: id, attempt, failed?, dead?, run_at, length of its text
_LEN = struct.Struct("<I")


def _jobs(expires: float, blob: bytes) -> list[Job]:
    """The jobs of a lease's reply: per job its id, attempts and ENQUEUE record (which has the
    name, priority, max_attempts, enqueue time and payload)."""
    jobs, pos, end, view = [], 0, len(blob), memoryview(blob)
    step = _LEASED.size
    while pos < end:
        job_id, attempts, size = _LEASED.unpack_from(blob, pos)
        pos += step
        enqueued_at, _, prio, max_attempts, name, _, at = enqueue_meta(view[pos:pos + size])
        jobs.append(new_job(job_id, name, blob[pos + at:pos + size], attempts, prio, enqueued_at, expires,
                            max_attempts))
        pos += size
    return jobs


def _error(reply: Sequence[Any], op: str) -> LogqError | None:
    """The named error of a script's refusal, or None for {'ok'}."""
    kind = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    if kind == "ok":
        return None
    job_id = int(reply[1])
    if kind == "notfound":
        return JobNotFound(f"no job with id {job_id}: check the id (or it was swept after retention)")
    if kind == "leaselost":
        attempt, state, attempts, what = int(reply[2]), reply[3].decode(), int(reply[4]), reply[5].decode()
        return LeaseLostError(f"the lease of job {job_id} (attempt {attempt}) was lost: it is now {state}, "
                              f"attempt {attempts}; do not {what} it")
    if kind == "invalid":
        state, what, allowed = reply[2].decode(), reply[3].decode(), reply[4].decode()
        return InvalidTransition(f"cannot {what} job {job_id}: it is {state}, and only {allowed} jobs can be")
    if kind == "twice":
        if op == "complete":
            return LeaseLostError(f"job {job_id} is twice in one batch of outcomes: the first counts")
        return InvalidTransition(f"job {job_id} is twice in ack_many: give each job once; nothing was acked")
    return LogqError(f"unexpected reply from the Redis script: {reply!r:.200}")


def _refuse_disk_options(segment_size: int, compression: str | None, salvage: bool, fs: object, mode: int) -> None:
    """Options that shape files on disk mean nothing on a server: refuse them rather than ignore them."""
    given = [what for what, used in (("segment_size", segment_size != DEFAULT_SEGMENT_SIZE),
                                     ("compression", compression is not None), ("salvage", bool(salvage)),
                                     ("fs", fs is not None), ("mode", mode != 0o600)) if used]
    if given:
        raise InvalidArgument(f"{', '.join(given)} shape the files of a local queue and mean nothing on Redis: "
                              "leave them out for a redis:// queue")
