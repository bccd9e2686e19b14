"""The async-job backend interface shared by the in-process and Redis implementations."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

JobState = Literal["pending", "processing", "completed", "failed"]
TERMINAL: tuple[JobState, ...] = ("completed", "failed")


@dataclass
class JobRequest:
    image: bytes
    model: str | None
    model_version: str | None
    top_k: int
    request_id: str


@dataclass
class JobRecord:
    job_id: str
    status: JobState = "pending"
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


# Runs one job: returns ("completed", PredictionResponse dict, None) or ("failed", None, ErrorBody dict).
JobRunner = Callable[[str, JobRequest], Awaitable[tuple[JobState, dict[str, Any] | None, dict[str, Any] | None]]]


class JobObserver(Protocol):
    def job_finished(self, outcome: str, seconds: float) -> None: ...
    def jobs_waiting(self, depth: int) -> None: ...


class JobBackend(Protocol):
    async def start(self, runner: JobRunner) -> None: ...
    async def close(self) -> None: ...
    async def submit(self, request: JobRequest, idempotency_key: str | None = None) -> JobRecord: ...
    async def get(self, job_id: str) -> JobRecord | None: ...
    def watch(self, job_id: str) -> AsyncIterator[JobRecord]: ...
