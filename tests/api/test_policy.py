"""Route policies come from the routes themselves: every API route declares its rate-limit class."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute

from service.api.main import _ROUTERS
from service.api.policy import PolicyRoute, RoutePolicy
from service.app import create_app
from tests.conftest import make_settings

EXPECTED = {
    "/api/v1/predict": RoutePolicy("predict"),
    "/api/v1/predict/upload": RoutePolicy("predict"),
    "/api/v1/embed": RoutePolicy("predict"),
    "/api/v1/predict/batch": RoutePolicy("batch"),
    "/api/v1/predict/stream": RoutePolicy("batch"),
    "/api/v1/predict/async": RoutePolicy("jobs"),
    "/api/v1/jobs/abc": RoutePolicy("jobs"),
    "/api/v1/jobs/abc/events": RoutePolicy("jobs"),
    "/api/v1/models": RoutePolicy("default"),
    "/health": RoutePolicy(public=True),
    "/health/live": RoutePolicy(public=True),
    "/health/ready": RoutePolicy(public=True),
    "/metrics": RoutePolicy(public=True),
    "/docs": RoutePolicy(public=True),
    "/docs/static/swagger-ui.css": RoutePolicy(public=True),
    "/openapi.json": RoutePolicy(public=True),
    "/": RoutePolicy(public=True),
    "/ui/app.js": RoutePolicy(public=True),
    "//not-the-page": RoutePolicy("default"),
    "/api/v1/unknown": RoutePolicy("default"),
    "/not-a-route": RoutePolicy("default"),
}


def test_every_api_route_is_built_with_a_policy_route_class() -> None:
    routes = [route for _prefix, router in _ROUTERS for route in router.routes if isinstance(route, APIRoute)]
    assert routes
    assert [r.path for r in routes if not isinstance(r, PolicyRoute)] == []


@pytest.mark.parametrize(("path", "policy"), EXPECTED.items())
def test_the_apps_policy_table_gives_each_path_its_routes_policy(path: str, policy: RoutePolicy) -> None:
    app = create_app(make_settings())
    assert app.state.route_policies.policy(path) == policy
