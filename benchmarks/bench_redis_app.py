"""The no-op task of bench_redis.py's worker row, for each system's own worker command.

Each worker imports this module (from the benchmarks directory) and finds its server and queue
name in the environment: BENCH_REDIS_URL and BENCH_REDIS_NAME.
  logq:  python -m logq worker bench_redis_app:q --concurrency 1   (one per process, four of them)
  RQ:    rq worker --url URL NAME                                  (four of them)
  huey:  huey_consumer bench_redis_app.huey -w 4 -k process
"""

from __future__ import annotations

import os
from typing import Any

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NAME = os.environ.get("BENCH_REDIS_NAME", "bench")
SYSTEM = os.environ.get("BENCH_REDIS_SYSTEM", "")


def noop(*args: Any) -> None:
    """RQ's task (RQ imports it by its dotted name)."""


if SYSTEM == "logq":
    import logq

    q = logq.Queue(URL, name=NAME, sync="batch", retain_done=3600)

    @q.task("noop")
    def logq_noop(*args: Any) -> None:
        """logq's task."""

if SYSTEM == "huey":
    from huey import RedisHuey

    huey = RedisHuey(NAME, url=URL)

    @huey.task()
    def huey_noop(*args: Any) -> None:
        """huey's task."""
