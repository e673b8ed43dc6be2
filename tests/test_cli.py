"""The command line, run as a subprocess on real directories: text, JSON and exit codes.

Directories are built with logq.Queue and damaged with byte edits. Tests that
damage a directory use `tmp_path` rather than the `qdir` fixture, whose
teardown verifies the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import struct
import shutil
import subprocess
import sys
import textwrap
from typing import Any, NamedTuple, cast

import pytest
import xxhash

from logq import Backoff, Queue
from logq.log.codec import SEGMENT_HEADER_SIZE
from logq.testing import FakeClock

from .helpers import flip_bit, segment_paths, truncate

T0 = 1_700_000_000.0
EMAILS = 30
JOBS = 1 + EMAILS + 1  # report, emails, resize


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "logq", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


class Built(NamedTuple):
    path: str
    ids: dict[str, int]


def build(path: str, *, leave_active: bool = False) -> dict[str, int]:
    """A queue with every job state, several segments and compressed records; returns job ids.

    Job 1 ("report") fails once and is then acked; emails 0-9 are acked, email
    10 fails for good (dead), email 11 is cancelled, the rest are pending.
    (Ids are sequence numbers, so the SEAL records of rollovers leave gaps.)
    """
    clock = FakeClock(T0)
    with Queue(path, clock=clock, segment_size=4096, compression="zstd", compress_threshold=64,
               backoff=Backoff(base=1, factor=2, max=60, jitter=0)) as q:
        q.enqueue("report", b'{"month": "2024-05"}')
        ids = q.enqueue_many([("email", json.dumps({"to": f"user{i}@example.com", "body": "hello " * 20})
                               .encode()) for i in range(EMAILS)])
        q.enqueue("resize", bytes(range(256)), key="img-1")
        q.fail(q.lease("report"), "smtp timeout")
        for _ in range(10):
            q.ack(q.lease("email"), b"sent")
        q.fail(q.lease("email"), ValueError("bad address"), retry=False)
        q.cancel(ids[11])
        clock.advance(5)
        q.ack(q.lease("report"), b"report.pdf")
        if leave_active:
            q.lease("email")
    return {"report": 1, "dead": ids[10], "cancelled": ids[11], "oldest_pending": ids[12]}


def inspect_json(*args: object) -> dict[str, Any]:
    r = cli("inspect", *args, "--json")
    assert r.returncode in (0, 1), r.stderr
    return cast("dict[str, Any]", json.loads(r.stdout))


def json_lines(r: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def snapshot(path: str) -> dict[str, tuple[int, str, int]]:
    out = {}
    for name in sorted(os.listdir(path)):
        p = os.path.join(path, name)
        if os.path.isdir(p):  # logq.owners: its entries
            out.update({f"{name}/{k}": v for k, v in snapshot(p).items()})
            out[name] = (0, "", os.stat(p).st_mtime_ns)
            continue
        with open(p, "rb") as f:
            out[name] = (os.path.getsize(p), hashlib.sha256(f.read()).hexdigest(), os.stat(p).st_mtime_ns)
    return out


@pytest.fixture
def healthy(qdir):
    return Built(qdir, build(qdir))


# ----------------------------------------------------------------------- help

def test_help_lists_every_subcommand():
    r = cli("--help")
    assert r.returncode == 0
    for name in ("inspect", "demo", "compact", "stats", "requeue-dead", "worker"):
        assert name in r.stdout


@pytest.mark.parametrize("name", ["inspect", "demo", "compact", "stats", "requeue-dead", "worker"])
def test_every_subcommand_has_help_with_examples(name):
    r = cli(name, "--help")
    assert r.returncode == 0
    assert "examples:" in r.stdout and f"python -m logq {name}" in r.stdout


def readme_command_summary() -> dict[str, list[str]]:
    """The README's summary of the command line: each subcommand's forms (a form may span lines)."""
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    block = readme.split("## The command line", 1)[1].split("```", 2)[1]
    forms: dict[str, list[str]] = {}
    for line in block.splitlines():
        text = line.split("#")[0].strip()
        m = re.match(r"python -m logq (\S+)", text)
        if m:
            forms.setdefault(m.group(1), []).append(text)
        elif text:
            last = list(forms)[-1]
            forms[last][-1] += " " + text
    return forms


def test_readme_command_summary_shows_every_option_of_every_subcommand():
    summary = readme_command_summary()
    assert sorted(summary) == ["compact", "demo", "inspect", "requeue-dead", "stats", "worker"]
    for sub, forms in summary.items():
        helped = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", cli(sub, "--help").stdout)) - {"--help"}
        shown = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", " ".join(forms)))
        assert shown == helped, sub


def test_readme_command_summary_shows_only_combinations_the_parser_takes(healthy):
    """Each inspect form of the summary runs as shown (`--job` with `--records` too), and none
    shows `--verify` with `--records` or `--job`, which are refused."""
    forms = [f for f in readme_command_summary()["inspect"] if " URL" not in f]  # (Redis: tests/test_redis.py)
    assert len(forms) == 4
    values = {"ID": healthy.ids["report"], "S": 1, "SEQ": 1, "T": "enqueue", "N": 5}
    for line in forms:
        for shown in (re.sub(r"\[[^]]*\]", "", line), line.replace("[", "").replace("]", "")):
            words = shown.split()[5:]  # after "python -m logq inspect PATH"
            r = cli("inspect", healthy.path, *(values.get(w, w) for w in words))
            assert r.returncode == 0, (shown, r.stderr)
        assert not ("--verify" in line and ("--records" in line or "--job" in line))
    assert cli("inspect", healthy.path, "--records", "--job", healthy.ids["report"], "--json").returncode == 0
    assert cli("inspect", healthy.path, "--verify", "--job", 1).returncode == 2
    assert cli("inspect", healthy.path, "--verify", "--records").returncode == 2


def test_no_subcommand_is_a_usage_error():
    r = cli()
    assert r.returncode == 2 and "usage:" in r.stderr


# -------------------------------------------------------------- healthy queue

def test_summary_of_healthy_queue_lists_segments_jobs_and_no_tail(healthy):
    r = cli("inspect", healthy.path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for seg in segment_paths(healthy.path):
        assert os.path.basename(seg) in out
    assert "sealed" in out and "active" in out
    assert "jobs: 19 pending, 0 active, 11 done, 1 dead, 1 cancelled (32 in all)" in out
    assert f"oldest pending job: {healthy.ids['oldest_pending']} 'email', enqueued 2023-11-14T22:13:20.000Z" in out
    assert "torn tail: none" in out
    assert "DAMAGE" not in out and r.stderr == ""


def test_summary_says_whether_the_next_open_can_start_from_the_checkpoint(healthy):
    d = inspect_json(healthy.path)["checkpoint"]
    assert d["usable"] is True and d["reason"] is None and d["segments"] == len(segment_paths(healthy.path))
    assert f"through seq {d['last_seq']:,}; the next open starts from it" in cli("inspect", healthy.path).stdout
    flip_bit(segment_paths(healthy.path)[0], SEGMENT_HEADER_SIZE + 100)
    d = inspect_json(healthy.path)["checkpoint"]
    assert d["usable"] is False and "does not hash to the checkpoint's digest" in d["reason"]
    flip_bit(segment_paths(healthy.path)[0], SEGMENT_HEADER_SIZE + 100)  # mended: the directory verifies again
    os.unlink(os.path.join(healthy.path, "logq.checkpoint"))
    assert "checkpoint: none" in cli("inspect", healthy.path).stdout


def test_summary_json_agrees_with_the_queue(healthy):
    d = inspect_json(healthy.path)
    with Queue(healthy.path) as q:
        stats = q.stats()
    assert d["ok"] is True and d["problems"] == [] and d["tail"] is None
    assert d["jobs"] == stats.counts
    assert d["format_version"] == 2 and d["kind"] == "queue"
    segs = d["segments"]
    assert [s["file"] for s in segs] == [os.path.basename(p) for p in segment_paths(healthy.path)]
    assert len(segs) >= 2 and all(s["state"] == "sealed" for s in segs[:-1]) and segs[-1]["state"] == "active"
    assert all(s["check"] == "ok" for s in segs)
    assert max(s["compression_ratio"] or 0 for s in segs) > 1.5  # the emails compress
    assert d["totals"]["records"] == sum(s["records"] for s in segs)
    assert d["totals"]["last_seq"] == stats.last_seq
    assert d["oldest_pending"]["job"] == healthy.ids["oldest_pending"] and d["oldest_pending"]["enqueued_at"] == T0


def test_verify_of_healthy_queue_exits_0(healthy):
    r = cli("inspect", healthy.path, "--verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok: checked ")
    d = inspect_json(healthy.path, "--verify")
    assert d["ok"] is True and d["problems"] == [] and d["replay_errors"]["count"] == 0


def test_records_json_lines_cover_every_record_in_order(healthy):
    recs = json_lines(cli("inspect", healthy.path, "--records", "--json"))
    seqs = [r["seq"] for r in recs]
    assert seqs == sorted(seqs)
    assert sum(r["type"] == "enqueue" for r in recs) == JOBS
    first = recs[0]
    assert first == {**first, "seq": 1, "type": "enqueue", "job": 1, "name": "report", "state": "pending",
                     "time": T0, "preview": '{"month": "2024-05"}'}
    assert any(r["compressed"] for r in recs)
    assert all("payload" not in r for r in recs)


def test_records_text_has_a_header_and_one_line_per_record(healthy):
    r = cli("inspect", healthy.path, "--records", "--limit", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["seq", "type", "job", "name", "state", "size", "raw", "time", "detail"]
    assert len(lines) == 4
    assert lines[1].split()[:5] == ["1", "enqueue", "1", "report", "pending"]
    assert "2023-11-14T22:13:20.000Z" in lines[1]
    assert lines[2].rstrip().endswith("...'")  # a long payload is cut to a preview


def test_records_filters(healthy):
    def seqs(*args: object) -> list[int]:
        return [r["seq"] for r in json_lines(cli("inspect", healthy.path, "--records", "--json", *args))]
    everything = json_lines(cli("inspect", healthy.path, "--records", "--json"))
    assert seqs("--from", 5, "--to", 9) == [5, 6, 7, 8, 9]
    assert seqs("--limit", 4) == [r["seq"] for r in everything[:4]]
    assert seqs("--type", "fail", "--type", "cancel") == [r["seq"] for r in everything
                                                         if r["type"] in ("fail", "cancel")]
    assert seqs("--type", "fail,cancel") == seqs("--type", "fail", "--type", "cancel")
    assert seqs("--job", 1) == [r["seq"] for r in everything if r["job"] == 1]
    last = segment_paths(healthy.path)[-1]
    in_last = [r["seq"] for r in everything if r["segment"] == int(os.path.basename(last)[:20])]
    assert in_last and seqs("--segment", os.path.basename(last)) == in_last
    assert seqs("--segment", int(os.path.basename(last)[:20])) == in_last


def test_payload_flag_prints_payloads_whole(healthy):
    recs = json_lines(cli("inspect", healthy.path, "--records", "--json", "--payload", "--type", "enqueue"))
    email = json.loads(recs[1]["payload"])
    assert recs[1]["payload_encoding"] == "utf-8" and email["to"] == "user0@example.com"
    binary = recs[-1]
    assert binary["name"] == "resize" and binary["payload_encoding"] == "base64"
    text = cli("inspect", healthy.path, "--records", "--payload", "--job", healthy.ids["oldest_pending"], "--type", "enqueue").stdout
    assert '"body": "' + "hello " * 20 in text


def test_job_history_shows_the_state_after_each_record(healthy):
    d = inspect_json(healthy.path, "--job", 1)
    assert [(r["type"], r["state"]) for r in d["history"]] == [
        ("enqueue", "pending"), ("lease", "active"), ("fail", "pending"), ("lease", "active"), ("ack", "done")]
    assert d["job"]["state"] == "done" and d["job"]["name"] == "report" and d["job"]["attempts"] == 2
    assert d["history"][2]["preview"] == "smtp timeout"
    r = cli("inspect", healthy.path, "--job", 1)
    assert r.returncode == 0
    assert r.stdout.startswith("job 1 'report': done, 2 of 3 attempts used")
    assert "error='smtp timeout'" in r.stdout and "result='report.pdf'" in r.stdout


LONG_NAME = "thumbnails.resize_for_mobile_x"  # 30 characters: wider than the 16 the name column starts at


def assert_lined_up(lines: list[str], names: list[str]) -> None:
    """Every record line's cells start (left-aligned) or end (right-aligned) under their title."""
    header = lines[0]
    for line, name in zip(lines[1:], names, strict=True):
        cells = line.split()
        assert line[:header.index("seq") + 3].strip() == cells[0]
        assert line[header.index("name"):].startswith(name + " "), (header, line)
        assert line[header.index("state"):].split()[0] == cells[4]
        assert line[:header.index("size") + 4].split()[-1] == cells[5]
        assert (line + "  ")[header.index("time"):].startswith(cells[7] + "  ")
        assert line[header.index("detail"):] == line[header.index("detail"):].lstrip()


