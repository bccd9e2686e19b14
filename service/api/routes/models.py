"""Registered models and their load state."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import DataPlaneDep
from service.api.errors import error_responses
from service.api.policy import PolicyRoute
from service.api.schemas import ModelsResponse

router = APIRouter(tags=["models"], route_class=PolicyRoute, responses=error_responses())


@router.get("/models", response_model=ModelsResponse, summary="Registered models and versions")
async def list_models(dataplane: DataPlaneDep) -> ModelsResponse:
    return ModelsResponse.of(dataplane.models())
