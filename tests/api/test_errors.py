"""Every error row of the contract, with its exact status, code and ErrorBody shape."""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image

from service.app import create_app
from tests.conftest import make_settings, running_app
from tests.imagehost import image_host

pytestmark = pytest.mark.anyio


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert set(body) >= {"error", "message", "path", "request_id"}
    assert body["path"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_400_invalid_image_for_non_image_bytes_truncated_files_and_bad_base64(
    client: httpx.AsyncClient, digit_pngs: list[bytes]
) -> None:
    assert_error(await client.post("/api/v1/predict", json={"image_base64": b64(b"hello")}), 400, "INVALID_IMAGE")
    assert_error(await client.post("/api/v1/predict", json={"image_base64": "@@@not-base64@@@"}), 400, "INVALID_IMAGE")
    truncated = digit_pngs[0][: len(digit_pngs[0]) // 2]
    response = await client.post("/api/v1/predict/upload", content=truncated, headers={"content-type": "image/png"})
    assert_error(response, 400, "INVALID_IMAGE")


async def test_400_image_fetch_failed_for_http_errors_and_non_image_content() -> None:
    routes = {
        "/gone.png": (404, {"Content-Type": "text/plain"}, b"no"),
        "/page": (200, {"Content-Type": "text/html"}, b"<p>"),
    }
    settings = make_settings(url_fetch_allowed_networks=[ipaddress.ip_network("127.0.0.0/8")])
    async with running_app(create_app(settings)) as client:
        with image_host(routes) as base:
            for path in ("/gone.png", "/page"):
                response = await client.post("/api/v1/predict", json={"image_url": f"{base}{path}"})
                assert_error(response, 400, "IMAGE_FETCH_FAILED")


async def test_401_unauthorized_when_keys_are_configured() -> None:
    async with running_app(create_app(make_settings(api_keys=["s3cret-key"]))) as client:
        response = await client.post("/api/v1/predict", json={"image_base64": "x"})
        assert_error(response, 401, "UNAUTHORIZED")
        assert response.headers["www-authenticate"] == "Bearer"
        ok = await client.get("/api/v1/models", headers={"Authorization": "Bearer s3cret-key"})
        assert ok.status_code == 200


async def test_403_url_not_allowed_for_other_schemes_and_private_addresses(client: httpx.AsyncClient) -> None:
    for url in ("ftp://example.com/a.png", "file:///etc/passwd", "http://127.0.0.1/a.png", "http://10.1.2.3/a.png"):
        assert_error(await client.post("/api/v1/predict", json={"image_url": url}), 403, "URL_NOT_ALLOWED")


async def test_404_not_found_model_not_found_and_job_not_found(
    client: httpx.AsyncClient, digit_pngs: list[bytes]
) -> None:
    assert_error(await client.get("/no/such/route"), 404, "NOT_FOUND")
    upload = {"content": digit_pngs[0], "headers": {"content-type": "image/png"}}
    assert_error(await client.post("/api/v1/predict/upload?model=nope", **upload), 404, "MODEL_NOT_FOUND")
    assert_error(await client.post("/api/v1/predict/upload?model_version=9", **upload), 404, "MODEL_NOT_FOUND")
    assert_error(await client.get("/api/v1/jobs/0123456789abcdef"), 404, "JOB_NOT_FOUND")
    assert_error(await client.get("/api/v1/jobs/0123456789abcdef/events"), 404, "JOB_NOT_FOUND")


async def test_405_method_not_allowed_sets_allow(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/predict")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "POST"


async def test_413_for_body_upload_fetched_image_and_pixel_count(digit_pngs: list[bytes]) -> None:
    big_png = io.BytesIO()
    Image.new("L", (3000, 3000)).save(big_png, format="PNG")  # small file, 9 M pixels
    noise = torch.randint(0, 255, (300_000,), dtype=torch.uint8).numpy().tobytes()
    settings = make_settings(
        max_body_bytes=200_000,
        max_image_pixels=4_000_000,
        url_fetch_max_bytes=100_000,
        url_fetch_allowed_networks=[ipaddress.ip_network("127.0.0.0/8")],
    )
    routes = {"/huge.png": (200, {"Content-Type": "image/png"}, b"\x89PNG" + noise)}
    async with running_app(create_app(settings)) as client:
        upload = await client.post("/api/v1/predict/upload", content=noise, headers={"content-type": "image/png"})
        assert_error(upload, 413, "PAYLOAD_TOO_LARGE")
        multipart = await client.post("/api/v1/predict/upload", files={"file": ("n.png", noise, "image/png")})
        assert_error(multipart, 413, "PAYLOAD_TOO_LARGE")
        body = await client.post("/api/v1/predict", json={"image_base64": b64(noise)})
        assert_error(body, 413, "PAYLOAD_TOO_LARGE")
        pixels = await client.post(
            "/api/v1/predict/upload", content=big_png.getvalue(), headers={"content-type": "image/png"}
        )
        assert_error(pixels, 413, "PAYLOAD_TOO_LARGE")
        with image_host(routes) as base:
            fetched = await client.post("/api/v1/predict", json={"image_url": f"{base}/huge.png"})
            assert_error(fetched, 413, "PAYLOAD_TOO_LARGE")
        # Nothing accepted was lost: the service still answers normally.
        ok = await client.post("/api/v1/predict/upload", content=digit_pngs[0], headers={"content-type": "image/png"})
        assert ok.status_code == 200


async def test_415_unsupported_media_type_on_upload(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/predict/upload", content=b"{}", headers={"content-type": "application/json"})
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_422_validation_error_lists_the_fields(client: httpx.AsyncClient) -> None:
    none = assert_error(await client.post("/api/v1/predict", json={}), 422, "VALIDATION_ERROR")
    assert none["details"][0]["loc"] == ["body"]
    both = await client.post("/api/v1/predict", json={"image_url": "http://a/b.png", "image_base64": "eA=="})
    assert_error(both, 422, "VALIDATION_ERROR")
    top_k = assert_error(
        await client.post("/api/v1/predict", json={"image_base64": "eA==", "top_k": 99}), 422, "VALIDATION_ERROR"
    )
    assert ["body", "top_k"] in [d["loc"] for d in top_k["details"]]
    empty = await client.post("/api/v1/predict/batch", json={"images": []})
    assert_error(empty, 422, "VALIDATION_ERROR")
    too_many = await client.post("/api/v1/predict/batch", json={"images": [{"image_base64": "eA=="}] * 33})
    assert_error(too_many, 422, "VALIDATION_ERROR")
    not_json = await client.post("/api/v1/predict", content=b"{", headers={"content-type": "application/json"})
    assert_error(not_json, 422, "VALIDATION_ERROR")


async def test_429_rate_limited_sets_retry_after(digit_pngs: list[bytes]) -> None:
    settings = make_settings(rate_limit_enabled=True, rate_limits={"predict": "2/minute", "default": "100/second"})
    async with running_app(create_app(settings)) as client:
        upload = {"content": digit_pngs[0], "headers": {"content-type": "image/png"}}
        statuses = [(await client.post("/api/v1/predict/upload", **upload)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        limited = await client.post("/api/v1/predict/upload", **upload)
        assert_error(limited, 429, "RATE_LIMITED")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert (await client.get("/health/ready")).status_code == 200  # probes are never limited


async def test_503_model_not_loaded_while_the_default_model_cannot_load(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    spec = {
        "name": "broken",
        "version": "1",
        "source": "file",
        "path": str(tmp_path / "missing.pt"),
        "labels": str(labels),
    }
    app = create_app(make_settings(models=[spec], default_model="broken"))
    async with running_app(app, wait_ready=False) as client:
        await app.state.dataplane.registry.wait_started()
        assert_error(await client.get("/health/ready"), 503, "MODEL_NOT_LOADED")
        response = await client.post("/api/v1/predict", json={"image_base64": b64(b"x")})
        assert_error(response, 503, "MODEL_NOT_LOADED")
        health = (await client.get("/health")).json()
        assert health["status"] == "unhealthy" and health["model_loaded"] is False


async def test_503_overloaded_with_retry_after_when_the_queue_is_full(digit_pngs: list[bytes]) -> None:
    app = create_app(make_settings(max_queue_size=1, max_batch_size=1))
    async with running_app(app) as client:
        upload = {"content": digit_pngs[0], "headers": {"content-type": "image/png"}}
        responses = await asyncio.gather(*(client.post("/api/v1/predict/upload", **upload) for _ in range(40)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 503}
    overloaded = next(r for r in responses if r.status_code == 503)
    assert_error(overloaded, 503, "OVERLOADED")
    assert overloaded.headers["retry-after"] == "1"


async def test_503_shutting_down_refuses_new_inference_and_readiness(client: httpx.AsyncClient) -> None:
    client_app = client._transport.app  # type: ignore[attr-defined]
    client_app.state.dataplane.stop_accepting()
    assert_error(await client.get("/health/ready"), 503, "SHUTTING_DOWN")
    response = await client.post("/api/v1/predict", json={"image_base64": b64(b"x")})
    assert_error(response, 503, "SHUTTING_DOWN")
    assert (await client.get("/health/live")).json() == {"status": "alive"}


async def test_504_inference_timeout_when_the_deadline_passes(digit_pngs: list[bytes]) -> None:
    app = create_app(make_settings(request_timeout_s=0.000001))
    async with running_app(app) as client:
        response = await client.post(
            "/api/v1/predict/upload", content=digit_pngs[0], headers={"content-type": "image/png"}
        )
    assert_error(response, 504, "INFERENCE_TIMEOUT")


class _Exploding(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 0:
            raise RuntimeError("this model always fails")
        return x


async def test_500_internal_error_has_no_stack_trace(tmp_path: Path, digit_pngs: list[bytes]) -> None:
    path = tmp_path / "exploding.pt"
    torch.jit.script(_Exploding()).save(str(path))
    labels = tmp_path / "labels.txt"
    labels.write_text("a\n")
    spec = {
        "name": "exploding",
        "version": "1",
        "source": "file",
        "path": str(path),
        "labels": str(labels),
        "input_size": 16,
    }
    app = create_app(make_settings(models=[{"name": "digits"}, spec], warmup=False))
    async with running_app(app) as client:
        response = await client.post(
            "/api/v1/predict/upload?model=exploding", content=digit_pngs[0], headers={"content-type": "image/png"}
        )
    body = assert_error(response, 500, "INTERNAL_ERROR")
    assert "Traceback" not in response.text and "this model always fails" not in body["message"]


def test_every_error_code_has_one_http_status() -> None:
    from service.api.errors import STATUS_BY_CODE
    from service.errors import ErrorCode

    assert set(STATUS_BY_CODE) == set(ErrorCode)
    assert all(400 <= status <= 599 for status in STATUS_BY_CODE.values())


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "BAD_REQUEST"), (401, "UNAUTHORIZED"), (403, "FORBIDDEN"), (404, "NOT_FOUND"), (405, "METHOD_NOT_ALLOWED"),
     (406, "NOT_ACCEPTABLE"), (409, "CONFLICT"), (413, "PAYLOAD_TOO_LARGE"), (415, "UNSUPPORTED_MEDIA_TYPE"),
     (418, "BAD_REQUEST"), (422, "VALIDATION_ERROR"), (429, "RATE_LIMITED"), (500, "INTERNAL_ERROR"),
     (502, "INTERNAL_ERROR")],
)  # fmt: skip
async def test_framework_http_errors_keep_their_status_and_get_the_code_naming_it(status: int, code: str) -> None:
    from fastapi import HTTPException

    app = create_app(make_settings())

    @app.get("/framework-error")
    async def framework_error() -> None:
        raise HTTPException(status_code=status, detail="raised by the framework")

    async with running_app(app) as client:
        response = await client.get("/framework-error")
    body = assert_error(response, status, code)
    assert body["message"] == "raised by the framework"


async def test_the_openapi_error_docs_list_the_codes_of_each_status() -> None:
    async with running_app(create_app(make_settings())) as client:
        schema = (await client.get("/openapi.json")).json()
    predict = schema["paths"]["/api/v1/predict"]["post"]["responses"]
    assert predict["503"]["description"] == "MODEL_NOT_LOADED, OVERLOADED, SHUTTING_DOWN"
    assert predict["400"]["description"] == "INVALID_IMAGE, IMAGE_FETCH_FAILED"
    assert predict["404"]["description"] == "NOT_FOUND, MODEL_NOT_FOUND"
    assert "JOB_NOT_FOUND" in schema["paths"]["/api/v1/jobs/{job_id}"]["get"]["responses"]["404"]["description"]
    embed = schema["paths"]["/api/v1/embed"]["post"]["responses"]
    assert embed["400"]["description"] == "INVALID_IMAGE, IMAGE_FETCH_FAILED, EMBEDDING_NOT_SUPPORTED"
    from service.errors import ErrorCode

    error = schema["components"]["schemas"]["ErrorBody"]["properties"]["error"]
    assert error["enum"] == [code.value for code in ErrorCode]


def test_prediction_outcome_labels_come_from_the_error_codes() -> None:
    from service.errors import ErrorCode

    assert {code: code.outcome for code in ErrorCode if code.outcome != "error"} == {
        ErrorCode.INVALID_IMAGE: "invalid_image",
        ErrorCode.PAYLOAD_TOO_LARGE: "invalid_image",
        ErrorCode.INFERENCE_TIMEOUT: "timeout",
        ErrorCode.OVERLOADED: "overloaded",
        ErrorCode.SHUTTING_DOWN: "overloaded",
    }


async def test_x_request_timeout_sets_one_requests_deadline_capped_by_the_server(digit_pngs: list[bytes]) -> None:
    upload = {"content": digit_pngs[0]}
    async with running_app(create_app(make_settings(request_timeout_s=30))) as client:
        short = await client.post(
            "/api/v1/predict/upload", **upload, headers={"content-type": "image/png", "X-Request-Timeout": "0.000001"}
        )
        roomy = await client.post(
            "/api/v1/predict/upload", **upload, headers={"content-type": "image/png", "X-Request-Timeout": "3600"}
        )
        invalid = await client.post(
            "/api/v1/predict/upload", **upload, headers={"content-type": "image/png", "X-Request-Timeout": "-1"}
        )
    assert_error(short, 504, "INFERENCE_TIMEOUT")
    assert roomy.status_code == 200  # capped at the server's 30 s, far more than it needs
    body = assert_error(invalid, 422, "VALIDATION_ERROR")
    assert body["details"][0]["loc"] == ["header", "x-request-timeout"]
