"""The version of a Redis queue's key layout, and the check at open.

Theory of operation
-------------------
The keys of queue NAME (redis_scripts/logq.lua's header lists them) change
shape from time to time, and a logq cannot read another shape. So each queue
carries the number of its layout in the key `{logq:NAME}:layout`: the queue's
first enqueue writes it (the script that makes the sequence counter, so a
queue with jobs always has it), and `check` reads it at every open, writing
nothing. A new queue (no counter, no version) opens; so does one of LAYOUT;
any other, or one with a counter and no version (written before there was
one), is refused with `LayoutVersionError`, nothing changed.
"""

from __future__ import annotations

from typing import Any

from ..errors import LayoutVersionError

LAYOUT = 1
"""The layout this logq reads and writes; the enqueue script writes the same number."""
KEY = "layout"


def check(r: Any, prefix: str, name: str, server: str) -> None:
    """Refuse queue `name` (keys `prefix`...) on redis-py client `r` unless it is new or of LAYOUT."""
    pipe = r.pipeline(transaction=False)
    pipe.get(prefix + KEY)
    pipe.exists(prefix + "seq")
    stamp, used = pipe.execute()
    if stamp is None and not used:
        return
    found = None if stamp is None else stamp.decode(errors="replace") if isinstance(stamp, bytes) else str(stamp)
    if found == str(LAYOUT):
        return
    what = f"an older layout (it has jobs but no {prefix}{KEY} key)" if found is None else f"layout {found!r:.20}"
    raise LayoutVersionError(
        f"the queue {name!r} on {server} was written in {what}, and this logq reads layout {LAYOUT} only: "
        f"drain it with the logq that wrote it, or delete its keys (those matching '{prefix}*'), "
        "then open it again")
