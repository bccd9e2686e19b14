"""Debian's chromium driven by Playwright (no browser download), a real server, a network log per page.

Tests skip with the reason where chromium or Playwright is missing (`.ci/run` installs chromium).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import ROOT
from tests.servers import Server, server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("ML_API_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags chromium phones home (component updates, sync) on start.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / ".artifacts"
UI_API_KEY = "page-test-key"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Module-scoped: Playwright's sync API must not outlive into the suite's asyncio tests."""
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install chromium (or set ML_API_CHROMIUM) for browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install playwright (no `playwright install` needed)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with server("uvicorn", {}, tmp_path_factory.mktemp("logs") / "ui.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def keyed_ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"ML_API_API_KEYS": f'["{UI_API_KEY}"]'}
    with server("uvicorn", env, tmp_path_factory.mktemp("logs") / "ui-keyed.log") as srv:
        yield srv


@dataclass
class PageLog:
    """Every request the page made (URL, method, headers) and everything it complained about."""

    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def urls(self) -> list[str]:
        return [url for _, url, _ in self.requests]

    def off_origin(self, base: str) -> list[str]:
        """Requests that went anywhere but the service itself (blob: and data: never leave the page)."""
        allowed = (f"{base}/", f"blob:{base}/", "data:")
        return [url for url in self.urls() if not url.startswith(allowed) and url != base]

    def csp_violations(self) -> list[str]:
        return [text for _, text in self.console if "Content Security Policy" in text]


def open_page(browser: Browser, url: str, **context: Any) -> tuple[Page, PageLog]:
    """A fresh context (no storage, no cookies from other tests) with the page's traffic logged."""
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    log = PageLog()
    page.on("request", lambda r: log.requests.append((r.method, r.url, r.headers)))
    page.on("console", lambda m: log.console.append((m.type, m.text)))
    page.on("pageerror", lambda e: log.errors.append(str(e)))
    page.goto(url)
    return page, log


def save_screenshot(page: Page, name: str, tmp_path: Path, *, full_page: bool = True) -> Path:
    """Into the test's own directory and to .artifacts/NAME (git-ignored, stable for CI to keep)."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=full_page)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / name)
    return ARTIFACTS / name
