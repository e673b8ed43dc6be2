"""Tasks: functions registered on a queue, their arguments and results as bytes.

Theory of operation
-------------------
`Queue.task` wraps a function in a `Task`: `task.enqueue(*args, **kwargs)`
serializes the arguments (JSON by default, any object with `dumps`/`loads`
otherwise) into a job payload, enqueues it through the queue's `JobSource`
and returns a `Handle`; a worker decodes the
payload, calls the function, and stores the serialized return value as the
job's result. `Queue.register` adds a raw task: it receives the payload bytes
and returns bytes (or None). Nothing here touches files or the clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Generic, Protocol, TypeVar

from ..errors import InvalidArgument, LogqError, WaitTimeout
from ..core.jobs import Backoff, JobInfo
from .source import JobSource

R = TypeVar("R")


class Serializer(Protocol):
    """Turns task arguments and results into bytes and back."""

    def dumps(self, obj: Any) -> bytes: ...
    def loads(self, data: bytes) -> Any: ...


class JSONSerializer:
    """The default: compact UTF-8 JSON."""

    def dumps(self, obj: Any) -> bytes:
        try:
            return json.dumps(obj, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"task arguments must be JSON-serializable ({exc}); "
                                  "pass serializer= for other types") from None
        except RecursionError:
            raise InvalidArgument("task arguments are nested too deeply to serialize as JSON: "
                                  "flatten them, or pass serializer= for other shapes") from None

    def loads(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except RecursionError:
            raise InvalidArgument("a JSON payload is nested too deeply to decode") from None


class TaskFailed(LogqError):
    """The task's job died (its last attempt raised); `error` is the recorded error."""

    def __init__(self, job_id: int, error: str | None) -> None:
        super().__init__(f"job {job_id} failed: {error}")
        self.job_id, self.error = job_id, error


class TaskTimeout(LogqError):
    """A task ran longer than its timeout; the attempt counts as failed."""


class TaskCancelled(LogqError):
    """The task's job was cancelled before it ran."""


@dataclass(frozen=True)
class TaskOptions:
    max_attempts: int | None = None
    timeout: float | None = None
    backoff: Backoff | None = None
    priority: int = 0
    every: float | None = None  # periodic: seconds between runs


class Task(Generic[R]):
    """A function registered on a queue under a name. Calling it runs it here, now."""

    def __init__(self, source: JobSource, name: str, fn: Callable[..., R], options: TaskOptions,
                 serializer: Serializer | None, raw: bool = False) -> None:
        self.source, self.name, self.fn, self.options = source, name, fn, options
        self.serializer: Serializer = serializer or JSONSerializer()
        self.raw = raw
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<logq.Task {self.name!r}>"

    def enqueue(self, *args: Any, delay: float = 0.0, priority: int | None = None,
                key: str | None = None, sync: str | None = None, **kwargs: Any) -> "Handle[R]":
        """Queue a call of this task with these arguments; return its handle. A periodic
        task (`Queue.every`) takes none: this queues a one-off run beside its schedule."""
        if self.options.every is not None and (args or kwargs):
            raise InvalidArgument(f"periodic task {self.name!r} takes no arguments: call .enqueue() "
                                  "without any to queue a one-off run")
        if self.raw:
            if kwargs or len(args) != 1:
                raise InvalidArgument(f"raw task {self.name!r} takes exactly one bytes payload")
            payload = args[0]
        else:
            payload = self.serializer.dumps([list(args), kwargs])
        o = self.options
        job_id = self.source.enqueue(self.name, payload, delay=delay,
                                    priority=o.priority if priority is None else priority,
                                     max_attempts=o.max_attempts, key=key, backoff=o.backoff, sync=sync)
        return Handle(self, job_id)

    def decode(self, payload: bytes) -> tuple[list[Any], dict[str, Any]]:
        """The (args, kwargs) a job's payload holds."""
        if self.raw:
            return [payload], {}
        if self.options.every is not None:  # periodic runs take no arguments
            return [], {}
        args, kwargs = self.serializer.loads(payload)
        return args, kwargs

    def encode_result(self, value: Any) -> bytes:
        if self.raw:
            if value is None:
                return b""
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise InvalidArgument(f"raw task {self.name!r} must return bytes or None")
            return bytes(value)
        return self.serializer.dumps(value)

    def decode_result(self, data: bytes | None) -> Any:
        if self.raw:
            return data
        return None if not data else self.serializer.loads(data)


class Handle(Generic[R]):
    """A queued call of a task: its job id, its status, and (later) its result."""

    def __init__(self, task: Task[R], job_id: int) -> None:
        self.task, self.id = task, job_id

    def __repr__(self) -> str:
        return f"<logq.Handle {self.task.name} job {self.id}>"

    def info(self) -> JobInfo | None:
        return self.task.source.get(self.id)

    def status(self) -> str | None:
        """The job's state ("pending", "active", "done", "dead", "cancelled"), None if unknown."""
        info = self.info()
        return None if info is None else info.state

    def result(self, timeout: float | None = None) -> R:
        """Wait for the job to finish and return the task's return value.

        Raises `TaskFailed` if it died, `TaskCancelled` if it was cancelled,
        `WaitTimeout` if it is not final after `timeout` seconds.
        """
        info = self.task.source.wait(self.id, timeout=timeout)
        if info.state == "done":
            return self.task.decode_result(info.result)  # type: ignore[no-any-return]
        if info.state == "cancelled":
            raise TaskCancelled(f"job {self.id} was cancelled")
        raise TaskFailed(self.id, info.last_error)
