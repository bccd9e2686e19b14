"""Classify or embed one image: JSON (URL or base64) or an upload (multipart or raw body)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request

from service.api.bodies import body_doc, json_body
from service.api.deps import PredictCallDep, TopKQuery
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
    call: PredictCallDep, body: Annotated[PredictionRequest, json_body(PredictionRequest)]
) -> PredictionResponse:
    result = await call.dataplane.classify(
        call.inputs.source(body), call.model, top_k=body.top_k, timeout_s=call.timeout_s
    )
    return PredictionResponse.of(result, call.request_id)


@router.post(
    "/predict/upload",
    response_model=PredictionResponse,
    summary="Classify an uploaded image (multipart 'file' or a raw image/* body)",
    openapi_extra=UPLOAD_BODY,
)
async def predict_upload(request: Request, call: PredictCallDep, top_k: TopKQuery = 5) -> PredictionResponse:
    image = await call.inputs.read_upload(request)
    result = await call.dataplane.classify(image, call.model, top_k=top_k, timeout_s=call.timeout_s)
    return PredictionResponse.of(result, call.request_id)


@router.post(
    "/embed",
    response_model=EmbedResponse,
    summary="Penultimate-layer embedding (L2-normalised)",
    responses=error_responses(*IMAGE_CODES, ErrorCode.EMBEDDING_NOT_SUPPORTED),
    openapi_extra=body_doc(EmbedRequest),
)
async def embed(call: PredictCallDep, body: Annotated[EmbedRequest, json_body(EmbedRequest)]) -> EmbedResponse:
    embedding = await call.dataplane.embed(call.inputs.source(body), call.model, timeout_s=call.timeout_s)
    return EmbedResponse.of(embedding, call.request_id)
