"""Health endpoints for Kubernetes probes: liveness never depends on the model."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import DataPlaneDep
from service.api.errors import error_responses
from service.api.policy import PublicRoute
from service.api.schemas import HealthResponse, StatusBody

router = APIRouter(tags=["health"], route_class=PublicRoute, responses=error_responses())


@router.get("/health/live", response_model=StatusBody, summary="The process is up")
async def live() -> StatusBody:
    return StatusBody(status="alive")


@router.get("/health/startup", response_model=StatusBody, summary="The default model finished loading")
async def startup(dataplane: DataPlaneDep) -> StatusBody:
    dataplane.check_started()
    return StatusBody(status="started")


@router.get("/health/ready", response_model=StatusBody, summary="Can serve now: loaded, warmed up, not draining")
async def ready(dataplane: DataPlaneDep) -> StatusBody:
    dataplane.check_ready()
    return StatusBody(status="ready")


@router.get("/health", response_model=HealthResponse, summary="Overall health (always 200; the body says)")
async def health(dataplane: DataPlaneDep) -> HealthResponse:
    return HealthResponse.of(dataplane.health())
