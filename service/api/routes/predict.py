"""Classify or embed one image: JSON (URL or base64) or an upload (multipart or raw body)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request

from service.api.bodies import body_doc, json_body
from service.api.deps import DataPlaneDep, InputsDep, RequestIdDep, RequestTimeoutDep, ResolvedModelDep, TopKQuery
from service.api.errors import IMAGE_CODES, error_responses
from service.api.policy import PredictRoute
from service.api.schemas import EmbedRequest, EmbedResponse, PredictionRequest, PredictionResponse
from service.errors import ErrorCode

router = APIRouter(tags=["predict"], route_class=PredictRoute, responses=error_responses(*IMAGE_CODES))

UPLOAD_BODY: dict[str, Any] = {
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


@router.post(
    "/predict",
    response_model=PredictionResponse,
    summary="Classify one image (URL or base64)",
    openapi_extra=body_doc(PredictionRequest),
)
async def predict(
    model: ResolvedModelDep,
    body: Annotated[PredictionRequest, json_body(PredictionRequest)],
    dataplane: DataPlaneDep,
    inputs: InputsDep,
    request_id: RequestIdDep,
    timeout_s: RequestTimeoutDep,
) -> PredictionResponse:
    result = await dataplane.classify(inputs.source(body), model, top_k=body.top_k, timeout_s=timeout_s)
    return PredictionResponse.of(result, request_id)


@router.post(
    "/predict/upload",
    response_model=PredictionResponse,
    summary="Classify an uploaded image (multipart 'file' or a raw image/* body)",
    openapi_extra=UPLOAD_BODY,
)
async def predict_upload(
    request: Request,
    dataplane: DataPlaneDep,
    inputs: InputsDep,
    model: ResolvedModelDep,
    request_id: RequestIdDep,
    timeout_s: RequestTimeoutDep,
    top_k: TopKQuery = 5,
) -> PredictionResponse:
    result = await dataplane.classify(await inputs.read_upload(request), model, top_k=top_k, timeout_s=timeout_s)
    return PredictionResponse.of(result, request_id)


@router.post(
    "/embed",
    response_model=EmbedResponse,
    summary="Penultimate-layer embedding (L2-normalised)",
    responses=error_responses(*IMAGE_CODES, ErrorCode.EMBEDDING_NOT_SUPPORTED),
    openapi_extra=body_doc(EmbedRequest),
)
async def embed(
    model: ResolvedModelDep,
    body: Annotated[EmbedRequest, json_body(EmbedRequest)],
    dataplane: DataPlaneDep,
    inputs: InputsDep,
    request_id: RequestIdDep,
    timeout_s: RequestTimeoutDep,
) -> EmbedResponse:
    return EmbedResponse.of(await dataplane.embed(inputs.source(body), model, timeout_s=timeout_s), request_id)
