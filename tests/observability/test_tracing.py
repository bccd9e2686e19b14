"""OpenTelemetry spans: in-memory for the span tree, a real OTLP/HTTP receiver for the exported payload."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service.app import create_app
from service.observability import tracing
from tests.conftest import make_settings, running_app
from tests.servers import server

UPLOAD = "POST /api/v1/predict/upload"


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[str]:
    return sorted(
        s.name for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id
        and not s.name.startswith(UPLOAD)  # the ASGI instrumentation's own "http receive/send" spans
    )  # fmt: skip


@pytest.mark.anyio
async def test_request_span_has_pipeline_children_and_a_linked_inference_span(digit_pngs: list[bytes]) -> None:
    provider, exporter = _provider()
    async with running_app(create_app(make_settings(), tracer_provider=provider)) as client:
        exporter.clear()  # readiness polls and warm-up
        response = await client.post(
            "/api/v1/predict/upload",
            content=digit_pngs[0],
            headers={"Content-Type": "image/png", "X-Request-ID": "trace-me-1"},
        )
        assert response.status_code == 200
    spans = exporter.get_finished_spans()
    (request_span,) = [s for s in spans if s.kind == SpanKind.SERVER]
    assert request_span.name == UPLOAD
    assert request_span.attributes["http.request_id"] == "trace-me-1"
    assert _children(spans, request_span) == ["decode", "preprocess", "queue_wait"]
    (decode,) = [s for s in spans if s.name == "decode"]
    assert decode.attributes["ml_api.image_bytes"] == len(digit_pngs[0])
    (inference,) = [s for s in spans if s.name == "inference"]
    assert inference.parent is None  # one batch serves many requests: links, not a parent
    assert [link.context for link in inference.links] == [request_span.context]
    # ml_api.threads: the intra-op threads the batch ran with (a lone batch gets the whole budget).
    assert dict(inference.attributes) == {
        "ml_api.model": "digits",
        "ml_api.model_version": "1",
        "ml_api.batch_size": 1,
        "ml_api.threads": inference.attributes["ml_api.threads"],
    }
    assert inference.attributes["ml_api.threads"] >= 1


@pytest.mark.anyio
async def test_one_inference_span_links_every_request_it_batched(digit_pngs: list[bytes]) -> None:
    provider, exporter = _provider()
    # A long batch window with a batch size of 4: the four concurrent requests leave as one batch.
    settings = make_settings(max_batch_size=4, max_batch_wait_ms=1000)
    async with running_app(create_app(settings, tracer_provider=provider)) as client:
        exporter.clear()
        statuses: list[int] = []

        async def one(index: int) -> None:
            response = await client.post(
                "/api/v1/predict/upload", content=digit_pngs[index], headers={"Content-Type": "image/png"}
            )
            statuses.append(response.status_code)

        async with anyio.create_task_group() as group:
            for index in range(4):
                group.start_soon(one, index)
    assert statuses == [200] * 4
    spans = exporter.get_finished_spans()
    requests = {(s.context.trace_id, s.context.span_id) for s in spans if s.kind == SpanKind.SERVER}
    assert len(requests) == 4
    (inference,) = [s for s in spans if s.name == "inference"]
    assert inference.attributes["ml_api.batch_size"] == 4
    assert {(link.context.trace_id, link.context.span_id) for link in inference.links} == requests
    assert len({trace_id for trace_id, _ in requests}) == 4  # four traces, one shared batch


@pytest.mark.anyio
async def test_traceparent_joins_the_callers_trace(digit_pngs: list[bytes]) -> None:
    provider, exporter = _provider()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with running_app(create_app(make_settings(), tracer_provider=provider)) as client:
        response = await client.post(
            "/api/v1/predict/upload",
            content=digit_pngs[0],
            headers={"Content-Type": "image/png", "traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
        assert response.status_code == 200
    spans = exporter.get_finished_spans()
    (request_span,) = [s for s in spans if s.kind == SpanKind.SERVER and s.name == UPLOAD]
    assert format(request_span.context.trace_id, "032x") == trace_id
    assert request_span.parent is not None and format(request_span.parent.span_id, "016x") == parent_id
    pipeline = [s for s in spans if s.name in ("decode", "preprocess", "queue_wait")]
    assert {format(s.context.trace_id, "032x") for s in pipeline} == {trace_id}


def test_exporter_is_configured_only_by_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.exporter_configured() is False
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing.exporter_configured() is True
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.exporter_configured() is False


def test_resource_names_the_service_and_its_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("POD_NAME", "ml-api-7d9f-abcde")
    monkeypatch.setenv("POD_NAMESPACE", "serving")
    attributes = tracing.build_resource().attributes
    assert attributes["service.name"] == "ml-api"
    assert attributes["k8s.pod.name"] == "ml-api-7d9f-abcde"
    assert attributes["k8s.namespace.name"] == "serving"
    assert attributes["service.version"]


@contextlib.contextmanager
def otlp_receiver() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """A minimal OTLP/HTTP trace receiver: decodes each protobuf ExportTraceServiceRequest it is sent."""
    received: list[ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
                received.append(request)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{receiver.server_address[1]}", received
    finally:
        receiver.shutdown()
        receiver.server_close()


@pytest.mark.slow
def test_otlp_export_from_a_real_server(tmp_path: Path, digit_pngs: list[bytes]) -> None:
    with otlp_receiver() as (endpoint, received):
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export every 100 ms instead of 5 s
            "POD_NAME": "ml-api-0",
            "POD_NAMESPACE": "ops-test",
        }
        with server("uvicorn", env, tmp_path / "stderr.log") as srv:
            response = httpx.post(
                f"{srv.base}/api/v1/predict/upload",
                content=digit_pngs[0],
                headers={"Content-Type": "image/png", "X-Request-ID": "otlp-req-1"},
                timeout=30,
            )
            assert response.status_code == 200
            deadline = time.monotonic() + 15
            while True:
                spans = [
                    (rs.resource, span)
                    for request in list(received)
                    for rs in request.resource_spans
                    for ss in rs.scope_spans
                    for span in ss.spans
                ]
                names = {span.name for _, span in spans}
                if {UPLOAD, "decode", "preprocess", "queue_wait", "inference"} <= names:
                    break
                assert time.monotonic() < deadline, f"spans received so far: {sorted(names)}"
                time.sleep(0.1)
            (access,) = srv.wait_for_log(lambda r: r.get("request_id") == "otlp-req-1")
    by_name: dict[str, list] = {}
    for _, span in spans:
        by_name.setdefault(span.name, []).append(span)
    (request_span,) = [s for s in by_name[UPLOAD] if s.kind == s.SPAN_KIND_SERVER]
    attributes = {a.key: a.value.string_value for a in request_span.attributes}
    assert attributes["http.request_id"] == "otlp-req-1"
    for name in ("decode", "preprocess", "queue_wait"):
        (child,) = by_name[name]
        assert child.parent_span_id == request_span.span_id, name
        assert child.trace_id == request_span.trace_id, name
    linked = [s for s in by_name["inference"] if any(link.span_id == request_span.span_id for link in s.links)]
    assert len(linked) == 1
    (link,) = linked[0].links
    assert link.trace_id == request_span.trace_id
    assert linked[0].parent_span_id == b""
    assert access["trace_id"] == request_span.trace_id.hex()
    assert re.fullmatch(r"[0-9a-f]{16}", access["span_id"])
    resource = {a.key: a.value.string_value for a in spans[0][0].attributes}
    assert resource["service.name"] == "ml-api"
    assert resource["k8s.pod.name"] == "ml-api-0"
    assert resource["k8s.namespace.name"] == "ops-test"
