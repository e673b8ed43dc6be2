"""Regenerate the logq format test vectors in this directory.

Usage (from the repository root, with logq importable):

    python spec/vectors/make_vectors.py            # write the vector files
    python spec/vectors/make_vectors.py --example  # print the worked example of spec/format.md

Every byte comes from logq's own `Encoder` and `encode_segment_header` with
fixed salts, so the output is deterministic for a given codec (and zstd
library: see README.md). tests/test_vectors.py calls `build()` and compares
its result with the stored files byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys

from logq.log.codec import (
    FLAG_CONTINUED, FLAG_FIRST, FORMAT_VERSION, SEGMENT_HEADER_SIZE, TYPE_SEAL, Encoder, encode_segment_header,
)

HERE = os.path.dirname(os.path.abspath(__file__))

SALT_BASIC = 0x0123_4567_89AB_CDEF
SALT_LOG_1 = 0xFEDC_BA98_7654_3210
SALT_LOG_4 = 0x0F1E_2D3C_4B5A_6978
ZSTD_THRESHOLD = 64  # payloads of 64 bytes or more are offered to zstd

# (seq, type, payload, flags asked for). The encoder adds FLAG_ZSTD by itself.
BASIC_RECORDS = [
    (1, 16, b"hello, logq", FLAG_FIRST),
    (2, 17, b"logq " * 16, FLAG_FIRST),  # 80 compressible bytes: stored as a zstd frame
    (3, 18, b"batch part 1", FLAG_FIRST | FLAG_CONTINUED),
    (4, 19, b"batch part 2!", 0),
]
LOG_SEGMENT_1 = [
    (1, 16, b"first", FLAG_FIRST),
    (2, 16, b"second", FLAG_FIRST),
    (3, TYPE_SEAL, b"", FLAG_FIRST),
]
LOG_SEGMENT_4 = [
    (4, 16, b"after rollover", FLAG_FIRST),
]
TORN_CUT = 20  # torn.seg ends this many bytes into the record of seq 4

SEG_1 = "00000000000000000001.seg"
SEG_4 = "00000000000000000004.seg"


def _segment(salt: int, base: int, records: list[tuple[int, int, bytes, int]]) -> tuple[bytes, list[dict]]:
    enc = Encoder(salt, compression="zstd", threshold=ZSTD_THRESHOLD)
    out = bytearray(encode_segment_header(salt, base))
    described = []
    for seq, rtype, payload, flags in records:
        data = enc.encode(seq, rtype, payload, flags)
        stored_len = int.from_bytes(data[4:8], "little")
        described.append({
            "seq": seq, "type": rtype, "flags": data[17], "offset": len(out), "size": len(data),
            "stored_len": stored_len, "raw_len": len(payload), "payload": payload.hex(),
        })
        out += data
    return bytes(out), described


def _describe(name: str, data: bytes, salt: int, base: int, records: list[dict], *,
              delivered: list[int], end: int, sealed: bool, torn: bool) -> dict:
    return {
        "file": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "salt": f"{salt:#018x}", "base_seq": base, "version": FORMAT_VERSION,
        "records": records,
        "scan": {"delivered": delivered, "end": end, "sealed": sealed, "torn": torn},
    }


def build() -> dict[str, bytes]:
    """Every vector file, by path relative to this directory (vectors.json included)."""
    files: dict[str, bytes] = {}
    entries = []

    basic, recs = _segment(SALT_BASIC, 1, BASIC_RECORDS)
    files["basic.seg"] = basic
    entries.append(_describe("basic.seg", basic, SALT_BASIC, 1, recs,
                             delivered=[1, 2, 3, 4], end=len(basic), sealed=False, torn=False))

    cut = recs[3]["offset"] + TORN_CUT
    torn = basic[:cut]
    files["torn.seg"] = torn
    entries.append(_describe("torn.seg", torn, SALT_BASIC, 1, recs[:3],
                             delivered=[1, 2], end=recs[2]["offset"], sealed=False, torn=True))

    seg1, recs1 = _segment(SALT_LOG_1, 1, LOG_SEGMENT_1)
    seg4, recs4 = _segment(SALT_LOG_4, 4, LOG_SEGMENT_4)
    files["log/logq.meta"] = f"logq {FORMAT_VERSION}\n".encode()
    files[f"log/{SEG_1}"] = seg1
    files[f"log/{SEG_4}"] = seg4
    entries.append(_describe(f"log/{SEG_1}", seg1, SALT_LOG_1, 1, recs1,
                             delivered=[1, 2], end=len(seg1), sealed=True, torn=False))
    entries.append(_describe(f"log/{SEG_4}", seg4, SALT_LOG_4, 4, recs4,
                             delivered=[4], end=len(seg4), sealed=False, torn=False))

    doc = {
        "format_version": FORMAT_VERSION,
        "zstd_threshold": ZSTD_THRESHOLD,
        "segments": entries,
        "torn_cut": {"file": "torn.seg", "from": "basic.seg", "length": cut},
    }
    files["vectors.json"] = _dump_json(doc).encode()
    return files


def _dump_json(doc: dict) -> str:
    """Indented JSON with each record (and each scan summary) on one line."""
    def compact(obj: object) -> object:
        if isinstance(obj, dict):
            if "seq" in obj or "delivered" in obj:
                return json.dumps(obj)
            return {k: compact(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [compact(v) for v in obj]
        return obj
    text = json.dumps(compact(doc), indent=2)
    # The one-line objects were dumped as strings: unquote them.
    text = re.sub(r'"(\{.*\})"', lambda m: json.loads('"' + m.group(1) + '"'), text)
    return text + "\n"


def hex_example() -> str:
    """The annotated dump of basic.seg's header and first record used in spec/format.md."""
    data = build()["basic.seg"]
    salt32 = SALT_BASIC & 0xFFFFFFFF
    rec = SEGMENT_HEADER_SIZE
    stored_len = int.from_bytes(data[rec + 4:rec + 8], "little")
    pad = -stored_len % 8
    fields = [
        (0, 8, 'magic "\\x89LOGQSG\\n"'),
        (8, 2, "version = 1"),
        (10, 2, "header size = 40"),
        (12, 4, "reserved = 0"),
        (16, 8, f"salt = {SALT_BASIC:#018x}"),
        (24, 8, "base seq = 1"),
        (32, 8, "header check = xxh64(bytes 0x00..0x20, seed 0)"),
        (rec, 4, f"record check = xxh32(bytes 0x{rec + 4:02x}..0x{rec + 32:02x}, seed {salt32:#010x})"),
        (rec + 4, 4, f"stored length = {stored_len}"),
        (rec + 8, 8, "seq = 1"),
        (rec + 16, 1, "type = 16"),
        (rec + 17, 1, "flags = 0x04 (FIRST)"),
        (rec + 18, 2, "reserved = 0"),
        (rec + 20, 4, f"raw length = {stored_len}"),
        (rec + 24, 8, "payload check = xxh64(payload, seed = salt)"),
        (rec + 32, stored_len, "payload " + repr(data[rec + 32:rec + 32 + stored_len].decode())),
        (rec + 32 + stored_len, pad, f"padding ({pad} zero bytes)"),
    ]
    lines = []
    for off, width, what in fields:
        hexed = " ".join(f"{b:02x}" for b in data[off:off + width])
        lines.append(f"{off:04x}  {hexed:<35}  | {what}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if argv[1:] == ["--example"]:
        print(hex_example())
        return
    for rel, data in build().items():
        path = os.path.join(HERE, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        print(f"wrote {rel} ({len(data)} bytes)")


if __name__ == "__main__":
    main(sys.argv)
