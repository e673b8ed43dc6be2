"""Calling logq's Redis scripts with little client work per call.

Theory of operation
-------------------
On a small script redis-py spends more time per call than the server does: it
encodes each argument through its encoder, takes a connection from its pool
and gives it back, and wraps the call in its retry machinery. The backend's
calls of its scripts come here instead. `pack` makes the whole EVALSHA
command in one pass (arguments are bytes, str or int; the command's head, with
the script's hash and the queue's key, is made once per script); it is sent on
a connection kept in a free list (taken with `list.pop` and given back with
`list.append`, both atomic, so threads share the list and each call has a
connection of its own), and the reply is read by the connection's own parser.

Anything unusual goes to redis-py's ordinary call, so behaviour is redis-py's:
a connection or timeout error (the server restarted, a connection went stale)
closes the connection and makes the same call through redis-py, with its
retries (which, as for any redis-py call, may run a script again whose reply
was lost); NOSCRIPT (the server lost its scripts) loads the script again there.
An error reply is raised as redis-py's `ResponseError`. After a fork the child
starts a free list of its own: it must not share the parent's sockets.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Sequence

_DEFINES = re.compile(r"^(?:--[^\n]*\n)*local function (\w+)")


def split_scripts(text: str) -> dict[str, str]:
    """One script per "-- @op NAME" section of `text`: the section after the prelude (the
    text before the first section), keeping of the prelude's helper functions (blocks separated
    by a blank line, "local function NAME") only those the section uses, directly or through
    another helper: a script runs its whole prelude at every call."""
    prelude, *sections = text.split("\n-- @op ")
    blocks = prelude.split("\n\n")
    defines = {i: m.group(1) for i, block in enumerate(blocks) if (m := _DEFINES.match(block.strip("\n")))}
    scripts = {}
    for section in sections:
        name, _, body = section.partition("\n")
        used, text_in_use, grew = set(), body, True
        while grew:
            grew = False
            for i, fn in defines.items():
                if i not in used and re.search(rf"\b{fn}\b", text_in_use):
                    used.add(i)
                    text_in_use += blocks[i]
                    grew = True
        kept = [block for i, block in enumerate(blocks) if i not in defines or i in used]
        scripts[name.strip()] = "\n\n".join(kept) + "\n" + body
    return scripts


def bulk(value: bytes) -> bytes:
    """`value` as one RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


def pack(head: bytes, heads: int, args: Sequence[bytes | str | int]) -> bytes:
    """The RESP array of `heads` packed bulks (`head`) followed by `args`."""
    parts = [b"*%d\r\n" % (heads + len(args)), head]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif not isinstance(a, bytes):
            a = b"%d" % a
        parts.append(b"$%d\r\n%b\r\n" % (len(a), a))
    return b"".join(parts)


class Scripts:
    """The scripts `sources` (op -> Lua source), each called with the one key `key` on the
    server of redis-py client `client`."""

    def __init__(self, client: Any, sources: dict[str, str], key: str, exceptions: Any) -> None:
        """`exceptions` is the client's module `redis.exceptions`."""
        self._client = client
        self._pool = client.connection_pool
        self._key = key
        self._slow = {op: client.register_script(src) for op, src in sources.items()}
        self._heads = {op: bulk(b"EVALSHA") + bulk(hashlib.sha1(src.encode()).hexdigest().encode()) + bulk(b"1")
                       + bulk(key.encode()) for op, src in sources.items()}
        self._response_error = exceptions.ResponseError
        self._noscript = exceptions.NoScriptError
        self._retried = (exceptions.ConnectionError, exceptions.TimeoutError)
        self._free: list[Any] = []
        self._pid = os.getpid()

    def call(self, op: str, args: Sequence[bytes | str | int]) -> Any:
        """The reply of script `op` run with `args` (see the module docstring)."""
        data = pack(self._heads[op], 4, args)
        conn = self._take()
        if conn is None:
            return self.slow(op, args)
        try:
            conn.send_packed_command((data,))
            reply = conn.read_response()
        except self._response_error as exc:
            self._free.append(conn)
            if isinstance(exc, self._noscript):
                return self.slow(op, args)
            raise
        except self._retried:
            self._drop(conn)
            return self.slow(op, args)
        except BaseException:
            self._drop(conn)
            raise
        self._free.append(conn)
        return reply

    def call_then(self, op: str, args: Sequence[bytes | str | int], then: Sequence[str]) -> tuple[Any, Any]:
        """The replies of script `op` run with `args` and of command `then` sent after it on the
        same connection, in one round trip (WAIT and WAITAOF wait for their own connection's
        writes). Anything unusual goes through a redis-py pipeline, which also uses one connection."""
        data = pack(self._heads[op], 4, args) + pack(b"", 0, then)
        conn = self._take()
        if conn is None:
            return self._slow_then(op, args, then)
        try:
            conn.send_packed_command((data,))
            reply = conn.read_response()
            after = conn.read_response()
        except self._response_error as exc:  # the second reply may be unread: drop the connection
            self._drop(conn)
            if isinstance(exc, self._noscript):
                return self._slow_then(op, args, then)
            raise
        except self._retried:
            self._drop(conn)
            return self._slow_then(op, args, then)
        except BaseException:
            self._drop(conn)
            raise
        self._free.append(conn)
        return reply, after

    def _slow_then(self, op: str, args: Sequence[bytes | str | int], then: Sequence[str]) -> tuple[Any, Any]:
        pipe = self._client.pipeline(transaction=False)
        self._slow[op](keys=[self._key], args=list(args), client=pipe)
        pipe.execute_command(*then)
        reply, after = pipe.execute()
        return reply, after

    def _take(self) -> Any:
        """A connection of this process's free list, or a new one; None if none can be made."""
        if self._pid != os.getpid():
            self._free, self._pid = [], os.getpid()
        try:
            return self._free.pop()
        except IndexError:
            try:
                return self._pool.get_connection()
            except self._retried:
                return None

    def slow(self, op: str, args: Sequence[bytes | str | int]) -> Any:
        """Script `op` through redis-py's own call (loads the script if the server lacks it)."""
        return self._slow[op](keys=[self._key], args=list(args))

    def _drop(self, conn: Any) -> None:
        conn.disconnect()
        self._pool.release(conn)
