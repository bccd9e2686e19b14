"""Predict-like endpoints: single, upload, batch, SSE stream, async submission, embed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from asgi_correlation_id import correlation_id
from fastapi import APIRouter, Header, Request, status
from sse_starlette import EventSourceResponse

from service.api.deps import JobsDep, PipelineDep, ReaderDep, SelectionDep, SettingsDep, TopKQuery
from service.api.errors import PREDICT_ERRORS, ApiError, error_from_inference
from service.api.schemas import (
    BatchRequest,
    BatchResponse,
    EmbedRequest,
    EmbedResponse,
    ImageInput,
    JobAccepted,
    PredictionRequest,
    PredictionResponse,
)
from service.inference.errors import InferenceError
from service.inference.model import ItemResult
from service.inference.pipeline import BatchResult, InferencePipeline
from service.jobs.base import JobRequest

router = APIRouter(prefix="/api/v1", tags=["predict"], responses=PREDICT_ERRORS)

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_SSE_RESPONSE = {"content": {"text/event-stream": {}}}


def _note_model(request: Request, name: str, version: str) -> None:
    """Model and version for this request's access-log line."""
    request.scope.setdefault("state", {}).update(model=name, model_version=version)


async def _classify_single(
    request: Request,
    pipeline: InferencePipeline,
    data: bytes,
    selection: SelectionDep,
    *,
    top_k: int,
    embed: bool = False,
) -> tuple[ItemResult, BatchResult]:
    """Classify one image; its error, if any, becomes the response's error."""
    name, version = pipeline.registry.resolve(selection.model, selection.version)
    _note_model(request, name, version)
    return await pipeline.classify_one(data, model=name, version=version, top_k=top_k, embed=embed)


@router.post("/predict", response_model=PredictionResponse, summary="Classify one image (URL or base64)")
async def predict(
    body: PredictionRequest, request: Request, pipeline: PipelineDep, reader: ReaderDep, selection: SelectionDep
) -> dict[str, Any]:
    result, batch = await _classify_single(request, pipeline, await reader.read(body), selection, top_k=body.top_k)
    return batch.prediction_payload(result, correlation_id.get() or "")


@router.post(
    "/predict/upload",
    response_model=PredictionResponse,
    summary="Classify an uploaded image (multipart 'file' or a raw image/* body)",
    openapi_extra=_UPLOAD_BODY,
)
async def predict_upload(
    request: Request, pipeline: PipelineDep, reader: ReaderDep, selection: SelectionDep, top_k: TopKQuery = 5
) -> dict[str, Any]:
    data = await reader.read_upload(request)
    result, batch = await _classify_single(request, pipeline, data, selection, top_k=top_k)
    return batch.prediction_payload(result, correlation_id.get() or "")


def _check_batch_size(body: BatchRequest, max_items: int) -> None:
    if len(body.images) > max_items:
        raise ApiError(
            "VALIDATION_ERROR",
            f"at most {max_items} images per request",
            details=[{"loc": ["body", "images"], "msg": f"at most {max_items} items", "type": "too_long"}],
        )


async def _read_or_error(reader: ReaderDep, source: ImageInput) -> bytes | InferenceError:
    try:
        return await reader.read(source)
    except InferenceError as exc:
        return exc


@router.post("/predict/batch", response_model=BatchResponse, summary="Classify several images, one result each")
async def predict_batch(
    body: BatchRequest,
    request: Request,
    pipeline: PipelineDep,
    reader: ReaderDep,
    settings: SettingsDep,
    selection: SelectionDep,
) -> dict[str, Any]:
    _check_batch_size(body, settings.max_batch_items)
    # An unknown model is a 404 before any URL is fetched.
    name, version = pipeline.registry.resolve(selection.model, selection.version)
    _note_model(request, name, version)
    read = await asyncio.gather(*(_read_or_error(reader, source) for source in body.images))
    images = [item for item in read if isinstance(item, bytes)]
    batch = await pipeline.classify(images, model=name, version=version, top_k=body.top_k) if images else None
    classified = iter(batch.outcomes if batch else [])
    request_id, path = correlation_id.get() or "", request.url.path
    results: list[dict[str, Any]] = []
    for item in read:
        outcome = next(classified) if isinstance(item, bytes) else item
        if isinstance(outcome, InferenceError):
            results.append(error_from_inference(outcome, path))
        else:
            assert batch is not None
            results.append(batch.prediction_payload(outcome, request_id))
    return {"results": results}


