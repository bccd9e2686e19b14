"""``/v2`` over HTTP in-process: the protocol's bodies, the binary extension, and every error status."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from typing import Any

import httpx
import numpy as np
import pytest

from service.app import create_app
from tests.conftest import make_settings, running_app

pytestmark = pytest.mark.anyio

INFER = "/v2/models/digits/infer"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bytes_input(*pngs: bytes) -> dict[str, Any]:
    return {"name": "image", "datatype": "BYTES", "shape": [len(pngs)], "data": [b64(p) for p in pngs]}


def binary_body(tensors: list[tuple[dict[str, Any], bytes]], **request: Any) -> tuple[bytes, dict[str, str]]:
    """A binary tensor data extension body: the JSON header, then each tensor's data."""
    inputs = [{**head, "parameters": {"binary_data_size": len(data)}} for head, data in tensors]
    head = json.dumps({"inputs": inputs, **request}).encode()
    headers = {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}
    return head + b"".join(data for _, data in tensors), headers


def serialized(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


@pytest.fixture
async def client() -> Any:
    async with running_app(create_app(make_settings())) as c:
        yield c


async def test_health_and_server_metadata(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    ready = await client.get("/v2/models/digits/versions/1/ready")
    assert (ready.status_code, ready.json()) == (200, {"name": "digits", "version": "1", "ready": True})
    meta = (await client.get("/v2")).json()
    assert meta["name"] == "ml-api"
    assert meta["extensions"] == ["binary_tensor_data", "classification", "model_configuration"]


async def test_json_request_with_every_output_form(client: httpx.AsyncClient, digit_pngs: list[bytes]) -> None:
    body = {
        "id": "req-7",
        "inputs": [bytes_input(*digit_pngs[:2])],
        "outputs": [{"name": "probabilities"}, {"name": "probabilities", "parameters": {"classification": 2}}],
    }
    response = await client.post(INFER, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    out = response.json()
    assert (out["model_name"], out["model_version"], out["id"]) == ("digits", "1", "req-7")
    probabilities, classes = out["outputs"]
    assert (probabilities["datatype"], probabilities["shape"]) == ("FP32", [2, 10])
    assert len(probabilities["data"]) == 20
    assert (classes["datatype"], classes["shape"]) == ("BYTES", [2, 2])
    top = np.asarray(probabilities["data"], dtype=np.float32).reshape(2, 10).argmax(axis=1)
    assert [int(s.split(":")[1]) for s in classes["data"][::2]] == top.tolist()


async def test_binary_request_and_binary_response(client: httpx.AsyncClient, digit_pngs: list[bytes]) -> None:
    body, headers = binary_body(
        [({"name": "image", "datatype": "BYTES", "shape": [3]}, serialized(*digit_pngs[:3]))],
        parameters={"binary_data_output": True},
    )
    response = await client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    head = json.loads(response.content[:length])
    (output,) = head["outputs"]
    assert output["parameters"] == {"binary_data_size": 3 * 10 * 4}
    array = np.frombuffer(response.content[length:], dtype="<f4").reshape(3, 10)
    assert np.allclose(array.sum(axis=1), 1.0, atol=1e-5)


async def test_uint8_and_fp32_inputs_give_the_same_answer_as_the_encoded_image(client: httpx.AsyncClient) -> None:
    """A random image as pixels: image_uint8, the same normalised as image_fp32, and as a PNG file."""
    from io import BytesIO

    from PIL import Image

    pixels = np.random.default_rng(7).integers(0, 256, size=(8, 8), dtype=np.uint8)
    png = BytesIO()
    Image.fromarray(pixels, mode="L").save(png, format="PNG")
    normalised = ((pixels.astype(np.float32) / 255.0 - 0.5) / 0.5)[None, None]
    answers = []
    for tensor in (
        {"name": "image_uint8", "datatype": "UINT8", "shape": [1, 8, 8, 1], "data": pixels.ravel().tolist()},
        {"name": "image_fp32", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": normalised.ravel().tolist()},
        bytes_input(png.getvalue()),
    ):
        response = await client.post(INFER, json={"inputs": [tensor]})
        assert response.status_code == 200, response.text
        answers.append(response.json()["outputs"][0]["data"])
    assert answers[0] == answers[1] == answers[2]


async def test_nested_json_data_is_taken_as_row_major(client: httpx.AsyncClient) -> None:
    pixels = np.arange(64, dtype=np.uint8).reshape(1, 8, 8, 1)
    flat = {"name": "image_uint8", "datatype": "UINT8", "shape": [1, 8, 8, 1], "data": pixels.ravel().tolist()}
    nested = {**flat, "data": pixels.tolist()}
    first = (await client.post(INFER, json={"inputs": [flat]})).json()
    second = (await client.post(INFER, json={"inputs": [nested]})).json()
    assert first == second


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the inference request is not valid: Invalid JSON"),
        (b'{"inputs": []}', "the inference request is not valid: inputs: List should have at least 1 item"),
        (b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1]}]}', "neither data nor binary_data_size"),
        (
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1], "data": ["AA=="]}]}',
            "tensor 'image': shape [-1] must be non-negative integers",
        ),
        (
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [1]}]}',
            "tensor 'image': BYTES data in JSON must be base64 strings",
        ),
        (
            b'{"inputs": [{"name": "image", "datatype": "STRING", "shape": [1], "data": ["AA=="]}]}',
            "tensor 'image': unknown datatype 'STRING'",
        ),
        (
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["AA=="]}]}',
            "tensor 'image': 1 elements, but shape [2] holds 2",
        ),
        (
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 1], "data": ["AA=="]}]}',
            "input 'image' is BYTES of shape [N]",
        ),
        (
            b'{"inputs": [{"name": "image_uint8", "datatype": "UINT8", "shape": [1, 8, 8, 1], "data": [300]}]}',
            "tensor 'image_uint8': data is not a regular array of UINT8 values",
        ),
        (
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [0], "data": []}]}',
            "input 'image' holds no image",
        ),
        (
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["AA=="]}],'
            b' "outputs": [{"name": "probabilities", "parameters": {"classification": "3"}}]}',
            "output 'probabilities': classification must be an integer",
        ),
        (
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [""]}]}',
            "the image is empty",
        ),
    ],
    ids=[
        "json",
        "no-inputs",
        "no-data",
        "negative-dim",
        "bytes-not-string",
        "datatype",
        "count",
        "bytes-rank",
        "uint8-range",
        "empty-batch",
        "classification-type",
        "empty-image",
    ],
)
async def test_bad_requests_are_400_with_the_protocols_error_body(
    client: httpx.AsyncClient, body: bytes, message: str
) -> None:
    response = await client.post(INFER, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"]
    assert message in response.json()["error"]


async def test_binary_extension_errors_are_400(client: httpx.AsyncClient, digit_pngs: list[bytes]) -> None:
    head = {"name": "image", "datatype": "BYTES", "shape": [1]}
    body, headers = binary_body([(head, serialized(digit_pngs[0]))])
    cases = {
        "length past the body": (body, {**headers, "Inference-Header-Content-Length": str(len(body) + 1)}),
        "length not a number": (body, {**headers, "Inference-Header-Content-Length": "12x"}),
        "bytes nobody claims": (body + b"extra", headers),
        "size past the data": (body[:-4], headers),
    }
    messages = {}
    for name, (content, hdrs) in cases.items():
        response = await client.post(INFER, content=content, headers=hdrs)
        assert response.status_code == 400, (name, response.text)
        messages[name] = response.json()["error"]
    assert "is not a length within" in messages["length past the body"]
    assert "is not a length within" in messages["length not a number"]
    assert messages["bytes nobody claims"] == "5 bytes after the JSON header belong to no input"
    assert "does not fit the" in messages["size past the data"]


async def test_too_many_images_is_400(digit_pngs: list[bytes]) -> None:
    async with running_app(create_app(make_settings(max_batch_items=2))) as client:
        response = await client.post(INFER, json={"inputs": [bytes_input(*digit_pngs[:3])]})
    assert (response.status_code, response.json()) == (
        400,
        {"error": "input 'image': at most 2 images per request, not 3"},
    )


async def test_unknown_model_version_route_and_method(client: httpx.AsyncClient, digit_pngs: list[bytes]) -> None:
    body = {"inputs": [bytes_input(digit_pngs[0])]}
    cases = [
        (await client.post("/v2/models/nope/infer", json=body), 404, "model 'nope' is not registered"),
        (await client.post("/v2/models/digits/versions/2/infer", json=body), 404, "model 'digits' has no version '2'"),
        (await client.get("/v2/models/nope"), 404, "model 'nope' is not registered"),
        (await client.get("/v2/models/nope/ready"), 404, "model 'nope' is not registered"),
        (await client.get("/v2/nothing/here"), 404, "no route for GET /v2/nothing/here"),
        (await client.get(INFER), 405, "Method Not Allowed"),
        (await client.get("/v2/models/bad%20name"), 400, "the request failed validation: path.name: String should"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"].startswith(message), response.json()


async def test_a_body_over_the_limit_is_413(digit_pngs: list[bytes]) -> None:
    async with running_app(create_app(make_settings(max_body_bytes=4096))) as client:
        response = await client.post(INFER, json={"inputs": [bytes_input(digit_pngs[0] + b"\0" * 5000)]})
    assert (response.status_code, response.json()) == (413, {"error": "the request body is over 4096 bytes"})


async def test_overload_is_503_with_retry_after(digit_pngs: list[bytes]) -> None:
    async with running_app(create_app(make_settings(max_queue_size=1))) as client:
        response = await client.post(INFER, json={"inputs": [bytes_input(*digit_pngs[:2])]})
    assert (response.status_code, response.json()) == (503, {"error": "the inference queue of digits:1 is full"})
    assert response.headers["retry-after"] == "1"


async def test_concurrent_requests_past_the_queue_get_503_the_rest_200(digit_pngs: list[bytes]) -> None:
    async with running_app(create_app(make_settings(max_queue_size=1, max_batch_wait_ms=1000))) as client:
        responses = await asyncio.gather(
            *(client.post(INFER, json={"inputs": [bytes_input(png)]}) for png in digit_pngs[:6])
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200 and statuses[-1] == 503 and set(statuses) == {200, 503}
    assert all(r.headers["retry-after"] == "1" for r in responses if r.status_code == 503)


async def test_the_request_timeout_header_is_the_deadline(client: httpx.AsyncClient, digit_pngs: list[bytes]) -> None:
    response = await client.post(
        INFER, json={"inputs": [bytes_input(digit_pngs[0])]}, headers={"X-Request-Timeout": "0.000001"}
    )
    assert response.status_code == 504, response.text
    assert response.json() == {"error": "no result within the deadline (digits)"}


async def test_draining_refuses_inference_and_probes_say_so(client: httpx.AsyncClient, digit_pngs: list[bytes]) -> None:
    client._transport.app.state.drain.draining = True  # type: ignore[attr-defined]
    infer = await client.post(INFER, json={"inputs": [bytes_input(digit_pngs[0])]})
    ready = await client.get("/v2/health/ready")
    live = await client.get("/v2/health/live")
    model = await client.get("/v2/models/digits/ready")
    assert (infer.status_code, infer.json()) == (503, {"error": "the server is shutting down"})
    assert (ready.status_code, ready.json()) == (503, {"ready": False})
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert model.status_code == 503


async def test_api_keys_and_rate_limits(digit_pngs: list[bytes]) -> None:
    settings = make_settings(api_keys=["rest-key"], rate_limit_enabled=True, rate_limits={"predict": "2/minute"})
    body = {"inputs": [bytes_input(digit_pngs[0])]}
    auth = {"Authorization": "Bearer rest-key"}
    async with running_app(create_app(settings)) as client:
        missing = await client.post(INFER, json=body)
        metadata = await client.get("/v2/models/digits")
        probes = [(await client.get(p)).status_code for p in ("/v2/health/live", "/v2/health/ready")]
        # The rate limit is outside the key check (as for /api/v1): the refused call counted too.
        served = [(await client.post(INFER, json=body, headers=auth)).status_code]
        limited = await client.post(INFER, json=body, headers=auth)
    assert (missing.status_code, missing.headers["www-authenticate"]) == (401, "Bearer")
    assert missing.json() == {"error": "a valid API key is required (Authorization: Bearer <key> or X-API-Key)"}
    assert metadata.status_code == 401
    assert probes == [200, 200]
    assert served == [200]
    assert (limited.status_code, limited.json()) == (
        429,
        {"error": "rate limit 2 per 1 minute exceeded for this client"},
    )
    assert 1 <= int(limited.headers["retry-after"]) <= 60
