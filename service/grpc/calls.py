"""What every gRPC call goes through, as every HTTP request does in the middleware: its request ID,
the drain, the API key, the rate limit, and its access-log line and protocol metrics.

The rules are the HTTP ones: ``x-request-id`` metadata is kept when it is 1..128 of
``[A-Za-z0-9._-]`` (else a new UUID4) and comes back in the initial and trailing metadata; the key
is ``authorization: Bearer <key>`` or ``x-api-key`` metadata, compared in constant time; the rate
limit is per client address and route class, with the same limits (``ML_API_RATE_LIMITS``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from asgi_correlation_id import correlation_id
from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from opentelemetry import trace

from service.api.request_id import is_valid_request_id, new_request_id
from service.apikeys import matching_key, presented_key
from service.dataplane.status import DrainState
from service.errors import INTERNAL_ERROR_MESSAGE, ErrorCode, InferenceFailed, ServiceError, ShuttingDown
from service.grpc.status import CODE_BY_ERROR, failure_of
from service.observability.protocols import ProtocolMetrics, outcome_of_code
from service.settings import RateClass, Settings

log = logging.getLogger(__name__)
access_log = logging.getLogger("service.access")

Response = TypeVar("Response")
_STORE_WARNING_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """``public``: no key, no rate limit, answered while draining (probes); ``rate_class`` as for HTTP
    routes; ``inference`` calls are the ones counted in the protocol metrics."""

    public: bool = False
    rate_class: RateClass = "default"
    inference: bool = False


PROBE = CallPolicy(public=True)
METADATA = CallPolicy()
INFERENCE = CallPolicy(rate_class="predict", inference=True)


class UnauthorizedCall(ServiceError):
    code = ErrorCode.UNAUTHORIZED


class RateLimitedCall(ServiceError):
    code = ErrorCode.RATE_LIMITED


def client_address(peer: str) -> str:
    """The address of ``ipv4:10.0.0.1:5000`` / ``ipv6:[::1]:5000`` (other peers as they are)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return peer


class CallGuard:
    def __init__(self, settings: Settings, drain: DrainState, metrics: ProtocolMetrics | None = None) -> None:
        self.keys = settings.api_key_values
        self.drain = drain
        self.metrics = metrics
        self.limits = {name: parse(value) for name, value in settings.rate_limits.items()}
        self.limiter: MovingWindowRateLimiter | None = None
        if settings.rate_limit_enabled:
            uri = settings.rate_limit_storage_uri
            # limits picks its asyncio storage implementations by the "async+" scheme prefix.
            storage = storage_from_string(uri if uri.startswith("async+") else f"async+{uri}")
            self.limiter = MovingWindowRateLimiter(storage)
        self._last_store_warning = 0.0

    async def run(
        self,
        method: str,
        policy: CallPolicy,
        context: grpc.aio.ServicerContext[object, object],
        call: Callable[[], Awaitable[Response]],
        *,
        model: str = "",
    ) -> Response:
        started = time.perf_counter()
        request_id = self._request_id(context)
        token = correlation_id.set(request_id)
        trace.get_current_span().set_attribute("rpc.request_id", request_id)
        echo = (("x-request-id", request_id),)
        error: ServiceError
        try:
            await context.send_initial_metadata(echo)
            if not policy.public:
                await self._admit(policy, context)
            response = await call()
        except ServiceError as exc:
            error = exc
        except asyncio.CancelledError:  # the client went away or its deadline passed: nobody to answer
            self._record(method, policy, context, started, request_id, model, "CANCELLED", "cancelled")
            raise
        except Exception:
            log.exception("gRPC %s failed", method)
            error = InferenceFailed(INTERNAL_ERROR_MESSAGE)
        else:
            context.set_trailing_metadata(echo)
            self._record(method, policy, context, started, request_id, model, "OK", "success")
            return response
        finally:
            correlation_id.reset(token)
        if error.code is ErrorCode.INTERNAL_ERROR:
            log.error("gRPC %s failed: %s", method, error.message)
        status = CODE_BY_ERROR[error.code]
        self._record(method, policy, context, started, request_id, model, status.name, outcome_of_code(error.code))
        failure = failure_of(error, echo)
        await context.abort(failure.code, failure.details, failure.trailing_metadata)

    def _request_id(self, context: grpc.aio.ServicerContext[object, object]) -> str:
        for key, value in context.invocation_metadata() or ():
            if key == "x-request-id" and isinstance(value, str) and is_valid_request_id(value):
                return value
        return new_request_id()

    async def _admit(self, policy: CallPolicy, context: grpc.aio.ServicerContext[object, object]) -> None:
        if self.drain.draining:
            raise ShuttingDown()
        if self.keys:
            metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
            presented = presented_key(metadata.get("x-api-key"), metadata.get("authorization"))
            if matching_key(presented, self.keys) is None:
                raise UnauthorizedCall(
                    "a valid API key is required (authorization: Bearer <key> or x-api-key metadata)"
                )
        limit = self.limits.get(policy.rate_class) or self.limits.get("default")
        if self.limiter is None or limit is None:
            return
        client = client_address(context.peer())
        try:
            allowed = await self.limiter.hit(limit, policy.rate_class, client)
            reset_at = 0.0 if allowed else (await self.limiter.get_window_stats(limit, policy.rate_class, client))[0]
        except Exception as exc:  # the store is down: serve unlimited rather than fail every call (as HTTP does)
            now = time.monotonic()
            if now - self._last_store_warning >= _STORE_WARNING_INTERVAL_S:
                self._last_store_warning = now
                log.warning("rate-limit store unreachable (%s): serving without rate limits", type(exc).__name__)
            return
        if not allowed:
            raise RateLimitedCall(
                f"rate limit {limit} exceeded for this client", retry_after=max(1, math.ceil(reset_at - time.time()))
            )

    def _record(
        self,
        method: str,
        policy: CallPolicy,
        context: grpc.aio.ServicerContext[object, object],
        started: float,
        request_id: str,
        model: str,
        status: str,
        outcome: str,
    ) -> None:
        seconds = time.perf_counter() - started
        if policy.inference and self.metrics is not None:
            self.metrics.observe("v2-grpc", outcome, seconds)
        if policy.public and outcome == "success":
            return  # probes would flood the log, as /health/live does not
        access_log.info(
            "gRPC %s %s",
            method,
            status,
            extra={
                "method": "gRPC",
                "path": f"/inference.GRPCInferenceService/{method}",
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "client": context.peer(),
                "model": model or None,
                "request_id": request_id,
            },
        )