@router.post(
    "/predict/stream",
    summary="Classify several images, streaming one Server-Sent Event per image as it completes",
    response_class=EventSourceResponse,
    responses={200: {**_SSE_RESPONSE, "description": "one data: event per image, then data: [DONE]"}},
)
async def predict_stream(
    body: BatchRequest,
    request: Request,
    pipeline: PipelineDep,
    reader: ReaderDep,
    settings: SettingsDep,
    selection: SelectionDep,
) -> EventSourceResponse:
    _check_batch_size(body, settings.max_batch_items)
    # Resolve and load before the stream starts, so an unknown model is a plain 404.
    name, version = pipeline.registry.resolve(selection.model, selection.version)
    await pipeline.registry.get(name, version)
    _note_model(request, name, version)
    request_id, path, deadline = correlation_id.get() or "", request.url.path, pipeline.deadline()

    async def one(index: int, source: ImageInput) -> dict[str, Any]:
        try:
            data = await reader.read(source)
            result, batch = await pipeline.classify_one(
                data, model=name, version=version, top_k=body.top_k, deadline=deadline
            )
            return {"index": index, **batch.prediction_payload(result, request_id)}
        except InferenceError as exc:
            return {"index": index, "error": error_from_inference(exc, path)}

    async def events() -> AsyncIterator[dict[str, str]]:
        tasks = [asyncio.ensure_future(one(i, s)) for i, s in enumerate(body.images)]
        try:
            for finished in asyncio.as_completed(tasks):
                yield {"data": json.dumps(await finished)}
            yield {"data": "[DONE]"}
        finally:
            for task in tasks:  # the client went away: stop the work it no longer wants
                task.cancel()

    return EventSourceResponse(events(), ping=15)


@router.post(
    "/predict/async",
    response_model=JobAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Submit an image for asynchronous classification",
)
async def predict_async(
    body: PredictionRequest,
    request: Request,
    pipeline: PipelineDep,
    reader: ReaderDep,
    jobs: JobsDep,
    selection: SelectionDep,
    idempotency_key: str | None = Header(default=None, max_length=128, pattern=r"^[\x21-\x7e]+$"),
) -> dict[str, Any]:
    pipeline.registry.resolve(selection.model, selection.version)  # unknown model: 404 now, not a failed job later
    if pipeline.draining:
        raise ApiError("SHUTTING_DOWN", "the server is shutting down")
    job = await jobs.submit(
        JobRequest(
            image=await reader.read(body),
            model=selection.model,
            model_version=selection.version,
            top_k=body.top_k,
            request_id=correlation_id.get() or "",
        ),
        idempotency_key=idempotency_key,
    )
    return {"job_id": job.job_id, "status": "pending", "status_url": f"/api/v1/jobs/{job.job_id}"}


@router.post("/embed", response_model=EmbedResponse, summary="Penultimate-layer embedding (L2-normalised)")
async def embed(
    body: EmbedRequest, request: Request, pipeline: PipelineDep, reader: ReaderDep, selection: SelectionDep
) -> dict[str, Any]:
    data = await reader.read(body)
    result, batch = await _classify_single(request, pipeline, data, selection, top_k=1, embed=True)
    assert result.embedding is not None
    return {
        "embedding": result.embedding,
        "dim": len(result.embedding),
        "model_name": batch.model_name,
        "model_version": batch.model_version,
        "request_id": correlation_id.get() or "",
    }
