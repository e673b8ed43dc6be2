"""Many producers and consumers: every job is acked exactly once when nothing crashes (every backend)."""

from __future__ import annotations

import collections
import threading

import pytest



@pytest.mark.parametrize("sync", ["always", "batch"])
def test_every_job_acked_exactly_once(queue_factory, sync):
    producers, consumers, per_producer = 4, 4, 300
    total = producers * per_producer
    acked: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    done = threading.Event()
    small_segments = {} if queue_factory.name == "redis" else {"segment_size": 64 << 10}  # (no files on Redis)
    with queue_factory(sync=sync, **small_segments) as q:
        def produce(p: int) -> None:
            for i in range(per_producer):
                q.enqueue("work", b"%d:%d" % (p, i))

        def consume() -> None:
            while not done.is_set():
                job = q.lease(wait=0.05)
                if job is None:
                    continue
                q.ack(job, result=job.payload)
                with lock:
                    acked[job.id] += 1
                    if sum(acked.values()) == total:
                        done.set()

        threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
        threads += [threading.Thread(target=consume) for _ in range(consumers)]
        for t in threads:
            t.start()
        assert done.wait(120)
        for t in threads:
            t.join()
        assert len(acked) == total and set(acked.values()) == {1}
        assert q.stats().counts["done"] == total
    if not queue_factory.capabilities.durable:
        return
    with queue_factory() as q:  # reopened: everything acked stays acked
        assert q.stats().counts["done"] == total and q.lease() is None
        payloads = {j.payload for j in q.jobs(state="done", limit=None)}
        assert len(payloads) == total
