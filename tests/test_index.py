"""The index's ready queue: a sorted run plus a heap must behave as one priority queue."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from logq.core.index import Ready

items = st.tuples(st.integers(-3, 3), st.sampled_from([0.0, 1.0, 2.5, 7.0]), st.integers(0, 10**6))
ops = st.lists(st.one_of(items, st.just("pop")), max_size=200)


@given(ops)
def test_ready_pops_in_ascending_order_whatever_the_arrival_order(script: list) -> None:  # type: ignore[type-arg]
    ready, model = Ready(), []
    seen = set()
    for op in script:
        if op == "pop":
            assert ready.top() == (min(model) if model else None)
            if model:
                smallest = min(model)
                model.remove(smallest)
                assert ready.pop() == smallest
        elif op not in seen:  # ids are unique in the index, so items are too
            seen.add(op)
            ready.push(op)
            model.append(op)
    assert sorted(model) == [ready.pop() for _ in model]
    assert ready.top() is None


@given(st.lists(items, unique_by=lambda item: item[2], max_size=100), st.lists(items, max_size=20))
def test_a_ready_built_at_once_pops_like_one_built_by_pushes(first: list, later: list) -> None:  # type: ignore[type-arg]
    built = Ready.of(list(first))
    pushed = Ready()
    for item in first:
        pushed.push(item)
    seen = {item[2] for item in first}
    for item in later:  # pushes after the build keep the order
        if item[2] not in seen:
            seen.add(item[2])
            built.push(item)
            pushed.push(item)
    out = [built.pop() for _ in seen]
    assert out == [pushed.pop() for _ in seen] == sorted(out)
    assert built.top() is None


def test_in_order_arrivals_stay_in_the_run_and_others_go_to_the_heap() -> None:
    ready = Ready()
    for i in range(5):
        ready.push((0, 1.0, i))
    ready.push((-1, 1.0, 9))  # a higher priority arrives late: smaller than the run's tail
    assert list(ready.run) == [(0, 1.0, i) for i in range(5)] and ready.heap == [(-1, 1.0, 9)]
    assert ready.pop() == (-1, 1.0, 9) and ready.pop() == (0, 1.0, 0)


def test_finished_leases_do_not_pile_up_in_the_lease_heap_and_live_ones_still_expire(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import logq
    from logq.core.index import PRUNE_SLACK
    from logq.testing import FakeClock

    clock = FakeClock()
    with logq.Queue(str(tmp_path / "q"), clock=clock, compact_threshold=None, max_attempts=5) as q:
        keep = q.enqueue("held")  # leased first, never acked: its item must survive every prune
        q.enqueue_many([("work", b"")] * (3 * PRUNE_SLACK))
        held = q.lease("held", lease_time=60.0)
        assert held is not None and held.id == keep
        for _ in range(3 * PRUNE_SLACK):
            job = q.lease("work")
            assert job is not None
            q.ack(job)
        heap = q._backend._index.timetable._leases
        assert len(heap) <= PRUNE_SLACK + 2, len(heap)  # without pruning: every acked lease's item
        clock.advance(61.0)
        assert q.expire_leases() == 1
        info = q.get(keep)
        assert info is not None and info.state == "pending" and info.attempts == 1


def test_active_jobs_are_every_active_job_in_id_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import logq
    from logq.testing import FakeClock

    clock = FakeClock()
    with logq.Queue(str(tmp_path / "q"), clock=clock, compact_threshold=None) as q:
        ids = [q.enqueue("t", priority=p) for p in (1, 5, 3, 9, 7, 2)]  # leased out of id order
        jobs = [q.lease(lease_time=10.0 + i) for i in range(5)]
        q.extend(jobs[0], lease_time=100.0)  # a second item in the lease heap for one job
        q.ack(jobs[1])
        active = [j.id for j in q.jobs("active", limit=None)]
        assert [e.id for e in q._backend._index.timetable.active_jobs()] == active == sorted(set(ids) - {jobs[1].id, ids[0]})


NAMES5 = ["a", "b", "c", "d", "e"]
STEPS = st.lists(st.tuples(st.sampled_from(["enqueue", "enqueue", "lease", "lease_many", "release", "ack", "advance"]),
                           st.integers(0, 4), st.integers(-1, 2), st.integers(0, 30)), max_size=80)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(STEPS)
@example([("enqueue", 0, -1, 0), ("enqueue", 1, 0, 0), ("enqueue", 0, 2, 0), ("lease", 0, 0, 0)])  # a's best comes last
def test_leases_of_any_name_or_some_take_the_smallest_due_job_of_those_names(tmp_path_factory, steps) -> None:  # type: ignore[no-untyped-def]
    """Many task names, priorities, delays, jobs given back: a lease (of any name, or of
    some) takes what a look at every due pending job would; lease_many the first k."""
    import logq
    from logq.testing import FakeClock

    clock = FakeClock()
    leased: list[logq.Job] = []
    with logq.Queue(str(tmp_path_factory.mktemp("q")), clock=clock, compact_threshold=None,
                    lease_time=1e6) as q:  # no lease expires behind `expected`'s back
        def expected(names, k):  # type: ignore[no-untyped-def]
            now = clock.time()
            due = [j for j in q.jobs("pending", limit=None)
                   if j.run_at <= now and (names is None or j.name in names)]
            return [j.id for j in sorted(due, key=lambda j: (-j.priority, j.run_at, j.id))[:k]]

        for op, i, priority, n in steps:
            names = None if n % 3 == 0 else {NAMES5[i], NAMES5[(i + n) % 5]}
            if op == "enqueue":
                q.enqueue(NAMES5[i], priority=priority, delay=float(n % 4 == 1) * n / 10)
            elif op == "lease":
                want = expected(names, 1)
                job = q.lease(names)
                assert ([job.id] if job else []) == want
                leased += [job] if job else []
            elif op == "lease_many":
                want = expected(names, n % 4 + 1)
                jobs = q.lease_many(n % 4 + 1, names)
                assert [j.id for j in jobs] == want
                leased += jobs
            elif op in ("release", "ack") and leased:
                job = leased.pop(n % len(leased))
                q.release(job, delay=n % 2 * 0.5) if op == "release" else q.ack(job)
            elif op == "advance":
                clock.advance(n / 10)
            assert q.stats().due == len(expected(None, 10**6))  # the count of due jobs keeps up


def test_the_listing_of_task_names_stays_bounded_when_leases_name_their_tasks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import logq
    from logq.core.index import PRUNE_SLACK

    with logq.Queue(str(tmp_path / "q"), compact_threshold=None) as q:
        for i in range(3 * PRUNE_SLACK):  # each job outranks the one before: a new listing each
            q.enqueue("t", priority=i)
            q.ack(q.lease("t"))  # the queue empties again: the name is forgotten, then listed anew
        assert len(q._backend._index.timetable._tops) <= PRUNE_SLACK + 2
        q.enqueue("t", priority=-1)
        q.enqueue("u", priority=5)
        assert [q.lease().name, q.lease().name, q.lease()] == ["u", "t", None]


# ------------------------------------------------------------------ unique keys

KEY_STEPS = st.lists(st.tuples(st.sampled_from(["enqueue", "keyed", "lease", "ack", "dead", "cancel", "retry"]),
                               st.integers(0, 20)), max_size=60)


def _keyed_history(steps: list) -> list[tuple[int, int, bytes]]:  # type: ignore[type-arg]
    """The records (type, seq, payload) a run of `steps` on a live index writes, checking after
    each that the keys are what the live jobs alone say: each key that live jobs have, owned by
    the lowest id among them."""
    from logq.core import records as r
    from logq.core.index import Index

    index, records, seq = Index(), [], 0

    def write(rtype: int, payload: bytes) -> None:
        nonlocal seq
        seq += 1
        index.apply(rtype, seq, payload, 1, seq << 8, len(payload))
        records.append((rtype, seq, payload))

    def of(state: str) -> list[int]:
        return [e.id for e in index.jobs.values() if e.state == state]

    for op, n in steps:
        pending, active, dead = of("pending"), of("active"), of("dead")
        if op in ("enqueue", "keyed"):
            key = f"k{n % 2}" if op == "keyed" else None
            if key is None or key not in index.keys:  # a live enqueue writes nothing for a held key
                write(r.ENQUEUE, r.encode_enqueue(r.Enqueue(0.0, 0.0, 0, 1, "t", key, None, b"")))
        elif op == "lease" and pending:
            write(r.LEASE, r.encode_lease(r.Lease(pending[n % len(pending)], 1, 0.0, 9.0)))
        elif op == "ack" and active:
            write(r.ACK, r.encode_job_at(r.JobAt(active[n % len(active)], 0.0, b"")))
        elif op == "dead" and active:
            write(r.FAIL, r.encode_outcome(r.Outcome(active[n % len(active)], 0.0, True, 0.0, "x")))
        elif op == "cancel" and pending:
            write(r.CANCEL, r.encode_job_at(r.JobAt(pending[n % len(pending)], 0.0, b"")))
        elif op == "retry" and dead:
            write(r.RETRY, r.encode_job_at(r.JobAt(dead[n % len(dead)], 0.0, b"")))
        holders: dict[str, list[int]] = {}
        for e in index.jobs.values():
            if e.key is not None and e.state in ("pending", "active"):
                holders.setdefault(e.key, []).append(e.id)
        assert index.keys == {key: min(ids) for key, ids in holders.items()}
    return records


@settings(max_examples=300, deadline=None)
@given(KEY_STEPS)
@example([("keyed", 0), ("lease", 0), ("dead", 0), ("keyed", 0), ("lease", 0), ("retry", 0), ("ack", 0)])
def test_key_owners_follow_from_the_live_jobs_so_a_replay_without_swept_jobs_agrees(steps) -> None:  # type: ignore[no-untyped-def]
    """Replaying the history without the records of any set of final jobs (what compaction
    sweeps), or restoring a snapshot, gives the keys of the live index (issue 19 item 5: a
    dead job retried while another job held its key took the key back in such a replay,
    though the live index, and so the checkpoint, said it was free)."""
    from logq.core import snapshot
    from logq.core.index import Index

    records = _keyed_history(steps)
    live = Index()
    for rtype, seq, payload in records:
        live.apply(rtype, seq, payload, 1, seq << 8, len(payload))
    final = {e.id for e in live.jobs.values() if e.state in ("done", "dead", "cancelled")}
    replayed = Index()
    for rtype, seq, payload in records:
        job = seq if rtype == 16 else int.from_bytes(payload[:8], "little")
        if job not in final:
            replayed.apply(rtype, seq, payload, 1, seq << 8, len(payload))
    restored = Index()
    snapshot.restore(restored, snapshot.encode(live))
    for other in (replayed, restored):
        assert other.keys == live.keys and other._co_holders == live._co_holders
