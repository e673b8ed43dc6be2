"""What a benchmark run was measured on: the commit, and how busy the machine was
(the 2-core machines are shared).

`git_state` names the commit measured. `cpu_jiffies` reads the machine-wide
CPU counters; `CpuSampler` brackets one measurement and reports the cores this
process used, the cores everything else used, load averages, and this
process's user/sys time and context switches. Linux only (/proc/stat);
elsewhere the machine figures are NaN.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine since boot; (0, 0) if unknown."""
    try:
        with open("/proc/stat") as fh:
            parts = [int(x) for x in fh.readline().split()[1:9]]  # guest time is already in user
    except OSError:
        return 0, 0
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


class CpuSampler:
    """Cores busy machine-wide, and by this process, between start() and stop()."""

    def __init__(self) -> None:
        self.ncpu = os.cpu_count() or 1

    def start(self) -> "CpuSampler":
        self.t0, self.cpu0, self.stat0 = time.perf_counter(), time.process_time(), cpu_jiffies()
        self.load0 = os.getloadavg()[0]
        self.ru0 = resource.getrusage(resource.RUSAGE_SELF)
        return self

    def stop(self) -> dict[str, float]:
        wall, cpu = time.perf_counter() - self.t0, time.process_time() - self.cpu0
        ru1, ru0 = resource.getrusage(resource.RUSAGE_SELF), self.ru0
        busy1, total1 = cpu_jiffies()
        busy0, total0 = self.stat0
        machine = (busy1 - busy0) / (total1 - total0) * self.ncpu if total1 > total0 else float("nan")
        ours = cpu / wall if wall > 0 else 0.0
        return {"wall_s": wall, "cpu_s": cpu, "cores_ours": ours, "cores_machine": machine,
                "cores_others": max(0.0, machine - ours), "load1_before": self.load0,
                "load1_after": os.getloadavg()[0], "user_s": ru1.ru_utime - ru0.ru_utime,
                "sys_s": ru1.ru_stime - ru0.ru_stime,
                "ctx_switches": (ru1.ru_nvcsw - ru0.ru_nvcsw) + (ru1.ru_nivcsw - ru0.ru_nivcsw)}


def git_state() -> str:
    """The commit measured, and whether logq/ had uncommitted changes."""
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", top, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", top, "status", "--porcelain", "--", "logq"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return head + (" +uncommitted logq changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
