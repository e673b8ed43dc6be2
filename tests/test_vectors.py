"""The stored format test vectors (spec/vectors) against logq's codec and spec/format.md.

* the generator, run again with the same salts, yields the stored files byte for byte;
* logq's scanner decodes the stored files into exactly the records vectors.json lists;
* a small reader written from spec/format.md alone (struct + xxhash + zstd, no logq)
  decodes them the same way, so the document and the bytes agree;
* the worked hex example in spec/format.md is the start of basic.seg;
* the log directory vector opens with logq.Log, and the torn one is repaired as specified.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import struct

import pytest
import xxhash
import zstandard

from logq.log.log import Log
from logq.log.codec import read_record
from logq.log.segment import parse_segment_name, scan, segment_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "spec")
VECTORS = os.path.join(SPEC, "vectors")


def _load_generator():
    spec = importlib.util.spec_from_file_location("logq_make_vectors", os.path.join(VECTORS, "make_vectors.py"))
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()
with open(os.path.join(VECTORS, "vectors.json"), encoding="utf-8") as _f:
    DOC = json.load(_f)
SEGMENTS = {s["file"]: s for s in DOC["segments"]}


def stored(rel: str) -> bytes:
    with open(os.path.join(VECTORS, *rel.split("/")), "rb") as f:
        return f.read()


# ------------------------------------------------------------ re-encoding

@pytest.mark.parametrize("rel", sorted(GEN.build()))
def test_regenerating_gives_the_stored_bytes(rel):
    fresh = GEN.build()[rel]
    old = stored(rel)
    if fresh != old:
        at = next((i for i, (a, b) in enumerate(zip(fresh, old)) if a != b), min(len(fresh), len(old)))
        pytest.fail(f"{rel}: the codec now writes different bytes (first difference at byte {at}; "
                    f"{len(fresh)} vs {len(old)} bytes). A format change needs a new format version.")


def test_no_stray_vector_files():
    on_disk = set()
    for top, _, names in os.walk(VECTORS):
        for name in names:
            rel = os.path.relpath(os.path.join(top, name), VECTORS).replace(os.sep, "/")
            if not rel.endswith((".py", ".md")) and "__pycache__" not in rel:
                on_disk.add(rel)
    assert on_disk == set(GEN.build())


@pytest.mark.parametrize("entry", DOC["segments"], ids=lambda e: e["file"])
def test_description_matches_the_file(entry):
    data = stored(entry["file"])
    assert len(data) == entry["size"]
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]


# ------------------------------------------------------------ decoding with logq

@pytest.mark.parametrize("entry", DOC["segments"], ids=lambda e: e["file"])
def test_logq_scan_decodes_the_described_records(entry):
    data = stored(entry["file"])
    got = []
    result = scan(data, entry["file"], got.append)
    assert result.header.salt == int(entry["salt"], 16)
    assert result.header.base_seq == entry["base_seq"]
    assert result.header.version == entry["version"]
    want = [r for r in entry["records"] if r["seq"] in entry["scan"]["delivered"]]
    assert [(r.seq, r.type, r.flags, r.payload.hex(), r.offset, r.size) for r in got] == \
        [(r["seq"], r["type"], r["flags"], r["payload"], r["offset"], r["size"]) for r in want]
    summary = entry["scan"]
    assert (result.end, result.sealed, result.torn) == (summary["end"], summary["sealed"], summary["torn"])
    assert result.damage is None


@pytest.mark.parametrize("entry", DOC["segments"], ids=lambda e: e["file"])
def test_every_described_record_reads_back_at_its_offset(entry):
    data = stored(entry["file"])
    salt = int(entry["salt"], 16)
    for want in entry["records"]:
        rec = read_record(data, want["offset"], salt, entry["file"])
        assert rec is not None
        assert (rec.seq, rec.type, rec.flags, rec.payload.hex(), rec.size) == \
            (want["seq"], want["type"], want["flags"], want["payload"], want["size"])


def test_vectors_cover_the_features_they_claim():
    basic = SEGMENTS["basic.seg"]["records"]
    assert any(r["flags"] & 1 and r["stored_len"] < r["raw_len"] for r in basic)  # zstd
    assert [r["flags"] & 6 for r in basic[2:4]] == [6, 0]  # a two-record batch: FIRST|CONTINUED, last
    assert SEGMENTS["log/00000000000000000001.seg"]["records"][-1]["type"] == 1  # SEAL
    assert stored("log/logq.meta") == b"logq 1\n"
    for rel in ("log/00000000000000000001.seg", "log/00000000000000000004.seg"):
        base = SEGMENTS[rel]["base_seq"]
        assert rel.split("/")[1] == segment_name(base) and parse_segment_name(rel.split("/")[1]) == base


# ------------------------------------------------------------ a reader from the spec alone

def spec_reader(data: bytes) -> dict:
    """Decode a segment following spec/format.md only. Returns header fields and records."""
    magic, version, hsize, reserved, salt, base, check = struct.unpack_from("<8sHHIQQQ", data, 0)
    assert magic == b"\x89LOGQSG\n" and version == 1 and hsize == 40 and reserved == 0
    assert check == xxhash.xxh64_intdigest(data[:32], 0)
    pos, records = 40, []
    while pos + 32 <= len(data):
        hcheck, n, seq, rtype, flags, res, raw_len, pcheck = struct.unpack_from("<IIQBBHIQ", data, pos)
        assert hcheck == xxhash.xxh32_intdigest(data[pos + 4:pos + 32], salt & 0xFFFFFFFF)
        assert n <= 1 << 28 and rtype != 0 and res == 0 and flags & ~7 == 0
        padded = (n + 7) // 8 * 8
        if pos + 32 + padded > len(data):
            break  # torn: the record is incomplete
        payload = data[pos + 32:pos + 32 + n]
        assert pcheck == xxhash.xxh64_intdigest(payload, salt)
        assert not any(data[pos + 32 + n:pos + 32 + padded])
        if flags & 1:
            payload = zstandard.ZstdDecompressor().decompress(payload, max_output_size=raw_len)
        assert len(payload) == raw_len
        records.append({"seq": seq, "type": rtype, "flags": flags, "offset": pos, "size": 32 + padded,
                        "stored_len": n, "raw_len": raw_len, "payload": payload.hex()})
        pos += 32 + padded
    return {"salt": f"{salt:#018x}", "base_seq": base, "version": version, "records": records}


@pytest.mark.parametrize("entry", DOC["segments"], ids=lambda e: e["file"])
def test_reader_written_from_the_spec_agrees(entry):
    got = spec_reader(stored(entry["file"]))
    assert got == {k: entry[k] for k in ("salt", "base_seq", "version", "records")}


# ------------------------------------------------------------ spec/format.md

def test_worked_example_in_format_md_is_the_start_of_basic_seg():
    with open(os.path.join(SPEC, "format.md"), encoding="utf-8") as f:
        text = f.read()
    block = re.search(r"<!-- example:begin -->\n```\n(.*?)```\n<!-- example:end -->", text, re.S)
    assert block, "format.md lost its worked example markers"
    dump, expect_off = bytearray(), 0
    for line in block.group(1).splitlines():
        m = re.match(r"^([0-9a-f]{4})  ((?:[0-9a-f]{2} ?)*)\s*\|", line)
        assert m, f"unparsable example line: {line!r}"
        assert int(m.group(1), 16) == expect_off, line
        chunk = bytes.fromhex(m.group(2))
        dump += chunk
        expect_off += len(chunk)
    basic = stored("basic.seg")
    first = SEGMENTS["basic.seg"]["records"][0]
    assert bytes(dump) == basic[:first["offset"] + first["size"]]
    assert block.group(1).rstrip("\n") == GEN.hex_example()


# ------------------------------------------------------------ whole-directory behaviour

def test_log_directory_vector_opens_and_replays(tmp_path):
    d = tmp_path / "log"
    shutil.copytree(os.path.join(VECTORS, "log"), d)
    got = []
    log = Log(d, replay=lambda rec, base: got.append((base, rec.seq, rec.payload)))
    try:
        assert got == [(1, 1, b"first"), (1, 2, b"second"), (4, 4, b"after rollover")]
        assert log.report.torn == [] and log.report.lost == []
        assert log.last_seq == 4
        assert log.segments() == [(1, 152, True), (4, 88, False)]
    finally:
        log.close()


def test_torn_vector_is_cut_after_the_last_complete_batch_and_saved_aside(tmp_path):
    d = tmp_path / "log"
    d.mkdir()
    (d / "logq.meta").write_bytes(b"logq 1\n")
    seg = d / segment_name(1)
    torn = stored("torn.seg")
    seg.write_bytes(torn)
    end = SEGMENTS["torn.seg"]["scan"]["end"]
    got = []
    log = Log(d, replay=lambda rec, base: got.append(rec.seq))
    try:
        assert got == [1, 2]
        [cut] = log.report.torn
        kept = torn[end:].rstrip(b"\0")  # the cut bytes without their trailing zeros
        assert cut.offset == end and cut.length == len(kept)
        assert os.path.basename(cut.saved_to) == f"{segment_name(1)}.{end}.torn"
        assert (d / f"{segment_name(1)}.{end}.torn").read_bytes() == kept
        assert seg.read_bytes() == torn[:end]
        assert log.append([(16, b"next")]).first_seq == 3
    finally:
        log.close()
