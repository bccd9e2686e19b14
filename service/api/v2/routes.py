"""The Open Inference Protocol's REST endpoints (``/v2``), over the shared handler and data plane.

Errors are the protocol's ``{"error": "<message>"}`` (``service/api/errors.py`` renders every error
under ``/v2`` that way), with the status the error code has everywhere else (a validation error is
a 400 here, the protocol has no 422).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import JSONResponse, Response

from service.api.bodies import OFF_LOOP_BYTES
from service.api.deps import DataPlaneDep, TimeoutHeader
from service.api.policy import PolicyRoute, PredictRoute, PublicRoute
from service.api.v2 import codec
from service.api.v2.schemas import (
    INFER_RESPONSES,
    Live,
    ModelConfigBody,
    ModelMetadataBody,
    ModelReady,
    Ready,
    ServerMetadataBody,
    error_responses,
    infer_body,
)
from service.oip.handler import InferenceHandler

_NAME = r"^[A-Za-z0-9._-]+$"
ModelName = Annotated[str, Path(max_length=64, pattern=_NAME, description="an ml-api model name")]
ModelVersion = Annotated[str, Path(max_length=64, pattern=_NAME, description="a version of the model")]
HeaderLength = Annotated[
    str | None,
    Header(
        alias=codec.HEADER_LENGTH,
        description="binary tensor data extension: the length of the JSON part of the body",
    ),
]


def get_handler(dataplane: DataPlaneDep) -> InferenceHandler:
    return InferenceHandler(dataplane)


HandlerDep = Annotated[InferenceHandler, Depends(get_handler)]

# Probes: no API key, never rate limited (like /health/*).
health = APIRouter(tags=["v2"], route_class=PublicRoute, responses=error_responses())
# Metadata: the API key and default rate limit of every other read.
metadata = APIRouter(tags=["v2"], route_class=PolicyRoute, responses=error_responses(401, 404, 429, 503))
# Inference counts against the predict rate limit, as /api/v1/predict does.
inference = APIRouter(tags=["v2"], route_class=PredictRoute)


@health.get("/health/live", response_model=Live, summary="v2: the server is live")
async def v2_live() -> Live:
    return Live(live=True)


@health.get(
    "/health/ready",
    response_model=Ready,
    responses={503: {"model": Ready, "description": "not ready, or draining"}},
    summary="v2: the server can serve (503 and false while it cannot)",
)
async def v2_ready(handler: HandlerDep) -> JSONResponse:
    ready = handler.server_ready()
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


async def _model_ready(handler: InferenceHandler, name: str, version: str | None) -> JSONResponse:
    ready = handler.model_ready(name, version)
    body: dict[str, Any] = {"name": name, "ready": ready}
    if version is not None:
        body["version"] = version
    return JSONResponse(body, status_code=200 if ready else 503)


_MODEL_READY: dict[int | str, dict[str, Any]] = {
    **error_responses(404, 503),
    503: {"model": ModelReady, "description": "not loaded yet, or draining"},
}


@health.get("/models/{name}/ready", response_model=ModelReady, responses=_MODEL_READY, summary="v2: model ready")
async def v2_model_ready(handler: HandlerDep, name: ModelName) -> JSONResponse:
    return await _model_ready(handler, name, None)


@health.get(
    "/models/{name}/versions/{version}/ready",
    response_model=ModelReady,
    responses=_MODEL_READY,
    summary="v2: model version ready",
)
async def v2_model_version_ready(handler: HandlerDep, name: ModelName, version: ModelVersion) -> JSONResponse:
    return await _model_ready(handler, name, version)


@metadata.get("", response_model=ServerMetadataBody, summary="v2: server metadata")
async def v2_server_metadata(handler: HandlerDep) -> dict[str, Any]:
    meta = handler.server_metadata()
    return {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}


@metadata.get("/models/{name}", response_model=ModelMetadataBody, summary="v2: model metadata, preprocessing")
async def v2_model_metadata(handler: HandlerDep, name: ModelName) -> dict[str, Any]:
    return codec.metadata_json(await handler.model_metadata(name, None))


@metadata.get("/models/{name}/versions/{version}", response_model=ModelMetadataBody, summary="v2: version metadata")
async def v2_model_version_metadata(handler: HandlerDep, name: ModelName, version: ModelVersion) -> dict[str, Any]:
    return codec.metadata_json(await handler.model_metadata(name, version))


@metadata.get("/models/{name}/config", response_model=ModelConfigBody, summary="v2: Triton model configuration")
async def v2_model_config(handler: HandlerDep, name: ModelName) -> dict[str, Any]:
    return codec.config_json(await handler.model_metadata(name, None))


@metadata.get(
    "/models/{name}/versions/{version}/config", response_model=ModelConfigBody, summary="v2: version configuration"
)
async def v2_model_version_config(handler: HandlerDep, name: ModelName, version: ModelVersion) -> dict[str, Any]:
    return codec.config_json(await handler.model_metadata(name, version))


async def _infer(
    request: Request,
    handler: InferenceHandler,
    name: str,
    version: str | None,
    header_length: str | None,
    timeout_s: float | None,
) -> Response:
    body = await request.body()
    if len(body) > OFF_LOOP_BYTES:  # a large base64 image or tensor: parse it beside the event loop
        parsed = await asyncio.to_thread(codec.decode_request, body, header_length, name, version)
    else:
        parsed = codec.decode_request(body, header_length, name, version)
    result = await handler.infer(parsed, front_end="v2-rest", timeout_s=timeout_s)
    request.scope.setdefault("state", {}).update(model=result.model_name, model_version=result.model_version)
    content, headers = codec.encode_response(result)
    return Response(content, headers=headers)


@inference.post(
    "/models/{name}/infer",
    responses=INFER_RESPONSES,
    openapi_extra=infer_body(),
    summary="v2: inference (JSON or the binary tensor data extension)",
)
async def v2_infer(
    request: Request,
    handler: HandlerDep,
    name: ModelName,
    header_length: HeaderLength = None,
    x_request_timeout: TimeoutHeader = None,
) -> Response:
    return await _infer(request, handler, name, None, header_length, x_request_timeout)


@inference.post(
    "/models/{name}/versions/{version}/infer",
    responses=INFER_RESPONSES,
    openapi_extra=infer_body(),
    summary="v2: inference on a model version",
)
async def v2_version_infer(
    request: Request,
    handler: HandlerDep,
    name: ModelName,
    version: ModelVersion,
    header_length: HeaderLength = None,
    x_request_timeout: TimeoutHeader = None,
) -> Response:
    return await _infer(request, handler, name, version, header_length, x_request_timeout)


ROUTERS = (health, metadata, inference)