def test_columns_line_up_with_the_header_for_long_task_names(qdir):
    with Queue(qdir) as q:
        q.enqueue(LONG_NAME, b"a")
        q.enqueue("short", b"b")
        q.ack(q.lease(LONG_NAME))
    r = cli("inspect", qdir, "--records")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split()[1] for line in lines[1:]] == ["enqueue", "enqueue", "lease", "ack"]
    assert_lined_up(lines, [LONG_NAME, "short", LONG_NAME, LONG_NAME])
    history = cli("inspect", qdir, "--job", 1).stdout.splitlines()
    table = history[history.index("") + 1:]
    assert_lined_up(table, [LONG_NAME] * 3)


def test_a_streamed_record_table_repeats_its_header_when_a_later_name_widens_it():
    from logq.cli.inspect_text import RecordTable

    def record(seq: int, name: str) -> dict[str, Any]:
        return {"seq": seq, "type": "enqueue", "job": seq, "name": name, "state": "pending", "size": 64,
                "raw_size": 30, "time": T0, "detail": {}, "preview": "x"}
    table = RecordTable(page=2)
    lines = table.add(record(1, "a")) + table.add(record(2, "b")) + table.add(record(3, LONG_NAME))
    lines += table.add(record(4, "c")) + table.add(record(5, "d")) + table.finish()
    headers = [i for i, line in enumerate(lines) if line.split()[:2] == ["seq", "type"]]
    assert headers == [0, 3] and len(lines) == 7
    assert_lined_up(lines[:3], ["a", "b"])
    assert_lined_up(lines[3:], [LONG_NAME, "c", "d"])
    assert lines[0].index("state") < lines[3].index("state")  # sized to the first page, then widened


