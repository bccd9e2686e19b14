"""/docs in a real browser, offline: Swagger UI 5 renders FastAPI's OpenAPI 3.1 from the service's own assets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from tests.servers import Server
from tests.ui.conftest import open_page, save_screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser

UPLOAD_OPERATION = "#operations-predict-predict_upload"


def test_swagger_ui_renders_the_operations_and_schemas_from_loopback_only(
    browser: Browser, ui_server: Server, tmp_path: Path
) -> None:
    assert httpx.get(f"{ui_server.base}/openapi.json").json()["openapi"].startswith("3.1")
    page, log = open_page(browser, f"{ui_server.base}/docs", viewport={"width": 1280, "height": 1400})
    # Either the operations or Swagger UI's "cannot read this version" notice (Swagger UI 4 on OpenAPI 3.1).
    page.wait_for_selector(".opblock, .version-pragma", timeout=30_000)
    body = page.inner_text("body")
    assert "Unable to render" not in body and "valid version field" not in body, body[:300]

    # Every operation of the contract is listed, by path.
    paths = set(page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.dataset.path)"))
    assert {
        "/api/v1/predict",
        "/api/v1/predict/upload",
        "/api/v1/predict/batch",
        "/api/v1/predict/stream",
        "/api/v1/predict/async",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/events",
        "/api/v1/embed",
        "/api/v1/models",
        "/health",
        "/health/ready",
    } <= paths

    # Expanded, the upload operation shows its query parameters, its body and its error responses.
    upload = page.locator(UPLOAD_OPERATION)
    upload.locator(".opblock-summary-control").click()
    upload.locator("table.parameters").wait_for()
    names = upload.locator("tr[data-param-name]").evaluate_all("rows => rows.map(r => r.dataset.paramName)")
    assert sorted(names) == ["model", "model_version", "top_k", "x-request-timeout"]
    assert upload.locator(".opblock-section-request-body").is_visible()
    codes = upload.locator("tr.response[data-code]").evaluate_all("rows => rows.map(r => r.dataset.code)")
    assert {"200", "400", "404", "413", "415", "422", "503"} <= set(codes)

    # The Schemas section lists the contract's bodies, and one opens to its fields.
    schemas = page.locator("section.models")
    schemas.scroll_into_view_if_needed()
    titles = schemas.locator(
        "article[data-json-schema-level='0'] > .json-schema-2020-12-head .json-schema-2020-12__title"
    )
    listed = titles.all_inner_texts()
    assert {"PredictionResponse", "ErrorBody", "Prediction", "JobStatus", "ModelsResponse"} <= set(listed)
    response = schemas.locator("article[data-json-schema-level='0']").filter(
        has=page.get_by_text("PredictionResponse", exact=True)
    )
    response.locator(".json-schema-2020-12-accordion").first.click()
    fields = response.inner_text()
    for name in ("predictions", "model_name", "model_version", "inference_time_ms", "request_id"):
        assert name in fields

    # The picture: the operation list down to the expanded upload operation and its parameters.
    page.evaluate("window.scrollTo(0, 0)")
    save_screenshot(page, "docs.png", tmp_path, full_page=False)
    assert log.off_origin(ui_server.base) == []
    assert f"{ui_server.base}/docs/static/swagger-ui-bundle.js" in log.urls()
    assert log.errors == []
