"""Compaction benchmark: bounded disk use in steady state, compaction speed, enqueue latency.

Run:  python benchmarks/bench_compact.py [--quick] [--dir DIR] [--json PATH]
                                         [--rate JOBS_PER_S] [--curve PREFIX]

Scratch queues live in a temporary directory made inside --dir (default /tmp)
and removed afterwards.

(a) steady state. One queue with auto-compaction on (segment_size 2 MiB,
    retain_done=0, compact_threshold=0.5, sync="batch"). A producer thread
    enqueues N jobs of 100 B (1,000,000; 100,000 with --quick) at a steady
    rate (--rate, in enqueue_many batches of 100, never more than 10,000 jobs
    ahead of the consumer); a consumer thread leases and acks them one by one.
    Every 0.2 s the main thread samples stats(): bytes_on_disk, live_bytes,
    segments. Check: bytes_on_disk <= live_bytes + 3 * segment_size at every
    sample. The curve goes to PREFIX.json and PREFIX.png (matplotlib), with
    PREFIX = benchmarks/results/compact-curve (tracked), or with --quick
    benchmarks/results/local/compact-curve-quick (ignored by git).
    Afterwards the queue is reopened and its counts compared (replay after
    compactions).

(b) compaction throughput. A queue without auto-compaction (segment_size 4 MiB,
    retain_done=0) gets M jobs enqueued (1,000,000; 200,000 with --quick), of
    which a fifth are then leased and acked; compact() rewrites the sealed
    prefix. Figure: (records_kept + records_dropped) / seconds, from the
    CompactionReport, and the peak RSS growth while it runs.

(c) enqueue latency. On the same queue, another batch of jobs is leased and
    acked (new garbage), then single enqueue() calls (100 B, sync="batch", one
    every 0.5 ms) are timed for a few seconds without compaction, and then
    while a compaction of the whole sealed prefix runs in another thread.
    Figures: p50, p99, max latency of both.

Every figure is printed with the load average and the cores that other
processes kept busy meanwhile (the machine is shared).

Targets: (a) bytes_on_disk <= live + 3 segments at every sample (met/missed).
(b) and (c) are reported without a target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import logq

if __package__:
    from .machine import CpuSampler, git_state
else:  # run as a script: python benchmarks/<name>.py
    from machine import CpuSampler, git_state  # type: ignore[no-redef,import-not-found]

MiB = 1 << 20
PAYLOAD = b"x" * 100
NAME = "job"
STEADY_SEGMENT = 2 * MiB
BIG_SEGMENT = 4 * MiB
BOUND_SEGMENTS = 3
SAMPLE_EVERY = 0.2
PRODUCER_BATCH = 100
MAX_AHEAD = 10_000
LAT_INTERVAL = 0.0005

clock = time.perf_counter


def load_text(ld: dict[str, float]) -> str:
    return (f"load1 {ld['load1_before']:.2f}->{ld['load1_after']:.2f}, cores busy: ours {ld['cores_ours']:.2f}, "
            f"others {ld['cores_others']:.2f}")


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(p / 100 * (len(sorted_values) - 1)))))
    return sorted_values[i]


def record_compactions(q: logq.Queue, t0: float, into: list[dict[str, Any]]) -> None:
    """Wrap this queue's compact() (the auto-compactor calls it too) to log every report."""
    plain = q.compact

    def compact(*a: Any, **kw: Any) -> logq.CompactionReport:
        start = clock() - t0
        rep = plain(*a, **kw)
        into.append({"t": start, "segments_in": rep.segments_in, "bytes_in": rep.bytes_in,
                     "bytes_out": rep.bytes_out, "kept": rep.records_kept, "dropped": rep.records_dropped,
                     "swept": rep.jobs_swept, "seconds": rep.seconds, "aborted": rep.aborted})
        return rep
    q.compact = compact  # type: ignore[method-assign]


# ------------------------------------------------------------- (a) steady state

