"""A job as the index holds it: `Entry`, and its rarely set fields, `Extra`.

Pure data, shared by the index (`index.py`), the timetable that orders jobs
(`timetable.py`) and the snapshot layout (`snapshot.py`).
"""

from __future__ import annotations

from .jobs import PENDING


class Entry:
    """One job in the index. `extra` holds rarely set fields (error, result, backoff)."""

    __slots__ = ("id", "name", "state", "priority", "run_at", "attempts", "max_attempts",
                 "key", "expires", "segment", "loc", "slot", "extra", "last")

    def __init__(self, id: int, name: str, priority: int, run_at: float, max_attempts: int,
                 key: str | None, segment: int, loc: int, state: str = PENDING, attempts: int = 0) -> None:
        """A job as its ENQUEUE record makes it (pending, no attempt yet), or in `state`
        after `attempts` (a snapshot restores it so)."""
        self.id, self.name, self.state, self.priority = id, name, state, priority
        self.run_at, self.attempts, self.max_attempts, self.key = run_at, attempts, max_attempts, key
        self.expires: float | None = None
        self.segment, self.loc = segment, loc
        self.slot: tuple | None = None  # type: ignore[type-arg]
        self.extra: Extra | None = None
        self.last = id  # sequence number of the job's latest record

    @property
    def ready(self) -> bool:
        """Whether the job sits in a ready queue (its slot is a `ReadyItem`; a delayed
        or lease item has two fields)."""
        slot = self.slot
        return slot is not None and len(slot) == 3

    @property
    def size(self) -> int:
        return self.loc & 0xFFFFFFFF

    @property
    def offset(self) -> int:
        return self.loc >> 32


class Extra:
    """`result` is a done job's result, or None with `result_at` set: (segment, loc) of
    the ACK record that holds it (`Index.keep_result_at`)."""

    __slots__ = ("last_error", "result", "backoff", "finished_at", "result_at")

    def __init__(self) -> None:
        self.last_error: str | None = None
        self.result: bytes | None = None
        self.backoff: tuple[float, float, float, float] | None = None
        self.finished_at: float | None = None
        self.result_at: tuple[int, int] | None = None
