"""Async job status and its Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path
from sse_starlette import EventSourceResponse

from service.api.deps import JobsDep
from service.api.errors import COMMON_ERRORS, ApiError
from service.api.schemas import JobStatus

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=COMMON_ERRORS)
JobId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def _not_found(job_id: str) -> ApiError:
    return ApiError("JOB_NOT_FOUND", f"no job {job_id!r} (unknown or expired)")


@router.get("/{job_id}", response_model=JobStatus, summary="Job state")
async def job_status(job_id: JobId, jobs: JobsDep) -> dict[str, Any]:
    record = await jobs.get(job_id)
    if record is None:
        raise _not_found(job_id)
    return record.as_dict()


@router.get(
    "/{job_id}/events",
    summary="Server-Sent Events of the job's state until it completes or fails",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "one data: event per JobStatus change"}},
)
async def job_events(job_id: JobId, jobs: JobsDep) -> EventSourceResponse:
    if await jobs.get(job_id) is None:
        raise _not_found(job_id)

    async def events() -> AsyncIterator[dict[str, str]]:
        async for record in jobs.watch(job_id):
            yield {"event": record.status, "data": json.dumps(record.as_dict())}

    return EventSourceResponse(events(), ping=15)
