"""Predict-like endpoints: single, upload, batch, SSE stream, async submission, embed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, Request, status
from sse_starlette import EventSourceResponse

from service.api.deps import JobsDep, ModelQuery, PipelineDep, ReaderDep, SettingsDep, TopKQuery, VersionQuery
from service.api.errors import PREDICT_ERRORS, ApiError, error_from_inference
from service.api.schemas import (
    BatchRequest,
    BatchResponse,
    EmbedRequest,
    EmbedResponse,
    ErrorBody,
    JobAccepted,
    PredictionRequest,
    PredictionResponse,
)
from service.inference.errors import InferenceError
from service.inference.model import ItemResult
from service.inference.pipeline import BatchResult
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


def _request_id(request: Request) -> str:
    from asgi_correlation_id import correlation_id

    return correlation_id.get() or ""


def _note_model(request: Request, name: str, version: str) -> None:
    request.scope.setdefault("state", {}).update(model=name, model_version=version)


def _prediction(result: ItemResult, batch: BatchResult, request_id: str) -> dict[str, Any]:
    return batch.prediction_payload(result, request_id)


async def _classify_one(
    request: Request, pipeline: PipelineDep, data: bytes, model: str | None, version: str | None, top_k: int
) -> dict[str, Any]:
    batch = await pipeline.classify([data], model=model, version=version, top_k=top_k)
    _note_model(request, batch.model_name, batch.model_version)
    outcome = batch.outcomes[0]
    if isinstance(outcome, InferenceError):
        raise outcome
    return _prediction(outcome, batch, _request_id(request))


@router.post("/predict", response_model=PredictionResponse, summary="Classify one image (URL or base64)")
async def predict(
    body: PredictionRequest,
    request: Request,
    pipeline: PipelineDep,
    reader: ReaderDep,
    model: ModelQuery = None,
    model_version: VersionQuery = None,
) -> dict[str, Any]:
    data = await reader.read(body)
    return await _classify_one(request, pipeline, data, model, model_version, body.top_k)


@router.post(
    "/predict/upload",
    response_model=PredictionResponse,
    summary="Classify an uploaded image (multipart 'file' or a raw image/* body)",
    openapi_extra=_UPLOAD_BODY,
)
async def predict_upload(
    request: Request,
    pipeline: PipelineDep,
    reader: ReaderDep,
    model: ModelQuery = None,
    model_version: VersionQuery = None,
    top_k: TopKQuery = 5,
) -> dict[str, Any]:
    data = await reader.read_upload(request)
    return await _classify_one(request, pipeline, data, model, model_version, top_k)


def _check_batch_size(body: BatchRequest, max_items: int) -> None:
    if len(body.images) > max_items:
        raise ApiError(
            "VALIDATION_ERROR",
            f"at most {max_items} images per request",
            details=[{"loc": ["body", "images"], "msg": f"at most {max_items} items", "type": "too_long"}],
        )


async def _read_all(reader: ReaderDep, body: BatchRequest) -> list[bytes | InferenceError]:
    async def one(source: Any) -> bytes | InferenceError:
        try:
            return await reader.read(source)
        except InferenceError as exc:
            return exc

    return list(await asyncio.gather(*(one(s) for s in body.images)))


@router.post("/predict/batch", response_model=BatchResponse, summary="Classify several images, one result each")
async def predict_batch(
    body: BatchRequest,
    request: Request,
    pipeline: PipelineDep,
    reader: ReaderDep,
    settings: SettingsDep,
    model: ModelQuery = None,
    model_version: VersionQuery = None,
) -> dict[str, Any]:
    _check_batch_size(body, settings.max_batch_items)
    read = await _read_all(reader, body)
    images = [r for r in read if isinstance(r, bytes)]
    name, version = pipeline.registry.resolve(model, model_version)
    _note_model(request, name, version)
    batch = await pipeline.classify(images, model=name, version=version, top_k=body.top_k) if images else None
    classified = iter(batch.outcomes if batch else [])
    request_id, path = _request_id(request), request.url.path
    results: list[dict[str, Any]] = []
    for item in read:
        outcome = next(classified) if isinstance(item, bytes) else item
        if isinstance(outcome, InferenceError):
            results.append(error_from_inference(outcome, path))
        else:
            assert batch is not None
            results.append(_prediction(outcome, batch, request_id))
    return {"results": results}


@router.post(
    "/predict/stream",
    summary="Classify several images, streaming one Server-Sent Event per image as it completes",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "one data: event per image, then [DONE]"}},
)
async def predict_stream(
    body: BatchRequest,
    request: Request,
    pipeline: PipelineDep,
    reader: ReaderDep,
    settings: SettingsDep,
    model: ModelQuery = None,
    model_version: VersionQuery = None,
) -> EventSourceResponse:
    _check_batch_size(body, settings.max_batch_items)
    # Resolve and load before the stream starts, so an unknown model is a plain 404.
    name, version = pipeline.registry.resolve(model, model_version)
    await pipeline.registry.get(name, version)
    _note_model(request, name, version)
    request_id, path, deadline = _request_id(request), request.url.path, pipeline.deadline()

    async def one(index: int, source: Any) -> dict[str, Any]:
        try:
            data = await reader.read(source)
            batch = await pipeline.classify([data], model=name, version=version, top_k=body.top_k, deadline=deadline)
            outcome = batch.outcomes[0]
            if isinstance(outcome, InferenceError):
                raise outcome
            return {"index": index, **_prediction(outcome, batch, request_id)}
        except InferenceError as exc:
            return {"index": index, "error": error_from_inference(exc, path)}

    async def events() -> AsyncIterator[dict[str, str]]:
        tasks = [asyncio.ensure_future(one(i, s)) for i, s in enumerate(body.images)]
        try:
            for finished in asyncio.as_completed(tasks):
                yield {"data": json.dumps(await finished)}
            yield {"data": "[DONE]"}
        finally:
            for task in tasks:
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
    model: ModelQuery = None,
    model_version: VersionQuery = None,
    idempotency_key: str | None = Header(default=None, max_length=128, pattern=r"^[\x21-\x7e]+$"),
) -> dict[str, Any]:
    pipeline.registry.resolve(model, model_version)  # unknown model: 404 now, not a failed job later
    if pipeline.draining:
        raise ApiError("SHUTTING_DOWN", "the server is shutting down")
    data = await reader.read(body)
    job = await jobs.submit(
        JobRequest(
            image=data, model=model, model_version=model_version, top_k=body.top_k, request_id=_request_id(request)
        ),
        idempotency_key=idempotency_key,
    )
    return {"job_id": job.job_id, "status": "pending", "status_url": f"/api/v1/jobs/{job.job_id}"}


@router.post("/embed", response_model=EmbedResponse, summary="Penultimate-layer embedding (L2-normalised)")
async def embed(
    body: EmbedRequest,
    request: Request,
    pipeline: PipelineDep,
    reader: ReaderDep,
    model: ModelQuery = None,
    model_version: VersionQuery = None,
) -> dict[str, Any]:
    data = await reader.read(body)
    batch = await pipeline.classify([data], model=model, version=model_version, top_k=1, embed=True)
    _note_model(request, batch.model_name, batch.model_version)
    outcome = batch.outcomes[0]
    if isinstance(outcome, InferenceError):
        raise outcome
    assert outcome.embedding is not None
    return {
        "embedding": outcome.embedding,
        "dim": len(outcome.embedding),
        "model_name": batch.model_name,
        "model_version": batch.model_version,
        "request_id": _request_id(request),
    }


__all__ = ["ErrorBody", "router"]
