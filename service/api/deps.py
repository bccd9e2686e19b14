"""FastAPI dependencies: everything a route needs comes from the app's state.

Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread
hand-off per dependency per request for work that takes microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from asgi_correlation_id import correlation_id
from fastapi import Depends, Header, Query, Request

from service.api.inputs import ImageInputs
from service.dataplane.plane import DataPlane
from service.dataplane.sources import ModelRef

_NAME = r"^[A-Za-z0-9._-]+$"


async def get_dataplane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


async def get_request_id() -> str:
    return correlation_id.get() or ""


async def get_tenant(request: Request) -> str:
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


async def model_ref(model: ModelQuery = None, model_version: VersionQuery = None) -> ModelRef:
    """The ``model`` / ``model_version`` query parameters every predict-like route takes."""
    return ModelRef(model, model_version)


ModelRefDep = Annotated[ModelRef, Depends(model_ref)]
TimeoutHeader = Annotated[
    float | None,
    Header(
        gt=0,
        le=3600,
        description="seconds this request may take; the server's own request timeout caps it (504 past it)",
    ),
]


@dataclass(frozen=True, slots=True)
class PredictCall:
    """What a predict-like route needs, gathered by one dependency: each FastAPI dependency costs a
    measurable slice of a small model's request, and these always come together."""

    dataplane: DataPlane
    inputs: ImageInputs
    model: ModelRef  # resolved: the version serving this request
    request_id: str
    timeout_s: float | None


async def predict_call(
    request: Request,
    model: ModelQuery = None,
    model_version: VersionQuery = None,
    x_request_timeout: TimeoutHeader = None,
) -> PredictCall:
    """Resolve the model first (an unknown one is a 404 before the body is read or a URL fetched) and
    note it for the request's access-log line."""
    dataplane: DataPlane = request.app.state.dataplane
    resolved = dataplane.resolve(ModelRef(model, model_version))
    request.scope.setdefault("state", {}).update(model=resolved.name, model_version=resolved.version)
    return PredictCall(dataplane, request.app.state.inputs, resolved, correlation_id.get() or "", x_request_timeout)


PredictCallDep = Annotated[PredictCall, Depends(predict_call)]


async def get_inputs(request: Request) -> ImageInputs:
    inputs: ImageInputs = request.app.state.inputs
    return inputs


InputsDep = Annotated[ImageInputs, Depends(get_inputs)]
