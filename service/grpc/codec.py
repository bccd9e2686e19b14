"""Protobuf messages of ``inference.GRPCInferenceService`` to the protocol's plain data and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.errors import InvalidTensor
from service.grpc.proto import inference_v2_pb2 as pb
from service.oip import model as spec
from service.oip import tensors
from service.oip.types import (
    InferRequest,
    InferResponse,
    InputTensor,
    ModelMetadata,
    Parameter,
    RequestedOutput,
    ServerMetadata,
)

# Which InferTensorContents field holds each datatype's typed elements (FP16 has none: raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter_value(parameter: pb.InferParameter) -> Parameter | None:
    kind = parameter.WhichOneof("parameter_choice")
    value: Parameter | None = getattr(parameter, kind) if kind else None
    return value


def parameters_of(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Parameter]:
    return {key: value for key, p in parameters.items() if (value := parameter_value(p)) is not None}


def set_parameter(target: pb.InferParameter, value: Parameter) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = value


def decode_infer(request: pb.ModelInferRequest) -> InferRequest:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidTensor(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: send one per input")
    inputs = []
    for index, tensor in enumerate(request.inputs):
        datatype = tensors.check_datatype(tensor.name, tensor.datatype)
        shape = tensors.check_shape(tensor.name, tensor.shape)
        if raw:
            data = tensors.from_raw(tensor.name, datatype, shape, raw[index])
        else:
            field = CONTENTS_FIELD.get(datatype)
            if field is None:
                raise InvalidTensor(f"input {tensor.name!r}: {datatype} data goes in raw_input_contents")
            elements: Any = getattr(tensor.contents, field)
            data = tensors.from_elements(tensor.name, datatype, shape, list(elements))
        inputs.append(InputTensor(tensor.name, datatype, shape, data))
    outputs = tuple(_requested(o) for o in request.outputs) or None
    return InferRequest(
        model=request.model_name,
        version=request.model_version or None,
        inputs=tuple(inputs),
        outputs=outputs,
        id=request.id,
        parameters=parameters_of(request.parameters),
    )


def _requested(output: pb.ModelInferRequest.InferRequestedOutputTensor) -> RequestedOutput:
    parameters = parameters_of(output.parameters)
    classification = parameters.get("classification", 0)
    if not isinstance(classification, int) or isinstance(classification, bool):
        raise InvalidTensor(f"output {output.name!r}: classification must be an int64 parameter")
    return RequestedOutput(output.name, classification=classification)


def encode_infer(response: InferResponse) -> pb.ModelInferResponse:
    """Outputs as raw contents: what tritonclient reads (its ``as_numpy``), and the cheapest to build."""
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    for output in response.outputs:
        message.outputs.add(name=output.name, datatype=output.datatype, shape=list(output.shape))
        message.raw_output_contents.append(tensors.to_raw(output.data))
    return message


def encode_server_metadata(meta: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=meta.name, version=meta.version, extensions=list(meta.extensions))


def encode_model_metadata(meta: ModelMetadata) -> pb.ModelMetadataResponse:
    message = pb.ModelMetadataResponse(name=meta.name, versions=list(meta.versions), platform=meta.platform)
    for spec_in in meta.inputs:
        message.inputs.add(name=spec_in.name, datatype=spec_in.datatype, shape=list(spec_in.shape))
    for spec_out in meta.outputs:
        message.outputs.add(name=spec_out.name, datatype=spec_out.datatype, shape=list(spec_out.shape))
    for key, value in meta.parameters.items():
        set_parameter(message.parameters[key], value)
    return message


def encode_model_config(meta: ModelMetadata) -> pb.ModelConfigResponse:
    config = pb.ModelConfig(
        name=meta.name,
        platform=meta.platform,
        backend=spec.CONFIG_BACKEND,
        max_batch_size=spec.CONFIG_MAX_BATCH_SIZE,
    )
    for t in meta.inputs:
        config.input.add(
            name=t.name,
            data_type=pb.DataType.Value(spec.triton_datatype(t.datatype)),
            format=pb.ModelInput.Format.Value(f"FORMAT_{t.layout or 'NONE'}"),
            dims=list(t.shape),
            optional=True,
        )
    for t in meta.outputs:
        data_type = pb.DataType.Value(spec.triton_datatype(t.datatype))
        config.output.add(name=t.name, data_type=data_type, dims=list(t.shape))
    return pb.ModelConfigResponse(config=config)