def test_summary_columns_fit_long_numbers(tmp_path):
    from logq.cli.inspect_text import format_summary
    seg = {"file": "x" * 40 + ".seg", "first_seq": 10**12, "last_seq": 10**12 + 5, "records": 6,
           "bytes": 10**13, "state": "active", "compression_ratio": None, "check": "ok", "problem": None}
    d = {"kind": "segment", "format_version": None, "path": "p", "segments": [seg],
         "totals": {"segments": 1, "first_seq": 10**12, "last_seq": 10**12 + 5, "records": 6, "bytes": 10**13},
         "jobs": {}, "oldest_pending": None, "tail": None, "saved_tails": [], "open_by": None,
         "checkpoint": None, "problems": [], "replay_errors": {"count": 0, "first": []}}
    lines = list(format_summary(d))
    header, row, total = lines[2], lines[3], lines[4]
    for title, cell in (("first", "1,000,000,000,000"), ("bytes", "10,000,000,000,000")):
        end = header.index(title) + len(title)
        assert row[:end].endswith(cell) and total[:end].endswith(cell)
    assert row[header.index("state"):].startswith("active") and row.startswith(seg["file"] + " ")


def test_an_error_is_shown_whole(qdir):
    error = "ConnectionError: " + "".join(f"host-{i:03d} refused; " for i in range(12)) + "giving up"
    assert len(error) > 200
    with Queue(qdir) as q:
        jid = q.enqueue(LONG_NAME, b"a")
        q.fail(q.lease(), error)
    r = cli("inspect", qdir, "--records", "--type", "fail")
    assert r.returncode == 0 and f"error={error!r}" in r.stdout, r.stdout
    assert f"error={error!r}" in cli("inspect", qdir, "--job", jid).stdout
    assert json_lines(cli("inspect", qdir, "--records", "--json", "--type", "fail"))[0]["preview"] == error
    assert json_lines(cli("inspect", qdir, "--records", "--json"))[0]["preview"] == "a"  # payloads: a preview


