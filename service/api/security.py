"""API keys, CORS and per-client rate limits, each off by default."""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import error_response
from service.api.policy import RouteTable
from service.apikeys import matching_key, presented_key, tenant_of
from service.errors import ErrorCode
from service.settings import Network, Settings

log = logging.getLogger(__name__)

# The time between two warnings about an unreachable rate-limit store (one per request would flood).
_STORE_WARNING_INTERVAL_S = 10.0


def _header(scope: Scope, name: bytes) -> str | None:
    """The first ``name`` header; ``_header_lines`` for a header that may be sent several times."""
    for key, value in scope.get("headers") or []:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _header_lines(scope: Scope, name: bytes) -> list[str]:
    return [bytes(value).decode("latin-1") for key, value in scope.get("headers") or [] if key == name]


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: Sequence[bytes], routes: RouteTable) -> None:
        self.app = app
        self.keys = tuple(keys)
        self.routes = routes

    def _matching_key(self, scope: Scope) -> bytes | None:
        presented = presented_key(_header(scope, b"x-api-key"), _header(scope, b"authorization"))
        return matching_key(presented, self.keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.routes.policy(scope["path"]).public:
            await self.app(scope, receive, send)
            return
        key = self._matching_key(scope)
        if key is not None:
            scope.setdefault("state", {})["tenant"] = tenant_of(key)
            await self.app(scope, receive, send)
            return
        response = error_response(
            ErrorCode.UNAUTHORIZED,
            "a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
            scope["path"],
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)


def client_address(scope: Scope, trusted: Sequence[Network]) -> str:
    """The client IP; ``X-Forwarded-For`` is honoured only when the peer is a trusted proxy.

    Walking the list from the right, trusted proxies are skipped; the first untrusted hop is the client.
    """
    peer = (scope.get("client") or ("unknown", 0))[0]
    # Proxies append a header line of their own as often as they add to an existing one: read them all.
    forwarded = ",".join(_header_lines(scope, b"x-forwarded-for"))
    if not forwarded or not _trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, routes: RouteTable) -> None:
        self.app = app
        self.routes = routes
        self.trusted = settings.trusted_proxies
        self.limits = {name: parse(value) for name, value in settings.rate_limits.items()}
        uri = settings.rate_limit_storage_uri
        # limits picks its asyncio storage implementations by the "async+" scheme prefix.
        self.storage = storage_from_string(uri if uri.startswith("async+") else f"async+{uri}")
        self.limiter = MovingWindowRateLimiter(self.storage)
        self._last_store_warning = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = self.routes.policy(scope["path"]) if scope["type"] == "http" else None
        if policy is None or policy.public:
            await self.app(scope, receive, send)
            return
        klass = policy.rate_class
        limit = self.limits.get(klass) or self.limits.get("default")
        if limit is None:
            await self.app(scope, receive, send)
            return
        client = client_address(scope, self.trusted)
        try:
            allowed = await self.limiter.hit(limit, klass, client)
            reset_at = 0.0 if allowed else (await self.limiter.get_window_stats(limit, klass, client))[0]
        except Exception as exc:  # the store is down: serve unlimited rather than fail every request
            self._warn_store_unreachable(exc)
            allowed = True
        if allowed:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(reset_at - time.time()))
        response = error_response(
            ErrorCode.RATE_LIMITED,
            f"rate limit {limit} exceeded for this client",
            scope["path"],
            headers={"Retry-After": str(retry_after)},
        )
        await response(scope, receive, send)

    def _warn_store_unreachable(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_store_warning >= _STORE_WARNING_INTERVAL_S:
            self._last_store_warning = now
            log.warning("rate-limit store unreachable (%s): serving without rate limits", type(exc).__name__)


def install_security(app: FastAPI, settings: Settings, routes: RouteTable) -> None:
    """Outside in: CORS (so preflights and errors carry CORS headers) -> rate limit -> API key."""
    if settings.api_keys:
        app.add_middleware(ApiKeyMiddleware, keys=settings.api_key_values, routes=routes)
    if settings.rate_limit_enabled:
        app.add_middleware(RateLimitMiddleware, settings=settings, routes=routes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID", "Idempotency-Key"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
