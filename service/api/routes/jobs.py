"""Asynchronous classification: submit a job, read its state, follow it as Server-Sent Events."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request, status
from sse_starlette import EventSourceResponse

from service.api.bodies import body_doc, json_body
from service.api.deps import DataPlaneDep, InputsDep, ModelRefDep, RequestIdDep, TenantDep
from service.api.errors import IMAGE_CODES, error_responses
from service.api.policy import JobsRoute
from service.api.schemas import JobAccepted, JobStatus, PredictionRequest
from service.errors import ErrorCode, ServiceError

log = logging.getLogger(__name__)
router = APIRouter(route_class=JobsRoute, responses=error_responses(ErrorCode.JOB_NOT_FOUND))
JobId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
# Where a submitted job can be followed: clients and stateful API testers walk these links.
JOB_LINKS = {
    operation: {"operationId": operation, "parameters": {"job_id": "$response.body#/job_id"}}
    for operation in ("job_status", "job_events")
}
IdempotencyKey = Annotated[str | None, Header(max_length=128, pattern=r"^[\x21-\x7e]+$")]


@router.post(
    "/predict/async",
    response_model=JobAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Submit an image for asynchronous classification",
    tags=["predict"],
    responses={**error_responses(*IMAGE_CODES), 202: {"links": JOB_LINKS}},
    openapi_extra=body_doc(PredictionRequest),
)
async def predict_async(
    model: ModelRefDep,
    body: Annotated[PredictionRequest, json_body(PredictionRequest)],
    request: Request,
    dataplane: DataPlaneDep,
    inputs: InputsDep,
    request_id: RequestIdDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    record = await dataplane.submit_job(
        inputs.source(body),
        model,
        top_k=body.top_k,
        request_id=request_id,
        idempotency_key=idempotency_key,
        tenant=tenant,
    )
    status_url = request.app.url_path_for("job_status", job_id=record.job_id)
    return JobAccepted(job_id=record.job_id, status="pending", status_url=str(status_url))


@router.get("/jobs/{job_id}", response_model=JobStatus, summary="Job state", tags=["jobs"])
async def job_status(job_id: JobId, request: Request, dataplane: DataPlaneDep) -> JobStatus:
    return JobStatus.of(await dataplane.job(job_id), _submit_path(request))


@router.get(
    "/jobs/{job_id}/events",
    summary="Server-Sent Events of the job's state until it completes or fails",
    tags=["jobs"],
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "one data: event per JobStatus change"}},
)
async def job_events(job_id: JobId, request: Request, dataplane: DataPlaneDep) -> EventSourceResponse:
    records = await dataplane.watch_job(job_id)
    submit_path = _submit_path(request)

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for record in records:
                yield {"event": record.status, "data": JobStatus.of(record, submit_path).model_dump_json()}
        except ServiceError as exc:  # the job store went away mid-stream: end it; clients reconnect
            log.warning("job events for %s ended early: %s", job_id, exc.message)

    return EventSourceResponse(events(), ping=15)


def _submit_path(request: Request) -> str:
    """Where jobs are submitted: a failed job's ErrorBody names that path, as the sync error would."""
    return str(request.app.url_path_for("predict_async"))