def test_job_that_no_record_names_exits_1(healthy):
    r = cli("inspect", healthy.path, "--job", 9999)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == f"logq inspect: no record names job 9999 in {healthy.path}"


def test_single_segment_file_can_be_inspected(healthy):
    seg = segment_paths(healthy.path)[0]
    d = inspect_json(seg)
    assert d["kind"] == "segment" and len(d["segments"]) == 1 and d["ok"]
    assert d["segments"][0]["state"] == "sealed"
    recs = json_lines(cli("inspect", seg, "--records", "--json"))
    assert recs and recs[0]["seq"] == 1
    assert cli("inspect", seg, "--verify").returncode == 0


def test_unknown_and_temporary_files_are_ignored(healthy):
    for name in ("logq.meta.tmp", "notes.txt", "00000000000000000001.seg.40.torn", "compact.tmp"):
        with open(os.path.join(healthy.path, name), "wb") as f:
            f.write(b"\x00garbage")
    d = inspect_json(healthy.path)
    assert d["ok"] and [s["file"] for s in d["saved_tails"]] == ["00000000000000000001.seg.40.torn"]
    assert cli("inspect", healthy.path, "--verify").returncode == 0


def test_inspect_never_writes_or_locks(tmp_path):
    path = str(tmp_path / "q")
    build(path, leave_active=True)
    with open(segment_paths(path)[-1], "ab") as f:
        f.write(b"\x07" * 12)  # the start of a record: a torn tail that opening would cut
    os.unlink(os.path.join(path, "logq.lock"))
    before = snapshot(path)
    for args in ([], ["--json"], ["--records"], ["--records", "--json", "--payload"], ["--job", 1],
                 ["--verify"], ["--verify", "--json"]):
        assert cli("inspect", path, *args).returncode == 0
    assert snapshot(path) == before
    assert inspect_json(path)["jobs"]["active"] == 1  # the lost lease is shown, not expired


