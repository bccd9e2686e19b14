"""The async-job backend interface shared by the in-process and Redis implementations."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from service.errors import INTERNAL_ERROR_MESSAGE, ErrorCode, ServiceError
from service.inference.results import Classification

JobState = Literal["pending", "processing", "completed", "failed"]
QUEUE_FULL = "the job queue is full"
QUEUE_BYTES_FULL = "the job queue holds as many image bytes as it may (ML_API_JOBS_MAX_QUEUE_BYTES)"
TERMINAL: tuple[JobState, ...] = ("completed", "failed")


@dataclass(frozen=True, slots=True)
class JobRequest:
    image: bytes
    model: str | None
    model_version: str | None
    top_k: int
    request_id: str


@dataclass(frozen=True, slots=True)
class JobFailure:
    code: ErrorCode
    message: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> JobFailure:
        """A job's error as stored: a service error keeps its code and message, anything else is internal."""
        if isinstance(exc, ServiceError):
            return cls(exc.code, exc.message)
        return cls(ErrorCode.INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE)


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    status: JobState = "pending"
    result: Classification | None = None
    error: JobFailure | None = None
    # The submitting request's ID: the job's result and error carry it, as a sync response would.
    request_id: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


# Runs one job (its id, its request): its classification, or a ServiceError for a failure of its own.
JobRunner = Callable[[str, JobRequest], Awaitable[Classification]]


class JobObserver(Protocol):
    def job_finished(self, outcome: str, seconds: float) -> None: ...
    def jobs_waiting(self, depth: int) -> None: ...


class JobBackend(Protocol):
    async def start(self, runner: JobRunner) -> None: ...
    async def close(self) -> None: ...
    async def submit(self, request: JobRequest, idempotency_key: str | None = None) -> JobRecord: ...
    async def get(self, job_id: str) -> JobRecord | None: ...
    def watch(self, job_id: str) -> AsyncIterator[JobRecord]: ...
