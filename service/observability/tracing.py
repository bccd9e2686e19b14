"""OpenTelemetry tracing, configured by the standard ``OTEL_*`` variables.

With no ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) nothing is exported, but spans
still exist so request IDs, log trace IDs and metric exemplars work the same everywhere.
"""

from __future__ import annotations

import os

from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from service import __version__

# The OTLP protocols (OTEL_EXPORTER_OTLP_PROTOCOL values) the service has an exporter for. The
# specification also names "http/json", but opentelemetry-python ships no JSON span exporter:
# accepting it would quietly send protobuf to a receiver expecting JSON. The chart's values schema
# allows exactly these.
SUPPORTED_PROTOCOLS = ("http/protobuf", "grpc")
DEFAULT_PROTOCOL = "http/protobuf"


class UnsupportedOtlpProtocolError(ValueError):
    """An OTLP protocol the service cannot export with; raised at start-up, before serving."""


def build_resource() -> Resource:
    attributes: dict[str, str] = {"service.name": "ml-api", "service.version": __version__}
    # Downward-API variables the chart sets.
    for env, key in (
        ("POD_NAME", "k8s.pod.name"),
        ("POD_NAMESPACE", "k8s.namespace.name"),
        ("NODE_NAME", "k8s.node.name"),
    ):
        if os.environ.get(env):
            attributes[key] = os.environ[env]
    # Resource.create lets the attributes passed in override OTEL_SERVICE_NAME and
    # OTEL_RESOURCE_ATTRIBUTES; merging the environment's again on top makes those win, so the
    # chart's otel.serviceName (default: the release's fullname) names the service in traces.
    return Resource.create(attributes).merge(OTELResourceDetector().detect())


def exporter_configured() -> bool:
    return (
        bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        and os.environ.get("OTEL_TRACES_EXPORTER", "otlp") != "none"
    )


def otlp_protocol() -> str:
    """The traces protocol: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL
    (empty counts as unset, as in the SDK), else http/protobuf. Refuses one without an exporter."""
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = os.environ.get(variable, "").strip()
        if value:
            if value not in SUPPORTED_PROTOCOLS:
                raise UnsupportedOtlpProtocolError(
                    f"{variable}={value!r} is not supported: ml-api exports traces over "
                    + " or ".join(repr(p) for p in SUPPORTED_PROTOCOLS)
                    + " (chart value otel.protocol)"
                )
            return value
    return DEFAULT_PROTOCOL


def build_span_exporter() -> SpanExporter | None:
    """The OTLP span exporter the environment asks for, or None when nothing is to be exported."""
    if not exporter_configured():
        return None
    if otlp_protocol() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def build_tracer_provider() -> TracerProvider:
    """A provider whose sampler comes from OTEL_TRACES_SAMPLER(_ARG) and exports over OTLP when set."""
    provider = TracerProvider(resource=build_resource())
    exporter = build_span_exporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