# --------------------------------------------------------------------- damage

def test_preallocated_zeros_of_a_crashed_writer_are_not_a_torn_tail(tmp_path):
    path = str(tmp_path / "q")
    build(path)
    seg = segment_paths(path)[-1]
    size = os.path.getsize(seg)
    with open(seg, "ab") as f:  # what a writer that died leaves: zeros it had preallocated
        f.write(bytes(65536 - size % 65536))
    d = inspect_json(path)
    assert d["ok"] is True and d["tail"] is None and d["segments"][-1]["check"] == "ok"
    assert "torn tail: none" in cli("inspect", path).stdout
    single = inspect_json(seg)  # one segment file on its own: the same
    assert single["tail"] is None
    with Queue(path) as q:  # and opening agrees: nothing cut, nothing reported
        assert q.recovery.torn == []


def test_torn_tail_is_reported_and_not_repaired(tmp_path):
    path = str(tmp_path / "q")
    build(path)
    os.unlink(os.path.join(path, "logq.checkpoint"))  # a crash leaves no checkpoint of this end
    seg = segment_paths(path)[-1]
    size = os.path.getsize(seg)
    truncate(seg, size - 5)
    r = cli("inspect", path)
    assert r.returncode == 0
    assert "torn tail: " in r.stdout and "incomplete record at end of segment" in r.stdout
    d = inspect_json(path)
    tail = d["tail"]
    assert tail["file"] == seg and tail["offset"] + tail["bytes"] == size - 5
    assert tail["valid_records_after_damage"] is False and d["ok"] is True
    assert d["segments"][-1]["check"] == "torn tail"
    v = cli("inspect", path, "--verify")
    assert v.returncode == 0 and "not damage" in v.stdout
    assert os.path.getsize(seg) == size - 5
    assert not any(n.endswith(".torn") for n in os.listdir(path))


def test_flipped_bit_in_sealed_segment_fails_verify_with_file_and_offset(tmp_path):
    path = str(tmp_path / "q")
    build(path)
    sealed = segment_paths(path)[1]
    flip_bit(sealed, SEGMENT_HEADER_SIZE + 40)  # inside the first record's payload
    r = cli("inspect", path, "--verify")
    assert r.returncode == 1
    assert f"DAMAGE {sealed}: byte {SEGMENT_HEADER_SIZE}: record payload check mismatch" in r.stdout
    d = inspect_json(path, "--verify")
    assert d["ok"] is False
    assert d["problems"][0] == {"file": sealed, "offset": SEGMENT_HEADER_SIZE,
                                "message": "record payload check mismatch"}
    assert d["replay_errors"]["count"] > 0  # records of the lost jobs no longer replay
    summary = cli("inspect", path)
    assert summary.returncode == 0 and f"damaged at byte {SEGMENT_HEADER_SIZE}" in summary.stdout
    assert inspect_json(path)["segments"][1]["check"] == "damaged"


def test_flipped_bit_in_active_segment_with_valid_records_after_it_fails_verify(tmp_path):
    path = str(tmp_path / "q")
    build(path)
    active = segment_paths(path)[-1]
    flip_bit(active, SEGMENT_HEADER_SIZE + 20)  # header of the first record
    r = cli("inspect", path, "--verify")
    assert r.returncode == 1
    assert f"DAMAGE {active}: byte {SEGMENT_HEADER_SIZE}: record header check mismatch" in r.stdout
    assert "were durable" in r.stdout and "opening refuses" in r.stdout  # issue 19 item 3: no longer cut


def test_records_of_a_damaged_queue_are_dumped_with_warnings(tmp_path):
    path = str(tmp_path / "q")
    build(path)
    flip_bit(segment_paths(path)[1], SEGMENT_HEADER_SIZE + 40)
    r = cli("inspect", path, "--records", "--json")
    recs = json_lines(r)
    assert recs and any("error" in rec for rec in recs)  # acks of jobs whose enqueue was lost
    assert "logq inspect: warning:" in r.stderr and "record payload check mismatch" in r.stderr


