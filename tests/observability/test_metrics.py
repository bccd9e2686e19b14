"""Prometheus metrics: documented names and labels, route templates, bounded cardinality, exemplars."""

from __future__ import annotations

import base64
import re
import time
import uuid

import anyio
import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from tests.conftest import make_settings, running_app

pytestmark = pytest.mark.anyio

# Name -> (type, label names) as docs/architecture.md lists them (the exposition adds "le" to buckets).
DOCUMENTED = {
    "http_requests": ("counter", {"handler", "method", "status"}),
    "http_request_duration_seconds": ("histogram", {"handler", "method"}),
    "http_request_size_bytes": ("summary", {"handler", "method", "status"}),
    "http_response_size_bytes": ("summary", {"handler", "method", "status"}),
    "ml_api_inference_duration_seconds": ("histogram", {"model", "version"}),
    "ml_api_batch_size": ("histogram", {"model", "version"}),
    "ml_api_queue_wait_seconds": ("histogram", {"model", "version", "priority"}),
    "ml_api_queue_depth": ("gauge", {"model", "version", "priority"}),
    "ml_api_inflight_requests": ("gauge", set()),
    "ml_api_model_loaded": ("gauge", {"model", "version"}),
    "ml_api_model_instances": ("gauge", {"model", "version"}),
    "ml_api_device_fallback": ("gauge", set()),
    "ml_api_predictions": ("counter", {"model", "version", "outcome"}),
    "ml_api_image_decode_seconds": ("histogram", set()),
    "ml_api_jobs": ("counter", {"outcome"}),
    "ml_api_jobs_queue_depth": ("gauge", set()),
    "ml_api_job_duration_seconds": ("histogram", set()),
}


