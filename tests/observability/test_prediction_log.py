"""Sampled prediction logs (ML_API_PREDICTION_LOG_RATE): records match what was served, the sampling
fraction holds, and no image byte reaches a log line."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from service.app import create_app
from tests.conftest import make_settings, running_app
from tests.servers import Server, server

LOGGER = "service.predictions"


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("predictions") / "stderr.log"
    env = {"ML_API_PREDICTION_LOG_RATE": "1.0", "ML_API_LOG_LEVEL": "WARNING"}
    with server("uvicorn", env, log) as srv:
        yield srv


def records(srv: Server, request_id: str, count: int) -> list[dict[str, Any]]:
    found = srv.wait_for_log(lambda r: r.get("logger") == LOGGER and r.get("request_id") == request_id)
    deadline = time.monotonic() + 10
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        found = [r for r in srv.log_records() if r.get("logger") == LOGGER and r.get("request_id") == request_id]
    return found


def check(record: dict[str, Any], png: bytes, served: dict[str, Any], protocol: str = "v1") -> None:
    width, height = Image.open(io.BytesIO(png)).size
    assert record["image_sha256"] == hashlib.sha256(png).hexdigest()
    assert record["image_bytes"] == len(png)
    assert (record["image_width"], record["image_height"]) == (width, height)
    assert record["predictions"] == served["predictions"]  # the top-k the client got, confidences included
    assert (record["model"], record["version"]) == (served["model_name"], served["model_version"])
    assert record["protocol"] == protocol
    assert record["latency_ms"] >= record["inference_time_ms"] == served["inference_time_ms"]
    assert record["level"] == "INFO" and record["time"]
    assert set(record) >= {"trace_id", "span_id", "pid"}


@pytest.mark.slow
def test_records_match_the_served_predictions(logged: Server, digit_pngs: list[bytes]) -> None:
    base = logged.base
    pngs = digit_pngs[:6]
    one = httpx.post(
        f"{base}/api/v1/predict",
        json={"image_base64": base64.b64encode(pngs[0]).decode(), "top_k": 3},
        headers={"X-Request-ID": "pred-json"},
        timeout=30,
    ).json()
    check(*records(logged, "pred-json", 1), pngs[0], one)
    assert len(one["predictions"]) == 3

    raw = httpx.post(
        f"{base}/api/v1/predict/upload?top_k=1",
        content=pngs[1],
        headers={"content-type": "image/png", "X-Request-ID": "pred-raw"},
        timeout=30,
    ).json()
    check(*records(logged, "pred-raw", 1), pngs[1], raw)

    batch = httpx.post(
        f"{base}/api/v1/predict/batch",
        json={"images": [{"image_base64": base64.b64encode(p).decode()} for p in pngs[2:5]]},
        headers={"X-Request-ID": "pred-batch"},
        timeout=30,
    ).json()["results"]
    by_hash = {r["image_sha256"]: r for r in records(logged, "pred-batch", 3)}
    assert len(by_hash) == 3
    for png, served in zip(pngs[2:5], batch, strict=True):
        check(by_hash[hashlib.sha256(png).hexdigest()], png, served)

    job = httpx.post(
        f"{base}/api/v1/predict/async",
        json={"image_base64": base64.b64encode(pngs[5]).decode()},
        headers={"X-Request-ID": "pred-job"},
        timeout=30,
    ).json()
    deadline = time.monotonic() + 30
    while (state := httpx.get(f"{base}{job['status_url']}", timeout=10).json())["status"] != "completed":
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    # The job ran in the worker, outside the request: its record still names the submitting request.
    check(*records(logged, "pred-job", 1), pngs[5], state["result"], protocol="job")

    # Never the image: not the bytes, not their base64, not a fragment of either.
    text = logged.log_text()
    for png in pngs:
        encoded = base64.b64encode(png).decode()
        for fragment in (encoded[:40], encoded[40:80], encoded[-40:]):
            assert fragment not in text
    assert "iVBORw0KGgo" not in text and "\\x89PNG" not in text


@pytest.mark.slow
def test_records_are_json_lines_of_their_own_logger(logged: Server) -> None:
    lines = [r for r in logged.log_records() if r.get("logger") == LOGGER]  # every stderr line parsed as JSON
    assert lines and all(r["message"].startswith("prediction digits:1 ") for r in lines)
    # The collector ships stderr as is: the logger field is what a Loki query selects them by.
    raw = [line for line in logged.log_text().splitlines() if '"service.predictions"' in line]
    assert len(raw) == len(lines)


@pytest.mark.anyio
async def test_the_sampled_fraction_holds(digit_pngs: list[bytes], caplog: pytest.LogCaptureFixture) -> None:
    rate, images = 0.3, 400
    app = create_app(make_settings(prediction_log_rate=rate))
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with running_app(app) as client:
        for start in range(0, images, 16):
            batch = {"images": [{"image_base64": base64.b64encode(p).decode()} for p in digit_pngs[start : start + 16]]}
            response = await client.post("/api/v1/predict/batch", json=batch)
            assert response.status_code == 200
    logged = [r for r in caplog.records if r.name == LOGGER]
    # Binomial(400, 0.3): mean 120, standard deviation 9.2; five of them either side.
    sigma = math.sqrt(images * rate * (1 - rate))
    assert abs(len(logged) - images * rate) <= 5 * sigma, len(logged)
    assert len({r.image_sha256 for r in logged}) == len(logged)  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_off_by_default(digit_pngs: list[bytes], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with running_app(create_app(make_settings())) as client:
        for png in digit_pngs[:20]:
            await client.post("/api/v1/predict/upload", content=png, headers={"content-type": "image/png"})
    assert [r for r in caplog.records if r.name == LOGGER] == []


def test_the_text_format_summarises_a_record(tmp_path: Path) -> None:
    from service.inference.results import Classification, ClassScore
    from service.observability.prediction_log import PredictionLog

    handler_records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_records.append(record)

    logger = logging.getLogger(LOGGER)
    keep = Keep()
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    try:
        result = Classification((ClassScore(7, "seven", 0.9),), "digits", "1", 1.5, image_size=(4, 3))
        assert PredictionLog(1.0).record([b"img"], [result], protocol="v2-rest", latency_ms=2.0) == 1
        assert PredictionLog(0.0).record([b"img"], [result], protocol="v1", latency_ms=2.0) == 0
    finally:
        logger.removeHandler(keep)
    (record,) = handler_records
    assert record.getMessage() == "prediction digits:1 seven (0.900)"
    assert record.image_width == 4 and record.image_height == 3 and record.protocol == "v2-rest"  # type: ignore[attr-defined]
    assert record.image_sha256 == hashlib.sha256(b"img").hexdigest()  # type: ignore[attr-defined]
