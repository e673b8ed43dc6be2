"""Finding: recovery trusts a SEAL that is only in the page cache and durably creates
the next segment; after a power loss the log cannot be opened (CorruptionError).

Rollover R2 writes a SEAL and fsyncs the segment. If the process dies between that
write and the fsync (kill -9, or the fsync fails with EIO and the queue is then
reopened), the next open finds the last segment sealed and creates the next one
(fsynced, directory fsynced) without first fsyncing the sealed segment. A power
loss then drops the unsynced SEAL but keeps the new segment, and every later
open fails: "sealed segment does not end with a SEAL record". No acknowledged
data is damaged, but the queue is unusable without salvage. Fix idea: recovery
fsyncs a last segment it treats as sealed before creating the next one.

Found by: python -m fuzz --mode model --seed 40 (with the three --relax flags)
and by --mode points (crash right after the SEAL write, then kill9 + power loss).
Run: python fuzz/findings/unsynced_seal_then_new_segment.py   (exit 1 = bug present)
"""

import sys

from logq import CorruptionError, Queue, WriterFailedError
from fuzz.simfs import SimFS

OPTS = dict(sync="always", segment_size=4096)
fs = SimFS(0)
q = Queue("/sim/q", fs=fs, **OPTS)
while q.stats().bytes_on_disk < 3000:
    q.enqueue("a", b"x" * 900)      # fill the first segment (each call fsynced)
fs.fail("fsync")                    # the rollover's fsync of the SEAL (step R2) fails
try:
    q.enqueue("a", b"x" * 900)
except WriterFailedError:
    print("rollover fsync failed: queue poisoned (correct)")
fs.crash("kill9")                   # the process dies; the SEAL is in the page cache
Queue("/sim/q", fs=fs, **OPTS).close()   # recovery sees a sealed segment, creates the next
fs.crash("lose_unsynced")           # power loss: the unsynced SEAL is gone
try:
    Queue("/sim/q", fs=fs, **OPTS).close()
except CorruptionError as exc:
    print("the queue no longer opens:", exc)
    sys.exit(1)
print("opened fine: fixed")
