"""The page at / in a real browser: what a user does in the first minute after `make run` or port-forward."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.client.helpers import Digit, digit_samples, settle_access_lines
from tests.imagehost import image_host
from tests.servers import Server, server
from tests.ui.conftest import UI_API_KEY, PageLog, open_page, save_screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, FileChooser, Page

_playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = _playwright.expect
PlaywrightTimeoutError = _playwright.TimeoutError

RESULT_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Loopback image URLs allowed, for the URL form; everything else is `make run`'s defaults.
    env = {"ML_API_URL_FETCH_ALLOWED_NETWORKS": '["127.0.0.0/8"]'}
    with server("uvicorn", env, tmp_path_factory.mktemp("logs") / "page.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def samples() -> tuple[Digit, ...]:
    return digit_samples()


def png_file(name: str, digit: Digit) -> dict[str, Any]:
    return {"name": name, "mimeType": "image/png", "buffer": digit.png}


def load(browser: Browser, base: str, **context: Any) -> tuple[Page, PageLog]:
    page, log = open_page(browser, f"{base}/", **context)
    # Set when the models call has answered, either way. Selectors, not wait_for_function: the
    # page's CSP forbids the eval() that string predicates need (Playwright's own evaluate is exempt).
    page.locator("#models-status[data-state]").wait_for()
    return page, log


def wait_for_results(page: Page, count: int) -> None:
    page.locator("#results .result:not([data-state=pending])").nth(count - 1).wait_for(timeout=RESULT_TIMEOUT_MS)


def card(page: Page, name: str) -> Any:
    return page.locator("#results .result").filter(
        has=page.locator(".result-name", has_text=re.compile(f"^{re.escape(name)}$"))
    )


def assert_clean(log: PageLog, base: str) -> None:
    """Nothing left the service, the CSP was never violated, no script failed."""
    assert log.off_origin(base) == []
    assert log.csp_violations() == []
    assert log.errors == []


def api_calls(log: PageLog, base: str) -> list[tuple[str, str, dict[str, str]]]:
    return [(m, u, h) for m, u, h in log.requests if u.startswith(f"{base}/api/")]


def test_the_page_loads_from_the_service_alone(browser: Browser, page_server: Server) -> None:
    page, log = load(browser, page_server.base)
    assert page.title() == "ml-api: try a model"
    assert page.locator("#models-status").inner_text() == "1 model available."
    assert page.locator("#model").evaluate("s => [...s.options].map(o => [o.value, o.selected])") == [["digits", True]]
    assert page.locator("#version").evaluate("s => [...s.options].map(o => o.value)") == ["", "1"]
    assert page.get_by_role("link", name="API docs (Swagger UI)").get_attribute("href") == "/docs"
    # Every label is tied to its control.
    for control in ("model", "version", "top-k", "api-key", "files", "image-url"):
        assert page.locator(f"label[for='{control}']").count() == 1, control
    assert [u.removeprefix(page_server.base) for u in log.urls()][:6] == [
        "/",
        "/ui/style.css",
        "/ui/app.js",
        "/ui/api.js",
        "/ui/render.js",
        "/ui/sse.js",
    ]
    assert_clean(log, page_server.base)


def test_an_uploaded_digit_shows_its_label_bar_model_and_request_id(
    browser: Browser, page_server: Server, samples: tuple[Digit, ...], tmp_path: Path
) -> None:
    digit = samples[0]
    page, log = load(browser, page_server.base, viewport={"width": 1100, "height": 900})
    page.set_input_files("#files", [png_file("digit.png", digit)])
    wait_for_results(page, 1)
    result = card(page, "digit.png")
    assert result.get_attribute("data-state") == "done"
    assert result.locator(".top").inner_text() == f"{digit.label} ({digit.confidence * 100:.1f}%)"
    rows = result.locator(".prediction")
    assert rows.count() == 5
    assert rows.first.get_attribute("data-label") == digit.label
    # The bar is as long as the confidence: its fill's share of the track.
    share = rows.first.evaluate(
        "row => row.querySelector('.fill').getBoundingClientRect().width"
        " / row.querySelector('.bar').getBoundingClientRect().width"
    )
    assert share == pytest.approx(digit.confidence, abs=0.01)
    assert result.locator("dd.model").inner_text() == "digits v1"
    assert re.fullmatch(r"\d+\.\d ms", result.locator("dd.time").inner_text())
    request_id = result.locator("dd.request-id").inner_text()
    assert re.fullmatch(r"[0-9a-f-]{36}", request_id)
    assert [line["status"] for line in settle_access_lines(page_server, request_id, quiet_s=0.2)] == [200]
    # One image: one multipart upload.
    [(method, url, headers)] = api_calls(log, page_server.base)[1:]
    assert (method, url.split("?")[0]) == ("POST", f"{page_server.base}/api/v1/predict/upload")
    assert headers["content-type"].startswith("multipart/form-data")
    assert page.locator("#progress").inner_text() == "1 done."
    save_screenshot(page, "page.png", tmp_path)
    assert_clean(log, page_server.base)


def test_three_images_stream_in_one_request(browser: Browser, page_server: Server, samples: tuple[Digit, ...]) -> None:
    page, log = load(browser, page_server.base)
    page.set_input_files("#files", [png_file(f"d{i}.png", samples[i]) for i in range(3)])
    wait_for_results(page, 3)
    for i in range(3):
        result = card(page, f"d{i}.png")
        assert result.get_attribute("data-state") == "done"
        assert result.locator(".prediction").first.get_attribute("data-label") == samples[i].label
        assert result.locator("dd.model").inner_text() == "digits v1"
    # In the order chosen, on top of the list.
    assert page.locator("#results .result-name").all_inner_texts() == ["d0.png", "d1.png", "d2.png"]
    calls = [(m, u.split("?")[0]) for m, u, _ in api_calls(log, page_server.base)[1:]]
    assert calls == [("POST", f"{page_server.base}/api/v1/predict/stream")]
    assert page.locator("#progress").inner_text() == "3 done."
    assert_clean(log, page_server.base)


def test_a_file_that_is_no_image_shows_the_error_body_message(browser: Browser, page_server: Server) -> None:
    content = b"just some words, not an image"
    expected = httpx.post(f"{page_server.base}/api/v1/predict/upload", files={"file": ("notes.txt", content)}).json()
    page, log = load(browser, page_server.base)
    page.set_input_files("#files", [{"name": "notes.txt", "mimeType": "text/plain", "buffer": content}])
    wait_for_results(page, 1)
    result = card(page, "notes.txt")
    assert result.get_attribute("data-state") == "error"
    assert result.locator(".error-message").inner_text() == expected["message"]
    assert result.locator("dd.error-code").inner_text() == expected["error"] == "INVALID_IMAGE"
    assert page.locator("#progress").inner_text() == "1 done, 1 failed."
    assert log.off_origin(page_server.base) == []
    assert log.csp_violations() == [] and log.errors == []


def test_a_url_is_fetched_by_the_server_not_the_browser(
    browser: Browser, page_server: Server, samples: tuple[Digit, ...]
) -> None:
    routes = {"/seven.png": (200, {"Content-Type": "image/png"}, samples[0].png)}
    with image_host(routes) as host:
        page, log = load(browser, page_server.base)
        page.fill("#image-url", f"{host}/seven.png")
        page.click("#url-submit")
        wait_for_results(page, 1)
    result = card(page, f"{host}/seven.png")
    assert result.locator(".prediction").first.get_attribute("data-label") == samples[0].label
    assert not [u for u in log.urls() if u.startswith(host)]
    assert_clean(log, page_server.base)


def test_with_an_api_key(browser: Browser, keyed_ui_server: Server, samples: tuple[Digit, ...]) -> None:
    base = keyed_ui_server.base
    page, log = load(browser, base)
    # The page and its assets load without a key; the API tells the user what it needs.
    assert page.locator("#models-status").inner_text() == (
        "Enter the API key: a valid API key is required (Authorization: Bearer <key> or X-API-Key)"
    )
    page.fill("#api-key", UI_API_KEY)
    page.press("#api-key", "Enter")
    expect(page.locator("#models-status")).to_have_text("1 model available.")
    page.set_input_files("#files", [png_file("keyed.png", samples[1])])
    wait_for_results(page, 1)
    assert card(page, "keyed.png").locator(".prediction").first.get_attribute("data-label") == samples[1].label
    calls = api_calls(log, base)
    assert calls[0][2].get("authorization") is None  # the first models call, before a key was typed
    assert all(h.get("authorization") == f"Bearer {UI_API_KEY}" for _, _, h in calls[1:])
    assert len(calls) >= 3
    # The key is in the page's memory only.
    assert page.evaluate("[localStorage.length, sessionStorage.length, document.cookie]") == [0, 0, ""]
    assert page.context.cookies() == []
    assert log.off_origin(base) == [] and log.csp_violations() == [] and log.errors == []


def open_chooser_by_keyboard(page: Page, attempts: int = 3) -> FileChooser:
    """Space on the focused file input opens the file chooser. On a loaded machine Chromium sometimes
    drops the first activation (the key arrives while it is still busy), so press again as a user would."""
    for attempt in range(attempts):
        try:
            with page.expect_file_chooser(timeout=10_000) as chooser:
                page.keyboard.press("Space")
            return chooser.value
        except PlaywrightTimeoutError:
            if attempt == attempts - 1:
                raise
            assert page.evaluate("document.activeElement.id") == "files"  # still focused: only the key was lost
    raise AssertionError("unreachable")


def test_keyboard_only(browser: Browser, page_server: Server, samples: tuple[Digit, ...]) -> None:
    page, log = load(browser, page_server.base)
    order = []
    for _ in range(9):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.getAttribute('href')"))
    assert order == ["/docs", "model", "version", "top-k", "api-key", "files", "image-url", "url-submit", "clear"]
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "files"
    # The hidden input's focus shows on its visible label, the drop zone.
    outline = page.locator("#drop-zone").evaluate(
        "e => [getComputedStyle(e).outlineStyle, getComputedStyle(e).outlineWidth]"
    )
    assert outline[0] == "solid" and outline[1] != "0px"
    chooser = open_chooser_by_keyboard(page)
    chooser.set_files([png_file("by-keyboard.png", samples[2])])
    wait_for_results(page, 1)
    # Announced through the live region, and focus stays where the user left it.
    region = page.locator("#results")
    assert region.get_attribute("aria-live") == "polite"
    assert f"{samples[2].label} (" in region.inner_text()
    assert page.evaluate("document.activeElement.id") == "files"
    assert_clean(log, page_server.base)


def test_phone_width_has_no_horizontal_scroll(
    browser: Browser, page_server: Server, samples: tuple[Digit, ...], tmp_path: Path
) -> None:
    page, log = load(browser, page_server.base, viewport={"width": 375, "height": 812}, device_scale_factor=2)
    files = [png_file(f"phone-{i}-with-a-rather-long-file-name.png", samples[i]) for i in range(3)]
    files.append({"name": "not-an-image.txt", "mimeType": "text/plain", "buffer": b"words"})
    page.set_input_files("#files", files)
    wait_for_results(page, 4)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    boxes = page.locator("#results .result, .panel, .drop-zone").evaluate_all(
        "els => els.map(e => { const r = e.getBoundingClientRect(); return [r.left, r.right]; })"
    )
    assert all(left >= 0 and right <= 375 for left, right in boxes), boxes
    save_screenshot(page, "page-phone.png", tmp_path)
    assert_clean(log, page_server.base)


def test_the_stream_parser_handles_split_chunks_comments_and_line_ends(browser: Browser, page_server: Server) -> None:
    page, _ = load(browser, page_server.base)
    events = page.evaluate(
        """async () => {
            const { SseParser } = await import('/ui/sse.js');
            const parser = new SseParser();
            const chunks = [
                ': ping\\r\\n\\r\\n', 'data: {"a"', ': 1}\\r', '\\n\\r\\nevent: status\\ndata: x\\ndata: y\\n\\n',
                'data:no-space\\r\\rdata: [DONE]\\r\\n', '\\r\\n', 'data: unterminated',
            ];
            const out = [];
            for (const chunk of chunks) out.push(...parser.push(chunk));
            out.push(...parser.end());
            return out.map(e => [e.event, e.data]);
        }"""
    )
    assert events == [
        ["message", '{"a": 1}'],
        ["status", "x\ny"],
        ["message", "no-space"],
        ["message", "[DONE]"],
    ]
