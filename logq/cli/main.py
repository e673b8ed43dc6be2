"""The logq command line: `python -m logq SUBCOMMAND ...`.

Theory of operation
-------------------
This module only parses arguments and calls one function per subcommand;
the work is done elsewhere (`inspect.run`, `demo.run`, `worker.run`, and
the short queue commands below). Every subcommand returns its exit status: 0 success,
1 a finding (damage for `inspect --verify`, an unknown job for
`inspect --job`), 2 a usage error or a path that cannot be used, with a
one-line message on stderr. `inspect` is read-only and takes no lock;
`stats` and `requeue-dead` open the queue like an application does, and
`worker` imports the application's module and runs its tasks. Installed, the
same commands are the `logq` console script (`script`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from . import inspect as _inspect, inspect_text as _inspect_text, worker as _worker_command
from ..errors import LogqError, NotALogqDirectory
from ..backends.redisurl import is_redis_url
from ..queue import Queue
from ..runtime.worker import KINDS

Command = Callable[[argparse.Namespace], int]

_INSPECT_EXAMPLES = """\
examples:
  python -m logq inspect data/jobs                  summary: segments, jobs per state, torn tail
  python -m logq inspect data/jobs --verify         check every record; exit 1 on damage
  python -m logq inspect data/jobs --records --type fail --limit 20
  python -m logq inspect data/jobs --records --from 1000 --to 1100 --payload
  python -m logq inspect data/jobs --job 42         one job's history, state after each record
  python -m logq inspect data/jobs --json | jq .jobs
  python -m logq inspect data/jobs --records --json | jq 'select(.type == "fail")'
  python -m logq inspect data/jobs/00000000000000000001.seg
  python -m logq inspect redis://localhost:6379/0 --name jobs [--job 42] [--json]

Read-only: takes no lock and writes nothing, so it is safe on a queue that is
open in another process. Exit status: 0 ok, 1 damage found by --verify (or no
such job for --job), 2 a missing path, not a logq queue, another file format
or a newer format version.
"""

_STATS_EXAMPLES = """\
examples:
  python -m logq stats data/jobs
  python -m logq stats data/jobs --json | jq .counts
  python -m logq stats redis://localhost:6379/0 --name jobs

Opens the queue like an application: takes the writer lock (fails with exit 2
if the queue is open elsewhere), cuts a torn tail and returns leases held by a
process that is gone to pending. For a read-only look use `inspect`.
"""

_REQUEUE_EXAMPLES = """\
examples:
  python -m logq requeue-dead data/jobs
  python -m logq requeue-dead data/jobs --name send_email --limit 100
  python -m logq requeue-dead redis://localhost:6379/0 --queue jobs

Dead jobs become pending again, due now, with a fresh count of attempts.
Takes the writer lock (exit 2 if the queue is open elsewhere).
"""

_COMPACT_EXAMPLES = """\
examples:
  python -m logq compact data/jobs
  python -m logq compact data/jobs --retain-done 0 --retain-dead 86400

Seals the active segment and rewrites the log without the jobs that are done,
cancelled or dead and past retention. Takes the writer lock (exit 2 if the
queue is open elsewhere). A crash at any moment leaves the old or the new files.
"""

_WORKER_EXAMPLES = """\
examples:
  python -m logq worker app:q                        the tasks registered on q in app.py, 4 threads
  python -m logq worker app:q --concurrency 8 --kind process
  python -m logq worker app:q --names resize,thumbnail --grace 60 --log-level DEBUG
  python -m logq worker app:make_queue               a function in app.py that returns the Queue

Imports MODULE from the current directory and runs the tasks registered on the
logq.Queue that ATTR names (or that ATTR, a function taking no arguments,
returns). Logs to stderr (DEBUG logs each finished job). The first SIGINT or
SIGTERM stops leasing and gives running tasks the grace time to finish (exit
0); a second one releases them at once. Exit 2, with one line on stderr, if the
module, the attribute or the queue cannot be loaded. Other processes (producers,
more workers, stats, requeue-dead) may have the queue open at the same time.
"""

_DEMO_EXAMPLES = """\
examples:
  python -m logq demo                        200 simulated downloads with 4 workers
  python -m logq demo --dir /tmp/d --workers 8 --jobs 1000
  python -m logq demo --enqueue              add another round of jobs to the queue

