"""Salvage replay: replay that skips the records it cannot apply and says whose they were. Pure.

Theory of operation
-------------------
A salvage open reads past damaged bytes (the log reports each range it
skipped). The records that survive may then refer to what was lost: an ACK
whose job's ENQUEUE was in the damaged range (`JobNotFound`), a second LEASE
whose FAIL was lost (`InvalidTransition`), a record whose payload does not
decode. Plain replay raises on the first such record, so the one mode meant to
read past damage could not open. `SalvageReplay.replay` hands each record to
`Index.replay` as plain replay does; a record it refuses changed nothing (the
index checks before it changes a job), so it is skipped and its job noted once,
with the first reason, in `unrecovered`. The job keeps the state its applied
records gave it; its later records still apply where they are legal.

What cannot be seen here: a lost record of a job whose later records all still
apply, or that had none (a lost ACK leaves its job active, so pending again
after open). The log's lost ranges cover those, by sequence number.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CorruptionError, InvalidTransition, JobNotFound
from .index import Index, LoggedRecord
from .records import ENQUEUE, TYPE_NAMES, job_id_of


@dataclass(frozen=True)
class UnrecoveredJob:
    """A job whose history replay could not follow to its end (salvage mode).

    `job` is its id (None if the record was too damaged to name one), `seq` the
    sequence number of the first of its records that could not be applied, and
    `reason` why: its ENQUEUE was lost (no such job), an earlier change was lost
    (the transition was illegal), or the record did not decode. The job, if it
    exists, is in the state its applied records gave it.
    """

    job: int | None
    seq: int
    reason: str


class SalvageReplay:
    """The log's replay callback for a salvage open, over `index`."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.unrecovered: list[UnrecoveredJob] = []  # in the order their first bad record came
        self.skipped = 0  # records not applied
        self._noted: set[int | None] = set()

    def replay(self, rec: LoggedRecord, base: int) -> None:
        """`Index.replay`, skipping (and noting) a record the index refuses."""
        try:
            self.index.replay(rec, base)
        except (JobNotFound, InvalidTransition, CorruptionError) as exc:
            self._note(rec, exc)

    def _note(self, rec: LoggedRecord, exc: Exception) -> None:
        self.skipped += 1
        job = rec.seq if rec.type == ENQUEUE else job_id_of(rec.type, bytes(rec.payload[:8]))
        if job in self._noted and job is not None:
            return
        self._noted.add(job)
        if isinstance(exc, JobNotFound):
            why = "its enqueue record was lost"
        elif isinstance(exc, InvalidTransition):
            why = "an earlier change of it was lost"
        else:
            why = "a record of it does not decode"
        kind = TYPE_NAMES.get(rec.type, f"type {rec.type}")
        self.unrecovered.append(UnrecoveredJob(job, rec.seq, f"{why}: its {kind} record "
                                                             f"(sequence {rec.seq}) was skipped ({exc})"))
