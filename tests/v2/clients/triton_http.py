"""Scenarios of ``tritonclient.http`` (Triton's Python client) against /v2 on the HTTP port."""

from __future__ import annotations

import argparse
import base64
from typing import Any

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.v2.clients.common import (
    MODEL,
    VERSION,
    Runner,
    preprocess_fp32,
    preprocess_uint8,
    probabilities_result,
    strings_result,
)

runner = Runner("triton_http")


def client(args: argparse.Namespace) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(args.http.removeprefix("http://"), network_timeout=60)


def headers(args: argparse.Namespace) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    return client(args).get_model_metadata(MODEL, headers=headers(args))["parameters"]


def encoded(args: argparse.Namespace, *, binary: bool, name: str = "image") -> httpclient.InferInput:
    data = args.pngs if binary else [base64.b64encode(png) for png in args.pngs]
    tensor = httpclient.InferInput(name, [len(data)], "BYTES")
    tensor.set_data_from_numpy(np.array(data, dtype=np.object_), binary_data=binary)
    return tensor


def uint8(args: argparse.Namespace, *, binary: bool) -> httpclient.InferInput:
    array = np.stack([preprocess_uint8(png, parameters(args)) for png in args.pngs])
    tensor = httpclient.InferInput("image_uint8", list(array.shape), "UINT8")
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def fp32(args: argparse.Namespace, *, binary: bool) -> httpclient.InferInput:
    array = np.stack([preprocess_fp32(png, parameters(args)) for png in args.pngs])
    tensor = httpclient.InferInput("image_fp32", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def probabilities(args: argparse.Namespace, tensor: httpclient.InferInput, *, binary: bool, **kw: Any) -> Any:
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client(args).infer(MODEL, [tensor], outputs=outputs, headers=headers(args), **kw)
    body = result.get_response()
    out = probabilities_result(result.as_numpy("probabilities"))
    out["binary"] = "binary_data_size" in (body["outputs"][0].get("parameters") or {})
    out["model_version"] = body.get("model_version")
    return out


@runner.scenario
def server_live(args: argparse.Namespace) -> Any:
    return client(args).is_server_live()


@runner.scenario
def server_ready(args: argparse.Namespace) -> Any:
    return client(args).is_server_ready()


@runner.scenario
def server_metadata(args: argparse.Namespace) -> Any:
    return client(args).get_server_metadata(headers=headers(args))


@runner.scenario
def model_metadata(args: argparse.Namespace) -> Any:
    return client(args).get_model_metadata(MODEL, headers=headers(args))


@runner.scenario
def model_metadata_version(args: argparse.Namespace) -> Any:
    return client(args).get_model_metadata(MODEL, VERSION, headers=headers(args))


@runner.scenario
def model_config(args: argparse.Namespace) -> Any:
    return client(args).get_model_config(MODEL, headers=headers(args))


@runner.scenario
def model_ready(args: argparse.Namespace) -> Any:
    return [client(args).is_model_ready(MODEL), client(args).is_model_ready(MODEL, VERSION)]


@runner.scenario
def infer_bytes_binary(args: argparse.Namespace) -> Any:
    return probabilities(args, encoded(args, binary=True), binary=True)


@runner.scenario
def infer_bytes_json(args: argparse.Namespace) -> Any:
    return probabilities(args, encoded(args, binary=False), binary=False)


@runner.scenario
def infer_uint8_binary(args: argparse.Namespace) -> Any:
    return probabilities(args, uint8(args, binary=True), binary=True)


@runner.scenario
def infer_uint8_json(args: argparse.Namespace) -> Any:
    return probabilities(args, uint8(args, binary=False), binary=False)


@runner.scenario
def infer_fp32_binary(args: argparse.Namespace) -> Any:
    return probabilities(args, fp32(args, binary=True), binary=True)


@runner.scenario
def infer_fp32_json(args: argparse.Namespace) -> Any:
    return probabilities(args, fp32(args, binary=False), binary=False)


@runner.scenario
def infer_version(args: argparse.Namespace) -> Any:
    return probabilities(args, encoded(args, binary=True), binary=True, model_version=VERSION)


@runner.scenario
def infer_default_outputs(args: argparse.Namespace) -> Any:
    """No outputs named: tritonclient asks for every output in binary (binary_data_output)."""
    result = client(args).infer(MODEL, [encoded(args, binary=True)], headers=headers(args))
    return probabilities_result(result.as_numpy("probabilities"))


@runner.scenario
def infer_classification_binary(args: argparse.Namespace) -> Any:
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=True, class_count=3)]
    result = client(args).infer(MODEL, [encoded(args, binary=True)], outputs=outputs, headers=headers(args))
    return strings_result(result.as_numpy("probabilities"))


@runner.scenario
def infer_classification_json(args: argparse.Namespace) -> Any:
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=False, class_count=3)]
    result = client(args).infer(MODEL, [encoded(args, binary=False)], outputs=outputs, headers=headers(args))
    return strings_result(result.as_numpy("probabilities"))


@runner.scenario
def request_id(args: argparse.Namespace) -> Any:
    result = client(args).infer(MODEL, [encoded(args, binary=True)], request_id="triton-http-1", headers=headers(args))
    return result.get_response().get("id")


@runner.scenario
def error_unknown_model(args: argparse.Namespace) -> Any:
    return client(args).infer("no-such-model", [encoded(args, binary=True)], headers=headers(args))


@runner.scenario
def error_unknown_version(args: argparse.Namespace) -> Any:
    return client(args).infer(MODEL, [encoded(args, binary=True)], model_version="99", headers=headers(args))


@runner.scenario
def error_unknown_model_metadata(args: argparse.Namespace) -> Any:
    return client(args).get_model_metadata("no-such-model", headers=headers(args))


@runner.scenario
def error_wrong_datatype(args: argparse.Namespace) -> Any:
    tensor = httpclient.InferInput("image_uint8", [1, 8, 8, 1], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 8, 8, 1), np.float32))
    return client(args).infer(MODEL, [tensor], headers=headers(args))


@runner.scenario
def error_wrong_shape(args: argparse.Namespace) -> Any:
    tensor = httpclient.InferInput("image_uint8", [1, 4, 4, 1], "UINT8")
    tensor.set_data_from_numpy(np.zeros((1, 4, 4, 1), np.uint8))
    return client(args).infer(MODEL, [tensor], headers=headers(args))


@runner.scenario
def error_unknown_input(args: argparse.Namespace) -> Any:
    return client(args).infer(MODEL, [encoded(args, binary=True, name="pixels")], headers=headers(args))


@runner.scenario
def error_not_an_image(args: argparse.Namespace) -> Any:
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"these bytes are no image"], dtype=np.object_))
    return client(args).infer(MODEL, [tensor], headers=headers(args))


@runner.scenario
def error_not_base64(args: argparse.Namespace) -> Any:
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array(["not base64!"], dtype=np.object_), binary_data=False)
    return client(args).infer(MODEL, [tensor], headers=headers(args))


@runner.scenario
def error_unknown_output(args: argparse.Namespace) -> Any:
    outputs = [httpclient.InferRequestedOutput("logits")]
    return client(args).infer(MODEL, [encoded(args, binary=True)], outputs=outputs, headers=headers(args))


def describe(exc: BaseException) -> dict[str, Any] | None:
    if isinstance(exc, InferenceServerException):
        return {"status": exc.status(), "message": exc.message()}
    return None


if __name__ == "__main__":
    runner.main(describe)
