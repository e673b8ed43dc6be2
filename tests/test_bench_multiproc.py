"""benchmarks/bench_multiproc.py: its arrangements end, and count every job, with real processes."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from benchmarks import bench_multiproc as bench
from benchmarks import multiproc_roles as roles

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_producers_and_consumers_in_processes_finish_every_job_and_the_store_agrees(tmp_path):
    path = str(tmp_path / "sqlite")
    result = bench.measure(bench.make_context(), "e2e", "sqlite", path, jobs=25, seconds=0.0, timeout=120)
    assert result["error"] == "", result
    producers = [r for r in result["reports"] if r["role"] == "producer"]
    consumers = [r for r in result["reports"] if r["role"] == "consumer"]
    assert len(producers) == bench.PRODUCERS and len(consumers) == bench.CONSUMERS
    assert result["n"] == result["produced"] == bench.PRODUCERS * 25
    assert result["store"] == dict(done=bench.PRODUCERS * 25, waiting=0)
    assert {r["pid"] for r in result["reports"]} - {os.getpid()} == {r["pid"] for r in result["reports"]}


def test_a_process_that_cannot_open_the_store_ends_the_arrangement_with_its_error(tmp_path):
    path = str(tmp_path / "sqlite")
    roles.create_store("sqlite", path)
    os.remove(os.path.join(path, "jobs.db"))
    os.mkdir(os.path.join(path, "jobs.db"))  # no process can open it now
    reports = bench.run_arrangement(bench.make_context(), "sqlite", path, producers=2, consumers=1, jobs=5,
                                    seconds=0.0, timeout=120)
    assert len(reports) == 3 and all(r["error"] for r in reports), reports
    assert all(r["count"] == 0 for r in reports)


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("git") is None or _git("rev-parse").returncode != 0,
                    reason="needs git and a git checkout of logq")
def test_quick_and_partial_runs_write_where_git_ignores_and_a_full_run_writes_the_tracked_record():
    for path in (bench.output_path(quick=True, partial=False), bench.output_path(quick=True, partial=True),
                 bench.output_path(quick=False, partial=True)):
        assert _git("check-ignore", "-q", path).returncode == 0, path
    full = bench.output_path(quick=False, partial=False)
    assert os.path.dirname(full) == os.path.join(REPO, "benchmarks", "results")
    assert _git("check-ignore", "-q", full).returncode == 1, full
    assert _git("ls-files", "--error-unmatch", full).returncode == 0, full  # the record the docs cite
