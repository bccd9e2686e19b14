"""The HTTP contract (../shared/docs/api-contract.md) checked black-box against each e2e target."""

from __future__ import annotations

import base64
import io
import json
import re
import time
import uuid

import httpx
import pytest
from PIL import Image

from e2e.targets import sse_events, sse_json

pytestmark = pytest.mark.slow

PREDICT = "/api/v1/predict"
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def top1(client: httpx.Client, png: bytes) -> str:
    """The single-image answer: batch, stream and jobs must agree with it (a few held-out digits
    are misclassified by any model, so those paths compare against this, not the true digit)."""
    resp = client.post(PREDICT, json={"image_base64": b64(png)})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["predictions"][0]["label"])


def assert_error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert body["request_id"] == resp.headers["x-request-id"]
    assert body["path"] == resp.request.url.path
    return body


def test_health_endpoints_report_ready_and_the_digits_model_loaded(client: httpx.Client) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    assert client.get("/health/startup").status_code == 200
    ready = client.get("/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    health = client.get("/health").json()
    assert health["model_loaded"] is True
    assert health["status"] in {"healthy", "degraded"}
    models = client.get("/api/v1/models").json()
    assert models["default"] == "digits"
    assert any(m["name"] == "digits" and m["loaded"] for m in models["models"])


def test_held_out_digits_are_classified_correctly(client: httpx.Client, digit_sample: list[tuple[bytes, int]]) -> None:
    """Nearly every held-out digit comes back as predictions[0].label (the bundled model scores
    >= 95% on the whole held-out split); one request per image, as a client would send them."""
    correct = 0
    for png, digit in digit_sample:
        resp = client.post(PREDICT, json={"image_base64": b64(png), "top_k": 3})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        preds = body["predictions"]
        assert len(preds) == 3
        assert [p["confidence"] for p in preds] == sorted((p["confidence"] for p in preds), reverse=True)
        assert all(0.0 <= p["confidence"] <= 1.0 for p in preds)
        assert (body["model_name"], body["model_version"]) == ("digits", "1")
        assert body["inference_time_ms"] >= 0
        correct += preds[0]["label"] == str(digit)
    assert correct >= 0.9 * len(digit_sample), f"{correct}/{len(digit_sample)} correct"


def test_every_image_transport_gives_the_same_answer(
    client: httpx.Client, digit_sample: list[tuple[bytes, int]]
) -> None:
    png, _ = digit_sample[0]
    by_json = client.post(PREDICT, json={"image_base64": b64(png)})
    data_uri = client.post(PREDICT, json={"image_base64": "data:image/png;base64," + b64(png)})
    multipart = client.post(f"{PREDICT}/upload", files={"file": ("d.png", png, "image/png")})
    raw = client.post(f"{PREDICT}/upload", content=png, headers={"content-type": "image/png"})
    answers = []
    for resp in (by_json, data_uri, multipart, raw):
        assert resp.status_code == 200, resp.text
        answers.append([(p["label"], round(p["confidence"], 5)) for p in resp.json()["predictions"]])
    assert answers[1:] == answers[:1] * 3


def test_batch_returns_one_result_per_image_in_order(
    client: httpx.Client, digit_sample: list[tuple[bytes, int]]
) -> None:
    (png_a, _), (png_b, _) = digit_sample[0], digit_sample[-1]
    images = [{"image_base64": b64(png_a)}, {"image_base64": b64(b"not an image")}, {"image_base64": b64(png_b)}]
    resp = client.post(f"{PREDICT}/batch", json={"images": images})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert len(results) == 3
    assert results[0]["predictions"][0]["label"] == top1(client, png_a)
    assert results[1]["error"] == "INVALID_IMAGE"
    assert results[2]["predictions"][0]["label"] == top1(client, png_b)


# ---- every error class of the contract that a default deployment can be driven into --------


def test_unknown_path_is_404_not_found(client: httpx.Client) -> None:
    assert_error(client.get("/api/v1/no-such-thing"), 404, "NOT_FOUND")


def test_unknown_model_or_version_is_404_model_not_found(
    client: httpx.Client, digit_sample: list[tuple[bytes, int]]
) -> None:
    body = {"image_base64": b64(digit_sample[0][0])}
    assert_error(client.post(PREDICT, params={"model": "no-such-model"}, json=body), 404, "MODEL_NOT_FOUND")
    assert_error(client.post(PREDICT, params={"model_version": "999"}, json=body), 404, "MODEL_NOT_FOUND")


def test_unknown_job_is_404_job_not_found(client: httpx.Client) -> None:
    assert_error(client.get(f"/api/v1/jobs/{uuid.uuid4().hex}"), 404, "JOB_NOT_FOUND")


def test_wrong_method_is_405_with_allow_header(client: httpx.Client) -> None:
    resp = client.get(PREDICT)
    assert_error(resp, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in [m.strip() for m in resp.headers["allow"].split(",")]


def test_body_over_the_cap_is_413(client: httpx.Client) -> None:
    # Default ML_API_MAX_BODY_BYTES is 10 MiB.
    big = b"\x00" * (10 * 1024 * 1024 + 1)
    resp = client.post(f"{PREDICT}/upload", content=big, headers={"content-type": "image/png"})
    assert_error(resp, 413, "PAYLOAD_TOO_LARGE")


def test_decoded_pixels_over_the_cap_is_413(client: httpx.Client) -> None:
    # A few KiB of PNG that would decode to 26 million pixels (cap: 25 million).
    out = io.BytesIO()
    Image.new("L", (5200, 5000)).save(out, format="PNG")
    assert len(out.getvalue()) < 1024 * 1024
    assert_error(client.post(PREDICT, json={"image_base64": b64(out.getvalue())}), 413, "PAYLOAD_TOO_LARGE")


def test_unsupported_content_type_is_415(client: httpx.Client) -> None:
    resp = client.post(f"{PREDICT}/upload", content=b"hello", headers={"content-type": "text/plain"})
    assert_error(resp, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, None),
        ({"image_base64": "aGk=", "image_url": "https://example.com/a.png"}, None),
        ({"image_base64": "aGk=", "top_k": 0}, "top_k"),
    ],
    ids=["no-source", "two-sources", "top_k-out-of-range"],
)
def test_invalid_body_is_422_validation_error_with_details(client: httpx.Client, body: dict, field: str | None) -> None:
    details = assert_error(client.post(PREDICT, json=body), 422, "VALIDATION_ERROR")["details"]
    assert details
    if field:
        assert any(field in map(str, d["loc"]) for d in details), details


