"""Health endpoints for Kubernetes probes: liveness never depends on the model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service import __version__
from service.api.deps import PipelineDep
from service.api.errors import COMMON_ERRORS, error_response
from service.api.routes.models import model_infos
from service.api.schemas import HealthResponse, StatusBody

router = APIRouter(prefix="/health", tags=["health"], responses=COMMON_ERRORS)


@router.get("/live", response_model=StatusBody, summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/startup", response_model=StatusBody, summary="The default model finished loading")
async def startup(pipeline: PipelineDep) -> Any:
    registry = pipeline.registry
    if not registry.startup_complete:
        return error_response("MODEL_NOT_LOADED", "the default model is still loading", "/health/startup")
    return {"status": "started"}


@router.get("/ready", response_model=StatusBody, summary="Can serve now: loaded, warmed up, not draining")
async def ready(pipeline: PipelineDep) -> Any:
    registry = pipeline.registry
    if pipeline.draining:
        return error_response("SHUTTING_DOWN", "the server is shutting down", "/health/ready")
    if not registry.ready:
        message = registry.startup_error or "the default model is not loaded and warmed up yet"
        return error_response("MODEL_NOT_LOADED", message, "/health/ready")
    return {"status": "ready"}


health_router = APIRouter(tags=["health"], responses=COMMON_ERRORS)


@health_router.get("/health", response_model=HealthResponse, summary="Overall health (always 200; the body says)")
async def health(pipeline: PipelineDep) -> JSONResponse:
    registry = pipeline.registry
    gpu_available = registry.gpu_available
    if registry.any_failed or not registry.ready:
        status = "unhealthy"
    elif registry.settings.device == "cuda" and not gpu_available:
        status = "degraded"
    else:
        status = "healthy"
    body = {
        "status": status,
        "model_loaded": registry.ready,
        "gpu_available": gpu_available,
        "version": __version__,
        "models": model_infos(registry),
    }
    return JSONResponse(body)
