"""logq: an embedded, persistent job queue built on a checksummed append-only log.

    import logq
    with logq.Queue("data/jobs") as q:
        q.enqueue("send_email", b"payload")
        job = q.lease()
        q.ack(job)
"""

import logging as _logging

from .clock import Clock, SystemClock
from .errors import (
    ChecksumError, ClosedError, CorruptionError, FileAccessError, InvalidArgument, InvalidTransition, JobNotFound,
    LayoutVersionError, LeaseLostError, LockedError, LogqError, MissingFileError, NotALogqDirectory, NotARegularFile,
    NotReplicatedError, RecordTooLargeError, ResultTooLargeError, UnavailableError, UnsafeDirectoryError, UnsupportedVersionError,
    WaitTimeout,
    WriterFailedError,
)
from .log.fs import OsFileSystem
from .core.jobs import Backoff, CompactionReport, Job, JobInfo, Stats
from .core.salvage import UnrecoveredJob
from .log.log import Appended, Log, RecoveryReport, TornTail
from .queue import Queue
from .log.codec import Record
from .log.segment import LostRange
from .runtime.tasks import Handle, JSONSerializer, Serializer, Task, TaskCancelled, TaskFailed
from .runtime.worker import Metrics, TaskMetrics, TaskTimeout, Worker

__version__ = "0.1.0"

_logging.getLogger("logq").addHandler(_logging.NullHandler())  # the application decides what is shown

__all__ = [
    "Appended", "Backoff", "ChecksumError", "CompactionReport", "Clock", "ClosedError", "CorruptionError",
    "FileAccessError", "Handle", "InvalidArgument", "InvalidTransition", "JSONSerializer", "Job", "JobInfo", "JobNotFound",
    "LayoutVersionError", "LeaseLostError", "LockedError", "Log", "LogqError", "LostRange", "Metrics", "MissingFileError",
    "NotALogqDirectory", "NotARegularFile", "NotReplicatedError",
    "OsFileSystem", "Queue", "Record", "RecordTooLargeError", "RecoveryReport", "ResultTooLargeError", "Serializer",
    "Stats", "SystemClock", "Task", "TaskCancelled",
    "TaskFailed", "TaskMetrics", "TaskTimeout", "TornTail", "UnavailableError", "UnrecoveredJob", "UnsafeDirectoryError", "UnsupportedVersionError",
    "WaitTimeout",
    "Worker", "WriterFailedError",
]
