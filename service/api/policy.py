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


@dataclass(frozen=True)
class RouteInfo:
    """What the HTTP layer knows about a path before routing: its route template (the ``handler`` label
    of the HTTP metrics; ``none`` for paths no route claims) and its policy."""

    template: str
    policy: RoutePolicy


UNKNOWN = RouteInfo("none", DEFAULT)


class RouteTable:
    """The route a path leads to, looked up by the middleware that runs before routing (security,
    metrics): exact paths from a dict, templated ones (``/api/v1/jobs/{job_id}``) by regex."""

    def __init__(self) -> None:
        self._exact: dict[str, RouteInfo] = {}
        self._patterns: list[tuple[re.Pattern[str], RouteInfo]] = []

    def add_router(self, router: APIRouter, prefix: str = "") -> None:
        for route in router.routes:
            if isinstance(route, PolicyRoute):
                self._add(prefix + route.path, route.policy)

    def add_public_path(self, path: str) -> None:
        """Exactly ``path`` is public (``/`` as a prefix would be everything)."""
        self._exact[path] = RouteInfo(path, PUBLIC)

    def add_public_prefix(self, prefix: str) -> None:
        """Everything under ``prefix`` is public: assets and pages the app mounts outside any router."""
        info = RouteInfo(prefix, PUBLIC)
        self._exact[prefix] = info
        self._patterns.append((re.compile("^" + re.escape(prefix) + "/.*$"), info))

    def _add(self, template: str, policy: RoutePolicy) -> None:
        info = RouteInfo(template, policy)
        if "{" not in template:
            self._exact[template] = info
            return
        regex, _format, _converters = compile_path(template)
        self._patterns.append((regex, info))

    def lookup(self, path: str) -> RouteInfo:
        info = self._exact.get(path)
        if info is not None:
            return info
        for regex, candidate in self._patterns:
            if regex.match(path):
                return candidate
        return UNKNOWN

    def policy(self, path: str) -> RoutePolicy:
        return self.lookup(path).policy
