"""Fixtures shared by the tests: queue directories that verify, and the backends of the contract suite.

Every test that makes a queue directory leaves one that verifies. The contract
suite (tests/test_queue.py, test_queue_threads.py, test_queue_model.py, the
worker tests) opens its queues through `queue_factory`, once per backend in
`BACKENDS`; a test that needs more than the semantics every backend keeps says
so with `@pytest.mark.needs("durable")` (a `Capabilities` field) and is skipped
on backends without it; a white-box test that looks inside the shared engine
(`backends.engine.Engine`: its lock, conditions and store) says
`needs("engine")`. A new backend joins the suite with one entry in `BACKENDS`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from hypothesis import settings

from logq import Queue
from logq.backends.base import Capabilities
from logq.backends.local import LocalBackend
from logq.backends.memory import MemoryBackend
from logq.backends.redis import CAPABILITIES as REDIS_CAPABILITIES
from logq.log.verify import verify

from . import redis_server as _redis

# No example database: runs start fresh and nothing is written into the checkout.
settings.register_profile("logq", database=None)
settings.load_profile("logq")


@dataclass(frozen=True)
class Backend:
    """How the contract suite opens one backend: the address of a fresh queue, given a
    fresh directory the test owns, and what the backend offers."""

    address: Callable[[str], str]
    capabilities: Capabilities
    engine: bool
    """Built on `backends.engine.Engine` (white-box tests of the engine apply)."""


REDIS: dict[str, str] = {}  # "url": the session's server (the `redis_server` fixture)


def _redis_address(directory: str) -> str:
    """A queue of its own on the session's server for each directory (so each test's)."""
    name = "t" + hashlib.blake2b(directory.encode(), digest_size=8).hexdigest()
    return f"{REDIS['url']}?name={name}"


BACKENDS: dict[str, Backend] = {
    "local": Backend(lambda directory: directory, LocalBackend.capabilities, engine=True),
    "memory": Backend(lambda directory: ":memory:", MemoryBackend.capabilities, engine=True),
    "redis": Backend(_redis_address, REDIS_CAPABILITIES, engine=False),
}


class QueueFactory:
    """Opens queues of one backend: `factory(**options)` at the test's address,
    `factory.at(directory, **options)` at a fresh one of the test's own."""

    def __init__(self, name: str, backend: Backend, directory: str) -> None:
        self.name, self.backend, self.path = name, backend, backend.address(directory)
        self.capabilities = backend.capabilities

    def __call__(self, **options: Any) -> Queue:
        return Queue(self.path, **options)

    def at(self, directory: str, **options: Any) -> Queue:
        return Queue(self.backend.address(directory), **options)

    def __repr__(self) -> str:
        return f"<QueueFactory {self.name}>"


@pytest.fixture
def qdir(tmp_path):
    """A fresh queue directory, verified (read-only) after the test."""
    path = str(tmp_path / "q")
    yield path
    if os.path.isdir(path):
        result = verify(path)
        assert result.ok, result.problems


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server for the session on a free loopback port, with its own data directory
    (append-only file, fsynced on every write); stopped after. Skips (fails under CI=true)
    when redis-server is not installed."""
    server = _redis.RedisServer(_redis.find(), str(tmp_path_factory.mktemp("redis")))
    server.start()
    REDIS["url"] = server.url
    yield server
    server.stop()


@pytest.fixture(params=list(BACKENDS))
def queue_factory(request, qdir) -> QueueFactory:
    """Opens queues of each backend in turn; skips what the test `needs` and the backend lacks."""
    if request.param == "redis":
        request.getfixturevalue("redis_server")
    factory = QueueFactory(request.param, BACKENDS[request.param], qdir)
    for marker in request.node.iter_markers("needs"):
        for need in marker.args:
            if not getattr(factory.capabilities, need, None) and not getattr(factory.backend, need, None):
                pytest.skip(f"the {request.param} backend is not {need}")
    return factory
