"""OpenTelemetry tracing, configured by the standard ``OTEL_*`` variables.

With no ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) nothing is exported, but spans
still exist so request IDs, log trace IDs and metric exemplars work the same everywhere.
"""

from __future__ import annotations

import os

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from service import __version__


def build_resource() -> Resource:
    attributes: dict[str, str] = {"service.name": "ml-api", "service.version": __version__}
    # Downward-API variables the chart sets; OTEL_RESOURCE_ATTRIBUTES (read by Resource.create) wins.
    for env, key in (
        ("POD_NAME", "k8s.pod.name"),
        ("POD_NAMESPACE", "k8s.namespace.name"),
        ("NODE_NAME", "k8s.node.name"),
    ):
        if os.environ.get(env):
            attributes[key] = os.environ[env]
    return Resource.create(attributes)


def exporter_configured() -> bool:
    return (
        bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        and os.environ.get("OTEL_TRACES_EXPORTER", "otlp") != "none"
    )


def build_tracer_provider() -> TracerProvider:
    """A provider whose sampler comes from OTEL_TRACES_SAMPLER(_ARG) and exports over OTLP when set."""
    provider = TracerProvider(resource=build_resource())
    if exporter_configured():
        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        )
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Exporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Exporter
        provider.add_span_processor(BatchSpanProcessor(Exporter()))
    return provider
