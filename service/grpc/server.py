"""The gRPC server: ``inference.GRPCInferenceService``, ``grpc.health.v1`` and reflection on one port,
in the HTTP server's process and event loop, over the same data plane.

Lifecycle (``service/app.py``): started after the data plane, stopped before it. Health: the server
("") and ``inference.GRPCInferenceService`` are SERVING only while ready, like /health/ready;
``liveness`` is SERVING while the process serves, like /health/live. On SIGTERM the drain flag flips
first: within ``HEALTH_POLL_S`` health answers NOT_SERVING (what Kubernetes' gRPC probes read), new
calls get UNAVAILABLE, calls in flight go on; once the HTTP server has drained, ``stop`` waits for
the calls still running for what is left of the grace period.

Several gunicorn workers each run this server on the same port with ``SO_REUSEPORT``: the kernel
spreads incoming connections over them (a connection, and every call on it, stays with one worker).
With one worker the option is off, so a port already taken is an error at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.trace import TracerProvider

from service.dataplane.plane import DataPlane
from service.grpc.calls import CallGuard
from service.grpc.proto import inference_v2_pb2, inference_v2_pb2_grpc
from service.grpc.servicer import InferenceServicer
from service.observability.protocols import ProtocolMetrics
from service.oip.handler import InferenceHandler
from service.settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAME = inference_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# The health "service" a liveness probe asks about: SERVING while the process serves gRPC, whether the
# model is loaded or the pod drains (as /health/live never depends on either).
LIVENESS = "liveness"
# How often health follows readiness (model loaded, not draining).
HEALTH_POLL_S = 0.1
# Responses are small (probabilities of a batch); requests are capped at the HTTP body limit.
MAX_SEND_BYTES = 64 * 1024 * 1024


def connection_age(settings: Settings) -> list[tuple[str, int]]:
    """A connection lives at most this long, so a client re-resolving a headless Service's name finds
    pods added since (one connection is one pod, docs/chart.md); calls in flight get the grace period."""
    if not settings.grpc_max_connection_age_s:
        return []
    return [
        ("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age_s * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.shutdown_grace_s * 1000)),
    ]


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    def __init__(
        self,
        settings: Settings,
        dataplane: DataPlane,
        *,
        tracer_provider: TracerProvider | None = None,
        metrics: ProtocolMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.dataplane = dataplane
        self.port = settings.grpc_port
        # Probes and reflection get no span, as /health/* get none over HTTP.
        untraced = filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection"))
        self.server = grpc.aio.server(
            interceptors=[aio_server_interceptor(tracer_provider=tracer_provider, filter_=filters.negate(untraced))],
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.max_send_message_length", MAX_SEND_BYTES),
                ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
                *connection_age(settings),
            ],
            maximum_concurrent_rpcs=settings.max_connections,
        )
        guard = CallGuard(settings, dataplane.drain, metrics)
        servicer = InferenceServicer(InferenceHandler(dataplane), guard)
        inference_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self.server)
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self._health_task: asyncio.Task[None] | None = None
        self._drain_started: float | None = None

    async def start(self) -> None:
        address = bind_address(self.settings.host, self.port)
        try:
            bound = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc raises a bare RuntimeError for a port it cannot bind
            raise RuntimeError(f"gRPC: cannot listen on {address} (ML_API_GRPC_PORT): {exc}") from None
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self.server.start()
        self._health_task = asyncio.get_running_loop().create_task(self._follow_readiness(), name="grpc-health")
        log.info("gRPC listening on %s", bind_address(self.settings.host, bound))

    async def stop(self) -> None:
        """Refuse new calls and let those in flight finish within what is left of the grace period."""
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await self.health.enter_graceful_shutdown()
        grace = self.settings.shutdown_grace_s
        if self._drain_started is not None:
            grace = max(0.0, grace - (time.monotonic() - self._drain_started))
        await self.server.stop(grace)

    async def _follow_readiness(self) -> None:
        serving: bool | None = None
        while True:
            if self.dataplane.drain.draining and self._drain_started is None:
                self._drain_started = time.monotonic()
            ready = self._ready()
            if ready != serving:
                serving = ready
                status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
                await self._set_health(status)
            await asyncio.sleep(HEALTH_POLL_S)

    def _ready(self) -> bool:
        try:
            self.dataplane.check_ready()
        except Exception:
            return False
        return True

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        # "" is the server as a whole, what a probe without a service name asks about.
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)
