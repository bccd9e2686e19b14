"""An app serving gRPC in-process, a channel to it, and request builders on the service's own stubs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from service.app import create_app
from service.grpc.proto import inference_v2_pb2 as pb
from service.grpc.proto.inference_v2_pb2_grpc import GRPCInferenceServiceStub
from service.oip.tensors import serialize_bytes
from tests.conftest import free_port, make_settings, running_app


@dataclass
class GrpcApp:
    app: FastAPI
    http: httpx.AsyncClient
    channel: grpc.aio.Channel
    stub: GRPCInferenceServiceStub


@contextlib.asynccontextmanager
async def grpc_app(
    *, tracer_provider: TracerProvider | None = None, wait_ready: bool = True, **settings: Any
) -> AsyncIterator[GrpcApp]:
    """The app with gRPC on a free loopback port, its lifespan running, and a channel to that port."""
    port = free_port()
    app = create_app(make_settings(host="127.0.0.1", grpc_port=port, **settings), tracer_provider=tracer_provider)
    async with (
        running_app(app, wait_ready=wait_ready) as http,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        yield GrpcApp(app, http, channel, GRPCInferenceServiceStub(channel))


def infer_request(*pngs: bytes, model: str = "digits", classification: int = 0, **kw: Any) -> pb.ModelInferRequest:
    """ModelInfer of encoded images as raw contents (what tritonclient sends)."""
    request = pb.ModelInferRequest(model_name=model, raw_input_contents=[serialize_bytes(pngs)], **kw)
    request.inputs.add(name="image", datatype="BYTES", shape=[len(pngs)])
    if classification:
        output = request.outputs.add(name="probabilities")
        output.parameters["classification"].int64_param = classification
    return request


def metric(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == (labels or {}):
                return float(sample.value)
    return 0.0
