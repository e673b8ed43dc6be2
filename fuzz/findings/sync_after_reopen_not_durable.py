"""Finding: after a process crash, `sync()` on the reopened queue does not make the
recovered records durable, and `stats().durable_seq` claims they are.

Log._recover sets `_synced_seq = _written_seq = last replayed seq`, although the
previous process never fsynced those records (batch mode: written to the OS only).
So `q.sync()` right after reopening returns without any fsync, and a power loss
afterwards loses jobs the new process was told are durable.

Found by: python -m fuzz --mode model --seed 4   (round seed 4)
Run: python fuzz/findings/sync_after_reopen_not_durable.py   (exit 1 = bug present)
"""

import sys

from logq import Queue
from fuzz.simfs import SimFS

fs = SimFS(0)
q = Queue("/sim/q", sync="batch", sync_interval=60, fs=fs)
q.enqueue("a", b"payload")          # batch mode: written to the OS, not fsynced
fs.crash("kill9")                   # the process dies; the page cache keeps the record
q = Queue("/sim/q", sync="batch", sync_interval=60, fs=fs)
fsyncs = fs.stats.fsyncs
q.sync()                            # "make everything done so far durable"
print("durable_seq claimed:", q.stats().durable_seq, "- fsyncs done by sync():", fs.stats.fsyncs - fsyncs)
fs.crash("lose_unsynced")           # power loss
q = Queue("/sim/q", sync="batch", sync_interval=60, fs=fs)
jobs = q.jobs(limit=None)
print("jobs after power loss:", [(j.id, j.state) for j in jobs])
sys.exit(0 if jobs else 1)
