"""Every HTTP route of the service, with the ``/api/v1`` prefix set once, and their policy table."""

from __future__ import annotations

from fastapi import FastAPI

from service.api.policy import RouteTable
from service.api.routes import batch, health, jobs, models, predict
from service.api.v2 import routes as v2

API_PREFIX = "/api/v1"
# The Open Inference Protocol v2 (its paths are fixed by the protocol).
V2_PREFIX = "/v2"

# Probes and the health summary live at the root, where the chart's probes and the contract put them.
_ROUTERS = (
    (API_PREFIX, predict.router),
    (API_PREFIX, batch.router),
    (API_PREFIX, jobs.router),
    (API_PREFIX, models.router),
    ("", health.router),
    *((V2_PREFIX, router) for router in v2.ROUTERS),
)


def include_routes(app: FastAPI) -> RouteTable:
    """Include every router and return the table the security middleware reads their policies from."""
    table = RouteTable()
    for prefix, router in _ROUTERS:
        app.include_router(router, prefix=prefix)
        table.add_router(router, prefix)
    return table
