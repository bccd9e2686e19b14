"""The gRPC server in the app's process: grpc.health.v1, reflection, request IDs, spans, the drain."""

from __future__ import annotations

import asyncio
import re
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from service.grpc.proto import inference_v2_pb2 as pb
from tests.grpc.helpers import grpc_app, infer_request

pytestmark = pytest.mark.anyio

SERVICE = "inference.GRPCInferenceService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


async def _health(stub: health_pb2_grpc.HealthStub, service: str = "") -> int:
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(response.status)


async def _until(stub: health_pb2_grpc.HealthStub, status: int, service: str = "", timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while await _health(stub, service) != status:
        assert time.monotonic() < deadline, f"health of {service!r} never became {status}"
        await asyncio.sleep(0.05)


async def test_health_is_serving_when_ready_and_not_serving_once_draining() -> None:
    async with grpc_app() as g:
        health = health_pb2_grpc.HealthStub(g.channel)
        await _until(health, SERVING)
        assert await _health(health, SERVICE) == SERVING
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await _health(health, "no.such.Service")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
        first = await watch.read()
        g.app.state.drain.draining = True
        second = await watch.read()
        watch.cancel()
        assert (first.status, second.status) == (SERVING, NOT_SERVING)
        assert await _health(health) == NOT_SERVING
        assert await _health(health, "liveness") == SERVING  # a draining pod is alive
        ready = await g.stub.ServerReady(pb.ServerReadyRequest(), timeout=5)
        live = await g.stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
        assert (ready.ready, live.live) == (False, True)


async def test_health_is_not_serving_while_the_model_cannot_serve() -> None:
    """A default model that fails to load: readiness never comes, and gRPC health says so too."""
    models = [{"name": "broken", "version": "1", "source": "file", "path": "/nonexistent.pt", "labels": "/none"}]
    async with grpc_app(models=models, default_model="broken", wait_ready=False) as g:
        health = health_pb2_grpc.HealthStub(g.channel)
        deadline = time.monotonic() + 10
        while not g.app.state.dataplane.registry.startup_complete:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # three health polls after the failed load
        assert await _health(health) == NOT_SERVING
        assert await _health(health, "liveness") == SERVING
        assert (await g.stub.ServerReady(pb.ServerReadyRequest(), timeout=5)).ready is False
        ready = await g.http.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (503, {"ready": False})


async def test_reflection_lists_the_inference_service_and_describes_it() -> None:
    async with grpc_app() as g:
        stub = reflection_pb2_grpc.ServerReflectionStub(g.channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
        ]
        responses = [r async for r in stub.ServerReflectionInfo(iter(requests), timeout=10)]
    services = {s.name for s in responses[0].list_services_response.service}
    assert services == {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
    from google.protobuf import descriptor_pb2

    (raw,) = responses[1].file_descriptor_response.file_descriptor_proto
    described = descriptor_pb2.FileDescriptorProto.FromString(raw)
    (service,) = described.service
    assert [m.name for m in service.method] == [
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelConfig",
    ]


async def test_request_ids_are_kept_when_valid_and_echoed_in_initial_and_trailing_metadata(
    digit_pngs: list[bytes],
) -> None:
    async with grpc_app() as g:
        call = g.stub.ModelInfer(infer_request(digit_pngs[0]), metadata=(("x-request-id", "grpc-req.1"),), timeout=10)
        await call
        initial, trailing = dict(await call.initial_metadata()), dict(await call.trailing_metadata())
        bad = g.stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=(("x-request-id", "not valid!"),), timeout=5)
        await bad
        replaced = dict(await bad.initial_metadata())["x-request-id"]
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await g.stub.ModelInfer(
                infer_request(digit_pngs[0], model="nope"), metadata=(("x-request-id", "grpc-req-2"),), timeout=10
            )
    assert initial["x-request-id"] == trailing["x-request-id"] == "grpc-req.1"
    assert UUID4.match(replaced)
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert dict(failed.value.trailing_metadata())["x-request-id"] == "grpc-req-2"


async def test_every_call_gets_a_server_span_with_the_pipeline_under_it(digit_pngs: list[bytes]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with grpc_app(tracer_provider=provider) as g:
        health = health_pb2_grpc.HealthStub(g.channel)
        await _until(health, SERVING)
        exporter.clear()  # warm-up and readiness polls
        await _health(health)
        await g.stub.ModelInfer(infer_request(digit_pngs[0]), metadata=(("x-request-id", "span-me"),), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError):
            await g.stub.ModelInfer(infer_request(digit_pngs[0], model="nope"), timeout=10)
    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    assert [s.name for s in servers] == [f"/{SERVICE}/ModelInfer"] * 2  # no span for the health check
    ok, failed = servers
    assert ok.attributes["rpc.request_id"] == "span-me"
    assert ok.attributes["rpc.grpc.status_code"] == 0
    assert failed.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    # The semantic conventions mark server spans as errors for server faults only, not a wrong name.
    assert failed.status.status_code == StatusCode.UNSET
    children = sorted(s.name for s in spans if s.parent is not None and s.parent.span_id == ok.context.span_id)
    assert children == ["decode", "preprocess", "queue_wait"]
    (inference,) = [s for s in spans if s.name == "inference"]
    assert [link.context.trace_id for link in inference.links] == [ok.context.trace_id]


async def test_draining_refuses_new_calls_and_lets_calls_in_flight_finish(digit_pngs: list[bytes]) -> None:
    """In flight: a call waiting in the batch queue (held by max_batch_wait_ms) when the drain starts."""
    async with grpc_app(max_batch_wait_ms=800) as g:
        in_flight = asyncio.ensure_future(g.stub.ModelInfer(infer_request(digit_pngs[0]), timeout=20))
        deadline = time.monotonic() + 5
        while not any(e.batcher and e.batcher.queued for e in g.app.state.dataplane.registry.entries()):
            assert time.monotonic() < deadline, "the call never reached the batch queue"
            await asyncio.sleep(0.01)
        g.app.state.drain.draining = True
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await g.stub.ModelInfer(infer_request(digit_pngs[0]), timeout=10)
        finished = await in_flight
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == "the server is shutting down"
    assert finished.outputs[0].name == "probabilities"


async def _state_after(channel: grpc.aio.Channel, seconds: float) -> grpc.ChannelConnectivity:
    deadline = time.monotonic() + seconds
    state = channel.get_state(try_to_connect=False)
    while time.monotonic() < deadline and state == grpc.ChannelConnectivity.READY:
        await asyncio.sleep(0.05)
        state = channel.get_state(try_to_connect=False)
    return state


async def test_connections_are_closed_after_the_maximum_age_and_the_client_reconnects() -> None:
    async with grpc_app(grpc_max_connection_age_s=0.5) as g:
        assert (await g.stub.ServerLive(pb.ServerLiveRequest(), timeout=5)).live is True
        assert g.channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY
        # The server's GOAWAY (age 0.5 s, plus gRPC's up to 10 % jitter) leaves the channel idle.
        assert await _state_after(g.channel, 3.0) == grpc.ChannelConnectivity.IDLE
        # The next call opens a new connection: what lets a client re-resolve and reach new pods.
        assert (await g.stub.ServerLive(pb.ServerLiveRequest(), timeout=5)).live is True
        assert g.channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY


async def test_connections_live_on_when_the_maximum_age_is_zero() -> None:
    async with grpc_app(grpc_max_connection_age_s=0) as g:
        assert (await g.stub.ServerLive(pb.ServerLiveRequest(), timeout=5)).live is True
        assert await _state_after(g.channel, 2.0) == grpc.ChannelConnectivity.READY
