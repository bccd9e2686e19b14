"""The Open Inference Protocol's semantics over the data plane, shared by the REST and gRPC front ends.

A request names one input (``service/oip/model.py``): encoded images go through the data plane's
``classify_many`` as the images of the v1 API do, preprocessed ones through ``classify_arrays``; both are
batched with every other request of the model version. The protocol has no per-image errors, so
the first image that fails fails the request, with that image's error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from service.dataplane.description import ModelDescription
from service.dataplane.frontend import FrontEnd, use_front_end
from service.dataplane.sources import ModelRef
from service.errors import InvalidTensor, ServiceError
from service.inference.results import Classification
from service.oip import model as spec
from service.oip.types import (
    InferRequest,
    InferResponse,
    InputTensor,
    ModelMetadata,
    OutputTensor,
    RequestedOutput,
    ServerMetadata,
)

if TYPE_CHECKING:
    from service.dataplane.plane import DataPlane


class InferenceHandler:
    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    # Health and metadata --------------------------------------------------------------------

    def server_ready(self) -> bool:
        try:
            self.dataplane.check_ready()
        except ServiceError:
            return False
        return True

    def server_metadata(self) -> ServerMetadata:
        return spec.server_metadata()

    def model_ready(self, name: str, version: str | None) -> bool:
        """Raises ModelNotFound for a model or version that is not registered."""
        return self.dataplane.model_ready(ModelRef(name, version))

    async def describe(self, name: str, version: str | None) -> ModelDescription:
        return await self.dataplane.describe(ModelRef(name, version))

    async def model_metadata(self, name: str, version: str | None) -> ModelMetadata:
        return spec.model_metadata(await self.describe(name, version))

    # Inference ------------------------------------------------------------------------------

    async def infer(
        self, request: InferRequest, *, front_end: FrontEnd, timeout_s: float | None = None
    ) -> InferResponse:
        """``front_end`` (``v2-rest`` or ``v2-grpc``) names the protocol in the prediction log."""
        use_front_end(front_end)
        model = await self.describe(request.model, request.version)
        tensor = _the_input(request.inputs)
        _check_batch(tensor, self.dataplane.settings.max_batch_items)
        outputs = _requested(request.outputs, binary=request.parameters.get("binary_data_output") is True)
        top_k = max((o.classification for o in outputs), default=1)
        top_k = max(1, min(top_k, len(model.labels)))
        want_probabilities = any(o.classification == 0 for o in outputs)
        ref = ModelRef(model.name, model.version)
        if tensor.name == spec.IMAGE:
            images = _encoded_images(tensor)
            results = await self.dataplane.classify_many(
                images, ref, top_k=top_k, timeout_s=timeout_s, probabilities=want_probabilities
            )
        else:
            array = _preprocessed(model, tensor)
            results = await self.dataplane.classify_arrays(
                spec.to_uint8_nchw(model, tensor.name, array),
                ref,
                top_k=top_k,
                timeout_s=timeout_s,
                probabilities=want_probabilities,
            )
        classified = _all_or_first_error(results)
        return InferResponse(
            model_name=model.name,
            model_version=model.version,
            outputs=tuple(_output(o, classified) for o in outputs),
            id=request.id,
        )


def _the_input(inputs: Sequence[InputTensor]) -> InputTensor:
    names = ", ".join(repr(n) for n in spec.INPUT_NAMES)
    if len(inputs) != 1:
        raise InvalidTensor(f"send exactly one input tensor, one of {names}; got {len(inputs)}")
    (tensor,) = inputs
    if tensor.name not in spec.INPUT_NAMES:
        raise InvalidTensor(f"unknown input {tensor.name!r}; the inputs are {names}")
    return tensor


def _requested(outputs: Sequence[RequestedOutput] | None, *, binary: bool) -> tuple[RequestedOutput, ...]:
    """The outputs to send; ``binary`` (the request's ``binary_data_output``) is the REST default."""
    if not outputs:
        return (RequestedOutput(spec.PROBABILITIES, binary=binary),)
    for output in outputs:
        if output.name != spec.PROBABILITIES:
            raise InvalidTensor(f"unknown output {output.name!r}; the output is {spec.PROBABILITIES!r}")
        if output.classification < 0:
            raise InvalidTensor(f"output {output.name!r}: classification must be a positive number of classes")
    return tuple(o if o.binary is not None else replace(o, binary=binary) for o in outputs)


def _encoded_images(tensor: InputTensor) -> list[bytes | ServiceError]:
    if tensor.datatype != "BYTES" or len(tensor.shape) != 1:
        raise InvalidTensor(
            f"input {spec.IMAGE!r} is BYTES of shape [N] (one encoded image file per element), "
            f"not {tensor.datatype} {list(tensor.shape)}"
        )
    assert isinstance(tensor.data, tuple)
    return list(tensor.data)


def _preprocessed(model: ModelDescription, tensor: InputTensor) -> np.ndarray:
    expected = {s.name: s for s in spec.input_specs(model)}[tensor.name]
    fits = len(tensor.shape) == len(expected.shape) and all(
        want in (-1, got) for want, got in zip(expected.shape, tensor.shape, strict=True)
    )
    if tensor.datatype != expected.datatype or not fits:
        raise InvalidTensor(
            f"input {tensor.name!r} of {model.name}:{model.version} is {expected.datatype} of shape "
            f"{list(expected.shape)}, not {tensor.datatype} {list(tensor.shape)}"
        )
    assert isinstance(tensor.data, np.ndarray)
    return tensor.data


def _check_batch(tensor: InputTensor, limit: int) -> None:
    if not tensor.shape or tensor.shape[0] == 0:
        raise InvalidTensor(f"input {tensor.name!r} holds no image")
    if tensor.shape[0] > limit:
        raise InvalidTensor(f"input {tensor.name!r}: at most {limit} images per request, not {tensor.shape[0]}")


def _all_or_first_error(results: Sequence[Classification | ServiceError]) -> list[Classification]:
    for result in results:
        if isinstance(result, ServiceError):
            raise result
    return [r for r in results if isinstance(r, Classification)]


def _output(requested: RequestedOutput, results: Sequence[Classification]) -> OutputTensor:
    binary = bool(requested.binary)
    if requested.classification:
        # The same top classes the v1 API returns; Triton writes the score with printf's %f.
        rows = [
            [f"{p.confidence:f}:{p.class_id}:{p.label}".encode() for p in r.predictions[: requested.classification]]
            for r in results
        ]
        k = min(len(row) for row in rows)
        data = tuple(element for row in rows for element in row[:k])
        return OutputTensor(requested.name, "BYTES", (len(rows), k), data, binary)
    probabilities = np.stack([_probabilities(r) for r in results])
    return OutputTensor(requested.name, "FP32", tuple(probabilities.shape), probabilities, binary)


def _probabilities(result: Classification) -> np.ndarray:
    assert result.probabilities is not None, "the data plane was asked for probabilities"
    return np.asarray(result.probabilities, dtype=np.float32)
