"""Every `otel.protocol` the values schema allows starts the service with the matching OTLP exporter
and delivers spans over that protocol; nothing else gets past the schema or the service.

The environment comes from `helm template` (the OTEL_* entries the Deployment sets, `$(VAR)`
references expanded as the kubelet would); the service side is service/observability/tracing.py,
in-process for the exporter choice and as a real `python -m service` for the export."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

from service.observability import tracing
from tests.chart.helm import CHART, FIELDS, FULLNAME, HelmError, container_env, render
from tests.chart.otlp_receivers import RECEIVERS
from tests.conftest import live_server

pytestmark = pytest.mark.helm

SCHEMA_PROTOCOLS: list[str] = json.loads((CHART / "values.schema.json").read_text())["properties"]["otel"][
    "properties"
]["protocol"]["enum"]
EXPORTER_CLASS = {"http/protobuf": HttpSpanExporter, "grpc": GrpcSpanExporter}


def _otel_env(protocol: str, endpoint: str) -> dict[str, str]:
    """The tracing-related env of the rendered Deployment's container."""
    docs = render(
        sets=["otel.enabled=true", f"otel.endpoint={endpoint}", f"otel.protocol={protocol}", "otel.samplerRatio=1"]
    )
    env = container_env(docs)
    return {k: v for k, v in env.items() if k.startswith("OTEL_") or k in {"POD_NAME", "POD_NAMESPACE"}}


@pytest.fixture
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(key)
    yield monkeypatch


def test_schema_allows_exactly_the_protocols_the_service_exports() -> None:
    assert list(tracing.SUPPORTED_PROTOCOLS) == SCHEMA_PROTOCOLS
    assert set(EXPORTER_CLASS) == set(SCHEMA_PROTOCOLS)


def test_schema_refuses_a_protocol_without_an_exporter(helm: str) -> None:
    with pytest.raises(HelmError) as exc:
        render(sets=["otel.enabled=true", "otel.endpoint=http://collector:4318", "otel.protocol=http/json"])
    assert "values don't meet the specifications of the schema" in exc.value.stderr
    assert "/otel/protocol" in exc.value.stderr or "otel.protocol" in exc.value.stderr


@pytest.mark.parametrize("protocol", SCHEMA_PROTOCOLS)
def test_each_chart_protocol_builds_its_exporter(helm: str, clean_otel_env: pytest.MonkeyPatch, protocol: str) -> None:
    env = _otel_env(protocol, "http://otel-collector.monitoring.svc:4317")
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == protocol
    for key, value in env.items():
        clean_otel_env.setenv(key, value)
    exporter = tracing.build_span_exporter()
    try:
        assert type(exporter) is EXPORTER_CLASS[protocol]
    finally:
        assert exporter is not None
        exporter.shutdown()
    provider = tracing.build_tracer_provider()
    try:
        assert provider.resource.attributes["service.name"] == FULLNAME
        assert provider.resource.attributes["k8s.pod.name"] == FIELDS["metadata.name"]
    finally:
        provider.shutdown()


def test_a_protocol_without_an_exporter_stops_start_up_with_its_name(clean_otel_env: pytest.MonkeyPatch) -> None:
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector.monitoring.svc:4318")
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(tracing.UnsupportedOtlpProtocolError) as exc:
        tracing.build_tracer_provider()
    assert str(exc.value) == (
        "OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported: ml-api exports traces over "
        "'http/protobuf' or 'grpc' (chart value otel.protocol)"
    )
    # The traces-specific variable wins over the general one, as in the OpenTelemetry SDK.
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    assert tracing.otlp_protocol() == "grpc"
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift")
    with pytest.raises(tracing.UnsupportedOtlpProtocolError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='thrift'"):
        tracing.otlp_protocol()
    # Without an endpoint nothing is exported, so the protocol is never read.
    clean_otel_env.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    assert tracing.build_span_exporter() is None


def _spans(received: list[Any]) -> list[tuple[dict[str, str], str]]:
    out = []
    for request in list(received):
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                out.extend((attributes, span.name) for span in scope.spans)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("protocol", SCHEMA_PROTOCOLS)
def test_a_server_with_the_chart_env_exports_spans_over_each_protocol(helm: str, protocol: str) -> None:
    with RECEIVERS[protocol]() as (endpoint, received):
        env = {**_otel_env(protocol, endpoint), "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with live_server(env=env) as base:
            response = httpx.get(f"{base}/api/v1/models", timeout=30)
            assert response.status_code == 200
            deadline = time.monotonic() + 20
            while not any(name == "GET /api/v1/models" for _, name in _spans(received)):
                assert time.monotonic() < deadline, f"spans received over {protocol}: {_spans(received)}"
                time.sleep(0.1)
    (attributes, _name) = next(s for s in _spans(received) if s[1] == "GET /api/v1/models")
    assert attributes["service.name"] == FULLNAME
    assert attributes["k8s.pod.name"] == FIELDS["metadata.name"]
    assert attributes["k8s.deployment.name"] == FULLNAME


@pytest.mark.slow
def test_an_unsupported_protocol_fails_server_start_up_with_the_reason() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    with pytest.raises(AssertionError) as exc, live_server(env=env, timeout=60):
        pass
    assert "server exited" in str(exc.value)
    assert "UnsupportedOtlpProtocolError: OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported" in str(exc.value)
