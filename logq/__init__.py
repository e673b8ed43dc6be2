"""logq: an embedded, persistent job queue built on a checksummed append-only log."""

from ._errors import (
    ChecksumError, ClosedError, CorruptionError, InvalidArgument, InvalidTransition, JobNotFound,
    LeaseLostError, LockedError, LogqError, NotALogqDirectory, UnsupportedVersionError,
    WriterFailedError,
)
from ._log import Appended, Log, RecoveryReport, TornTail
from ._record import Record
from ._segment import LostRange

__version__ = "0.1.0"

__all__ = [
    "Appended", "ChecksumError", "ClosedError", "CorruptionError", "InvalidArgument",
    "InvalidTransition", "JobNotFound", "LeaseLostError", "LockedError", "Log", "LogqError",
    "LostRange", "NotALogqDirectory", "Record", "RecoveryReport", "TornTail",
    "UnsupportedVersionError", "WriterFailedError",
]
