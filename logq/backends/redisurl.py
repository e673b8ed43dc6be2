"""Which paths name a Redis server (without importing the Redis backend or its client)."""

from __future__ import annotations

SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(path: str) -> bool:
    """Whether `path` is a Redis URL (`logq.Queue` then opens the Redis backend)."""
    return path.startswith(SCHEMES)