def test_undecodable_image_is_400_invalid_image(client: httpx.Client) -> None:
    assert_error(client.post(PREDICT, json={"image_base64": b64(b"definitely not a picture")}), 400, "INVALID_IMAGE")
    assert_error(client.post(PREDICT, json={"image_base64": "!!!not base64!!!"}), 400, "INVALID_IMAGE")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/", "http://localhost:8000/metrics", "http://[::1]/", "ftp://127.0.0.1/x.png"]
)
def test_loopback_or_non_http_url_is_403_url_not_allowed(client: httpx.Client, url: str) -> None:
    # Refused before any connection is made: loopback is the only place this could reach anyway.
    assert_error(client.post(PREDICT, json={"image_url": url}), 403, "URL_NOT_ALLOWED")


# ---- headers, metrics, streaming, jobs --------------------------------------------------------


def test_request_id_is_echoed_or_replaced_by_a_uuid4(
    client: httpx.Client, digit_sample: list[tuple[bytes, int]]
) -> None:
    rid = f"e2e-{uuid.uuid4().hex[:12]}.A_b"
    ok = client.post(PREDICT, json={"image_base64": b64(digit_sample[0][0])}, headers={"X-Request-ID": rid})
    assert ok.headers["x-request-id"] == rid
    assert ok.json()["request_id"] == rid
    err = client.get("/api/v1/missing", headers={"X-Request-ID": rid})
    assert err.headers["x-request-id"] == rid and err.json()["request_id"] == rid
    bad = client.get("/health/live", headers={"X-Request-ID": "has spaces/and slashes"})
    assert UUID4.match(bad.headers["x-request-id"]), bad.headers["x-request-id"]
    too_long = client.get("/health/live", headers={"X-Request-ID": "a" * 129})
    assert UUID4.match(too_long.headers["x-request-id"])


