"""Swagger UI at ``/docs`` from assets inside a wheel, never a CDN (clusters are often air-gapped).

FastAPI emits OpenAPI 3.1, which Swagger UI reads only from its 5.x line: ``fastapi-offline`` ships
Swagger UI 5 (its ``static/swagger-ui-bundle.js`` says which). Its ReDoc is not served: ReDoc's
sidebar loads a logo from cdn.redoc.ly, a request that would leave the cluster on every view.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.api.policy import RouteTable

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/static"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))

# validatorUrl null: otherwise Swagger UI may send the spec's address to validator.swagger.io for a badge.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None, "displayRequestDuration": True}


def install_docs(app: FastAPI, routes: RouteTable) -> None:
    """``/docs`` and its assets, public like the OpenAPI document they render."""
    openapi_url = app.openapi_url or "/openapi.json"
    routes.add_public_prefix(openapi_url)
    routes.add_public_prefix(DOCS_PATH)
    title = f"{app.title} - Swagger UI"
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-static")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
