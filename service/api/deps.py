"""FastAPI dependencies: everything a route needs comes from the app's state."""

from __future__ import annotations

from typing import Annotated

from asgi_correlation_id import correlation_id
from fastapi import Depends, Header, Query, Request

from service.api.inputs import ImageInputs
from service.dataplane.plane import DataPlane
from service.dataplane.sources import ModelRef

_NAME = r"^[A-Za-z0-9._-]+$"


def get_dataplane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


def get_request_id() -> str:
    return correlation_id.get() or ""


def get_tenant(request: Request) -> str:
    """Who holds the API key the request was let in with ("" when the server has no keys)."""
    tenant: str = request.scope.get("state", {}).get("tenant", "")
    return tenant


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
TenantDep = Annotated[str, Depends(get_tenant)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
ModelQuery = Annotated[
    str | None, Query(max_length=64, pattern=_NAME, description="registered model name; default if unset")
]
VersionQuery = Annotated[
    str | None, Query(max_length=64, pattern=_NAME, description="model version; traffic split if unset")
]
TopKQuery = Annotated[int, Query(ge=1, le=20)]


def model_ref(model: ModelQuery = None, model_version: VersionQuery = None) -> ModelRef:
    """The ``model`` / ``model_version`` query parameters every predict-like route takes."""
    return ModelRef(model, model_version)


def resolved_model(request: Request, dataplane: DataPlaneDep, ref: Annotated[ModelRef, Depends(model_ref)]) -> ModelRef:
    """The version serving this request (an unknown one is a 404 before anything else happens), noted
    for the request's access-log line."""
    resolved = dataplane.resolve(ref)
    request.scope.setdefault("state", {}).update(model=resolved.name, model_version=resolved.version)
    return resolved


ModelRefDep = Annotated[ModelRef, Depends(model_ref)]
ResolvedModelDep = Annotated[ModelRef, Depends(resolved_model)]


def get_inputs(request: Request) -> ImageInputs:
    inputs: ImageInputs = request.app.state.inputs
    return inputs


InputsDep = Annotated[ImageInputs, Depends(get_inputs)]


def request_timeout(
    x_request_timeout: Annotated[
        float | None,
        Header(
            gt=0,
            le=3600,
            description="seconds this request may take; the server's own request timeout caps it (504 past it)",
        ),
    ] = None,
) -> float | None:
    return x_request_timeout


RequestTimeoutDep = Annotated[float | None, Depends(request_timeout)]