def steady_state(root: str, n: int, rate: float, max_seconds: float,
                 log_line: Callable[[str], None]) -> dict[str, Any]:
    path = os.path.join(root, "steady")
    q = logq.Queue(path, sync="batch", segment_size=STEADY_SEGMENT, retain_done=0,
                   compact_threshold=0.5)
    t0 = clock()
    compactions: list[dict[str, Any]] = []
    record_compactions(q, t0, compactions)
    enqueued, consumed = [0], [0]
    stop = threading.Event()
    errors: list[str] = []

    def producer() -> None:
        try:
            start = clock()
            while enqueued[0] < n and not stop.is_set():
                if enqueued[0] - consumed[0] >= MAX_AHEAD:
                    time.sleep(0.001)
                    continue
                due = start + enqueued[0] / rate
                delay = due - clock()
                if delay > 0:
                    time.sleep(delay)
                k = min(PRODUCER_BATCH, n - enqueued[0])
                q.enqueue_many([(NAME, PAYLOAD)] * k)
                enqueued[0] += k
        except BaseException as exc:
            errors.append(f"producer: {type(exc).__name__}: {exc}")
            stop.set()

    def consumer() -> None:
        try:
            lease, ack = q.lease, q.ack
            while consumed[0] < n and not stop.is_set():
                job = lease(NAME, wait=0.1)
                if job is None:
                    continue
                ack(job)
                consumed[0] += 1
        except BaseException as exc:
            errors.append(f"consumer: {type(exc).__name__}: {exc}")
            stop.set()

    samples: list[dict[str, Any]] = []
    threads = [threading.Thread(target=producer, name="bench-producer", daemon=True),
               threading.Thread(target=consumer, name="bench-consumer", daemon=True)]
    load = CpuSampler().start()
    for t in threads:
        t.start()
    deadline = t0 + max_seconds
    next_log = t0 + 10.0
    timed_out = False
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(SAMPLE_EVERY)
            now = clock()
            st = q.stats()
            samples.append({"t": now - t0, "bytes_on_disk": st.bytes_on_disk, "live_bytes": st.live_bytes,
                            "segments": st.segments, "pending": st.counts["pending"],
                            "active": st.counts["active"], "done_in_index": st.counts["done"],
                            "enqueued": enqueued[0], "consumed": consumed[0],
                            "compactions": len(compactions), "load1": os.getloadavg()[0]})
            if now >= next_log:
                next_log += 10.0
                log_line(f"    t={now - t0:5.0f} s  consumed {consumed[0]:,}/{n:,}  disk "
                         f"{st.bytes_on_disk / MiB:6.1f} MiB  live {st.live_bytes / MiB:6.2f} MiB  "
                         f"segments {st.segments}  compactions {len(compactions)}")
            if now > deadline and not stop.is_set():
                timed_out = True
                stop.set()
        for t in threads:
            t.join()
        ld = load.stop()
        elapsed = clock() - t0
        final = q.stats()
    finally:
        q.close()
    # reopen: replay after many compactions must give the same picture
    reopen_start = clock()
    q2 = logq.Queue(path, sync="batch", segment_size=STEADY_SEGMENT, retain_done=0, compact_threshold=None)
    try:
        reopened = q2.stats()
        reopen_s = clock() - reopen_start
    finally:
        q2.close()
    shutil.rmtree(path, ignore_errors=True)

    bound = [s["live_bytes"] + BOUND_SEGMENTS * STEADY_SEGMENT for s in samples]
    excess = [s["bytes_on_disk"] - b for s, b in zip(samples, bound)]
    violations = [s for s, x in zip(samples, excess) if x > 0]
    if timed_out and not errors:
        errors.append(f"steady state stopped at the time cap of {max_seconds:.0f} s after {consumed[0]:,} "
                      f"of {n:,} jobs")
    pairs = {k: (final.counts[k], reopened.counts[k]) for k in final.counts}
    mismatch = {k: v for k, v in pairs.items() if k in ("pending", "active") and v[0] != v[1]}
    if reopened.counts["active"] or reopened.counts["pending"] != final.counts["pending"] + final.counts["active"]:
        errors.append(f"reopen: counts differ after replay: {pairs}")
    return {
        "jobs": n, "rate_target": rate, "enqueued": enqueued[0], "consumed": consumed[0],
        "seconds": elapsed, "rate_achieved": consumed[0] / elapsed if elapsed else 0.0,
        "segment_size": STEADY_SEGMENT, "bound_segments": BOUND_SEGMENTS,
        "samples": samples, "compactions": compactions,
        "max_bytes_on_disk": max((s["bytes_on_disk"] for s in samples), default=0),
        "max_live_bytes": max((s["live_bytes"] for s in samples), default=0),
        "max_excess_over_bound": max(excess, default=0), "violations": len(violations),
        "first_violation": violations[0] if violations else None,
        "bounded": not violations and bool(samples),
        "final_stats": {"counts": final.counts, "bytes_on_disk": final.bytes_on_disk,
                        "segments": final.segments, "live_bytes": final.live_bytes},
        "reopen": {"seconds": reopen_s, "counts": reopened.counts, "bytes_on_disk": reopened.bytes_on_disk,
                   "mismatch": mismatch},
        "load": ld, "errors": errors, "timed_out": timed_out,
    }


