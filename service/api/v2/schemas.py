"""The ``/v2`` bodies as pydantic models, for the OpenAPI document (clients and fuzzers read it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.api.bodies import body_doc
from service.api.v2.codec import BINARY_TYPE, InferBody
from service.oip.types import Parameter


class V2Error(BaseModel):
    error: str = Field(description="what went wrong, for a person to read")


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    version: str | None = None
    ready: bool


class ServerMetadataBody(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadataBody(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size")


class ModelMetadataBody(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadataBody]
    outputs: list[TensorMetadataBody]
    parameters: dict[str, Parameter] = Field(description="the preprocessing (docs/api-contract.md)")


class ConfigInput(BaseModel):
    name: str
    data_type: str
    format: str
    dims: list[int]
    optional: bool


class ConfigOutput(BaseModel):
    name: str
    data_type: str
    dims: list[int]


class ModelConfigBody(BaseModel):
    """Triton's model configuration, the part that describes the tensors."""

    name: str
    platform: str
    backend: str
    max_batch_size: int
    input: list[ConfigInput]
    output: list[ConfigOutput]


class OutputTensorBody(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Parameter] | None = None
    data: list[Any] | None = None


class InferResponseBody(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensorBody]


_STATUSES = {
    400: "a bad request: tensors that do not fit the model, an invalid body or parameter",
    401: "no valid API key",
    404: "no such model or version",
    413: "the body is over ML_API_MAX_BODY_BYTES",
    429: "rate limited (Retry-After)",
    503: "not ready, overloaded (Retry-After) or draining",
    504: "the request's deadline passed (X-Request-Timeout)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of the protocol's error body for ``statuses``, and 400/500 always."""
    wanted = sorted({400, 500, *statuses})
    return {status: {"model": V2Error, "description": _STATUSES.get(status, "internal error")} for status in wanted}


def infer_body() -> dict[str, Any]:
    """The infer route's ``openapi_extra``: it parses its body itself (JSON, or JSON then binary data)."""
    doc = body_doc(InferBody)
    doc["requestBody"]["content"][BINARY_TYPE] = {
        "schema": {
            "type": "string",
            "format": "binary",
            "description": "binary tensor data extension: the JSON request (its length in the "
            "Inference-Header-Content-Length header), then the inputs' binary data",
        }
    }
    return doc


INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": InferResponseBody,
        "description": "the outputs; with binary outputs, the JSON (its length in Inference-Header-Content-Length) "
        "then their data",
        "content": {BINARY_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    },
    **error_responses(401, 404, 413, 429, 503, 504),
}
