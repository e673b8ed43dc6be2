"""Time as a parameter: the clock a queue reads, and the one it reads by default."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything with `time()` returning seconds since the epoch as a float."""

    def time(self) -> float: ...


class SystemClock:
    """The operating system's wall clock."""

    def time(self) -> float:
        return time.time()
