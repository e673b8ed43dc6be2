"""`with` support shared by the queue and the log: a leaf, importing only the errors.

Theory of operation
-------------------
A class with a `close()` that may raise `WriterFailedError` (the final flush
or fsync failed) inherits `ClosesOnExit` to be used as a context manager.
On a clean exit the failure is raised; while another exception is already
on its way out, the close failure is dropped so as not to hide it.
"""

from __future__ import annotations

from typing import TypeVar

from .errors import WriterFailedError

_C = TypeVar("_C", bound="ClosesOnExit")


class ClosesOnExit:
    """`with` support: close on exit. A close that fails (WriterFailedError) is raised,
    unless an exception is already on its way out, which it would hide."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            self.close()
        except WriterFailedError:
            if exc_type is None:
                raise