def _families(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _value(text: str, sample_name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == sample_name and sample.labels == labels:
                return sample.value
    return None


async def _upload(client: httpx.AsyncClient, png: bytes, **headers: str) -> httpx.Response:
    return await client.post("/api/v1/predict/upload", content=png, headers={"Content-Type": "image/png", **headers})


async def test_documented_metrics_have_their_names_types_and_labels_after_traffic(digit_pngs: list[bytes]) -> None:
    async with running_app(create_app(make_settings(model_instances=2))) as client:
        assert (await _upload(client, digit_pngs[0])).status_code == 200
        assert (await _upload(client, b"\x89PNG\r\n\x1a\n not really")).status_code == 400
        submitted = await client.post(
            "/api/v1/predict/async", json={"image_base64": base64.b64encode(digit_pngs[1]).decode()}
        )
        assert submitted.status_code == 202
        deadline = time.monotonic() + 30
        while (await client.get(submitted.json()["status_url"])).json()["status"] != "completed":
            assert time.monotonic() < deadline, "the job did not complete"
            await anyio.sleep(0.05)
        text = (await client.get("/metrics")).text
    families = _families(text)
    for name, (kind, labels) in DOCUMENTED.items():
        assert name in families, name
        family = families[name]
        assert family.type == kind, name
        assert family.samples, name
        for sample in family.samples:
            assert set(sample.labels) - {"le", "quantile"} == labels, (name, sample.labels)
    digits = {"model": "digits", "version": "1"}
    assert _value(text, "ml_api_predictions_total", {**digits, "outcome": "success"}) == 2.0  # upload + job
    assert _value(text, "ml_api_predictions_total", {**digits, "outcome": "invalid_image"}) == 1.0
    assert _value(text, "ml_api_model_loaded", digits) == 1.0
    assert _value(text, "ml_api_inflight_requests", {}) == 0.0
    assert _value(text, "ml_api_queue_depth", {**digits, "priority": "interactive"}) == 0.0
    assert _value(text, "ml_api_queue_depth", {**digits, "priority": "background"}) == 0.0
    # The upload waited as interactive work, the async job as background work.
    assert _value(text, "ml_api_queue_wait_seconds_count", {**digits, "priority": "background"}) == 1.0
    assert _value(text, "ml_api_model_instances", digits) == 2.0
    assert _value(text, "ml_api_jobs_total", {"outcome": "completed"}) == 1.0
    assert _value(text, "ml_api_batch_size_sum", digits) == _value(text, "ml_api_batch_size_count", digits)
    assert _value(text, "ml_api_image_decode_seconds_count", {}) == 2.0  # successful decodes only
    ok = {"handler": "/api/v1/predict/upload", "method": "POST"}
    assert _value(text, "http_requests_total", {**ok, "status": "2xx"}) == 1.0
    assert _value(text, "http_requests_total", {**ok, "status": "4xx"}) == 1.0
    assert _value(text, "http_requests_total", {"handler": "/api/v1/predict/async", "method": "POST", "status": "2xx"})
    assert _value(text, "http_request_duration_seconds_count", ok) == 2.0


async def test_handler_label_is_the_route_template_not_the_raw_path() -> None:
    ids = [uuid.uuid4().hex for _ in range(3)]
    async with running_app(create_app(make_settings())) as client:
        for job_id in ids:
            assert (await client.get(f"/api/v1/jobs/{job_id}")).status_code == 404
        text = (await client.get("/metrics")).text
    template = {"handler": "/api/v1/jobs/{job_id}", "method": "GET"}
    assert _value(text, "http_requests_total", {**template, "status": "4xx"}) == 3.0
    assert _value(text, "http_request_duration_seconds_count", template) == 3.0
    assert not any(job_id in text for job_id in ids)


async def test_unknown_paths_share_one_label_value() -> None:
    """A scanner's random URLs must not grow the series count (cardinality stays bounded)."""
    async with running_app(create_app(make_settings())) as client:
        before = {s.labels.get("handler") for f in text_string_to_metric_families((await client.get("/metrics")).text)
                  for s in f.samples}  # fmt: skip
        paths = [f"/scan/{uuid.uuid4().hex}/{n}" for n in range(25)]
        for path in paths:
            assert (await client.get(path)).status_code == 404
        text = (await client.get("/metrics")).text
    handlers = {s.labels.get("handler") for f in text_string_to_metric_families(text) for s in f.samples}
    assert handlers - before == {"none"}
    assert _value(text, "http_requests_total", {"handler": "none", "method": "GET", "status": "4xx"}) == 25.0
    assert not any(path in text for path in paths)


async def test_histograms_carry_trace_id_exemplars_only_in_openmetrics(digit_pngs: list[bytes]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(make_settings(), tracer_provider=provider, metrics_registry=CollectorRegistry())
    async with running_app(app) as client:
        assert (await _upload(client, digit_pngs[0])).status_code == 200
        plain = await client.get("/metrics")
        openmetrics = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert plain.headers["content-type"].startswith("text/plain")
    assert " # {" not in plain.text
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER and s.name == "POST /api/v1/predict/upload"]
    server_ctx = server.context
    (inference,) = [s for s in spans if s.name == "inference" and [link.context for link in s.links] == [server_ctx]]
    # Warm-up batches are inference spans too (no links); each bucket keeps its latest exemplar.
    batch_traces = {format(s.context.trace_id, "032x") for s in spans if s.name == "inference"}
    request_trace = format(server.context.trace_id, "032x")
    exemplars: dict[str, set[str]] = {}
    for family in openmetrics_families(openmetrics.text):
        for sample in family.samples:
            if sample.exemplar is not None and sample.labels.get("handler") != "/metrics":
                exemplars.setdefault(family.name, set()).add(sample.exemplar.labels["trace_id"])
    inference_exemplars = exemplars.pop("ml_api_inference_duration_seconds")
    assert exemplars == {
        "http_request_duration_seconds": {request_trace},
        "ml_api_image_decode_seconds": {request_trace},
        "ml_api_queue_wait_seconds": {request_trace},
        "ml_api_protocol_request_duration_seconds": {request_trace},
    }
    # The shared batch span is its own trace, linked to every request it served.
    assert format(inference.context.trace_id, "032x") in inference_exemplars
    assert inference_exemplars <= batch_traces
    assert re.fullmatch(r"[0-9a-f]{32}", request_trace)
