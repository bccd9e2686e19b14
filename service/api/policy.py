"""Which routes need an API key and which rate-limit class they count against, as route metadata.

Each router is built with one of the route classes below; the security middleware, which runs before
routing, looks the request's path up in a ``RouteTable`` built from those routes instead of matching
path strings of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import compile_path

from service.settings import RateClass


@dataclass(frozen=True)
class RoutePolicy:
    rate_class: RateClass = "default"
    # Probes, scrapers, docs and the page: no API key, never rate limited.
    public: bool = False


PUBLIC = RoutePolicy(public=True)
DEFAULT = RoutePolicy()


class PolicyRoute(APIRoute):
    policy: ClassVar[RoutePolicy] = DEFAULT


class PredictRoute(PolicyRoute):
    policy = RoutePolicy("predict")


class BatchRoute(PolicyRoute):
    policy = RoutePolicy("batch")


class JobsRoute(PolicyRoute):
    policy = RoutePolicy("jobs")


class PublicRoute(PolicyRoute):
    policy = PUBLIC


class RouteTable:
    """The policy of the route a path leads to; a path no route claims gets the default (key required)."""

    def __init__(self) -> None:
        self._entries: list[tuple[re.Pattern[str], RoutePolicy]] = []

    def add_router(self, router: APIRouter, prefix: str = "") -> None:
        for route in router.routes:
            if isinstance(route, PolicyRoute):
                regex, _format, _converters = compile_path(prefix + route.path)
                self._entries.append((regex, route.policy))

    def add_public_path(self, path: str) -> None:
        """Exactly ``path`` is public (``/`` as a prefix would be everything)."""
        self._entries.append((re.compile("^" + re.escape(path) + "$"), PUBLIC))

    def add_public_prefix(self, prefix: str) -> None:
        """Everything under ``prefix`` is public: assets and pages the app mounts outside any router."""
        self._entries.append((re.compile("^" + re.escape(prefix) + "(/.*)?$"), PUBLIC))

    def policy(self, path: str) -> RoutePolicy:
        for regex, policy in self._entries:
            if regex.match(path):
                return policy
        return DEFAULT
