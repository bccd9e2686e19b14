"""Scenarios of the ``kserve`` package's ``InferenceGRPCClient`` against ``inference.GRPCInferenceService``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest
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

runner = Runner("kserve_grpc")


def run(args: argparse.Namespace, call: Callable[[InferenceGRPCClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        # retries=0: an error must come back as it is, not as the last of several attempts.
        async with InferenceGRPCClient(args.grpc, timeout=60, retries=0) as client:
            return await call(client)

    return asyncio.run(main())


def metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {args.api_key}"),) if args.api_key else ()


def encoded(args: argparse.Namespace, *, binary: bool) -> InferInput:
    if not binary:  # typed contents: kserve sends a data list in bytes_contents
        return InferInput("image", [len(args.pngs)], "BYTES", data=list(args.pngs))
    tensor = InferInput("image", [len(args.pngs)], "BYTES")
    tensor.set_data_from_numpy(np.array(args.pngs, dtype=np.object_), binary_data=True)
    return tensor


def preprocessed(args: argparse.Namespace, name: str, *, binary: bool) -> InferInput:
    parameters = rest_parameters(args.http, args.api_key)
    if name == "image_uint8":
        array, datatype = np.stack([preprocess_uint8(png, parameters) for png in args.pngs]), "UINT8"
    else:
        array, datatype = np.stack([preprocess_fp32(png, parameters) for png in args.pngs]), "FP32"
    if not binary:  # typed contents (uint_contents / fp32_contents)
        return InferInput(name, list(array.shape), datatype, data=array.ravel().tolist())
    tensor = InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=True)
    return tensor


def infer(args: argparse.Namespace, tensor: InferInput, *, version: str | None = None) -> Any:
    request = InferRequest(model_name=MODEL, model_version=version, infer_inputs=[tensor])

    async def call(client: InferenceGRPCClient) -> Any:
        response = await client.infer(request, headers=metadata(args))
        out = probabilities_result(response.outputs[0].as_numpy())
        out["model_version"] = response.model_version
        return out

    return run(args, call)


@runner.scenario
def server_live(args: argparse.Namespace) -> Any:
    return run(args, lambda c: c.is_server_live())


@runner.scenario
def server_ready(args: argparse.Namespace) -> Any:
    return run(args, lambda c: c.is_server_ready())


@runner.scenario
def model_ready(args: argparse.Namespace) -> Any:
    return run(args, lambda c: c.is_model_ready(MODEL))


@runner.scenario
def infer_bytes_raw(args: argparse.Namespace) -> Any:
    return infer(args, encoded(args, binary=True))


@runner.scenario
def infer_bytes_contents(args: argparse.Namespace) -> Any:
    return infer(args, encoded(args, binary=False))


@runner.scenario
def infer_uint8_raw(args: argparse.Namespace) -> Any:
    return infer(args, preprocessed(args, "image_uint8", binary=True))


@runner.scenario
def infer_uint8_contents(args: argparse.Namespace) -> Any:
    return infer(args, preprocessed(args, "image_uint8", binary=False))


@runner.scenario
def infer_fp32_raw(args: argparse.Namespace) -> Any:
    return infer(args, preprocessed(args, "image_fp32", binary=True))


@runner.scenario
def infer_fp32_contents(args: argparse.Namespace) -> Any:
    return infer(args, preprocessed(args, "image_fp32", binary=False))


@runner.scenario
def infer_version(args: argparse.Namespace) -> Any:
    return infer(args, encoded(args, binary=True), version=VERSION)


@runner.scenario
def infer_classification(args: argparse.Namespace) -> Any:
    request = InferRequest(
        model_name=MODEL,
        infer_inputs=[encoded(args, binary=True)],
        request_outputs=[RequestedOutput("probabilities", {"classification": 3})],
    )

    async def call(client: InferenceGRPCClient) -> Any:
        response = await client.infer(request, headers=metadata(args))
        output = response.outputs[0]
        return {"datatype": output.datatype, **strings_result(output.as_numpy())}

    return run(args, call)


@runner.scenario
def error_unknown_model(args: argparse.Namespace) -> Any:
    request = InferRequest(model_name="no-such-model", infer_inputs=[encoded(args, binary=True)])
    return run(args, lambda c: c.infer(request, headers=metadata(args)))


@runner.scenario
def error_wrong_datatype(args: argparse.Namespace) -> Any:
    tensor = InferInput("image_fp32", [1, 1, 8, 8], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 1, 8, 8), np.float64), binary_data=True)
    return run(args, lambda c: c.infer(InferRequest(model_name=MODEL, infer_inputs=[tensor]), headers=metadata(args)))


@runner.scenario
def error_not_an_image(args: argparse.Namespace) -> Any:
    tensor = InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"these bytes are no image"], dtype=np.object_), binary_data=True)
    return run(args, lambda c: c.infer(InferRequest(model_name=MODEL, infer_inputs=[tensor]), headers=metadata(args)))


def describe(exc: BaseException) -> dict[str, Any] | None:
    if isinstance(exc, grpc.RpcError):
        return {"status": exc.code().name, "message": exc.details()}  # type: ignore[attr-defined]
    return None


if __name__ == "__main__":
    runner.main(describe)
