"""Hostile requests at the HTTP layer: each gets its contract error within a bounded size and time, and
the event loop keeps answering probes meanwhile. Against a real ``python -m service`` process where the
transport matters (chunked bodies, slow bodies, connection floods), in-process otherwise."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from tests.conftest import make_settings, running_app
from tests.servers import Server, server

pytestmark = pytest.mark.anyio
CAP = 1024 * 1024


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with small limits, so the hostile requests stay cheap to send."""
    env = {
        "ML_API_MAX_BODY_BYTES": str(CAP),
        "ML_API_BODY_READ_TIMEOUT_S": "1",
        "ML_API_MAX_CONNECTIONS": "40",
        "ML_API_URL_FETCH_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
    }
    with server("uvicorn", env, tmp_path_factory.mktemp("small") / "stderr.log") as srv:
        yield srv


class ProbeWatch:
    """Polls /health/live from a thread while a hostile request runs; ``worst_ms`` is its slowest answer."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5) as client:
            deadline = time.monotonic() + 60
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.perf_counter()
                client.get("/health/live").raise_for_status()
                self.latencies.append((time.perf_counter() - started) * 1000)
                time.sleep(0.02)

    def __enter__(self) -> ProbeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        deadline = time.monotonic() + 10
        while not self.latencies and time.monotonic() < deadline:  # at least one probe overlapped
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def worst_ms(self) -> float:
        return max(self.latencies)


def chunked(data: bytes, size: int = 16 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["error"] == code
    return body


@pytest.mark.parametrize("path", ["/api/v1/predict/batch", "/api/v1/predict/stream"])
def test_a_400000_item_batch_is_one_small_422_and_probes_stay_fast(small: Server, path: str) -> None:
    body = b'{"images": [' + b",".join([b"1"] * 400_000) + b"]}"  # 0.8 MB, under the body cap
    with ProbeWatch(small.base) as probes:
        response = httpx.post(
            f"{small.base}{path}", content=body, headers={"Content-Type": "application/json"}, timeout=30
        )
    data = assert_error(response, 422, "VALIDATION_ERROR")
    assert len(response.content) < 4096
    assert data["details"] == [
        {"loc": ["body", "images"], "msg": data["details"][0]["msg"], "type": "too_long"},
    ]
    assert probes.worst_ms < 200


@pytest.mark.parametrize("path", ["/api/v1/predict", "/api/v1/predict/stream"])
def test_a_chunked_json_body_over_the_cap_is_413_while_it_streams(small: Server, path: str) -> None:
    body = json.dumps({"image_base64": "A" * (2 * CAP)}).encode()
    response = httpx.post(
        f"{small.base}{path}", content=chunked(body), headers={"Content-Type": "application/json"}, timeout=30
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert response.json()["message"] == f"the request body is over {CAP} bytes"


def test_a_chunked_multipart_body_over_the_cap_is_413(small: Server) -> None:
    boundary = "x-boundary"
    body = (
        (
            f"--{boundary}\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n"
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"\0" * (2 * CAP)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = httpx.post(
        f"{small.base}/api/v1/predict/upload",
        content=chunked(body),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=30,
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_a_body_that_trickles_in_is_refused_408_after_the_read_timeout(small: Server) -> None:
    with socket.create_connection(("127.0.0.1", small.port), timeout=10) as conn:
        conn.sendall(
            b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"image_base64": "'
        )
        started = time.monotonic()
        reply = b""
        with contextlib.suppress(TimeoutError):
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                reply += chunk
        waited = time.monotonic() - started
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), reply[:200]
    assert json.loads(payload)["error"] == "REQUEST_TIMEOUT"
    assert 0.9 < waited < 5


def test_connections_beyond_the_limit_are_refused_and_probes_still_answer(small: Server) -> None:
    idle = []
    try:
        for _ in range(60):  # more than ML_API_MAX_CONNECTIONS=40, each holding a half-sent request
            conn = socket.create_connection(("127.0.0.1", small.port), timeout=10)
            conn.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
            idle.append(conn)
        time.sleep(0.2)
        refused = httpx.get(f"{small.base}/api/v1/models", timeout=10)
        assert refused.status_code == 503
    finally:
        for conn in idle:
            conn.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the held connections time out or close: service as usual
        if httpx.get(f"{small.base}/health/live", timeout=5).status_code == 200:
            break
        time.sleep(0.1)
    assert httpx.get(f"{small.base}/health/live", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"image_base64": "\xff\xfe"}', ["body"]),  # invalid UTF-8
        (b"[" * 100_000 + b"]" * 100_000, ["body"]),  # nesting deeper than any parser should follow
        (b'{"image_base64": "aGk=", "top_k": ' + b"9" * 5000 + b"}", ["body"]),
    ],
    ids=["invalid-utf8", "deep-nesting", "5000-digit-integer"],
)
async def test_undecodable_json_is_422_validation_error(body: bytes, loc: list[str]) -> None:
    async with running_app(create_app(make_settings())) as client:
        response = await client.post("/api/v1/predict", content=body, headers={"Content-Type": "application/json"})
    data = assert_error(response, 422, "VALIDATION_ERROR")
    assert data["details"][0]["loc"] == loc
    assert len(response.content) < 4096


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"image_url": ""}, "image_url"),
        ({"image_url": "   "}, "image_url"),
        ({"image_base64": ""}, "image_base64"),
        ({"image_base64": " \n\t "}, "image_base64"),
    ],
    ids=["empty-url", "blank-url", "empty-base64", "whitespace-base64"],
)
@pytest.mark.parametrize("path", ["/api/v1/predict", "/api/v1/embed", "/api/v1/predict/async"])
async def test_an_empty_source_is_422_naming_its_field(body: dict[str, str], field: str, path: str) -> None:
    async with running_app(create_app(make_settings())) as client:
        response = await client.post(path, json=body)
    data = assert_error(response, 422, "VALIDATION_ERROR")
    assert [d["loc"] for d in data["details"]] == [["body", field]]


async def test_a_non_json_content_type_is_415() -> None:
    async with running_app(create_app(make_settings())) as client:
        response = await client.post(
            "/api/v1/predict", content=b"image_base64=x", headers={"Content-Type": "text/plain"}
        )
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_an_unknown_model_is_404_before_the_body_or_any_url_is_read(tmp_path: Path) -> None:
    from tests.imagehost import image_host

    served: list[str] = []
    with image_host({"/a.png": (200, {"Content-Type": "image/png"}, b"\x89PNG")}, served=served) as host:
        async with running_app(create_app(make_settings(url_fetch_allowed_networks=["127.0.0.0/8"]))) as client:
            for path in ("/api/v1/predict?model=nope", "/api/v1/embed?model=nope", "/api/v1/predict/async?model=nope"):
                response = await client.post(path, json={"image_url": f"{host}/a.png"})
                assert_error(response, 404, "MODEL_NOT_FOUND")
    assert served == []


HOSTILE = Path(__file__).resolve().parent.parent / "data" / "hostile"


def _hostile_requests(image_host_base: str) -> list[tuple[str, str, dict[str, str], bytes | str]]:
    """(label, path, headers, body) of every hostile input the service must answer cheaply: each committed
    hostile sample (refused, or decoded despite malformed metadata, as expected.json says), hostile JSON,
    a decompression bomb behind a URL, a chunked body over the cap."""
    expected = json.loads((HOSTILE / "expected.json").read_text())
    requests: list[tuple[str, str, dict[str, str], bytes | str]] = [
        (f"upload {name}", "/api/v1/predict/upload", {"Content-Type": "image/png"}, (HOSTILE / name).read_bytes())
        for name in sorted(expected)
    ]
    json_headers = {"Content-Type": "application/json"}
    requests += [
        ("deep nesting", "/api/v1/predict", json_headers, b"[" * 100_000 + b"]" * 100_000),
        ("400000 items", "/api/v1/predict/batch", json_headers, b'{"images": [' + b",".join([b"1"] * 400_000) + b"]}"),
        (
            "gzip bomb URL",
            "/api/v1/predict",
            json_headers,
            json.dumps({"image_url": f"{image_host_base}/bomb.png"}).encode(),
        ),
        ("chunked over the cap", "/api/v1/predict", json_headers, json.dumps({"image_base64": "A" * 2 * CAP})),
    ]
    return requests


def test_probes_stay_fast_while_every_hostile_input_is_refused(small: Server) -> None:
    import gzip

    from tests.imagehost import image_host

    bomb = gzip.compress(gzip.compress(bytes(64 << 20), compresslevel=9), compresslevel=9)
    routes = {"/bomb.png": (200, {"Content-Type": "image/png", "Content-Encoding": "gzip, gzip"}, bomb)}
    decodable = {
        f"upload {n}" for n, e in json.loads((HOSTILE / "expected.json").read_text()).items() if e["outcome"] == "ok"
    }
    worst: dict[str, float] = {}
    with image_host(routes) as host:
        for label, path, headers, body in _hostile_requests(host):
            raw = body.encode() if isinstance(body, str) else body
            with ProbeWatch(small.base) as probes:
                content = chunked(raw) if label == "chunked over the cap" else raw
                response = httpx.post(f"{small.base}{path}", content=content, headers=headers, timeout=60)
            if label in decodable:
                assert response.status_code == 200, (label, response.text[:300])
            else:
                assert 400 <= response.status_code < 500, (label, response.status_code, response.text[:300])
                assert response.json()["error"], label
            worst[label] = probes.worst_ms
    slow = {label: ms for label, ms in worst.items() if ms >= 200}
    assert not slow, f"/health/live took 200 ms or more while refusing: {slow}"
