"""The exceptions logq raises: one root, one class per condition.

Every error a caller can provoke is a `LogqError`. Argument errors are also
`ValueError` and `TypeError`, so code written against the standard library's
conventions catches them too. Errors about a place on disk carry `path` and
`offset` where they apply.
"""

from __future__ import annotations


class LogqError(Exception):
    """Root of every error raised by logq."""


class InvalidArgument(LogqError, ValueError, TypeError):
    """An argument has the wrong type or value; nothing was written."""


class ResultTooLargeError(InvalidArgument):
    """A job's result is longer than the queue's `max_result`; nothing was written (the job
    stays leased): keep large results elsewhere and return a reference to them."""


class ClosedError(LogqError):
    """The queue or log was closed; open it again to continue."""


class LockedError(LogqError):
    """The queue directory is held by another process in a way this call cannot wait out: a
    process keeps its writer lock and does not let go, or the call needs the queue to itself
    (salvage, compaction) while others have it open."""

    def __init__(self, message: str, *, path: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.pid = pid


class NotALogqDirectory(LogqError):
    """The path exists but is not a logq directory; nothing was changed."""


class FileAccessError(LogqError, OSError):
    """A file or directory of the queue cannot be used as it is (permissions, a full
    or read-only disk, a missing file); `path` names it, `errno` says why, and the
    message says what to do. Also an `OSError`."""

    def __init__(self, message: str, *, path: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno


class NotARegularFile(FileAccessError):
    """A name the queue uses holds a directory, FIFO, device, socket or symbolic link:
    logq opens only regular files and never follows a link; move it away."""


class UnsafeDirectoryError(FileAccessError):
    """The queue directory belongs to another user, or users that the queue's `mode`
    leaves out may write to it: they could plant files there, so logq does not open it."""


class MissingFileError(FileAccessError, FileNotFoundError):
    """A file the queue needs vanished while it was being opened. Also a `FileNotFoundError`."""


class WriterFailedError(LogqError):
    """A write or fsync failed earlier; the log refuses work until it is reopened."""


class CorruptionError(LogqError):
    """Stored bytes failed verification at `path` and `offset`."""

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f" ({path}" + (f" at byte {offset}" if offset is not None else "") + ")"
        super().__init__(message + where)
        self.reason = message
        self.path = path
        self.offset = offset


class ChecksumError(CorruptionError):
    """A header or payload check did not match the stored bytes."""


class UnsupportedVersionError(CorruptionError):
    """The files were written by a newer format version than this logq reads."""


class RecordTooLargeError(CorruptionError):
    """A record that verifies is larger than this queue accepts (the larger of its
    `max_payload` and `max_result`, plus the record's own fields). Not a torn write, so
    it is never cut: open the queue with the `max_payload` and `max_result` it was
    written with, or with `salvage=True` to skip the record and have it reported."""


class InvalidTransition(LogqError):
    """The operation is not allowed in the job's current state; nothing was written."""


class JobNotFound(InvalidTransition, KeyError):
    """No job with this id exists (or it was compacted away)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class LeaseLostError(InvalidTransition):
    """The caller's lease ended (expired and re-leased, or the job was finished elsewhere)."""


class WaitTimeout(LogqError, TimeoutError):
    """The job did not finish within the time given to wait for it."""


class UnavailableError(LogqError):
    """The server that keeps the queue (Redis) cannot be reached or refused the command;
    nothing is known to have changed. Check that the server runs and the URL is right; a
    worker logs this, backs off and resumes when the server is back."""


class NotReplicatedError(UnavailableError):
    """A `sync="always"` change was made and fsynced on the Redis server, but fewer of its
    replicas than were connected when the queue was opened confirmed it in time: the change
    is not undone, and it may or may not be on the others. Bring the replicas back (or reopen
    the queue to wait only for those connected now); a worker logs this and backs off."""


class LayoutVersionError(LogqError):
    """The queue's keys on the Redis server were written in another layout than this logq
    reads; nothing was changed. Drain the queue with the logq that wrote it, or delete its
    keys (`{logq:NAME}:*`), then open it again."""
