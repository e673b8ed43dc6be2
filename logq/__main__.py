"""`python -m logq`: the command line lives in `logq.cli`."""

import sys

from .cli.main import main

sys.exit(main())
