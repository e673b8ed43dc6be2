"""Finding: after a write or fsync failed (the queue is poisoned), `close()` returns
normally, although spec/semantics.md guarantee 10 says every later call raises
`WriterFailedError` until reopen, and close() promises "make everything durable".

Log.close skips the final flush and fsync when `_failed` is set but raises nothing,
so a caller that only checks close() (e.g. `with Queue(...)`) is told all is well
while the records written since the error may be lost by a power failure.

Found by: python -m fuzz --mode model --seed 1   (round seed 1)
Run: python fuzz/findings/close_after_eio_returns_normally.py   (exit 1 = bug present)
"""

import sys

from logq import Queue, WriterFailedError
from fuzz.simfs import SimFS

fs = SimFS(0)
q = Queue("/sim/q", sync="always", fs=fs)
fs.fail("fsync")                    # the next fsync returns EIO
try:
    q.enqueue("a", b"payload")
except WriterFailedError as exc:
    print("enqueue raised, as it should:", type(exc).__name__)
try:
    q.close()
except WriterFailedError:
    print("close() raised WriterFailedError: fixed")
    sys.exit(0)
print("close() returned normally after the failed fsync")
sys.exit(1)
