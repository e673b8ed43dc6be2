"""Finding: in `always` mode, `lease()` reclaims expired leases with EXPIRE records it
never commits: they are not even written when it returns, and the group-commit
appender count leaks.

Queue.lease calls `_expire_locked(now)`, which appends the EXPIRE batch (in
`always` mode: into the pending group-commit buffer, counted in Log._appenders)
and drops the returned `Appended` without `commit`. If a job is then leased, its
commit flushes the EXPIREs too, but `_appenders` stays one too high for ever, so
every later sync leader waits GATHER_SECONDS for an appender that never comes.
If no job is due, lease() returns None with the EXPIRE records only in memory:
a crash (even kill -9) loses them, and the job that `get()` showed as
"lease expired" comes back as "lease lost" (with a different run_at).
`expire_leases()` does commit. Fix idea: commit the Appended from _expire_locked.

Found by: python -m fuzz --mode model --seed 2050 (with --relax flags for the other findings)
Run: python fuzz/findings/lease_expiry_not_committed.py   (exit 1 = bug present)
"""

import sys

from logq import Queue
from logq.testing import FakeClock
from fuzz.simfs import SimFS

fs, clock = SimFS(0), FakeClock()
q = Queue("/sim/q", sync="always", fs=fs, clock=clock)
job = q.enqueue("a", b"", max_attempts=1)
q.lease(lease_time=2)
clock.advance(3)
print("lease() with only an expired lease returns:", q.lease(lease_time=2))
before = q.get(job)
print("before the crash:", before.state, repr(before.last_error),
      "| Log._appenders (internal) =", q._log._appenders)  # noqa: SLF001 - shows the leak
fs.crash("kill9")                    # a process crash keeps everything that was written
q = Queue("/sim/q", sync="always", fs=fs, clock=clock)
after = q.get(job)
print("after kill -9:   ", after.state, repr(after.last_error))
sys.exit(0 if after.last_error == before.last_error else 1)