def test_metrics_expose_the_ml_api_series(client: httpx.Client, digit_sample: list[tuple[bytes, int]]) -> None:
    assert client.post(PREDICT, json={"image_base64": b64(digit_sample[0][0])}).status_code == 200
    resp = client.get("/metrics")
    assert resp.status_code == 200
    text = resp.text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    for name in (
        "ml_api_inference_duration_seconds_bucket",
        "ml_api_batch_size_bucket",
        "ml_api_queue_wait_seconds_bucket",
        "ml_api_queue_depth",
        "ml_api_inflight_requests",
        "ml_api_model_loaded",
        "ml_api_predictions_total",
        "ml_api_image_decode_seconds_bucket",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
    ):
        assert name in names, f"{name} missing from /metrics"
    assert re.search(r'^ml_api_model_loaded\{[^}]*model="digits"[^}]*\} 1\.0$', text, re.M)
    success = re.search(r'^ml_api_predictions_total\{[^}]*outcome="success"[^}]*\} (\d+(\.\d+)?)$', text, re.M)
    assert success and float(success.group(1)) >= 1
    assert re.search(r'^http_requests_total\{[^}]*handler="/api/v1/predict"', text, re.M)


def test_stream_sends_one_event_per_image_then_done(
    client: httpx.Client, digit_sample: list[tuple[bytes, int]]
) -> None:
    picked = digit_sample[::10][:4]
    images = [{"image_base64": b64(png)} for png, _ in picked] + [{"image_base64": b64(b"junk")}]
    with client.stream("POST", f"{PREDICT}/stream", json={"images": images}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = sse_json(resp)
    assert events[-1] == "[DONE]"
    by_index = {e["index"]: e for e in events[:-1]}
    assert sorted(by_index) == list(range(len(images))) and len(events) == len(images) + 1
    for i, (png, _) in enumerate(picked):
        assert by_index[i]["predictions"][0]["label"] == top1(client, png)
    junk = by_index[len(images) - 1]["error"]
    assert (junk["error"] if isinstance(junk, dict) else junk) == "INVALID_IMAGE"


def test_async_job_round_trip_with_status_and_events(
    client: httpx.Client, digit_sample: list[tuple[bytes, int]]
) -> None:
    png, _ = digit_sample[7]
    expected = top1(client, png)
    accepted = client.post(f"{PREDICT}/async", json={"image_base64": b64(png)})
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert job["status"] == "pending"
    assert job["status_url"] == f"/api/v1/jobs/{job['job_id']}"

    deadline = time.monotonic() + 60
    status = client.get(job["status_url"]).json()
    while status["status"] in {"pending", "processing"} and time.monotonic() < deadline:
        time.sleep(0.2)
        status = client.get(job["status_url"]).json()
    assert status["status"] == "completed", status
    assert status["error"] is None
    assert status["result"]["predictions"][0]["label"] == expected

    # The events stream of a finished job still ends with its final state.
    with client.stream("GET", f"{job['status_url']}/events", timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        states = [json.loads(e) for e in sse_events(resp, max_events=50)]
    assert states and states[-1]["status"] == "completed"
    assert states[-1]["job_id"] == job["job_id"]
    assert states[-1]["result"]["predictions"][0]["label"] == expected
