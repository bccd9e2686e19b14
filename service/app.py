"""The app factory: wires settings, the data plane, the HTTP layer and observability."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from service import __version__
from service.api.bodies import with_body_schemas
from service.api.docs_ui import install_docs
from service.api.errors import install_error_handlers
from service.api.inputs import ImageInputs
from service.api.main import include_routes
from service.api.middleware import BodyGuardMiddleware, DrainMiddleware, RequestTelemetryMiddleware
from service.api.request_id import is_valid_request_id, new_request_id
from service.api.routes.page import install_page
from service.api.security import install_security
from service.dataplane.plane import DataPlane
from service.dataplane.status import DrainState
from service.observability.http_metrics import METRICS_PATH, HttpMetrics, install_metrics_endpoint
from service.observability.metrics import InferenceMetrics
from service.observability.protocols import ProtocolMetrics
from service.observability.tracing import build_tracer_provider
from service.settings import Settings, load_settings
from service.signals import drain_on_sigterm


class ServiceApp(FastAPI):
    """The app, whose OpenAPI document also carries the JSON body models routes parse themselves."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = with_body_schemas(super().openapi())
        return self.openapi_schema


def create_app(
    settings: Settings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    metrics_registry: CollectorRegistry | None = None,
) -> FastAPI:
    settings = settings or load_settings()
    tracer_provider = tracer_provider or build_tracer_provider()
    metrics_registry = metrics_registry or CollectorRegistry(auto_describe=True)
    inference_metrics = InferenceMetrics(metrics_registry)
    protocol_metrics = ProtocolMetrics(metrics_registry)
    drain = DrainState()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dataplane = DataPlane.build(
            settings, tracer=tracer_provider.get_tracer("service.inference"), metrics=inference_metrics, drain=drain
        )
        HTTPXClientInstrumentor.instrument_client(dataplane.fetcher.client, tracer_provider=tracer_provider)
        app.state.dataplane = dataplane
        await dataplane.start()
        drain.draining = False
        restore_signals = drain_on_sigterm(drain)
        grpc_server = None
        if settings.grpc_port:
            # Imported here: grpc loads only where it is served.
            from service.grpc.server import GrpcServer

            grpc_server = GrpcServer(settings, dataplane, tracer_provider=tracer_provider, metrics=protocol_metrics)
            await grpc_server.start()
        app.state.grpc_server = grpc_server
        try:
            yield
        finally:
            # Uvicorn has already stopped accepting and waited for in-flight requests here; gRPC calls
            # in flight get what is left of the grace period, then the data plane closes.
            restore_signals()
            if grpc_server is not None:
                await grpc_server.stop()
            await dataplane.close()
            with contextlib.suppress(Exception):
                tracer_provider.force_flush(timeout_millis=2000)

    app = ServiceApp(
        title="ml-api",
        version=__version__,
        description="Image classification with dynamic batching. Contract: docs/api-contract.md.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # Operation IDs are the route functions' names (predict, job_status, ...): readable in generated
        # clients, and what the OpenAPI links between operations refer to.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.settings = settings
    app.state.inputs = ImageInputs(settings.max_body_bytes)
    app.state.inference_metrics = inference_metrics
    app.state.protocol_metrics = protocol_metrics
    app.state.metrics_registry = metrics_registry
    app.state.tracer_provider = tracer_provider
    app.state.drain = drain

    install_error_handlers(app)
    routes = include_routes(app)
    app.state.route_policies = routes
    install_docs(app, routes)
    install_page(app, settings, routes)

    # add_middleware wraps outermost last; the OTel instrumentor wraps the whole stack. Outside in:
    # tracing -> request ID -> access log and metrics -> drain -> CORS/rate limit/auth -> body guard -> routes.
    app.add_middleware(
        BodyGuardMiddleware, max_bytes=settings.max_body_bytes, read_timeout_s=settings.body_read_timeout_s
    )
    install_security(app, settings, routes)
    app.add_middleware(DrainMiddleware, drain=drain)
    http_metrics = HttpMetrics(metrics_registry) if settings.metrics_enabled else None
    app.add_middleware(
        RequestTelemetryMiddleware,
        routes=routes,
        metrics=http_metrics,
        protocol_metrics=protocol_metrics if settings.metrics_enabled else None,
    )
    if settings.metrics_enabled:
        install_metrics_endpoint(app, metrics_registry)
        routes.add_public_path(METRICS_PATH)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracer_provider,
        excluded_urls=f"{METRICS_PATH},/health/live,/health/ready,/health/startup",
        # No child span per ASGI receive and send message: two extra spans per request that say nothing
        # the server span does not.
        exclude_spans=["receive", "send"],
    )
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name="X-Request-ID",
        generator=new_request_id,
        validator=is_valid_request_id,
        transformer=lambda value: value,
    )
    return app


__all__ = ["create_app"]
