"""The timetable: where each pending or active job waits, in the order it will be taken.

Theory of operation
-------------------
Each pending or active job sits in exactly one of three queues, through the
tuple in `Entry.slot` (but for the moment between a live lease's `take_ready`,
which takes the tuple out of its ready queue, and its LEASE record): a ready
job in its task name's `Ready` queue, ordered by (-priority, run_at, id); a
delayed job in one heap by (run_at, id); an active job in one heap by
(expires, id). The queues are cleaned lazily: a tuple that is no longer its
job's slot is stale, and is dropped when it comes up. `_tops` lists each task
name that has ready jobs with an item no larger than any of them, so that a
lease of any name looks at the smallest listing rather than at every name.

The `Index` owns one timetable over its jobs and calls it from its
transitions; the timetable changes slots and its own counts of ready jobs,
never a job's state. Time enters only as arguments (`promote(now)`,
`expired(now)`).
"""

from __future__ import annotations

from collections import deque
from heapq import heapify, heappop, heappush, heapreplace
from operator import attrgetter
from typing import Iterable, Iterator

from .entry import Entry
from .jobs import PENDING

PRUNE_SLACK = 4096  # stale lease items and listings tolerated beyond twice the live ones


ReadyItem = tuple[int, float, int]  # (-priority, run_at, id): smaller is leased first


def _ready_item(e: Entry) -> ReadyItem:
    return (-e.priority, e.run_at, e.id)


class Ready:
    """The ready jobs of one task name, as items `ReadyItem`, smallest first.

    Items that arrive in ascending order (jobs enqueued in order, due at once,
    of equal priority: the common case) are appended to `run`, a sorted deque;
    the others go to `heap`. The smallest item is at the front of one of the
    two, so push and pop cost O(1) for in-order arrivals, O(log n) otherwise.
    """

    __slots__ = ("run", "heap")

    def __init__(self) -> None:
        self.run: deque[ReadyItem] = deque()
        self.heap: list[ReadyItem] = []

    @classmethod
    def of(cls, items: list[ReadyItem]) -> "Ready":
        """A Ready holding `items`, in any order (sorted here, in place: in order already,
        as a snapshot lists most jobs, that takes one pass)."""
        ready = cls()
        items.sort()
        ready.run = deque(items)
        return ready

    def push(self, item: ReadyItem) -> None:
        run = self.run
        if not run or run[-1] < item:
            run.append(item)
        else:
            heappush(self.heap, item)

    def top(self) -> ReadyItem | None:
        """The smallest item, or None when there is none."""
        run, heap = self.run, self.heap
        if heap and (not run or heap[0] < run[0]):
            return heap[0]
        return run[0] if run else None

    def pop(self) -> ReadyItem:
        """Remove and return the smallest item (there must be one)."""
        run, heap = self.run, self.heap
        if heap and (not run or heap[0] < run[0]):
            return heappop(heap)
        return run.popleft()


