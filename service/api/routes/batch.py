"""Classify several images in one request: all results at once, or streamed as each completes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from service.api.bodies import body_doc, json_body
from service.api.deps import PredictCallDep
from service.api.errors import IMAGE_CODES, error_body, error_responses
from service.api.inputs import ImageInputs
from service.api.policy import BatchRoute
from service.api.schemas import BatchRequest, BatchResponse, ErrorBody, PredictionResponse
from service.dataplane.sources import ImageItem
from service.errors import ServiceError
from service.inference.results import Classification

router = APIRouter(tags=["predict"], route_class=BatchRoute, responses=error_responses(*IMAGE_CODES))


def _items(body: BatchRequest, inputs: ImageInputs) -> list[ImageItem]:
    items: list[ImageItem] = []
    for image in body.images:
        try:
            items.append(inputs.source(image))
        except ServiceError as exc:  # e.g. invalid base64: that item's error, the others go on
            items.append(exc)
    return items


def _item(outcome: Classification | ServiceError, request_id: str, path: str) -> PredictionResponse | ErrorBody:
    if isinstance(outcome, ServiceError):
        return error_body(outcome.code, outcome.message, path, request_id=request_id)
    return PredictionResponse.of(outcome, request_id)


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    summary="Classify several images, one result each",
    openapi_extra=body_doc(BatchRequest),
)
async def predict_batch(
    call: PredictCallDep, body: Annotated[BatchRequest, json_body(BatchRequest)], request: Request
) -> BatchResponse:
    items = _items(body, call.inputs)
    outcomes = await call.dataplane.classify_many(items, call.model, top_k=body.top_k, timeout_s=call.timeout_s)
    return BatchResponse(results=[_item(o, call.request_id, request.url.path) for o in outcomes])


@router.post(
    "/predict/stream",
    summary="Classify several images, streaming one Server-Sent Event per image as it completes",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "one data: event per image, then data: [DONE]"}
    },
    openapi_extra=body_doc(BatchRequest),
)
async def predict_stream(
    call: PredictCallDep, body: Annotated[BatchRequest, json_body(BatchRequest)], request: Request
) -> EventSourceResponse:
    items = _items(body, call.inputs)
    stream = await call.dataplane.classify_stream(items, call.model, top_k=body.top_k, timeout_s=call.timeout_s)
    path, request_id = request.url.path, call.request_id

    def event(index: int, outcome: Classification | ServiceError) -> dict[str, str]:
        if isinstance(outcome, ServiceError):
            error = error_body(outcome.code, outcome.message, path, request_id=request_id)
            data = {"index": index, "error": error.model_dump(mode="json", exclude_none=True)}
        else:
            data = {"index": index, **PredictionResponse.of(outcome, request_id).model_dump(mode="json")}
        return {"data": json.dumps(data)}

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for index, outcome in stream:
                yield event(index, outcome)
        finally:
            await stream.aclose()
        yield {"data": "[DONE]"}

    return EventSourceResponse(events(), ping=15)
