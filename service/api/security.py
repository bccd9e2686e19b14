"""API keys, CORS and per-client rate limits, each off by default."""

from __future__ import annotations

import hmac
import ipaddress
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
from service.settings import Network, Settings

# Probes and scrapers never need a key and are never rate limited.
EXEMPT_PREFIXES = ("/health", "/metrics", "/docs", "/openapi.json")
# The page at / and its assets load without a key; the API calls the page makes carry the key typed
# into it. "/" is an exact path: as a prefix it would exempt everything.
PAGE_PATHS = frozenset({"/"})
PAGE_PREFIXES = ("/ui/",)


def _exempt(path: str) -> bool:
    return path.startswith(EXEMPT_PREFIXES + PAGE_PREFIXES) or path in PAGE_PATHS


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return value.decode("latin-1")
    return None


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: Sequence[bytes]) -> None:
        self.app = app
        self.keys = tuple(keys)

    def _authorised(self, scope: Scope) -> bool:
        presented = _header(scope, b"x-api-key")
        authorization = _header(scope, b"authorization")
        if presented is None and authorization and authorization[:7].lower() == "bearer ":
            presented = authorization[7:].strip()
        if not presented:
            return False
        candidate = presented.encode()
        # compare_digest against every key (no early exit) so timing reveals neither key nor index.
        matches = [hmac.compare_digest(candidate, key) for key in self.keys]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _exempt(scope["path"]) or self._authorised(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(
            "UNAUTHORIZED",
            "a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
            scope["path"],
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)


def route_class(path: str) -> str:
    if path.startswith("/api/v1/predict/batch") or path.startswith("/api/v1/predict/stream"):
        return "batch"
    if path.startswith("/api/v1/jobs") or path.startswith("/api/v1/predict/async"):
        return "jobs"
    if path.startswith("/api/v1/predict") or path.startswith("/api/v1/embed"):
        return "predict"
    return "default"


def client_address(scope: Scope, trusted: Sequence[Network]) -> str:
    """The client IP; ``X-Forwarded-For`` is honoured only when the peer is a trusted proxy.

    Walking the list from the right, trusted proxies are skipped; the first untrusted hop is the client.
    """
    peer = (scope.get("client") or ("unknown", 0))[0]
    forwarded = _header(scope, b"x-forwarded-for")
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
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.trusted = settings.trusted_proxies
        self.limits = {name: parse(value) for name, value in settings.rate_limits.items()}
        uri = settings.rate_limit_storage_uri
        # limits picks its asyncio storage implementations by the "async+" scheme prefix.
        self.storage = storage_from_string(uri if uri.startswith("async+") else f"async+{uri}")
        self.limiter = MovingWindowRateLimiter(self.storage)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        klass = route_class(scope["path"])
        limit = self.limits.get(klass) or self.limits.get("default")
        if limit is None:
            await self.app(scope, receive, send)
            return
        client = client_address(scope, self.trusted)
        if await self.limiter.hit(limit, klass, client):
            await self.app(scope, receive, send)
            return
        reset_at, _remaining = await self.limiter.get_window_stats(limit, klass, client)
        retry_after = max(1, math.ceil(reset_at - time.time()))
        response = error_response(
            "RATE_LIMITED",
            f"rate limit {limit} exceeded for this client",
            scope["path"],
            headers={"Retry-After": str(retry_after)},
        )
        await response(scope, receive, send)


def install_security(app: FastAPI, settings: Settings) -> None:
    """Outside in: CORS (so preflights and errors carry CORS headers) -> rate limit -> API key."""
    if settings.api_keys:
        app.add_middleware(ApiKeyMiddleware, keys=settings.api_key_values)
    if settings.rate_limit_enabled:
        app.add_middleware(RateLimitMiddleware, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID", "Idempotency-Key"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