# --------------------------------------------------------- open by another process

CHILD = textwrap.dedent("""
    import sys, logq
    q = logq.Queue(sys.argv[1])
    q.enqueue("live", b"first")
    job = q.lease("live")
    print("ready", flush=True)
    sys.stdin.readline()
    q.ack(job)
    q.enqueue("live", b"second")
    q.close()
    print("closed", flush=True)
""")


def test_inspect_works_while_another_process_has_the_queue_open(qdir):
    build(qdir)
    child = subprocess.Popen([sys.executable, "-c", CHILD, qdir], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        d = inspect_json(qdir)  # alone, the child keeps the writer lock between calls
        assert d["open_by"] == {"pids": [child.pid], "writer_lock": child.pid, "keeper": child.pid,
                                "keeper_running": True}
        assert (f"open by: 1 process: {child.pid} (alone: it keeps the writer lock logq.lock between calls)"
                in cli("inspect", qdir).stdout)
        assert d["jobs"]["active"] == 1 and d["ok"]
        assert cli("inspect", qdir, "--verify").returncode == 0
        assert json_lines(cli("inspect", qdir, "--records", "--json", "--type", "lease"))[-1]["name"] == "live"
        shared = cli("stats", qdir, "--json")  # opens the queue too: the child lets go of the writer lock
        assert shared.returncode == 0 and json.loads(shared.stdout)["counts"]["active"] == 1, shared.stderr
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "closed"
    finally:
        if child.stdin is not None:
            child.stdin.close()
        assert child.wait(timeout=30) == 0
    assert inspect_json(qdir)["jobs"]["done"] == 12
    assert inspect_json(qdir)["open_by"] == {"pids": [], "writer_lock": None, "keeper": None,
                                             "keeper_running": None}  # closed: no one has it open
    assert "open by: no process (none holds logq.open)" in cli("inspect", qdir).stdout


HOLDER = textwrap.dedent("""
    import sys, logq
    q = logq.Queue(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    q.close()
""")


def test_inspect_names_every_process_that_has_the_queue_open(qdir):
    build(qdir)
    holders = [subprocess.Popen([sys.executable, "-c", HOLDER, qdir], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for h in holders:
            assert h.stdout is not None and h.stdout.readline().strip() == "ready"
        d = inspect_json(qdir)["open_by"]
        pids = sorted(h.pid for h in holders)
        assert d["pids"] == pids and d["keeper"] is None  # the first let go of the writer lock for the second
        assert d["writer_lock"] in (None, *pids)  # held only for a turn, now and then
        assert f"open by: 2 processes: {pids[0]}" in cli("inspect", qdir).stdout
    finally:
        for h in holders:
            assert h.stdin is not None
            h.stdin.close()
        assert [h.wait(timeout=30) for h in holders] == [0, 0]
    assert inspect_json(qdir)["open_by"]["pids"] == []


def test_torn_tail_hint_names_any_process_that_has_the_queue_open():
    from logq.cli.inspect_text import _tail_lines
    tail = {"bytes": 12, "offset": 4096, "file": "q/00000000000000000001.seg", "reason": "incomplete record",
            "saved_to_on_next_open": "q/00000000000000000001.seg.4096.torn"}

    def hint(open_by):
        return [line for line in _tail_lines(tail, [], open_by) if "write in progress" in line]
    closed = {"pids": [], "writer_lock": None, "keeper": None, "keeper_running": None}
    assert hint(closed) == []
    assert hint({**closed, "pids": [41, 42]}) == ["  processes 41, 42 have the queue open: this may be a write in progress"]
    assert hint({**closed, "pids": [41]}) == ["  process 41 has the queue open: this may be a write in progress"]
    unknown = {"pids": None, "writer_lock": None, "keeper": 43, "keeper_running": True}
    assert hint(unknown) == ["  process 43 has the queue open: this may be a write in progress"]
    assert hint({**unknown, "keeper_running": False}) == []


# ------------------------------------------------------------------- bad paths

def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


def test_missing_path_exits_2(tmp_path):
    err = one_line_error(cli("inspect", tmp_path / "nope"))
    assert "no such file or directory" in err


@pytest.mark.parametrize("content", [None, {"notes.txt": b"hello"}])
def test_directory_that_is_not_a_queue_exits_2(tmp_path, content):
    for name, data in (content or {}).items():
        (tmp_path / name).write_bytes(data)
    assert "is not a logq queue directory" in one_line_error(cli("inspect", tmp_path))


def test_file_of_another_format_exits_2(tmp_path):
    other = tmp_path / "data.json"
    other.write_text('{"not": "a segment"}')
    assert "is not a logq segment file" in one_line_error(cli("inspect", other))


def test_bad_marker_file_exits_2(tmp_path):
    (tmp_path / "logq.meta").write_text("something else\n")
    assert "is not a logq marker file" in one_line_error(cli("inspect", tmp_path))


def test_newer_format_version_in_marker_exits_2(qdir):
    build(qdir)
    with open(os.path.join(qdir, "logq.meta"), "w") as f:
        f.write("logq 3\n")
    assert "upgrade logq" in one_line_error(cli("inspect", qdir, "--verify"))
    with open(os.path.join(qdir, "logq.meta"), "w") as f:
        f.write("logq 1\n")


def test_newer_format_version_in_segment_exits_2(tmp_path):
    path = str(tmp_path / "q")
    build(path)
    seg = segment_paths(path)[0]
    with open(seg, "r+b") as f:
        head = bytearray(f.read(SEGMENT_HEADER_SIZE))
        head[8:10] = struct.pack("<H", 2)
        head[32:40] = struct.pack("<Q", xxhash.xxh64_intdigest(bytes(head[:32]), 0))
        f.seek(0)
        f.write(head)
    assert "format version 2" in one_line_error(cli("inspect", path))
    assert "format version 2" in one_line_error(cli("inspect", seg))


@pytest.mark.parametrize("args", [["--limit", "3"], ["--type", "ack"], ["--verify", "--job", "1"],
                                  ["--records", "--type", "bogus"], ["--records", "--segment", "77"],
                                  ["--records", "--verify"], ["--limit", "-1", "--records"], ["--payload"]])
def test_bad_option_combinations_exit_2(healthy, args):
    r = cli("inspect", healthy.path, *args)
    assert r.returncode == 2 and r.stdout == "" and r.stderr


# ----------------------------------------------------------- other subcommands

def test_compact_sweeps_finished_jobs_and_leaves_a_verified_queue(healthy, tmp_path):
    path = str(tmp_path / "copy")
    shutil.copytree(healthy.path, path)
    r = cli("compact", path, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["jobs_swept"] == 13 and report["bytes_on_disk_after"] < report["bytes_on_disk_before"]
    assert cli("inspect", path, "--verify").returncode == 0
    assert "jobs: 19 pending, 0 active, 0 done, 0 dead, 0 cancelled" in cli("stats", path).stdout


def test_inspect_works_in_the_middle_of_a_compaction(healthy, tmp_path):
    """A committed swap not yet rolled into place: inspect reads it as the new segment."""
    from logq.log import compact as _compact
    path = str(tmp_path / "mid")
    shutil.copytree(healthy.path, path)
    with Queue(path, retain_done=0, retain_dead=0, compact_threshold=None) as q:
        bases = [b for b, _ in q._backend.log.sealed_prefix()]
        out = q._backend.log.write_compacted(bases, lambda rec: False)
        q._backend.log.fs.rename(out.tmp_path, out.tmp_path.replace(_compact.COMPACTING, _compact.SWAP))
        before = snapshot(path)
        r = cli("inspect", path, "--verify")
        assert r.returncode == 0, r.stdout + r.stderr
        assert cli("inspect", path, "--json").returncode == 0
        assert snapshot(path) == before  # read-only
        q._backend.log.fs.rename(out.tmp_path.replace(_compact.COMPACTING, _compact.SWAP), out.tmp_path)
        q._backend.log.discard(out)


def test_stats_text_and_json(healthy):
    r = cli("stats", healthy.path)
    assert r.returncode == 0, r.stderr
    assert "jobs: 19 pending, 0 active, 11 done, 1 dead, 1 cancelled" in r.stdout
    d = json.loads(cli("stats", healthy.path, "--json").stdout)
    assert d["counts"]["done"] == 11 and d["segments"] == len(segment_paths(healthy.path))


def test_stats_refuses_what_is_not_a_queue(tmp_path):
    one_line_error(cli("stats", tmp_path / "nope"))
    assert not (tmp_path / "nope").exists()  # no queue was created by mistake


def test_requeue_dead_makes_dead_jobs_pending(healthy):
    r = cli("requeue-dead", healthy.path, "--name", "report")
    assert r.returncode == 0 and r.stdout.startswith("requeued 0 dead job(s)")
    r = cli("requeue-dead", healthy.path)
    assert r.returncode == 0 and r.stdout.startswith("requeued 1 dead job(s)")
    jobs = inspect_json(healthy.path)["jobs"]
    assert jobs["dead"] == 0 and jobs["pending"] == 20
    assert [h["type"] for h in inspect_json(healthy.path, "--job", healthy.ids["dead"])["history"]][-1] == "retry"


def test_demo_dispatches_and_leaves_a_queue_that_verifies(tmp_path):
    path = tmp_path / "demo"
    r = cli("demo", "--dir", path, "--workers", 2, "--jobs", 3)
    assert r.returncode == 0, r.stdout + r.stderr
    d = inspect_json(path, "--verify")
    assert d["ok"] and inspect_json(path)["jobs"]["done"] == 3
    # the command it offers names the interpreter logq runs under, and works as printed
    offered = r.stdout.rsplit("Results: ", 1)[1].split()
    assert offered[0] in (sys.executable, os.path.relpath(sys.executable))
    assert subprocess.run(offered, capture_output=True, timeout=60).returncode == 0


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git(*args: object, cwd: str = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60)


needs_checkout = pytest.mark.skipif(shutil.which("git") is None or git("rev-parse").returncode != 0,
                                    reason="needs git and a git checkout of logq")


@needs_checkout
def test_demo_run_as_the_quick_start_says_leaves_the_clone_clean(tmp_path):
    """The demo's default directory, made in the current directory, is one git ignores."""
    clone = str(tmp_path / "clone")
    assert git("init", "-q", clone).returncode == 0
    shutil.copy(os.path.join(REPO, ".gitignore"), clone)
    before = git("status", "--porcelain", "--untracked-files=all", cwd=clone).stdout
    r = subprocess.run([sys.executable, "-m", "logq", "demo", "--workers", "2", "--jobs", "3"],
                       cwd=clone, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.isdir(os.path.join(clone, "logq-demo"))
    assert git("status", "--porcelain", "--untracked-files=all", cwd=clone).stdout == before == "?? .gitignore\n"


@needs_checkout
def test_quick_and_partial_benchmark_runs_write_where_git_ignores_and_full_runs_write_the_tracked_results():
    from benchmarks.bench_compact import curve_prefix
    from benchmarks.suite import output_paths
    scratch = [*output_paths(quick=True, partial=False), *output_paths(quick=True, partial=True),
               *output_paths(quick=False, partial=True), curve_prefix(True) + ".json", curve_prefix(True) + ".png"]
    for path in scratch:
        assert git("check-ignore", "-q", path).returncode == 0, path
        assert git("ls-files", path).stdout == "", path
    record = [*output_paths(quick=False, partial=False), curve_prefix(False) + ".json", curve_prefix(False) + ".png"]
    for path in record:
        assert git("ls-files", "--error-unmatch", path).returncode == 0, path
    assert git("ls-files", os.path.join(REPO, "benchmarks", "results", "*quick*")).stdout == ""


def test_benchmark_table_shows_a_long_error_whole_below_it(capsys):
    from benchmarks.suite import add_ratios, evaluate_targets, print_table
    from benchmarks.workloads import Row
    error = "RuntimeError: " + "database is locked; " * 8 + "gave up"
    rows = [Row("enq1", "sqlite", 5000.0, "/s"), Row("enq1", "huey", None, "/s", error=error)]
    add_ratios(rows)
    print_table(rows, evaluate_targets(rows, 100_000), 100_000)
    out = capsys.readouterr().out
    assert error in out and "RuntimeError: database is locked; dat...  " in out  # the cell, marked as cut


def test_demo_stopped_by_ctrl_c_lets_running_jobs_finish_and_leaves_none_active(tmp_path):
    path = tmp_path / "demo"
    p = subprocess.Popen([sys.executable, "-m", "logq", "demo", "--dir", str(path), "--workers", "3", "--jobs", "400"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = b""
    try:
        while not re.search(rb"[1-9]\d*/400 done, [1-9] running", seen):  # jobs are running now
            chunk = p.stdout.read(1)  # the progress line is redrawn every 0.2 s
            assert chunk, seen.decode()
            seen += chunk
        p.send_signal(signal.SIGINT)
        out = p.communicate(timeout=60)[0].decode()
    finally:
        p.kill()
    assert "stopping: letting running jobs finish" in out and "stopped after" in out, out
    jobs = inspect_json(path)["jobs"]
    assert jobs["active"] == 0 and jobs["done"] > 0 and jobs["pending"] > 0, jobs
