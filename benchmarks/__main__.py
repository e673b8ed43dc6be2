"""`python -m benchmarks`: logq against the queues users would otherwise pick (see suite.py)."""

import sys

from benchmarks.suite import main

sys.exit(main())
