"""The page's HTTP side without a browser: headers, assets, the setting that turns it off, and API keys."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from service.api.routes.page import ASSETS_DIR, CONTENT_SECURITY_POLICY
from service.app import create_app
from service.settings import Settings
from tests.conftest import make_settings, running_app

pytestmark = pytest.mark.anyio

EXPECTED_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _assets() -> list[str]:
    """Every file of the page, as the browser asks for it."""
    return sorted(f"/ui/{p.name}" for p in ASSETS_DIR.iterdir() if p.suffix in MEDIA_TYPES)


async def test_the_page_is_html_with_a_strict_content_security_policy() -> None:
    async with running_app(create_app(make_settings())) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == EXPECTED_CSP == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    parser = _Tags()
    parser.feed(response.text)
    # Nothing inline for the CSP to have to allow: scripts by src, no style or on* attributes.
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert scripts == [{"type": "module", "src": "/ui/app.js"}]
    assert not [attrs for _, attrs in parser.tags if "style" in attrs or any(k.startswith("on") for k in attrs)]
    assert "<style" not in response.text
    # Every URL the page names is the service's own.
    urls = [attrs.get("src") or attrs.get("href") for _, attrs in parser.tags if attrs.get("src") or attrs.get("href")]
    assert urls and all(str(url).startswith("/") and not str(url).startswith("//") for url in urls), urls


async def test_every_asset_is_served_with_its_type_and_imports_stay_local() -> None:
    async with running_app(create_app(make_settings())) as client:
        for path in _assets():
            response = await client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == MEDIA_TYPES[path[path.rindex(".") :]], path
            assert response.headers["content-security-policy"] == EXPECTED_CSP
            if path.endswith(".js"):
                for target in re.findall(r"""\bfrom\s+["']([^"']+)["']|import\(["']([^"']+)["']\)""", response.text):
                    module = next(t for t in target if t)
                    assert module.startswith("./"), (path, module)
                    assert (await client.get(f"/ui/{module[2:]}")).status_code == 200
        assert (await client.get("/ui/missing.js")).status_code == 404


async def test_ui_enabled_false_makes_slash_a_404_error_body() -> None:
    assert Settings.model_fields["ui_enabled"].default is True
    assert Settings.model_fields["ui_enabled"].description
    async with running_app(create_app(make_settings(ui_enabled=False))) as client:
        page = await client.get("/")
        asset = await client.get("/ui/app.js")
        docs = await client.get("/docs")
    assert page.status_code == 404
    body = page.json()
    assert (body["error"], body["path"]) == ("NOT_FOUND", "/")
    assert set(body) >= {"error", "message", "path", "request_id"}
    assert asset.status_code == 404
    assert docs.status_code == 200  # the API's docs are not the page


async def test_with_api_keys_the_page_loads_without_a_key_and_the_api_does_not() -> None:
    settings = make_settings(api_keys=["secret-key"])
    async with running_app(create_app(settings)) as client:
        assert (await client.get("/")).status_code == 200
        for path in _assets():
            assert (await client.get(path)).status_code == 200, path
        refused = await client.get("/api/v1/models")
        assert refused.status_code == 401 and refused.json()["error"] == "UNAUTHORIZED"
        assert (await client.get("/api/v1/models", headers={"Authorization": "Bearer secret-key"})).status_code == 200
        # "/" is exempt as an exact path only: anything under it still needs the key.
        for path in ("/x", "/uix/app.js", "/api/v1/predict"):
            assert (await client.get(path)).status_code == 401, path
