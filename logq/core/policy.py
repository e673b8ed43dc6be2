"""What happens to a job that failed, lost its lease or runs on a schedule. Pure: time is an argument.

Every backend decides with these functions, so that a failed attempt is
retried, or dead, at the same moment whatever keeps the jobs; the decision is
written in the record (`Outcome`), and applying the record needs no policy.

- A failed attempt (`failure`) is retried after its backoff delay (the job's own
  `Backoff`, else the queue's) while attempts remain and retry is allowed;
  otherwise the job is dead.
- A lease that expired or was lost (`expiry`) makes the job pending at once,
  its attempt counted, or dead once `max_attempts` are used up.
- A periodic task's next run (`next_slot`) is the first time on its grid
  after now, so that runs missed while stopped collapse into one.
"""

from __future__ import annotations

import math

from .index import Entry
from .jobs import Backoff
from .records import Outcome


def failure(e: Entry, now: float, error: str, retry: bool, default: Backoff) -> Outcome:
    """The FAIL outcome of leased job `e` at `now`: dead when `retry` is False or its
    attempts reach max_attempts, else pending again after the backoff delay."""
    if not retry or e.attempts >= e.max_attempts:
        return Outcome(e.id, now, True, now, error)
    own = e.extra.backoff if e.extra is not None and e.extra.backoff else None
    delay = (Backoff(*own) if own else default).delay(e.attempts)
    return Outcome(e.id, now, False, now + delay, error)


def expiry(e: Entry, now: float, reason: str) -> Outcome:
    """The EXPIRE outcome of a lease that ended (`reason` says how): pending again at
    `now`, or dead when the attempts are used up."""
    return Outcome(e.id, now, e.attempts >= e.max_attempts, now, reason)


def next_slot(slot: float, every: float, now: float) -> float:
    """The first time on the grid slot + k * every that is after `now` (k >= 1). A grid
    too fine for floats at `now` (a tiny `every`: the count of steps overflows, or the
    step is lost in rounding) saturates: the next run is the first float after `now`."""
    steps = (now - slot) / every
    if math.isfinite(steps):
        at = slot + every * max(1, math.floor(steps) + 1)
        if now < at < math.inf:
            return at
    return max(math.nextafter(now, math.inf), now + every)


def error_text(error: str | BaseException) -> str:
    """The text a FAIL record stores for `error`: an exception as "Type: message", and
    valid UTF-8 (a lone surrogate becomes "?"), so that the text replay decodes is the
    text the live call applied."""
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}"
    try:
        error.encode()
    except UnicodeEncodeError:
        error = error.encode("utf-8", "replace").decode()
    return error
