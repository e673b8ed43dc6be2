"""The engine's queries: reading jobs and counts, and waiting for a job to finish.

A part of `Engine` (engine.py), apart because it changes nothing: every method
takes the engine's lock, reads the index and, for what the index does not
keep (payloads, results kept out of memory), the records in the store.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable

from ..core.index import Entry, Extra, Index
from ..core.jobs import FINAL_STATES, PENDING, JobInfo, Stats
from ..core.records import Enqueue, decode_enqueue, decode_job_at
from ..errors import WaitTimeout

if TYPE_CHECKING:
    from ..clock import Clock
    from ..core.timetable import Timetable
    from ..log.turns import Turn
    from .store import Store

MAX_WAIT = threading.TIMEOUT_MAX  # the longest one wait of a condition can be (the loops wait again)


class Queries:
    """Reads of the engine's jobs (mixed into `Engine`, which sets these attributes)."""

    clock: Clock
    _lock: "threading.Lock | Turn"
    _index: Index
    _timetable: Timetable
    _log: Store
    _finished: threading.Condition
    _watched: dict[int, int]
    _poll: Callable[[], float | None]

    def _check_indexed(self) -> None:
        raise NotImplementedError

    def get(self, job_id: int) -> JobInfo | None:
        with self._lock:
            self._check_indexed()
            e = self._index.jobs.get(job_id)
            return None if e is None else self._info(e)

    def select(self, state: str | None, name: str | None, limit: int | None) -> list[JobInfo]:
        with self._lock:
            self._check_indexed()
            picked: list[JobInfo] = []
            for e in self._index.select(state, name):
                if limit is not None and len(picked) >= limit:
                    break
                picked.append(self._info(e))
            return picked

    def _enqueue_of(self, e: Entry) -> Enqueue:
        """The job's ENQUEUE record, read back from the store (under the lock, so that a
        compaction cannot move it between finding and reading it)."""
        return decode_enqueue(self._log.read(e.segment, e.offset, e.size).payload)

    def _info(self, e: Entry) -> JobInfo:
        enq, extra = self._enqueue_of(e), e.extra
        return JobInfo(e.id, enq.name, enq.payload, e.attempts, enq.priority, enq.enqueued_at, e.expires,
                       enq.max_attempts, e.state, e.run_at,  # type: ignore[arg-type]
                       extra.last_error if extra else None, self._result_of(extra), enq.key)

    def _result_of(self, extra: Extra | None) -> bytes | None:
        """A done job's result: held in the index, or read back from its ACK record (under
        the lock, as `_enqueue_of`)."""
        if extra is None or extra.result_at is None:
            return None if extra is None else extra.result
        segment, loc = extra.result_at
        return decode_job_at(self._log.read(segment, loc >> 32, loc & 0xFFFFFFFF).payload).data

    def stats(self) -> Stats:
        with self._lock:
            self._check_indexed()
            now = self.clock.time()
            self._timetable.promote(now)
            oldest = self._index.oldest(PENDING)
            age = None if oldest is None else now - self._enqueue_of(oldest).enqueued_at
            counts, due, live = dict(self._index.counts), self._index.n_ready, self._index.live_bytes
            due_by_name = {name: n for name, n in self._index.ready_by_name.items() if n}
            segments = self._log.segments()
        return Stats(counts, due, age, len(segments), sum(size for _, size, _ in segments), live,
                     self._log.durable_seq, self._log.last_seq, due_by_name)

    def wait(self, job_id: int, timeout: float | None) -> JobInfo:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                self._check_indexed()
                e = self._index.check_exists(job_id)
                if e.state in FINAL_STATES:
                    return self._info(e)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WaitTimeout(f"job {job_id} is still {e.state} after {timeout}s")
                self._watched[job_id] = self._watched.get(job_id, 0) + 1
                try:
                    poll = self._poll() or MAX_WAIT
                    self._finished.wait(poll if remaining is None else min(remaining, poll))
                finally:
                    left = self._watched.pop(job_id) - 1
                    if left:
                        self._watched[job_id] = left
