"""/api/v1, /v2 over REST and gRPC are front ends of one data plane: their requests share a batcher, the
autoscaling gauge counts all of them, and each is counted under its protocol."""

from __future__ import annotations

import asyncio
import base64
import time

import grpc
import pytest

from tests.grpc.helpers import grpc_app, infer_request, metric

pytestmark = pytest.mark.anyio

DIGITS = {"model": "digits", "version": "1"}


def _batch_buckets(text: str) -> dict[str, float]:
    return {le: metric(text, "ml_api_batch_size_bucket", {**DIGITS, "le": le}) for le in ("1.0", "2.0", "4.0")}


async def test_requests_of_all_three_protocols_form_one_batch(digit_pngs: list[bytes]) -> None:
    """The batcher holds the first image up to 1 s for a fuller batch (max_batch_wait_ms): one request of
    each protocol sent together becomes one batch of three, while the in-flight gauge reads three."""
    async with grpc_app(max_batch_wait_ms=1000) as g:
        before = (await g.http.get("/metrics")).text
        v1 = g.http.post("/api/v1/predict/upload", content=digit_pngs[0], headers={"Content-Type": "image/png"})
        rest = g.http.post(
            "/v2/models/digits/infer",
            json={
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "BYTES",
                        "shape": [1],
                        "data": [base64.b64encode(digit_pngs[1]).decode()],
                    }
                ]
            },
        )
        grpc_call = g.stub.ModelInfer(infer_request(digit_pngs[2]), timeout=20)

        async def inflight_peak() -> float:
            peak, deadline = 0.0, time.monotonic() + 5
            while peak < 3 and time.monotonic() < deadline:
                peak = max(peak, metric((await g.http.get("/metrics")).text, "ml_api_inflight_requests"))
                await asyncio.sleep(0.02)
            return peak

        v1_response, rest_response, grpc_response, peak = await asyncio.gather(v1, rest, grpc_call, inflight_peak())
        after = (await g.http.get("/metrics")).text
    assert (v1_response.status_code, rest_response.status_code) == (200, 200)
    assert list(grpc_response.outputs[0].shape) == [1, 10]
    assert peak == 3
    grew = {le: _batch_buckets(after)[le] - _batch_buckets(before)[le] for le in ("1.0", "2.0", "4.0")}
    # One more batch, of 3 images: in the le=4 bucket, not in le=1 or le=2.
    assert grew == {"1.0": 0, "2.0": 0, "4.0": 1}
    assert metric(after, "ml_api_batch_size_sum", DIGITS) - metric(before, "ml_api_batch_size_sum", DIGITS) == 3
    assert metric(after, "ml_api_inflight_requests") == 0
    for protocol in ("v1", "v2-rest", "v2-grpc"):
        labels = {"protocol": protocol, "outcome": "success"}
        assert (
            metric(after, "ml_api_protocol_requests_total", labels)
            - metric(before, "ml_api_protocol_requests_total", labels)
            == 1
        ), protocol
        assert metric(after, "ml_api_protocol_request_duration_seconds_count", {"protocol": protocol}) >= 1


async def test_failures_are_counted_under_their_protocol_in_one_vocabulary(digit_pngs: list[bytes]) -> None:
    async with grpc_app(api_keys=["k"]) as g:
        await g.http.post("/v2/models/digits/infer", json={"inputs": []})
        await g.http.post("/api/v1/predict/upload", content=digit_pngs[0], headers={"Content-Type": "image/png"})
        with pytest.raises(grpc.aio.AioRpcError):
            await g.stub.ModelInfer(infer_request(digit_pngs[0]), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError):
            await g.stub.ModelInfer(
                infer_request(digit_pngs[0], model="nope"), metadata=(("x-api-key", "k"),), timeout=10
            )
        text = (await g.http.get("/metrics")).text
    counted = {
        (protocol, outcome): metric(text, "ml_api_protocol_requests_total", {"protocol": protocol, "outcome": outcome})
        for protocol, outcome in (
            ("v2-rest", "denied"),
            ("v1", "denied"),
            ("v2-grpc", "denied"),
            ("v2-grpc", "invalid"),
        )
    }
    assert counted == {
        ("v2-rest", "denied"): 1,
        ("v1", "denied"): 1,
        ("v2-grpc", "denied"): 1,
        ("v2-grpc", "invalid"): 1,
    }
