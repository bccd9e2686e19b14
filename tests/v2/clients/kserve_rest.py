"""Scenarios of the ``kserve`` package's ``InferenceRESTClient`` (protocol v2) against /v2."""

from __future__ import annotations

import argparse
import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

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

runner = Runner("kserve_rest")


def run(args: argparse.Namespace, call: Callable[[InferenceRESTClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60)) as client:
            return await call(client)

    return asyncio.run(main())


def headers(args: argparse.Namespace) -> dict[str, str]:
    return {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}


def encoded(args: argparse.Namespace, *, binary: bool) -> InferInput:
    data = args.pngs if binary else [base64.b64encode(png) for png in args.pngs]
    tensor = InferInput("image", [len(data)], "BYTES")
    tensor.set_data_from_numpy(np.array(data, dtype=np.object_), binary_data=binary)
    return tensor


def preprocessed(args: argparse.Namespace, name: str, *, binary: bool) -> InferInput:
    parameters = rest_parameters(args.http, args.api_key)
    if name == "image_uint8":
        array = np.stack([preprocess_uint8(png, parameters) for png in args.pngs])
        tensor = InferInput(name, list(array.shape), "UINT8")
    else:
        array = np.stack([preprocess_fp32(png, parameters) for png in args.pngs])
        tensor = InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def infer(args: argparse.Namespace, tensor: InferInput, *, binary: bool, version: str | None = None) -> Any:
    request = InferRequest(
        model_name=MODEL,
        model_version=version,
        infer_inputs=[tensor],
        request_outputs=[RequestedOutput("probabilities", {"binary_data": binary})],
    )
    # kserve's REST client builds /v2/models/{name}/infer; a version goes in the path the same way.
    name = f"{MODEL}/versions/{version}" if version else MODEL

    async def call(client: InferenceRESTClient) -> Any:
        response = await client.infer(args.http, request, model_name=name, headers=headers(args))
        out = probabilities_result(response.outputs[0].as_numpy())
        out["model_name"] = response.model_name
        return out

    return run(args, call)


@runner.scenario
def server_live(args: argparse.Namespace) -> Any:
    return run(args, lambda c: c.is_server_live(args.http))


@runner.scenario
def server_ready(args: argparse.Namespace) -> Any:
    return run(args, lambda c: c.is_server_ready(args.http))


@runner.scenario
def model_ready(args: argparse.Namespace) -> Any:
    return run(args, lambda c: c.is_model_ready(args.http, MODEL))


@runner.scenario
def infer_bytes_binary(args: argparse.Namespace) -> Any:
    return infer(args, encoded(args, binary=True), binary=True)


@runner.scenario
def infer_bytes_json(args: argparse.Namespace) -> Any:
    return infer(args, encoded(args, binary=False), binary=False)


@runner.scenario
def infer_uint8_binary(args: argparse.Namespace) -> Any:
    return infer(args, preprocessed(args, "image_uint8", binary=True), binary=True)


@runner.scenario
def infer_uint8_json(args: argparse.Namespace) -> Any:
    return infer(args, preprocessed(args, "image_uint8", binary=False), binary=False)


@runner.scenario
def infer_fp32_binary(args: argparse.Namespace) -> Any:
    return infer(args, preprocessed(args, "image_fp32", binary=True), binary=True)


@runner.scenario
def infer_fp32_json(args: argparse.Namespace) -> Any:
    return infer(args, preprocessed(args, "image_fp32", binary=False), binary=False)


@runner.scenario
def infer_version(args: argparse.Namespace) -> Any:
    return infer(args, encoded(args, binary=True), binary=True, version=VERSION)


@runner.scenario
def infer_classification(args: argparse.Namespace) -> Any:
    request = InferRequest(
        model_name=MODEL,
        infer_inputs=[encoded(args, binary=True)],
        request_outputs=[RequestedOutput("probabilities", {"classification": 3})],
    )

    async def call(client: InferenceRESTClient) -> Any:
        response = await client.infer(args.http, request, model_name=MODEL, headers=headers(args))
        output = response.outputs[0]
        return {"datatype": output.datatype, **strings_result(np.array(output.data).reshape(output.shape))}

    return run(args, call)


@runner.scenario
def error_unknown_model(args: argparse.Namespace) -> Any:
    request = InferRequest(model_name="no-such-model", infer_inputs=[encoded(args, binary=True)])
    return run(args, lambda c: c.infer(args.http, request, model_name="no-such-model", headers=headers(args)))


@runner.scenario
def error_wrong_shape(args: argparse.Namespace) -> Any:
    tensor = InferInput("image_uint8", [1, 4, 4, 1], "UINT8")
    tensor.set_data_from_numpy(np.zeros((1, 4, 4, 1), np.uint8), binary_data=True)
    request = InferRequest(model_name=MODEL, infer_inputs=[tensor])
    return run(args, lambda c: c.infer(args.http, request, model_name=MODEL, headers=headers(args)))


@runner.scenario
def error_not_an_image(args: argparse.Namespace) -> Any:
    tensor = InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"these bytes are no image"], dtype=np.object_), binary_data=True)
    request = InferRequest(model_name=MODEL, infer_inputs=[tensor])
    return run(args, lambda c: c.infer(args.http, request, model_name=MODEL, headers=headers(args)))


def describe(exc: BaseException) -> dict[str, Any] | None:
    if isinstance(exc, httpx.HTTPStatusError):
        return {"status": exc.response.status_code, "message": exc.response.json().get("error")}
    return None


if __name__ == "__main__":
    runner.main(describe)
