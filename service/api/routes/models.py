"""Registered models and their load state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import PipelineDep
from service.api.errors import COMMON_ERRORS
from service.api.schemas import ModelsResponse
from service.inference.registry import LoadState, ModelRegistry

router = APIRouter(prefix="/api/v1", tags=["models"], responses=COMMON_ERRORS)


def model_infos(registry: ModelRegistry) -> list[dict[str, Any]]:
    settings = registry.settings
    infos = []
    for entry in registry.entries():
        split = settings.traffic_split.get(entry.spec.name, {})
        total = sum(split.values())
        infos.append(
            {
                "name": entry.spec.name,
                "version": entry.spec.version,
                "labels_count": len(entry.model.labels) if entry.model else None,
                "device": str(registry.device),
                "loaded": entry.state is LoadState.LOADED,
                "default": entry.spec.name == settings.default_model,
                "state": entry.state.value,
                "traffic_weight": split[entry.spec.version] / total if entry.spec.version in split else None,
            }
        )
    return infos


@router.get("/models", response_model=ModelsResponse, summary="Registered models and versions")
async def list_models(pipeline: PipelineDep) -> dict[str, Any]:
    return {"default": pipeline.settings.default_model, "models": model_infos(pipeline.registry)}
