"""Finding: after a crash in rollover step R3/R4, recovery adopts the new segment as the
active one without fsyncing it or the directory; records acknowledged in `always`
mode afterwards are lost by a power failure.

R3 creates the next segment and writes its header, R4 fsyncs the directory. If the
process dies in between (here: right after the header write, before its fsync),
the page cache still holds a valid header, so the next open does not treat the
file as unborn: it appends to it. An `always` call then fdatasyncs the file - but
the file's directory entry was never made durable, so a power loss removes the
whole segment, and with it the acknowledged record. Fix idea: at open, fsync the
last segment and the directory before accepting appends (the same root cause as
sync_after_reopen_not_durable.py and unsynced_seal_then_new_segment.py: recovery
does not make durable what it adopts from a crashed process).

Found by: python -m fuzz --mode model --seed 324 (with --relax flags for the other findings)
Run: python fuzz/findings/adopted_segment_not_durable.py   (exit 1 = bug present)
"""

import sys

from logq import Queue
from fuzz.simfs import SimFS

OPTS = dict(sync="always", segment_size=4096)
fs = SimFS(0)
q = Queue("/sim/q", fs=fs, **OPTS)
while q.stats().bytes_on_disk < 3000:
    q.enqueue("a", b"x" * 900)      # fill the first segment
fs.crash_after(fs.ops + 4)          # rollover: SEAL write, fsync, create, header write | crash
try:
    q.enqueue("a", b"y" * 900)      # does not fit: rolls over
except Exception as exc:            # the simulated process is dead from here on
    print("crashed in rollover after:", [k for k, _ in fs.trace[-4:]])
fs.crash("kill9")
q = Queue("/sim/q", fs=fs, **OPTS)
job = q.enqueue("a", b"acknowledged")   # always mode: returns after fdatasync
print(f"job {job} acknowledged; segments: {q.stats().segments}")
fs.crash("lose_unsynced")           # power loss
q = Queue("/sim/q", fs=fs, **OPTS)
found = q.get(job)
print(f"after power loss, job {job}:", found)
sys.exit(0 if found is not None else 1)
