"""Finding: after a failed write, `enqueue(key=...)` acknowledges a job that was never
written - it returns the id of the failed enqueue instead of raising WriterFailedError.

In `always` mode Queue._append_locked applies the ENQUEUE to the index before the
group-commit leader writes it; when that write fails, the log is poisoned but the
index keeps the job and its unique key. A retry of the same enqueue finds the key
held and returns the id without touching the log, so the caller believes the job
exists; after a reopen it does not. Spec/semantics.md guarantee 10: "every pending
and later call raises WriterFailedError until the queue is reopened".

Found by: python -m fuzz --mode model --seed 6 --relax close-after-error --relax recovered-durability
Run: python fuzz/findings/unique_key_acknowledged_after_eio.py   (exit 1 = bug present)
"""

import sys

from logq import Queue, WriterFailedError
from fuzz.simfs import SimFS

fs = SimFS(0)
q = Queue("/sim/q", sync="always", fs=fs)
fs.fail("write")                    # the next write returns EIO
try:
    q.enqueue("send", b"mail", key="order-1")
except WriterFailedError:
    print("first enqueue raised WriterFailedError (correct)")
try:
    job_id = q.enqueue("send", b"mail", key="order-1")
except WriterFailedError:
    print("retry raised WriterFailedError: fixed")
    sys.exit(0)
print(f"retry returned job id {job_id}")
fs.crash("kill9")
q = Queue("/sim/q", sync="always", fs=fs)
print(f"after reopen, job {job_id}:", q.get(job_id))
sys.exit(1)
