"""JSON request bodies parsed and validated by pydantic-core straight from the bytes.

FastAPI's own body handling decodes JSON with the standard library on the event loop and answers
malformed input it cannot decode (invalid UTF-8, nesting too deep for the parser, integers too long
to convert) with a bare 400. Here the body is validated by ``model_validate_json`` (one pass, no
intermediate Python objects, nesting and size limits of its own), every failure is a 422 listing the
fields, and a body over ``OFF_LOOP_BYTES`` is parsed in a worker thread so a large base64 image
never holds the event loop (probes, other requests) for the milliseconds that takes.

Routes take ``body: Annotated[Model, json_body(Model)]`` and document it with ``body_doc(Model)``;
``with_body_schemas`` adds the models to the OpenAPI components (``service.app.ServiceApp.openapi``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from service.api.errors import ApiError
from service.errors import ErrorCode

Model = TypeVar("Model", bound=BaseModel)

# Below this a parse takes well under a millisecond: a thread hand-off would cost more than it saves.
OFF_LOOP_BYTES = 64 * 1024
_REF = "#/components/schemas/{model}"
_DOCUMENTED: list[type[BaseModel]] = []


def _is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "" or media == "application/json" or media.endswith("+json")


def parse_json_body(model: type[Model], body: bytes) -> Model:
    """Validate ``body`` as ``model``; a failure raises the framework's validation error (422)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False, include_input=False)]
        ) from None


def json_body(model: type[Model]) -> Any:
    """A dependency that reads the request body and returns it validated as ``model``."""

    async def read(request: Request) -> Model:
        content_type = request.headers.get("content-type", "")
        if not _is_json(content_type):
            raise ApiError(
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                f"content type {content_type!r} is not accepted: send application/json",
            )
        body = await request.body()
        if len(body) > OFF_LOOP_BYTES:
            return await asyncio.to_thread(parse_json_body, model, body)
        return parse_json_body(model, body)

    dependency: Callable[[Request], Awaitable[Model]] = read
    return Depends(dependency)


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The route's ``openapi_extra``: a required JSON body of ``model``."""
    if model not in _DOCUMENTED:
        _DOCUMENTED.append(model)
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def with_body_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (an OpenAPI document) with every documented body model, and the models it nests, in
    its components, as FastAPI would have added them for its own body parameters."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in _DOCUMENTED:
        model_schema = model.model_json_schema(ref_template=_REF)
        for name, nested in model_schema.pop("$defs", {}).items():
            components.setdefault(name, nested)
        components.setdefault(model.__name__, model_schema)
    return schema
