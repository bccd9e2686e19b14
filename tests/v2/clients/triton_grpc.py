"""Scenarios of ``tritonclient.grpc`` (Triton's Python client) against ``inference.GRPCInferenceService``."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.v2.clients.common import (
    MODEL,
    VERSION,
    Runner,
    preprocess_fp32,
    preprocess_uint8,
    probabilities_result,
    rest_parameters,
    strings_result,
)

runner = Runner("triton_grpc")


def client(args: argparse.Namespace) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(args.grpc)


def headers(args: argparse.Namespace) -> dict[str, str] | None:
    return {"authorization": f"Bearer {args.api_key}"} if args.api_key else None


def encoded(args: argparse.Namespace, name: str = "image") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [len(args.pngs)], "BYTES")
    tensor.set_data_from_numpy(np.array(args.pngs, dtype=np.object_))
    return tensor


def probabilities(args: argparse.Namespace, tensor: grpcclient.InferInput, **kw: Any) -> Any:
    outputs = [grpcclient.InferRequestedOutput("probabilities")]
    result = client(args).infer(MODEL, [tensor], outputs=outputs, headers=headers(args), **kw)
    out = probabilities_result(result.as_numpy("probabilities"))
    out["model_version"] = result.get_response().model_version
    return out


@runner.scenario
def server_live(args: argparse.Namespace) -> Any:
    return client(args).is_server_live()


@runner.scenario
def server_ready(args: argparse.Namespace) -> Any:
    return client(args).is_server_ready()


@runner.scenario
def server_metadata(args: argparse.Namespace) -> Any:
    return client(args).get_server_metadata(headers=headers(args), as_json=True)


@runner.scenario
def model_metadata(args: argparse.Namespace) -> Any:
    return client(args).get_model_metadata(MODEL, headers=headers(args), as_json=True)


@runner.scenario
def model_metadata_version(args: argparse.Namespace) -> Any:
    return client(args).get_model_metadata(MODEL, VERSION, headers=headers(args), as_json=True)


@runner.scenario
def model_config(args: argparse.Namespace) -> Any:
    return client(args).get_model_config(MODEL, headers=headers(args), as_json=True)


@runner.scenario
def model_ready(args: argparse.Namespace) -> Any:
    return [client(args).is_model_ready(MODEL, headers=headers(args)), client(args).is_model_ready(MODEL, VERSION)]


@runner.scenario
def infer_bytes(args: argparse.Namespace) -> Any:
    return probabilities(args, encoded(args))


@runner.scenario
def infer_uint8(args: argparse.Namespace) -> Any:
    array = np.stack([preprocess_uint8(png, http_parameters(args)) for png in args.pngs])
    tensor = grpcclient.InferInput("image_uint8", list(array.shape), "UINT8")
    tensor.set_data_from_numpy(array)
    return probabilities(args, tensor)


@runner.scenario
def infer_fp32(args: argparse.Namespace) -> Any:
    array = np.stack([preprocess_fp32(png, http_parameters(args)) for png in args.pngs])
    tensor = grpcclient.InferInput("image_fp32", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return probabilities(args, tensor)


@runner.scenario
def infer_version(args: argparse.Namespace) -> Any:
    return probabilities(args, encoded(args), model_version=VERSION)


@runner.scenario
def infer_default_outputs(args: argparse.Namespace) -> Any:
    result = client(args).infer(MODEL, [encoded(args)], headers=headers(args))
    return probabilities_result(result.as_numpy("probabilities"))


@runner.scenario
def infer_classification(args: argparse.Namespace) -> Any:
    outputs = [grpcclient.InferRequestedOutput("probabilities", class_count=3)]
    result = client(args).infer(MODEL, [encoded(args)], outputs=outputs, headers=headers(args))
    return strings_result(result.as_numpy("probabilities"))


@runner.scenario
def request_id(args: argparse.Namespace) -> Any:
    result = client(args).infer(MODEL, [encoded(args)], request_id="triton-grpc-1", headers=headers(args))
    return result.get_response().id


@runner.scenario
def error_unknown_model(args: argparse.Namespace) -> Any:
    return client(args).infer("no-such-model", [encoded(args)], headers=headers(args))


@runner.scenario
def error_unknown_version(args: argparse.Namespace) -> Any:
    return client(args).infer(MODEL, [encoded(args)], model_version="99", headers=headers(args))


@runner.scenario
def error_unknown_model_metadata(args: argparse.Namespace) -> Any:
    return client(args).get_model_metadata("no-such-model", headers=headers(args))


@runner.scenario
def error_wrong_datatype(args: argparse.Namespace) -> Any:
    tensor = grpcclient.InferInput("image_uint8", [1, 8, 8, 1], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 8, 8, 1), np.float32))
    return client(args).infer(MODEL, [tensor], headers=headers(args))


@runner.scenario
def error_wrong_shape(args: argparse.Namespace) -> Any:
    tensor = grpcclient.InferInput("image_fp32", [1, 1, 4, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 1, 4, 4), np.float32))
    return client(args).infer(MODEL, [tensor], headers=headers(args))


@runner.scenario
def error_unknown_input(args: argparse.Namespace) -> Any:
    return client(args).infer(MODEL, [encoded(args, name="pixels")], headers=headers(args))


@runner.scenario
def error_not_an_image(args: argparse.Namespace) -> Any:
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"these bytes are no image"], dtype=np.object_))
    return client(args).infer(MODEL, [tensor], headers=headers(args))


@runner.scenario
def error_unknown_output(args: argparse.Namespace) -> Any:
    outputs = [grpcclient.InferRequestedOutput("logits")]
    return client(args).infer(MODEL, [encoded(args)], outputs=outputs, headers=headers(args))


def http_parameters(args: argparse.Namespace) -> dict[str, Any]:
    return rest_parameters(args.http, args.api_key)


def describe(exc: BaseException) -> dict[str, Any] | None:
    if isinstance(exc, InferenceServerException):
        return {"status": exc.status(), "message": exc.message()}
    return None


if __name__ == "__main__":
    runner.main(describe)
