"""Open Inference Protocol requests, responses and metadata as plain data, the same for REST and gRPC.

Each front end decodes its wire format into these (``service/api/v2/codec.py``,
``service/grpc/codec.py``) and encodes the results back; ``service/oip/handler.py`` does the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from service.oip.tensors import TensorData

# A parameter value: the protocol's bool, int64, string (and Triton's double).
Parameter = bool | int | float | str
Parameters = Mapping[str, Parameter]


@dataclass(frozen=True, slots=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: TensorData


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output the client asks for; ``classification`` > 0 asks for the top classes as strings
    (Triton's classification extension); ``binary`` is the REST binary data extension's choice."""

    name: str
    classification: int = 0
    binary: bool | None = None


@dataclass(frozen=True, slots=True)
class InferRequest:
    model: str
    version: str | None
    inputs: tuple[InputTensor, ...]
    # None: every output the model has.
    outputs: tuple[RequestedOutput, ...] | None = None
    id: str = ""
    parameters: Parameters = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: TensorData
    # How the REST front end sends it (the request's choice); gRPC always sends raw contents.
    binary: bool = False


@dataclass(frozen=True, slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: tuple[OutputTensor, ...]
    id: str = ""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor of model metadata (-1: any size); ``layout`` is Triton's input format, if an image."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    layout: str = ""


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: Parameters


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]
