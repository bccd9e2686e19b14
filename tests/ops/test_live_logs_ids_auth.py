"""Request IDs, JSON logs, API keys and CORS against a real ``python -m service`` process.

One server for the module (start-up costs seconds); every test tags its requests with its own
X-Request-ID and reads the server's own stderr, so the tests stay independent.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.imagehost import image_host
from tests.ops.servers import Server, server

API_KEY = "ops-test-key-5f2c9a71"
ORIGIN = "https://app.example"
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ACCESS_KEYS = {
    "time", "level", "logger", "pid", "message", "request_id", "trace_id", "span_id",
    "method", "path", "status", "duration_ms", "client", "model", "version",
}  # fmt: skip
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("live") / "stderr.log"
    env = {
        "ML_API_API_KEYS": f'["{API_KEY}"]',
        "ML_API_CORS_ORIGINS": f'["{ORIGIN}"]',
        "ML_API_URL_FETCH_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
    }
    with server("uvicorn", env, log) as srv:
        yield srv


def _upload(live: Server, png: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{live.base}/api/v1/predict/upload",
        content=png,
        headers={"Content-Type": "image/png", **headers},
        timeout=30,
    )


def test_valid_request_id_is_echoed_in_body_header_and_access_line(live: Server, digit_pngs: list[bytes]) -> None:
    rid = "ops.valid-ID_1"
    response = _upload(live, digit_pngs[0], {**AUTH, "X-Request-ID": rid})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == rid
    assert response.json()["request_id"] == rid
    lines = live.wait_for_log(lambda r: r.get("logger") == "service.access" and r["request_id"] == rid)
    assert len(lines) == 1


@pytest.mark.parametrize(
    "sent",
    ["x" * 129, "bad id!", "semi;colon", "slash/inside", "ümlaut"],
    ids=["too-long", "space-and-bang", "semicolon", "slash", "non-ascii"],
)
def test_invalid_request_id_is_replaced_by_a_uuid4_everywhere(live: Server, sent: str) -> None:
    response = httpx.get(
        f"{live.base}/api/v1/jobs/no-such-job", headers={**AUTH, "X-Request-ID": sent.encode()}, timeout=10
    )
    assert response.status_code == 404
    rid = response.headers["X-Request-ID"]
    assert UUID4.fullmatch(rid), rid
    assert response.json() == {
        "error": "JOB_NOT_FOUND",
        "message": "no job 'no-such-job' (unknown or expired)",
        "path": "/api/v1/jobs/no-such-job",
        "request_id": rid,
    }
    assert len(live.wait_for_log(lambda r: r.get("request_id") == rid)) == 1


def test_longest_valid_request_id_is_kept(live: Server) -> None:
    rid = "a" * 128
    response = httpx.get(f"{live.base}/health", headers={"X-Request-ID": rid}, timeout=10)
    assert response.headers["X-Request-ID"] == rid


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
    response = _upload(live, digit_pngs[1], {**AUTH, "X-Request-ID": rid})
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
    refused = _upload(live, png, {"Authorization": f"Bearer {wrong_key}", "X-Request-ID": "ops-no-secrets"})
    assert (ok.status_code, bad.status_code, refused.status_code) == (200, 400, 401)
    live.wait_for_log(lambda r: r.get("request_id") == "ops-no-secrets")
    text = live.log_text()
    for secret in (API_KEY, wrong_key, encoded[:40], encoded[-40:], "bm90IGFuIGltYWdl", "iVBORw0KGgo", "\\x89PNG"):
        assert secret not in text


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"}, {"Authorization": f"Basic {API_KEY}"},
     {"Authorization": f"Bearer {API_KEY}x"}],
    ids=["missing", "wrong-bearer", "wrong-x-api-key", "basic-scheme", "key-prefix-only"],
)  # fmt: skip
def test_missing_or_wrong_api_key_is_401_with_www_authenticate(
    live: Server, digit_pngs: list[bytes], headers: dict[str, str]
) -> None:
    response = _upload(live, digit_pngs[0], {**headers, "X-Request-ID": "ops-401"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.headers.get_list("X-Request-ID") == ["ops-401"]
    assert response.json() == {
        "error": "UNAUTHORIZED",
        "message": "a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
        "path": "/api/v1/predict/upload",
        "request_id": "ops-401",
    }


@pytest.mark.parametrize("headers", [AUTH, {"X-API-Key": API_KEY}, {"authorization": f"bearer {API_KEY}"}])
def test_bearer_and_x_api_key_are_both_accepted(live: Server, digit_pngs: list[bytes], headers: dict[str, str]) -> None:
    response = _upload(live, digit_pngs[0], headers)
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "7"


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready", "/health/startup", "/metrics"])
def test_health_and_metrics_need_no_key(live: Server, path: str) -> None:
    assert httpx.get(f"{live.base}{path}", timeout=10).status_code == 200


def test_configured_cors_origin_is_allowed_and_others_are_not(live: Server) -> None:
    allowed = httpx.get(f"{live.base}/api/v1/models", headers={**AUTH, "Origin": ORIGIN}, timeout=10)
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    preflight = httpx.options(
        f"{live.base}/api/v1/predict",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
        timeout=10,
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = httpx.get(f"{live.base}/api/v1/models", headers={**AUTH, "Origin": "https://evil.example"}, timeout=10)
    assert other.status_code == 200
    assert "Access-Control-Allow-Origin" not in other.headers


def test_no_tracing_exporter_means_no_export_attempts(live: Server) -> None:
    """Without OTEL_EXPORTER_OTLP_ENDPOINT nothing is exported: no exporter errors, yet trace IDs exist."""
    records = live.log_records()
    assert [r for r in records if r["logger"].startswith("opentelemetry")] == []
    assert [r for r in records if r["level"] in ("ERROR", "CRITICAL")] == []
    assert any(r["trace_id"] for r in records if r["logger"] == "service.access")
