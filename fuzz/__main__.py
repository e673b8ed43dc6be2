"""`python -m fuzz`: run the crash-recovery harness for a time budget.

Theory of operation
-------------------
Parses the options, splits the budget over the modes (for `all`: model 40%,
points 25%, soak 15%, multi 20%), runs each mode until its deadline, and prints every
failure with the seed that replays it and its shortest reproduction. Exit
status 1 if anything failed. `--case` replays one crash-point case verbosely.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from typing import Callable

from .model import Failure

MODES = ("model", "points", "soak", "multi")
SHARES = {"model": 0.40, "points": 0.25, "soak": 0.15, "multi": 0.20}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fuzz", description="logq crash-recovery fuzz harness "
                                "(see fuzz/README.md)")
    p.add_argument("--minutes", type=float, default=2.0, help="total time budget (default 2)")
    p.add_argument("--seed", type=int, default=None, help="first seed (default: random, printed)")
    p.add_argument("--mode", choices=MODES + ("all",), default="all")
    p.add_argument("--case", help="points mode: replay one case as printed by a failure")
    return p.parse_args(argv)


def runner(mode: str) -> Callable[..., list[Failure]]:
    if mode == "model":
        from . import model
        return model.run
    if mode == "points":
        from . import points
        return points.run
    if mode == "multi":
        from . import multi
        return multi.run
    from . import soak
    return soak.run


def report(failure: Failure) -> None:
    print(f"\nFAILURE in mode {failure.mode}, seed {failure.seed}:\n  {failure.error}")
    print(f"reproduce: python -m fuzz --mode {failure.mode} --seed {failure.seed}")
    if failure.mode == "multi" and failure.seed % 2 == 1:
        print(f"           python -m fuzz.handles {failure.seed}   (the simulated round alone, with its steps)")
    if failure.mode == "points":
        print(f"           python -m fuzz --case '{failure.reproduction.splitlines()[0]}' "
              f"--seed {failure.seed}")
    print(f"shortest reproduction found:\n{failure.reproduction}\n")


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    if args.case:
        from . import points
        return 0 if points.replay(args.case, seed) else 1
    modes = MODES if args.mode == "all" else (args.mode,)
    total = sum(SHARES[m] for m in modes)
    print(f"logq fuzz: mode {args.mode}, {args.minutes} min, seed {seed}, pid {os.getpid()}", flush=True)
    failures: list[Failure] = []
    for mode in modes:
        budget = args.minutes * 60 * SHARES[mode] / total
        started = time.monotonic()
        found = runner(mode)(seed, started + budget, log=lambda s: print(s, flush=True))
        print(f"{mode}: {time.monotonic() - started:.0f}s", flush=True)
        for failure in found:
            report(failure)
        failures += found
    print(f"logq fuzz: {'FAILED' if failures else 'ok'} (seed {seed})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
