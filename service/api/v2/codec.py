"""REST bodies of the Open Inference Protocol: JSON, and Triton's binary tensor data extension.

With the extension, the body is the JSON request (its length in the ``Inference-Header-Content-Length``
header) followed by the data of every input whose ``parameters.binary_data_size`` says so, in input
order; a response does the same for the outputs the request asked for in binary (the output's
``binary_data`` parameter, or ``binary_data_output`` on the request for all of them).
JSON has no bytes, so ``BYTES`` elements in JSON ``data`` are base64 strings.
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from service.errors import InvalidTensor
from service.oip import model as spec
from service.oip import tensors
from service.oip.types import (
    InferRequest,
    InferResponse,
    InputTensor,
    ModelMetadata,
    OutputTensor,
    Parameter,
    RequestedOutput,
    TensorSpec,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
# More than any model here takes; it bounds what a hostile request makes the parser keep.
MAX_TENSORS = 16

Name = Annotated[str, Field(min_length=1, max_length=256)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TensorBody(_Body):
    name: Name
    shape: list[StrictInt] = Field(max_length=tensors.MAX_RANK)
    datatype: str = Field(max_length=16)
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    data: list[Any] | None = None


class OutputBody(_Body):
    name: Name
    parameters: dict[str, Parameter] = Field(default_factory=dict)


class InferBody(_Body):
    """``model_name`` and ``model_version`` (sent by some clients) are ignored: the path names the model."""

    id: str = Field("", max_length=256)
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    inputs: list[TensorBody] = Field(min_length=1, max_length=MAX_TENSORS)
    outputs: list[OutputBody] | None = Field(None, max_length=MAX_TENSORS)


def decode_request(body: bytes, header_length: str | None, model: str, version: str | None) -> InferRequest:
    """Parse an infer request body (runs in a worker thread for large bodies)."""
    head, binary = _split(body, header_length)
    try:
        parsed = InferBody.model_validate_json(head)
    except ValidationError as exc:
        raise InvalidTensor(f"the inference request is not valid: {_first_error(exc)}") from None
    offset = 0
    inputs = []
    for tensor in parsed.inputs:
        size = tensor.parameters.get("binary_data_size")
        raw = None
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise InvalidTensor(
                    f"input {tensor.name!r}: binary_data_size {size!r} does not fit the {len(binary)} bytes "
                    "after the JSON header"
                )
            raw = binary[offset : offset + size]
            offset += size
        inputs.append(_input(tensor, raw))
    if offset != len(binary):
        raise InvalidTensor(f"{len(binary) - offset} bytes after the JSON header belong to no input")
    outputs = None if parsed.outputs is None else tuple(_requested(o) for o in parsed.outputs)
    return InferRequest(
        model=model, version=version, inputs=tuple(inputs), outputs=outputs, id=parsed.id, parameters=parsed.parameters
    )


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or not 0 < int(header_length) <= len(body):
        raise InvalidTensor(f"{HEADER_LENGTH}: {header_length!r} is not a length within the {len(body)}-byte body")
    length = int(header_length)
    return body[:length], body[length:]


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def _input(tensor: TensorBody, raw: bytes | None) -> InputTensor:
    datatype = tensors.check_datatype(tensor.name, tensor.datatype)
    shape = tensors.check_shape(tensor.name, tensor.shape)
    if raw is not None:
        data = tensors.from_raw(tensor.name, datatype, shape, raw)
    elif tensor.data is None:
        raise InvalidTensor(f"input {tensor.name!r} has neither data nor binary_data_size")
    elif datatype == tensors.BYTES:
        data = tensors.from_elements(tensor.name, datatype, shape, tensors.base64_elements(tensor.name, tensor.data))
    else:
        data = tensors.from_elements(tensor.name, datatype, shape, tensor.data)
    return InputTensor(tensor.name, datatype, shape, data)


def _requested(output: OutputBody) -> RequestedOutput:
    classification = output.parameters.get("classification", 0)
    if not isinstance(classification, int) or isinstance(classification, bool):
        raise InvalidTensor(f"output {output.name!r}: classification must be an integer, not {classification!r}")
    binary = output.parameters.get("binary_data")
    if binary is not None and not isinstance(binary, bool):
        raise InvalidTensor(f"output {output.name!r}: binary_data must be true or false, not {binary!r}")
    return RequestedOutput(output.name, classification=classification, binary=binary)


def encode_response(response: InferResponse) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an infer response: JSON, followed by the binary outputs if any."""
    outputs = []
    blobs = []
    for output in response.outputs:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": list(output.shape)}
        if output.binary:
            blob = tensors.to_raw(output.data)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(output)
        outputs.append(entry)
    body: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }
    if response.id:
        body["id"] = response.id
    head = pydantic_core.to_json(body)
    if not blobs:
        return head, {"Content-Type": JSON_TYPE}
    return head + b"".join(blobs), {"Content-Type": BINARY_TYPE, HEADER_LENGTH: str(len(head))}


def _json_data(output: OutputTensor) -> list[Any]:
    if isinstance(output.data, tuple):  # BYTES outputs here are text (classification strings)
        return [element.decode("utf-8", "replace") for element in output.data]
    flat: list[Any] = output.data.ravel().tolist()
    return flat


def tensor_json(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def metadata_json(metadata: ModelMetadata) -> dict[str, Any]:
    return {
        "name": metadata.name,
        "versions": list(metadata.versions),
        "platform": metadata.platform,
        "inputs": [tensor_json(t) for t in metadata.inputs],
        "outputs": [tensor_json(t) for t in metadata.outputs],
        "parameters": dict(metadata.parameters),
    }


def config_json(metadata: ModelMetadata) -> dict[str, Any]:
    """Triton's model configuration of the model (the extension perf_analyzer reads)."""
    return {
        "name": metadata.name,
        "platform": metadata.platform,
        "backend": spec.CONFIG_BACKEND,
        "max_batch_size": spec.CONFIG_MAX_BATCH_SIZE,
        "input": [
            {
                "name": t.name,
                "data_type": spec.triton_datatype(t.datatype),
                "format": f"FORMAT_{t.layout or 'NONE'}",
                "dims": list(t.shape),
                "optional": True,
            }
            for t in metadata.inputs
        ],
        "output": [
            {"name": t.name, "data_type": spec.triton_datatype(t.datatype), "dims": list(t.shape)}
            for t in metadata.outputs
        ],
    }