Press Ctrl-C (or kill -9) and run the same command again: it resumes.
"""


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m logq") -> int:
    """Run one subcommand (`argv`, by default the process's arguments); return its exit status."""
    parser = _parser(prog)
    ns = parser.parse_args(argv)
    command: Command = ns.run
    try:
        return command(ns)
    except BrokenPipeError:  # e.g. `inspect --records | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (LogqError, OSError) as exc:
        print(f"logq {ns.command}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def script() -> int:
    """The `logq` console script (pyproject.toml): the same commands as `python -m logq`."""
    return main(prog="logq")


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split())


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="logq: an embedded, persistent job queue.",
        epilog="Run `python -m logq SUBCOMMAND --help` for a subcommand's options and examples.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    _add_inspect(sub)
    demo = _add(sub, "demo", "run a demo job that resumes after Ctrl-C or kill -9", _DEMO_EXAMPLES, _demo)
    demo.add_argument("--dir", default="logq-demo", help="queue directory (default: logq-demo)")
    demo.add_argument("--workers", type=_positive, default=4, help="worker threads (default: 4)")
    demo.add_argument("--jobs", type=_count, default=200, help="jobs to enqueue (default: 200)")
    demo.add_argument("--enqueue", action="store_true", help="enqueue the jobs even if the queue has some")
    compact = _add(sub, "compact", "remove finished jobs from the log (beside any other process)", _COMPACT_EXAMPLES, _compact)
    compact.add_argument("dir", metavar="DIR", help="queue directory")
    compact.add_argument("--retain-done", type=float, default=3600.0, metavar="SECONDS",
                         help="keep done and cancelled jobs this long after they finished (default 3600)")
    compact.add_argument("--retain-dead", type=float, default=7 * 86400.0, metavar="SECONDS",
                         help="keep dead jobs this long (default 604800, a week)")
    compact.add_argument("--json", action="store_true", help="print the report as JSON")
    stats = _add(sub, "stats", "open the queue (beside any other process) and print its statistics",
                 _STATS_EXAMPLES, _stats)
    stats.add_argument("dir", metavar="DIR", help="queue directory, or a Redis URL")
    stats.add_argument("--name", dest="queue", metavar="QUEUE", help="with a Redis URL: the queue's name")
    stats.add_argument("--json", action="store_true", help="print one JSON document")
    requeue = _add(sub, "requeue-dead", "make dead jobs pending again (opens the queue, beside any other process)",
                   _REQUEUE_EXAMPLES, _requeue_dead)
    requeue.add_argument("dir", metavar="DIR", help="queue directory, or a Redis URL")
    requeue.add_argument("--queue", help="with a Redis URL: the queue's name")
    requeue.add_argument("--name", help="only jobs of this task name")
    requeue.add_argument("--limit", type=_count, help="at most N jobs")
    _add_worker(sub)
    return parser


def _add_worker(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = _add(sub, "worker", "run a queue's registered tasks in this process until SIGINT/SIGTERM",
             _WORKER_EXAMPLES, _worker)
    p.add_argument("target", metavar="MODULE:ATTR",
                   help="the module to import (from the current directory) and the logq.Queue in it")
    p.add_argument("--concurrency", type=_positive, default=4, metavar="N",
                   help="worker slots: threads, processes or coroutines (default: 4)")
    p.add_argument("--kind", choices=KINDS, default="thread",
                   help="thread (default), process (forked children, for CPU-bound tasks) or async")
    p.add_argument("--names", type=_names, metavar="A,B",
                   help="run only these registered tasks (default: all)")
    p.add_argument("--grace", type=_seconds, default=30.0, metavar="S",
                   help="seconds running tasks may finish after the first stop signal (default: 30)")
    p.add_argument("--log-level", type=str.upper, choices=_worker_command.LEVELS, default="INFO",
                   help="least severe level logged to stderr (default: INFO; DEBUG logs each finished job)")


def _add(sub: "argparse._SubParsersAction[argparse.ArgumentParser]", name: str, summary: str,
         examples: str, run: Command) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=summary, description=summary, epilog=examples,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=run)
    return p


def _add_inspect(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = _add(sub, "inspect", "read-only look at a queue directory or segment file (no lock)",
             _INSPECT_EXAMPLES, _inspect_command)
    p.add_argument("path", metavar="PATH", help="queue directory, one .seg file, or a Redis URL")
    p.add_argument("--name", dest="queue", metavar="QUEUE", help="with a Redis URL: the queue's name")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--records", action="store_true", help="dump records (filters below)")
    mode.add_argument("--verify", action="store_true", help="check every record; exit 1 on any damage")
    p.add_argument("--job", type=_count, metavar="ID",
                   help="one job's history; with --records, only that job's records")
    p.add_argument("--json", action="store_true",
                   help="machine-readable: one JSON document (JSON lines with --records)")
    p.add_argument("--payload", action="store_true",
                   help="with --records or --job: print payloads whole, not a short preview")
    f = p.add_argument_group("record filters (with --records)")
    f.add_argument("--segment", metavar="SEG", help="only this segment (base sequence number or file name)")
    f.add_argument("--from", dest="first", type=_count, metavar="SEQ", help="from this sequence number")
    f.add_argument("--to", dest="last", type=_count, metavar="SEQ", help="up to this sequence number")
    f.add_argument("--type", dest="types", action="append", metavar="TYPE",
                   help="only these record types: enqueue, lease, ack, fail, release, extend, cancel, "
                        "retry, expire (repeat or separate with commas)")
    f.add_argument("--limit", type=_count, metavar="N", help="print at most N records")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, not negative: {text!r}")
    return value


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one task, e.g. --names resize,thumbnail")
    return names


def _positive(text: str) -> int:
    value = _count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# ------------------------------------------------------------------ dispatch

def _inspect_command(ns: argparse.Namespace) -> int:
    filters = [ns.segment, ns.first, ns.last, ns.types, ns.limit]
    if not ns.records and any(v is not None for v in filters):
        return _usage("--segment, --from, --to, --type and --limit need --records")
    if ns.payload and not (ns.records or ns.job is not None):
        return _usage("--payload needs --records or --job")
    if ns.verify and ns.job is not None:
        return _usage("--verify checks the whole queue; it does not take --job")
    if is_redis_url(ns.path):
        if ns.records or ns.verify:
            return _usage("a Redis queue has no records to dump or verify: use the summary or --job")
        from . import inspect_redis
        return inspect_redis.run(ns.path, ns.queue, ns.job, ns.json, ns.payload, sys.stdout, sys.stderr)
    if ns.queue is not None:
        return _usage("--name picks a queue on a Redis server; PATH is a directory")
    return _inspect.run(ns.path, records=ns.records, job=ns.job, verify_only=ns.verify, as_json=ns.json,
                        segment=ns.segment, first=ns.first, last=ns.last, types=ns.types,
                        limit=ns.limit, whole=ns.payload)


def _demo(ns: argparse.Namespace) -> int:
    from . import demo as demo  # imported only when asked for: it starts threads
    return demo.run(dir=ns.dir, workers=ns.workers, jobs=ns.jobs, enqueue=ns.enqueue)


def _worker(ns: argparse.Namespace) -> int:
    return _worker_command.run(ns.target, concurrency=ns.concurrency, kind=ns.kind, names=ns.names,
                               grace=ns.grace, log_level=ns.log_level)


def _compact(ns: argparse.Namespace) -> int:
    """Open the queue (taking its lock), seal the active segment and compact everything."""
    _must_exist(ns.dir)
    with Queue(ns.dir, retain_done=ns.retain_done, retain_dead=ns.retain_dead, compact_threshold=None) as q:
        before = q.stats().bytes_on_disk
        report = q.compact(include_active=True)
        after = q.stats().bytes_on_disk
    fields = {name: getattr(report, name) for name in report.__dataclass_fields__}
    if ns.json:
        print(_inspect_text.to_json(dict(fields, bytes_on_disk_before=before, bytes_on_disk_after=after)))
        return 0
    print(f"compacted {report.segments_in} segment(s): {report.jobs_swept:,} jobs swept, "
          f"{report.records_kept:,} records kept, {report.records_dropped:,} dropped in {report.seconds:.2f}s")
    print(f"bytes on disk: {before:,} -> {after:,}")
    return 0


def _stats(ns: argparse.Namespace) -> int:
    """Open the queue (taking its lock) and print `Queue.stats()`."""
    with _open(ns) as q:
        s = q.stats()
    fields = {name: getattr(s, name) for name in s.__dataclass_fields__}
    if ns.json:
        print(_inspect_text.to_json(fields))
        return 0
    print(f"jobs: {', '.join(f'{n:,} {state}' for state, n in s.counts.items())}")
    print(f"due now: {s.due:,}")
    age = "-" if s.oldest_pending_age is None else f"{s.oldest_pending_age:.1f}s"
    print(f"oldest pending job: {age} old")
    print(f"segments: {s.segments} ({s.bytes_on_disk:,} bytes on disk, {s.live_bytes:,} bytes of live jobs)")
    print(f"sequence: last {s.last_seq:,}, durable {s.durable_seq:,}")
    return 0


def _requeue_dead(ns: argparse.Namespace) -> int:
    """Open the queue and `retry` every dead job (of `--name`, at most `--limit`)."""
    with _open(ns) as q:
        dead = q.jobs(state="dead", name=ns.name, limit=ns.limit)
        for job in dead:
            q.retry(job.id)
    print(f"requeued {len(dead)} dead job(s) in {ns.dir}")
    return 0


def _open(ns: argparse.Namespace) -> Queue:
    """The queue of `stats` and `requeue-dead`: a directory that exists, or a Redis URL
    with the queue's name (`--name`/`--queue`, default "default")."""
    if is_redis_url(ns.dir):
        return Queue(ns.dir, name=ns.queue)
    if ns.queue is not None:
        raise NotALogqDirectory(f"the queue name picks a queue on a Redis server, and {ns.dir} is not a Redis URL")
    _must_exist(ns.dir)
    return Queue(ns.dir)


def _must_exist(path: str) -> None:
    """Commands that open a queue must not create one by mistake: refuse what is not a queue."""
    if _inspect.open_target(path).single:
        raise NotALogqDirectory(f"{path} is a file: pass the queue directory")


def _usage(message: str, command: str = "inspect") -> int:
    print(f"logq {command}: {message}", file=sys.stderr)
    return 2

