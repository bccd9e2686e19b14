"""HTTP metrics (prometheus-fastapi-instrumentator, route templates as labels) and ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_fastapi_instrumentator import Instrumentator, metrics
from prometheus_fastapi_instrumentator.metrics import Info

from service.observability.metrics import HTTP_LATENCY_BUCKETS, multiprocess_dir, trace_exemplar


def _latency_with_exemplars(registry: CollectorRegistry) -> Callable[[Info], None]:
    """``http_request_duration_seconds{handler,method}`` with the request's trace ID as exemplar."""
    histogram = Histogram(
        "http_request_duration_seconds",
        "HTTP request latency by route template.",
        ("handler", "method"),
        buckets=HTTP_LATENCY_BUCKETS,
        registry=registry,
    )

    def observe(info: Info) -> None:
        histogram.labels(info.modified_handler, info.method).observe(info.modified_duration, exemplar=trace_exemplar())

    return observe


def install_metrics(app: FastAPI, registry: CollectorRegistry) -> None:
    instrumentator = Instrumentator(
        should_group_status_codes=True,
        should_ignore_untemplated=False,
        should_group_untemplated=True,  # unknown paths become "none": no label per scanned URL
        excluded_handlers=["/metrics"],
        registry=registry,
    )
    instrumentator.add(metrics.requests(registry=registry))
    instrumentator.add(metrics.request_size(registry=registry))
    instrumentator.add(metrics.response_size(registry=registry))
    instrumentator.add(_latency_with_exemplars(registry))
    instrumentator.instrument(app)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(request: Request) -> Response:
        source = registry
        if multiprocess_dir():
            source = CollectorRegistry()
            multiprocess.MultiProcessCollector(source)
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(source), media_type=content_type)
