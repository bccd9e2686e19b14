"""JSON logs of a real process: one access line per request with every field, IDs on every line, no secrets."""

from __future__ import annotations

import base64
import re
import uuid

import httpx

from tests.imagehost import image_host
from tests.secured import API_KEY, AUTH, upload
from tests.servers import Server

ACCESS_KEYS = {
    "time", "level", "logger", "pid", "message", "request_id", "trace_id", "span_id",
    "method", "path", "status", "duration_ms", "client", "model", "version",
}  # fmt: skip


def test_every_log_line_of_a_request_carries_its_request_id(live: Server, digit_pngs: list[bytes]) -> None:
    """An image_url request logs twice (httpx's fetch line and the access line): both carry the ID."""
    rid = "ops-every-line"
    routes = {"/seven.png": (200, {"Content-Type": "image/png"}, digit_pngs[0])}
    with image_host(routes) as host:
        response = httpx.post(
            f"{live.base}/api/v1/predict",
            json={"image_url": f"{host}/seven.png"},
            headers={**AUTH, "X-Request-ID": rid},
            timeout=30,
        )
    assert response.status_code == 200
    access = live.wait_for_log(lambda r: r.get("logger") == "service.access" and r["request_id"] == rid)
    assert len(access) == 1
    trace_id = access[0]["trace_id"]
    in_request = [r for r in live.log_records() if r.get("trace_id") == trace_id]
    assert sorted(r["logger"] for r in in_request) == ["httpx", "service.access"]
    assert {r["request_id"] for r in in_request} == {rid}


def test_access_line_has_every_field_once_per_request(live: Server, digit_pngs: list[bytes]) -> None:
    rid = "ops-access-fields"
    response = upload(live, digit_pngs[1], {**AUTH, "X-Request-ID": rid})
    assert response.status_code == 200
    lines = live.wait_for_log(lambda r: r.get("logger") == "service.access" and r["request_id"] == rid)
    assert len(lines) == 1
    line = lines[0]
    assert set(line) == ACCESS_KEYS
    assert line["level"] == "INFO"
    assert line["message"] == "POST /api/v1/predict/upload 200"
    assert (line["method"], line["path"], line["status"]) == ("POST", "/api/v1/predict/upload", 200)
    assert (line["model"], line["version"]) == ("digits", "1")
    assert line["pid"] == live.process.pid
    assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"]) and line["trace_id"] != "0" * 32
    assert re.fullmatch(r"[0-9a-f]{16}", line["span_id"])
    assert re.fullmatch(r"127\.0\.0\.1:\d+", line["client"])
    assert isinstance(line["duration_ms"], float) and 0 < line["duration_ms"] < 30_000


def test_uvicorn_lines_are_json_too(live: Server) -> None:
    records = live.log_records()  # fails on any non-JSON line
    uvicorn_messages = [r["message"] for r in records if r["logger"] == "uvicorn.error"]
    assert "Application startup complete." in uvicorn_messages
    assert {"time", "level", "logger", "pid", "request_id", "trace_id", "span_id"} <= set(records[0])


def test_no_image_bytes_base64_or_api_key_in_logs(live: Server, digit_pngs: list[bytes]) -> None:
    png = digit_pngs[2]
    encoded = base64.b64encode(png).decode()
    ok = httpx.post(f"{live.base}/api/v1/predict", json={"image_base64": encoded}, headers=AUTH, timeout=30)
    bad = httpx.post(
        f"{live.base}/api/v1/predict",
        json={"image_base64": "bm90IGFuIGltYWdl" * 8},
        headers={"X-API-Key": API_KEY},
        timeout=30,
    )
    wrong_key = "wrong-key-" + uuid.uuid4().hex
    refused = upload(live, png, {"Authorization": f"Bearer {wrong_key}", "X-Request-ID": "ops-no-secrets"})
    assert (ok.status_code, bad.status_code, refused.status_code) == (200, 400, 401)
    live.wait_for_log(lambda r: r.get("request_id") == "ops-no-secrets")
    text = live.log_text()
    for secret in (API_KEY, wrong_key, encoded[:40], encoded[-40:], "bm90IGFuIGltYWdl", "iVBORw0KGgo", "\\x89PNG"):
        assert secret not in text


def test_no_tracing_exporter_means_no_export_attempts(live: Server) -> None:
    """Without OTEL_EXPORTER_OTLP_ENDPOINT nothing is exported: no exporter errors, yet trace IDs exist."""
    records = live.log_records()
    assert [r for r in records if r["logger"].startswith("opentelemetry")] == []
    assert [r for r in records if r["level"] in ("ERROR", "CRITICAL")] == []
    assert any(r["trace_id"] for r in records if r["logger"] == "service.access")