class Timetable:
    """The ready queues, the delayed heap and the lease heap of the jobs in `jobs`."""

    def __init__(self, jobs: dict[int, Entry]) -> None:
        self.jobs = jobs  # the index's jobs (the index sets it anew when it adopts a snapshot)
        self.n_ready = 0
        self.ready_by_name: dict[str, int] = {}  # n_ready per task name (names once ready stay, at 0)
        self._ready: dict[str, Ready] = {}
        self._tops: list[tuple[ReadyItem, str]] = []
        self._listed: dict[str, ReadyItem] = {}
        self._delayed: list[tuple[float, int]] = []
        self._leases: list[tuple[float, int]] = []

    # ------------------------------------------------------------ placing jobs

    def schedule(self, e: Entry, run_at: float, now: float) -> None:
        """Put a pending job in its ready queue if due at `now`, else in the delayed heap."""
        e.run_at = run_at
        if run_at <= now:
            self.push_ready(e)
        else:
            e.slot = item = (run_at, e.id)
            heappush(self._delayed, item)

    def push_ready(self, e: Entry) -> None:
        """Put job `e` in its task's ready queue, counted."""
        e.slot = item = _ready_item(e)
        self._queue_ready(e.name, item)
        self.n_ready += 1
        by_name = self.ready_by_name
        by_name[e.name] = by_name.get(e.name, 0) + 1

    def push_lease(self, e: Entry, active: int) -> None:
        """Put active job `e` in the lease heap by its expiry; `active` is how many jobs are
        active (stale items are pruned when they outnumber them)."""
        assert e.expires is not None
        e.slot = item = (e.expires, e.id)
        leases = self._leases
        heappush(leases, item)
        if len(leases) > 2 * active + PRUNE_SLACK:
            self._prune_leases()

    def unslot(self, e: Entry) -> None:
        """Take job `e` out of the queue it sits in, if any (a ready job is no longer counted)."""
        slot = e.slot
        if slot is not None:
            if len(slot) == 3:  # a ready item (`Entry.ready`, spelled out on this hot path)
                self.n_ready -= 1
                self.ready_by_name[e.name] -= 1
            e.slot = None

    def adopt(self, ready: dict[str, list[ReadyItem]]) -> None:
        """Build the ready queues of a snapshot's jobs at once (`Ready.of`), their items
        already set as the jobs' slots."""
        for name, items in ready.items():
            self._ready[name] = built = Ready.of(items)
            self._list(name, built.run[0])
            self.n_ready += len(items)
            self.ready_by_name[name] = self.ready_by_name.get(name, 0) + len(items)

    def _queue_ready(self, name: str, item: ReadyItem) -> None:
        """Put `item` in task `name`'s ready queue; list the task if `item` is smaller than
        its listing."""
        ready = self._ready.get(name)
        if ready is None:
            ready = self._ready[name] = Ready()
        ready.push(item)
        listed = self._listed.get(name)
        if listed is None or item < listed:
            self._list(name, item)

    def _list(self, name: str, item: ReadyItem) -> None:
        """List task `name` in `_tops` with `item`. Entries it no longer holds are
        dropped when they come up in a lease of any name, or here, all at once, when
        they outnumber the names (leases that name their tasks never reach them)."""
        listed, tops = self._listed, self._tops
        listed[name] = item
        heappush(tops, (item, name))
        if len(tops) > 2 * len(listed) + PRUNE_SLACK:
            self._tops = [(each, task) for task, each in listed.items()]
            heapify(self._tops)

    def _prune_leases(self) -> None:
        """Drop the stale items of the lease heap. A finished lease leaves its item
        until its expiry time comes (lease_time x ack rate items, for a busy
        consumer); pruning when stale items outnumber live ones keeps the heap
        within twice the active jobs, at O(1) amortized cost."""
        self._leases = [item for item, _ in self._live_leases()]
        heapify(self._leases)

    def _live_leases(self) -> Iterator[tuple[tuple[float, int], Entry]]:
        """The items of the lease heap that are their job's current lease, with the job."""
        jobs = self.jobs
        for item in self._leases:
            e = jobs.get(item[1])
            if e is not None and e.slot is item:
                yield item, e

    # ----------------------------------------------------------- taking jobs

    def promote(self, now: float) -> None:
        """Move delayed jobs whose run_at has come into the ready queues."""
        delayed, jobs = self._delayed, self.jobs
        while delayed and delayed[0][0] <= now:
            item = heappop(delayed)
            e = jobs.get(item[1])
            if e is not None and e.slot is item:
                self.push_ready(e)

    def best_ready(self, names: frozenset[str] | None) -> Entry | None:
        """The next job to lease among `names` (all if None): priority, run_at, id."""
        if names is None:
            return self._best_of_all()
        best: ReadyItem | None = None
        for name in names:
            top = self._live_top(name)
            if top is not None and (best is None or top < best):
                best = top
        return None if best is None else self.jobs[best[2]]

    def _best_of_all(self) -> Entry | None:
        """`best_ready` of every name: the smallest listing, once it is its name's live
        smallest item (each listing is no larger than its name's items, so the
        smallest listing that is bounds them all)."""
        tops, listed = self._tops, self._listed
        while tops:
            item, name = tops[0]
            if listed.get(name) is not item:  # a name listed again since, or forgotten
                heappop(tops)
                continue
            top = self._live_top(name)
            if top is None:
                heappop(tops)
                continue
            if top is item:
                return self.jobs[top[2]]
            listed[name] = top
            entry = (top, name)
            heapreplace(tops, entry)
            if tops[0] is entry:
                return self.jobs[top[2]]
        return None

    def _live_top(self, name: str) -> ReadyItem | None:
        """The smallest item of task `name`'s ready queue whose job still waits there,
        dropping the stale items before it (jobs that left since; a job swept by
        compaction is one too); None, with the queue and its listing forgotten, if
        there is none."""
        ready = self._ready.get(name)
        if ready is None:
            return None
        jobs = self.jobs
        while True:
            top = ready.top()
            if top is None:
                del self._ready[name]
                del self._listed[name]
                return None
            e = jobs.get(top[2])
            if e is not None and e.slot is top:
                return top
            ready.pop()

    def take_ready(self, names: frozenset[str] | None, limit: int) -> list[Entry]:
        """Take up to `limit` jobs to lease next, best first (`best_ready` repeated), their
        items out of their ready queues (the job, its slot and the counts are left as
        they are: the LEASE record the caller applies next changes them, as in replay;
        if it is not written, the caller hands them back with `put_back`)."""
        taken: list[Entry] = []
        while True:
            e = self.best_ready(names)
            if e is None:
                break
            self._ready[e.name].pop()  # best_ready finds it on top
            taken.append(e)
            if len(taken) == limit:
                break
        return taken

    def put_back(self, taken: Iterable[Entry]) -> None:
        """Return the items of jobs that `take_ready` took, and that are still ready
        (their LEASE was not written), to their ready queues."""
        for e in taken:
            if e.state == PENDING and e.ready:
                self._queue_ready(e.name, e.slot)  # type: ignore[arg-type]

    def expired(self, now: float) -> list[Entry]:
        """Active jobs whose lease ended at or before `now` (they stay active until applied)."""
        leases, jobs = self._leases, self.jobs
        found = []
        while leases and leases[0][0] <= now:
            item = heappop(leases)
            e = jobs.get(item[1])
            if e is not None and e.slot is item:
                found.append(e)
        return found

    def next_wakeup(self) -> float | None:
        """The earliest time at which a delayed job becomes due or a lease expires."""
        times = [h[0][0] for h in (self._delayed, self._leases) if h]
        return min(times) if times else None

    def active_jobs(self) -> list[Entry]:
        """The active jobs in id order, found through the lease heap (so an open after a
        crash need not look at every job). Each active job's item is there, except
        that of one `expired` has just handed to the caller who expires it."""
        return sorted((e for _, e in self._live_leases()), key=attrgetter("id"))

