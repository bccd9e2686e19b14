"""The page at ``/`` for trying a model in a browser: static files from the package, no CDN, no build step."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from service.api.policy import RouteTable
from service.settings import Settings

PAGE_PATH = "/"
ASSETS_PATH = "/ui"
ASSETS_DIR = Path(str(files("service.assets") / "ui"))

# Self only. blob: images are the thumbnails of files the user picked, made in the page itself; no
# inline script or style at all, so a value the page shows can never run as code.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


# By suffix, not from the host's mime.types: a module script served under another type does not run.
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


class _Assets(StaticFiles):
    """Static files with the page's security headers (ETag and Last-Modified come from StaticFiles)."""

    def file_response(self, full_path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(full_path, *args, **kwargs)
        media_type = MEDIA_TYPES.get(Path(full_path).suffix)
        if media_type is not None:
            response.headers["Content-Type"] = media_type
        # Revalidated on every load (a 304 when unchanged): a release never runs a stale module.
        response.headers.update({**SECURITY_HEADERS, "Cache-Control": "no-cache"})
        return response


def install_page(app: FastAPI, settings: Settings, routes: RouteTable) -> None:
    """``GET /`` and ``/ui/*``, public (the API calls the page makes carry the key typed into it); with
    ``ML_API_UI_ENABLED=false`` neither exists (``/`` is a 404 ErrorBody)."""
    if not settings.ui_enabled:
        return
    routes.add_public_path(PAGE_PATH)
    routes.add_public_prefix(ASSETS_PATH)
    index = (ASSETS_DIR / "index.html").read_text(encoding="utf-8")
    app.mount(ASSETS_PATH, _Assets(directory=ASSETS_DIR), name="ui")

    @app.get(PAGE_PATH, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(index, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})
