"""The producer path (issue 20 item 7): an opener that opens beside others keeps no index until
a call needs one, so a process that only enqueues pays neither memory nor open time for the
queue's depth. The first call that needs the index (lease, ack, get, jobs, stats, wait, a keyed
enqueue, compact) builds it from the log, without the writer lock, and from then on follows
the others as usual."""

from __future__ import annotations

from logq import Queue


def indexed(q: Queue) -> bool:
    return q._backend._indexed


def test_an_opener_beside_another_keeps_no_job_until_a_call_needs_them(tmp_path):
    path = str(tmp_path / "q")
    with Queue(path) as worker:
        before = [worker.enqueue("t", b"old %d" % i) for i in range(50)]
        with Queue(path) as web:
            assert not indexed(web)
            mine = [web.enqueue("t", b"new %d" % i) for i in range(20)]
            web.enqueue_many([("t", b"batch")] * 5)
            assert not indexed(web) and not web._backend._index.jobs  # nothing kept
            job = worker.lease("t")  # the other process works meanwhile
            assert job is not None and job.id == before[0]
            worker.ack(job)
            assert web.get(mine[0]).payload == b"new 0"  # a read builds the index...
            assert indexed(web)
            assert web.get(before[0]).state == "done"  # ...with everything, the others' changes too
            assert web.stats().counts == worker.stats().counts
            assert {j.id: j.state for j in web.jobs(limit=None)} == {j.id: j.state for j in worker.jobs(limit=None)}


def test_a_keyed_enqueue_builds_the_index_so_the_key_holds_across_openers(tmp_path):
    path = str(tmp_path / "q")
    with Queue(path) as a, Queue(path) as b:
        first = a.enqueue("t", b"x", key="order-1")
        assert not indexed(b)
        assert b.enqueue("t", b"x", key="order-1") == first  # the key is checked against every live job
        assert indexed(b)


def test_a_producer_that_was_never_indexed_leaves_no_checkpoint_of_nothing(tmp_path):
    """A producer that ends up alone at close must not write its empty index as the checkpoint."""
    path = str(tmp_path / "q")
    a = Queue(path)
    ids = [a.enqueue("t", b"x") for _ in range(3)]
    b = Queue(path)
    b.enqueue("t", b"y")
    a.close()
    b.close()  # the last to close, alone, with no index built
    with Queue(path) as again:
        assert [j.id for j in again.jobs("pending", limit=None)][:3] == ids
        assert again.stats().counts["pending"] == 4
