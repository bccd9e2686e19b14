"""How an ml-api model looks through the Open Inference Protocol: its tensors and their preprocessing.

Inputs (a request sends exactly one of them):
- ``image`` BYTES ``[-1]``: encoded image files (JPEG, PNG, ...), one per element; the server decodes
  and preprocesses them as the v1 API does.
- ``image_uint8`` UINT8 ``[-1, H, W, C]``: images already resized and cropped, pixel values 0..255.
- ``image_fp32`` FP32 ``[-1, C, H, W]``: the same, normalised with the published ``mean``/``std``.
Output ``probabilities`` FP32 ``[-1, classes]``; with ``classification: k`` it is BYTES ``[-1, k]``
of ``"score:index:label"`` strings instead (Triton's classification extension).
"""

from __future__ import annotations

import json

import numpy as np

from service import __version__
from service.dataplane.description import ModelDescription
from service.errors import InvalidTensor
from service.oip.types import ModelMetadata, Parameters, ServerMetadata, TensorSpec

IMAGE = "image"
IMAGE_UINT8 = "image_uint8"
IMAGE_FP32 = "image_fp32"
PROBABILITIES = "probabilities"
INPUT_NAMES = (IMAGE, IMAGE_UINT8, IMAGE_FP32)
# The protocol extensions served; "model_configuration" is Triton's (what perf_analyzer needs).
EXTENSIONS = ("binary_tensor_data", "classification", "model_configuration")
# Triton's model configuration: 0 says its dims are whole shapes, batch dimension included (ml-api
# batches across requests itself, so a request's first dimension is just how many images it sends).
CONFIG_BACKEND = "ml-api"
CONFIG_MAX_BATCH_SIZE = 0


def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="ml-api", version=__version__, extensions=EXTENSIONS)


def input_specs(model: ModelDescription) -> tuple[TensorSpec, ...]:
    side, channels = model.input_size, model.channels
    return (
        TensorSpec(IMAGE, "BYTES", (-1,)),
        TensorSpec(IMAGE_UINT8, "UINT8", (-1, side, side, channels), layout="NHWC"),
        TensorSpec(IMAGE_FP32, "FP32", (-1, channels, side, side), layout="NCHW"),
    )


def output_spec(model: ModelDescription) -> TensorSpec:
    return TensorSpec(PROBABILITIES, "FP32", (-1, len(model.labels)))


def preprocessing_parameters(model: ModelDescription) -> Parameters:
    """What a client needs to build ``image_uint8`` / ``image_fp32`` itself. Protocol parameters are
    scalars, so the per-channel ``mean`` and ``std`` are JSON arrays in strings."""
    parameters: dict[str, bool | int | float | str] = {
        "input_size": model.input_size,
        "color_mode": "L" if model.channels == 1 else "RGB",
        "interpolation": model.interpolation,
        "mean": json.dumps(list(model.mean)),
        "std": json.dumps(list(model.std)),
    }
    if model.resize_size is not None:  # absent: resize straight to input_size x input_size, no crop
        parameters["resize_size"] = model.resize_size
    return parameters


def model_metadata(model: ModelDescription) -> ModelMetadata:
    return ModelMetadata(
        name=model.name,
        versions=model.versions,
        platform=f"ml-api_{model.backend}",
        inputs=input_specs(model),
        outputs=(output_spec(model),),
        parameters=preprocessing_parameters(model),
    )


def triton_datatype(datatype: str) -> str:
    """A protocol datatype as Triton's model configuration names it."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def to_uint8_nchw(model: ModelDescription, name: str, array: np.ndarray) -> np.ndarray:
    """A preprocessed input tensor as the uint8 NCHW batch the model runs on.

    FP32 goes back through the inverse of the published normalisation, ``round((x * std + mean) *
    255)``, clipped to 0..255: a tensor a client built from uint8 pixels with the published
    preprocessing comes back exactly (its float32 rounding is far below half a level); any other
    tensor is quantised to the nearest of the 256 levels, at most 0.5/255 per pixel.
    """
    if name == IMAGE_UINT8:
        # A copy: the client's buffer may be read-only (a view of the request body).
        return array.transpose(0, 3, 1, 2).copy()
    if not np.isfinite(array).all():
        raise InvalidTensor(f"tensor {name!r}: values must be finite")
    shape = (1, model.channels, 1, 1)
    mean = np.asarray(model.mean, dtype=np.float64).reshape(shape)
    std = np.asarray(model.std, dtype=np.float64).reshape(shape)
    levels = np.rint((array.astype(np.float64) * std + mean) * 255.0)
    return np.clip(levels, 0, 255).astype(np.uint8)