def plot_curve(res: dict[str, Any], png: str) -> str | None:
    """Write the disk-use curve as a PNG; return why not, or None when written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # pragma: no cover - depends on the environment
        return f"matplotlib not importable ({type(exc).__name__}: {exc}): no PNG"
    s = res["samples"]
    t = [x["t"] for x in s]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    ax.plot(t, [x["bytes_on_disk"] / MiB for x in s], label="bytes on disk", lw=1.2)
    ax.plot(t, [x["live_bytes"] / MiB for x in s], label="live bytes (pending + active)", lw=1.0)
    ax.plot(t, [(x["live_bytes"] + BOUND_SEGMENTS * res["segment_size"]) / MiB for x in s],
            label=f"bound: live + {BOUND_SEGMENTS} segments", lw=1.0, ls="--", color="red")
    for c in res["compactions"]:
        ax.axvline(c["t"], color="grey", lw=0.3, alpha=0.5)
    ax.set_xlabel("seconds")
    ax.set_ylabel("MiB")
    ax2 = ax.twinx()
    ax2.plot(t, [x["consumed"] for x in s], color="green", lw=0.8, alpha=0.6, label="jobs acked")
    ax2.set_ylabel("jobs acked")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    ax.set_title(f"logq steady state: {res['consumed']:,} jobs, segment {res['segment_size'] // MiB} MiB, "
                 f"retain_done=0, {len(res['compactions'])} compactions (grey lines)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return None


# ---------------------------------------------- (b) throughput, (c) latency

def enqueue_bulk(q: logq.Queue, k: int) -> None:
    for i in range(0, k, 10_000):
        q.enqueue_many([(NAME, PAYLOAD)] * min(10_000, k - i))


def build_big(path: str, m: int, acked: int, log_line: Callable[[str], None]) -> tuple[logq.Queue, float]:
    """m jobs: the first half enqueued, `acked` of them leased and acked, then the second half
    (which seals the segments holding the acks, so that compaction can drop them)."""
    q = logq.Queue(path, sync="batch", segment_size=BIG_SEGMENT, retain_done=0, compact_threshold=None)
    start = clock()
    enqueue_bulk(q, m // 2)
    log_line(f"    enqueued {m // 2:,} in {clock() - start:.1f} s; leasing and acking {acked:,} ...")
    lease_ack(q, acked)
    enqueue_bulk(q, m - m // 2)
    return q, clock() - start


FILLER = BIG_SEGMENT // 150  # jobs of 100 B that fill more than one segment


class PhaseTimer:
    """Times the steps of Queue.compact that run under the queue lock, by wrapping the
    index's and the log's methods on these instances (a diagnostic: private names)."""

    WRAPPED = (("_index", "sweepable"), ("_index", "forget"), ("_index", "relocate"), ("_log", "install"),
               ("_log", "write_compacted"))

    def __init__(self, q: logq.Queue) -> None:
        self.q, self.seconds, self.plain = q, {}, []  # type: ignore[var-annotated]
        for owner_name, meth in self.WRAPPED:
            owner = getattr(q, owner_name, None)
            fn = getattr(owner, meth, None) if owner is not None else None
            if fn is None:
                continue
            self.plain.append((owner, meth))
            setattr(owner, meth, self._wrap(f"{owner_name}.{meth}", fn))

    def _wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **kw: Any) -> Any:
            t = clock()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + clock() - t
        return timed

    def remove(self) -> dict[str, float]:
        for owner, meth in self.plain:
            try:
                delattr(owner, meth)
            except AttributeError:
                pass
        return dict(self.seconds)


def lease_ack(q: logq.Queue, k: int) -> None:
    lease, ack = q.lease, q.ack
    for _ in range(k):
        ack(lease(NAME))
    # Work around the stale-heap bug (see probe_stale_heap): the last leased job's entry is
    # still at the top of the ready heap; one more lease pops it before compaction can sweep
    # that job. The job it returns is given back at once.
    job = lease(NAME)
    if job is not None:
        q.release(job)


def probe_stale_heap() -> dict[str, Any]:
    """Does lease() survive a compaction that swept the job whose (stale) entry tops the ready
    heap? Two ways to get there: the last job leased and acked, and a cancelled pending job."""
    out: dict[str, Any] = {}
    for case in ("acked", "cancelled"):
        path = tempfile.mkdtemp(prefix="logq-probe-", dir="/tmp")
        q = logq.Queue(path, segment_size=4096, retain_done=0, compact_threshold=None)
        try:
            if case == "acked":
                q.enqueue_many([(NAME, b"a"), (NAME, b"b")])
                q.ack(q.lease(NAME))  # its ready-heap entry stays on top until the next lease
            else:
                _, b = q.enqueue_many([(NAME, b"a"), (NAME, b"b")])
                q.cancel(b)  # its entry stays in the heap behind a's
            q.enqueue_many([("other", b"y" * 100)] * 40)  # seal the segment with the ACK/CANCEL
            rep = q.compact()
            try:
                got = [q.lease(NAME), q.lease(NAME)]
                out[case] = {"bug": False, "swept": rep.jobs_swept, "leased": [j.id for j in got if j]}
            except Exception as exc:
                out[case] = {"bug": True, "swept": rep.jobs_swept, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            q.close()
            shutil.rmtree(path, ignore_errors=True)
    return out


def timed_compaction(q: logq.Queue) -> tuple[logq.CompactionReport, int, int, dict[str, float]]:
    """Run compact() with an RSS sampler; return the report, RSS before, peak RSS, load."""
    before = rss_bytes()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_bytes())

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    load = CpuSampler().start()
    phases = PhaseTimer(q)
    try:
        rep = q.compact()
    finally:
        done.set()
        t.join()
        ld = load.stop()
        ld["phases_s"] = phases.remove()  # type: ignore[assignment]
    return rep, before, max(peak[0], rss_bytes()), ld


def report_dict(rep: logq.CompactionReport) -> dict[str, Any]:
    records = rep.records_kept + rep.records_dropped
    return {"segments_in": rep.segments_in, "bytes_in": rep.bytes_in, "bytes_out": rep.bytes_out,
            "records_kept": rep.records_kept, "records_dropped": rep.records_dropped,
            "jobs_swept": rep.jobs_swept, "seconds": rep.seconds, "aborted": rep.aborted,
            "records_per_s": records / rep.seconds if rep.seconds else 0.0,
            "mib_in_per_s": rep.bytes_in / MiB / rep.seconds if rep.seconds else 0.0}


def enqueue_latencies(q: logq.Queue, until: Callable[[], bool], min_seconds: float) -> list[float]:
    """Time single enqueue() calls, one every LAT_INTERVAL s, until `until()` and min_seconds passed."""
    out: list[float] = []
    enqueue = q.enqueue
    start = clock()
    nxt = start
    while True:
        now = clock()
        if now - start >= min_seconds and until():
            break
        if nxt > now:
            time.sleep(nxt - now)
        nxt += LAT_INTERVAL
        t = clock()
        enqueue(NAME, PAYLOAD)
        out.append(clock() - t)
    return out


def lat_summary(lat: list[float], seconds: float) -> dict[str, Any]:
    s = sorted(lat)
    return {"samples": len(s), "seconds": seconds, "p50_ms": percentile(s, 50) * 1e3,
            "p99_ms": percentile(s, 99) * 1e3, "p999_ms": percentile(s, 99.9) * 1e3,
            "max_ms": (s[-1] if s else float("nan")) * 1e3,
            "over_10ms": sum(1 for x in s if x > 0.010), "over_100ms": sum(1 for x in s if x > 0.100)}


def throughput_and_latency(root: str, quick: bool, log_line: Callable[[str], None]) -> dict[str, Any]:
    m = 200_000 if quick else 1_000_000
    acked = m // 5
    acked2 = m // 10
    base_s = 3.0 if quick else 5.0
    path = os.path.join(root, "big")
    errors: list[str] = []
    log_line(f"  (b) building a queue of {m:,} jobs ...")
    q, build_s = build_big(path, m, acked, log_line)
    try:
        st = q.stats()
        log_line(f"    built in {build_s:.1f} s: {st.segments} segments, {st.bytes_on_disk / MiB:.1f} MiB; "
                 "compacting ...")
        rep, rss0, rss_peak, ld = timed_compaction(q)
        b = report_dict(rep)
        b.update({"jobs": m, "acked": acked, "build_s": build_s, "rss_before_mib": rss0 / MiB,
                  "rss_peak_mib": rss_peak / MiB, "rss_growth_mib": (rss_peak - rss0) / MiB, "load": ld,
                  "segments_before": st.segments, "bytes_before": st.bytes_on_disk})
        after = q.stats()
        b["segments_after"], b["bytes_after"] = after.segments, after.bytes_on_disk
        if rep.jobs_swept != acked and not rep.aborted:
            b["note"] = f"{acked - rep.jobs_swept} acked jobs were not swept (their ACK is in the active segment)"
        if after.counts["pending"] != m - acked:
            errors.append(f"(b) pending after compaction is {after.counts['pending']}, expected {m - acked}")
        if after.bytes_on_disk >= st.bytes_on_disk and rep.records_dropped:
            errors.append("(b) compaction dropped records but disk use did not shrink")

        # (c) new garbage, then latency without and with a concurrent compaction
        log_line(f"  (c) acking {acked2:,} more jobs (new garbage), then {FILLER:,} filler jobs ...")
        lease_ack(q, acked2)
        enqueue_bulk(q, FILLER)
        q.sync()
        log_line(f"    enqueue latency without compaction ({base_s:.0f} s) ...")
        ld0 = CpuSampler().start()
        t = clock()
        lat0 = enqueue_latencies(q, lambda: True, base_s)
        without = lat_summary(lat0, clock() - t)
        without["load"] = ld0.stop()
        log_line("    enqueue latency while compact() runs ...")
        result: dict[str, Any] = {}
        finished = threading.Event()

        def compactor() -> None:
            try:
                rep2, r0, rp, ld2 = timed_compaction(q)
                result.update(report_dict(rep2))
                result.update({"rss_growth_mib": (rp - r0) / MiB, "load": ld2})
            except BaseException as exc:
                errors.append(f"(c) compaction: {type(exc).__name__}: {exc}")
            finally:
                finished.set()

        ld1 = CpuSampler().start()
        th = threading.Thread(target=compactor, name="bench-compactor", daemon=True)
        t = clock()
        th.start()
        lat1 = enqueue_latencies(q, finished.is_set, 0.0)
        during = lat_summary(lat1, clock() - t)
        during["load"] = ld1.stop()
        th.join()
        return {"b": b, "c": {"without": without, "during": during, "compaction": result,
                              "acked_before": acked2, "interval_s": LAT_INTERVAL}, "errors": errors}
    finally:
        q.close()
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------- driver

def phase_text(ph: dict[str, float]) -> str:
    if not ph:
        return "(phases not timed)"
    locked = sum(v for k, v in ph.items() if k != "_log.write_compacted")
    return ("phases: " + ", ".join(f"{k.split('.')[1]} {v * 1e3:.0f} ms" for k, v in ph.items())
            + f"; under the queue lock: {locked * 1e3:.0f} ms (sweepable, install, forget, relocate)")


def report(res: dict[str, Any]) -> str:
    a, b, c = res["a"], res["bc"]["b"], res["bc"]["c"]
    out = [f"logq compaction benchmark ({res['mode']}, logq {res['git']}, Python {res['python']}, "
           f"{res['cpus']} CPUs)", ""]
    out.append(f"(a) steady state: {a['consumed']:,} of {a['jobs']:,} jobs enqueued+leased+acked in "
               f"{a['seconds']:.1f} s ({a['rate_achieved']:,.0f} jobs/s, producer target "
               f"{a['rate_target']:,.0f}/s), segment {a['segment_size'] // MiB} MiB, retain_done=0")
    out.append(f"    {load_text(a['load'])}")
    comp = a["compactions"]
    secs = [x["seconds"] for x in comp]
    out.append(f"    compactions: {len(comp)} (aborted {sum(1 for x in comp if x['aborted'])}), "
               f"each {min(secs, default=0):.2f}-{max(secs, default=0):.2f} s, "
               f"total {sum(secs):.1f} s")
    out.append(f"    max bytes on disk {a['max_bytes_on_disk'] / MiB:.1f} MiB, max live {a['max_live_bytes'] / MiB:.2f}"
               f" MiB, samples {len(a['samples'])}, violations of live + {a['bound_segments']} segments: "
               f"{a['violations']} (max excess {a['max_excess_over_bound'] / MiB:+.1f} MiB)")
    fs = a["final_stats"]
    out.append(f"    at the end: {fs['segments']} segments, {fs['bytes_on_disk'] / MiB:.1f} MiB, counts {fs['counts']}")
    out.append(f"    reopened in {a['reopen']['seconds']:.2f} s: {a['reopen']['bytes_on_disk'] / MiB:.1f} MiB, "
               f"counts {a['reopen']['counts']}")
    out.append(f"    curve: {res.get('curve_json')}; plot: {res.get('curve_png') or res.get('png_note')}")
    out.append("")
    out.append(f"(b) compaction of a {b['segments_in']}-segment sealed prefix ({b['bytes_in'] / MiB:.1f} MiB, "
               f"{b['jobs']:,} jobs, {b['acked']:,} acked):")
    out.append(f"    {b['records_kept'] + b['records_dropped']:,} records ({b['records_kept']:,} kept, "
               f"{b['records_dropped']:,} dropped, {b['jobs_swept']:,} jobs swept) in {b['seconds']:.2f} s = "
               f"{b['records_per_s']:,.0f} records/s, {b['mib_in_per_s']:.1f} MiB/s read; "
               f"{b['bytes_out'] / MiB:.1f} MiB written")
    out.append(f"    RSS {b['rss_before_mib']:.0f} MiB before, peak +{b['rss_growth_mib']:.0f} MiB during; "
               f"{load_text(b['load'])}")
    out.append(f"    {phase_text(b['load'].get('phases_s', {}))}")
    if b.get("note"):
        out.append(f"    note: {b['note']}")
    cc = c["compaction"]
    out.append("")
    out.append(f"(c) enqueue latency (single enqueue() calls, sync=batch, one every {c['interval_s'] * 1e3:.1f} ms)")
    hdr = f"    {'':<26} {'samples':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8} {'>10ms':>6} {'>100ms':>7}"
    out.append(hdr)
    for label, d in (("without compaction", c["without"]), ("during compaction", c["during"])):
        out.append(f"    {label:<26} {d['samples']:>8,} {d['p50_ms']:>8.3f} {d['p99_ms']:>8.3f} "
                   f"{d['p999_ms']:>9.3f} {d['max_ms']:>8.1f} {d['over_10ms']:>6} {d['over_100ms']:>7}")
        out.append(f"      ({load_text(d['load'])})")
    if cc:
        out.append(f"    the concurrent compaction: {cc['records_kept'] + cc['records_dropped']:,} records in "
                   f"{cc['seconds']:.2f} s = {cc['records_per_s']:,.0f} records/s "
                   f"({cc['records_dropped']:,} dropped); RSS +{cc['rss_growth_mib']:.0f} MiB")
        out.append(f"    {phase_text(cc['load'].get('phases_s', {}))}")
    out += ["", "targets"]
    for t in res["targets"].values():
        out.append(f"  {t['what']:<58} {'met' if t['met'] else 'MISSED'}")
    for e in res["errors"]:
        out.append(f"ERROR {e}")
    return "\n".join(out)


def curve_prefix(quick: bool) -> str:
    """Where the curve goes by default: the tracked results for a full run, local/ for --quick."""
    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    return os.path.join(results, "local", "compact-curve-quick") if quick else os.path.join(results, "compact-curve")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100,000 jobs in (a), 200,000 in (b) (under a minute)")
    ap.add_argument("--dir", default="/tmp", help="make the scratch directory inside DIR (default /tmp)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures (without the curve) as JSON to PATH")
    ap.add_argument("--rate", type=float, help="producer rate in (a), jobs/s (default 8,000; 5,000 with --quick)")
    ap.add_argument("--curve", metavar="PREFIX", help="where the curve goes (PREFIX.json, PREFIX.png)")
    ap.add_argument("--only", choices=("a", "bc"), help="run only part (a), or only (b)+(c)")
    args = ap.parse_args(argv)
    prefix = args.curve or curve_prefix(args.quick)
    rate = args.rate or (5_000.0 if args.quick else 8_000.0)
    n = 100_000 if args.quick else 1_000_000
    max_seconds = 60.0 if args.quick else 240.0

    def log_line(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    os.makedirs(args.dir, exist_ok=True)
    root = tempfile.mkdtemp(prefix="logq-bench-compact-", dir=args.dir)
    start = clock()
    res: dict[str, Any] = {"mode": "quick" if args.quick else "full", "git": git_state(),
                           "python": sys.version.split()[0],
                           "platform": platform.platform(), "cpus": os.cpu_count(),
                           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "errors": []}
    try:
        res["probe_stale_heap"] = probe = probe_stale_heap()
        for case, r in probe.items():
            if r["bug"]:
                res["errors"].append(
                    f"BUG: lease() raises {r['error']} after compact() swept a job ({case}) whose stale "
                    "entry is in the ready heap (Index.best_ready indexes Index.jobs with a forgotten id); "
                    "(b)/(c) work around it by popping the stale entry before compacting")
        if args.only in (None, "a"):
            log_line(f"  (a) steady state: {n:,} jobs at {rate:,.0f}/s ...")
            res["a"] = steady_state(root, n, rate, max_seconds, log_line)
            res["errors"] += res["a"]["errors"]
            os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
            with open(prefix + ".json", "w") as fh:
                json.dump({k: res["a"][k] for k in ("samples", "compactions", "segment_size", "bound_segments",
                                                    "jobs", "consumed", "rate_target", "seconds")}
                          | {"mode": res["mode"], "time": res["time"]}, fh)
                fh.write("\n")
            res["curve_json"] = prefix + ".json"
            why = plot_curve(res["a"], prefix + ".png")
            if why is None:
                res["curve_png"] = prefix + ".png"
            else:
                res["png_note"] = why
        if args.only in (None, "bc"):
            res["bc"] = throughput_and_latency(root, args.quick, log_line)
            res["errors"] += res["bc"]["errors"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    res["total_s"] = clock() - start
    res["targets"] = {}
    if "a" in res:
        res["targets"]["bounded"] = {"what": f"(a) bytes_on_disk <= live + {BOUND_SEGMENTS} segments at every sample",
                                     "met": res["a"]["bounded"]}
    if "a" in res and "bc" in res:
        print(report(res))
    else:
        print(json.dumps({k: v for k, v in res.items() if k != "a"} | (
            {"a": {k: v for k, v in res["a"].items() if k != "samples"}} if "a" in res else {}), indent=1,
            default=str))
    print(f"\n(total {res['total_s']:.1f} s, load average now {os.getloadavg()[0]:.2f})")
    if args.json:
        slim = dict(res)
        if "a" in slim:
            slim["a"] = {k: v for k, v in slim["a"].items() if k != "samples"}
        with open(args.json, "w") as fh:
            json.dump(slim, fh, indent=2, default=str)
            fh.write("\n")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
