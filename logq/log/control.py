"""The control file `logq.control`: what the processes sharing a log tell each other.

Theory of operation
-------------------
Several processes may have one log open (spec/format.md §14). The log is the
truth; each process keeps its own picture of it and brings it up to date
before it changes anything. The control file says how far the log goes:
the published state (segment base, end offset, last sequence number), the
highest sequence number some process has fsynced, an epoch, and the pid of
a process that holds the writer lock for good while it is alone.

The state is written only under the writer lock (`logq.lock`, see
`turns.py`), to the one of two slots the previous write did not use, with a
counter and a checksum: a reader that takes no lock (a waiting process
polling for news) may meet a slot being written, sees its checksum fail
and takes the other, older one. Under the lock the newest slot is always
whole. The knock counter (first 8 bytes after the magic) is written by a
process that wants the writer lock from one that keeps it, without the lock,
and only ever grows. The durable word after it (a sequence number and its
checksum) is written, also without the lock, by a process after an fsync
that covered every record up to that number (turns.py `fsync_shared`).

Nothing here is fsynced: the control file describes processes that are
running. A process that opens the log alone rebuilds it from recovery.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import xxhash

from .fs import DEFAULT_MODE, File, FileSystem

NAME = "logq.control"  # (directory.CONTROL_NAME)
MAGIC = b"LOGQCTL1"
KNOCK = struct.Struct("<Q")  # at offset 8
DURABLE = struct.Struct("<QQ")  # at offset 16: a durable seq and the xxh64 of its 8 bytes
SLOT = struct.Struct("<QQQQQQQ")  # counter, epoch, base, end, last seq, durable seq, holder pid
SLOT_SIZE = SLOT.size + 8  # then the xxh64 of the slot's other bytes
FIRST_SLOT = 64
SIZE = FIRST_SLOT + 2 * SLOT_SIZE


@dataclass(frozen=True)
class State:
    """The log as its last writer left it: records up to byte `end` of segment `base`
    (the active one), numbered up to `last_seq`; every record up to `durable_seq` was
    fsynced. `epoch` changes when records move (compaction). `holder`: the pid of a
    process keeping the writer lock while it is alone (0: none)."""

    counter: int
    epoch: int
    base: int
    end: int
    last_seq: int
    durable_seq: int
    holder: int = 0


def encode_slot(state: State) -> bytes:
    body = SLOT.pack(state.counter, state.epoch, state.base, state.end, state.last_seq, state.durable_seq,
                     state.holder)
    return body + xxhash.xxh64_intdigest(body).to_bytes(8, "little")


def decode(data: bytes) -> State | None:
    """The newest whole slot of a control file's bytes; None if it has none."""
    if data[:len(MAGIC)] != MAGIC:
        return None
    best: State | None = None
    for at in (FIRST_SLOT, FIRST_SLOT + SLOT_SIZE):
        slot = data[at:at + SLOT_SIZE]
        if len(slot) < SLOT_SIZE or xxhash.xxh64_intdigest(slot[:SLOT.size]) != int.from_bytes(slot[-8:], "little"):
            continue
        state = State(*SLOT.unpack_from(slot))
        if best is None or state.counter > best.counter:
            best = state
    return best


class Control:
    """The control file of one open log (one process's handle on it)."""

    def __init__(self, fs: FileSystem, directory: str, mode: int = DEFAULT_MODE) -> None:
        path = os.path.join(directory, NAME)
        self._file: File = fs.open(path, create=True, mode=mode)  # (empty until `initialize`)
        self.last: State | None = None  # the state this process last read or wrote

    def initialize(self) -> None:
        """Under the writer lock: give a new control file its magic (a knock already
        written there is kept; the slots read as never published)."""
        if self._file.pread(len(MAGIC), 0) != MAGIC:
            self._file.pwrite(MAGIC, 0)
            if self._file.size() < SIZE:
                self._file.pwrite(bytes(SIZE - max(self._file.size(), len(MAGIC))), max(self._file.size(), len(MAGIC)))

    def read(self) -> State | None:
        """The published state (None: never published)."""
        self.last = decode(self._file.pread(SIZE, 0))
        return self.last

    def peek_counter(self) -> int:
        """The counter of the newest whole slot (0: none), read without the writer lock:
        has anything been published since?"""
        state = decode(self._file.pread(SIZE, 0))
        return 0 if state is None else state.counter

    def peek_bytes(self) -> bytes:
        """The whole file, read without the writer lock (`decode` takes the newest whole slot)."""
        return self._file.pread(SIZE, 0)

    def peek_durable(self) -> int:
        """The durable sequence number published (0: none), read without the writer lock."""
        state = decode(self._file.pread(SIZE, 0))
        return 0 if state is None else state.durable_seq

    def publish(self, epoch: int, base: int, end: int, last_seq: int, durable_seq: int, holder: int = 0) -> State:
        """Write a new state (under the writer lock) to the slot the last one did not use."""
        counter = (self.last.counter if self.last is not None else 0) + 1
        state = State(counter, epoch, base, end, last_seq, durable_seq, holder)
        self._file.pwrite(encode_slot(state), FIRST_SLOT + (counter % 2) * SLOT_SIZE)
        self.last = state
        return state

    def knocks(self) -> int:
        data = self._file.pread(KNOCK.size, len(MAGIC))
        return int(KNOCK.unpack(data)[0]) if len(data) == KNOCK.size else 0

    def durable_word(self) -> int:
        """The durable seq the fsyncing processes share (0 if none, or read torn)."""
        data = self._file.pread(DURABLE.size, 16)
        if len(data) < DURABLE.size:
            return 0
        seq, check = DURABLE.unpack(data)
        return int(seq) if xxhash.xxh64_intdigest(data[:8]) == check else 0

    def set_durable_word(self, seq: int) -> None:
        """After an fsync: every record up to `seq` is durable (turns.py `fsync_shared`)."""
        body = seq.to_bytes(8, "little")
        self._file.pwrite(body + xxhash.xxh64_intdigest(body).to_bytes(8, "little"), 16)

    def knock(self) -> None:
        """Ask the process that keeps the writer lock to let go of it (`turns.py`)."""
        self._file.pwrite(KNOCK.pack(self.knocks() + 1), len(MAGIC))

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass
