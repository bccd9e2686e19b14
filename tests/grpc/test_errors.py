"""Every error of a gRPC call, with the status code of service/grpc/status.py and a message."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from service.grpc.proto import inference_v2_pb2 as pb
from tests.grpc.helpers import grpc_app, infer_request, metric

pytestmark = pytest.mark.anyio


async def _fails(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call  # type: ignore[misc]
    return failed.value


def _retry_delay(error: grpc.aio.AioRpcError) -> int:
    """The RetryInfo delay of the rich status, which must match the retry-after trailing metadata."""
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailing metadata"
    (detail,) = status.details
    info = error_details_pb2.RetryInfo()
    assert detail.Unpack(info)
    assert dict(error.trailing_metadata())["retry-after"] == str(info.retry_delay.seconds)
    return int(info.retry_delay.seconds)


async def test_unknown_model_and_version_are_not_found(digit_pngs: list[bytes]) -> None:
    async with grpc_app() as g:
        model = await _fails(g.stub.ModelInfer(infer_request(digit_pngs[0], model="nope"), timeout=10))
        version = await _fails(g.stub.ModelInfer(infer_request(digit_pngs[0], model_version="7"), timeout=10))
        meta = await _fails(g.stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"), timeout=10))
        ready = await _fails(g.stub.ModelReady(pb.ModelReadyRequest(name="nope"), timeout=10))
    assert [e.code() for e in (model, version, meta, ready)] == [grpc.StatusCode.NOT_FOUND] * 4
    assert model.details() == "model 'nope' is not registered"
    assert version.details() == "model 'digits' has no version '7'"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.raw_input_contents.append(b"x"), "2 raw_input_contents for 1 inputs: send one per input"),
        (lambda r: r.raw_input_contents.__setitem__(0, b"\x05\x00\x00\x00ab"), "runs past the data"),
        (lambda r: setattr(r.inputs[0], "datatype", "COMPLEX"), "tensor 'image': unknown datatype 'COMPLEX'"),
        (lambda r: r.inputs[0].shape.__setitem__(0, 2), "1 BYTES elements, but its shape holds 2"),
        (lambda r: setattr(r.inputs[0], "name", "pixels"), "unknown input 'pixels'"),
        (
            lambda r: (
                r.inputs.add(name="image_uint8", datatype="UINT8", shape=[0, 8, 8, 1]),
                r.raw_input_contents.append(b""),
            ),
            "send exactly one input tensor",
        ),
        (lambda r: r.outputs.add(name="logits"), "unknown output 'logits'"),
        (lambda r: r.inputs[0].shape.extend([1] * 8), "9 dimensions, at most 8"),
    ],
    ids=["raw-count", "truncated-bytes", "datatype", "element-count", "input-name", "two-inputs", "output", "rank"],
)
async def test_bad_tensors_are_invalid_argument(digit_pngs: list[bytes], mutate: object, message: str) -> None:
    async with grpc_app() as g:
        request = infer_request(digit_pngs[0])
        mutate(request)  # type: ignore[operator]
        error = await _fails(g.stub.ModelInfer(request, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()


async def test_typed_contents_of_the_wrong_kind_are_invalid_argument() -> None:
    async with grpc_app() as g:
        request = pb.ModelInferRequest(model_name="digits")
        tensor = request.inputs.add(name="image_fp32", datatype="FP32", shape=[1, 1, 8, 8])
        tensor.contents.fp32_contents.extend([float("nan")] * 64)
        nan = await _fails(g.stub.ModelInfer(request, timeout=10))
        tensor.contents.fp32_contents[:] = [0.0] * 63
        short = await _fails(g.stub.ModelInfer(request, timeout=10))
        half = pb.ModelInferRequest(model_name="digits")
        half.inputs.add(name="image_fp32", datatype="FP16", shape=[1, 1, 8, 8])
        fp16 = await _fails(g.stub.ModelInfer(half, timeout=10))
    assert [e.code() for e in (nan, short, fp16)] == [grpc.StatusCode.INVALID_ARGUMENT] * 3
    assert nan.details() == "tensor 'image_fp32': values must be finite"
    assert short.details() == "tensor 'image_fp32': 63 elements, but shape [1, 1, 8, 8] holds 64"
    assert fp16.details() == "input 'image_fp32': FP16 data goes in raw_input_contents"


async def test_a_message_over_the_body_limit_is_resource_exhausted(digit_pngs: list[bytes]) -> None:
    async with grpc_app(max_body_bytes=4096) as g:
        big = infer_request(digit_pngs[0] + b"\0" * 5000)
        error = await _fails(g.stub.ModelInfer(big, timeout=10))
        small = await g.stub.ModelInfer(infer_request(digit_pngs[0]), timeout=10)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Received message larger than max" in (error.details() or "")
    assert (error.details() or "").endswith("vs. 4096)")
    assert small.outputs[0].shape == [1, 10]


async def test_overload_is_resource_exhausted_with_retry_info(digit_pngs: list[bytes]) -> None:
    """Two images against a queue of one: refused before anything is queued."""
    async with grpc_app(max_queue_size=1) as g:
        error = await _fails(g.stub.ModelInfer(infer_request(digit_pngs[0], digit_pngs[1]), timeout=10))
        one = await g.stub.ModelInfer(infer_request(digit_pngs[0]), timeout=10)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "the inference queue of digits:1 is full"
    assert _retry_delay(error) == 1
    assert one.outputs[0].shape == [1, 10]


async def test_concurrent_calls_past_the_queue_are_refused_and_the_rest_served(digit_pngs: list[bytes]) -> None:
    """The first call waits in the queue for a fuller batch (max_batch_wait_ms), so calls arriving
    meanwhile find it full."""
    async with grpc_app(max_queue_size=1, max_batch_wait_ms=1000) as g:
        calls = [g.stub.ModelInfer(infer_request(png), timeout=20) for png in digit_pngs[:6]]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    served = [o for o in outcomes if isinstance(o, pb.ModelInferResponse)]
    assert len(served) >= 1 and len(refused) >= 1 and len(served) + len(refused) == 6
    assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert all(_retry_delay(e) == 1 for e in refused)


async def test_draining_is_unavailable(digit_pngs: list[bytes]) -> None:
    async with grpc_app() as g:
        g.app.state.drain.draining = True
        infer = await _fails(g.stub.ModelInfer(infer_request(digit_pngs[0]), timeout=10))
        meta = await _fails(g.stub.ModelMetadata(pb.ModelMetadataRequest(name="digits"), timeout=10))
        live = await g.stub.ServerLive(pb.ServerLiveRequest(), timeout=10)
        model_ready = await g.stub.ModelReady(pb.ModelReadyRequest(name="digits"), timeout=10)
    assert [infer.code(), meta.code()] == [grpc.StatusCode.UNAVAILABLE] * 2
    assert infer.details() == "the server is shutting down"
    assert (live.live, model_ready.ready) == (True, False)


async def test_the_clients_deadline_is_the_requests_deadline(digit_pngs: list[bytes]) -> None:
    """The call waits in the queue for a fuller batch (1 s) past its 0.3 s deadline: the server's own
    deadline (30 s) would have let it finish, so a timeout counted by the pipeline is the client's."""
    async with grpc_app(max_batch_wait_ms=1000) as g:
        error = await _fails(g.stub.ModelInfer(infer_request(digit_pngs[0]), timeout=0.3))
        tiny = await _fails(g.stub.ModelInfer(infer_request(digit_pngs[0]), timeout=0.000001))
        await asyncio.sleep(1.2)  # the batcher skips the expired items when its wait ends
        text = (await g.http.get("/metrics")).text
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert tiny.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert metric(text, "ml_api_predictions_total", {"model": "digits", "version": "1", "outcome": "timeout"}) >= 1


async def test_api_keys_from_metadata(digit_pngs: list[bytes]) -> None:
    async with grpc_app(api_keys=["grpc-key-1", "grpc-key-2"]) as g:
        missing = await _fails(g.stub.ModelInfer(infer_request(digit_pngs[0]), timeout=10))
        wrong = await _fails(
            g.stub.ModelInfer(infer_request(digit_pngs[0]), metadata=(("authorization", "Bearer nope"),), timeout=10)
        )
        meta = await _fails(g.stub.ModelMetadata(pb.ModelMetadataRequest(name="digits"), timeout=10))
        bearer = await g.stub.ModelInfer(
            infer_request(digit_pngs[0]), metadata=(("authorization", "Bearer grpc-key-2"),), timeout=10
        )
        api_key = await g.stub.ModelInfer(
            infer_request(digit_pngs[0]), metadata=(("x-api-key", "grpc-key-1"),), timeout=10
        )
        probes = [
            (await g.stub.ServerLive(pb.ServerLiveRequest(), timeout=10)).live,
            (await g.stub.ServerReady(pb.ServerReadyRequest(), timeout=10)).ready,
            (await g.stub.ModelReady(pb.ModelReadyRequest(name="digits"), timeout=10)).ready,
        ]
    assert [missing.code(), wrong.code(), meta.code()] == [grpc.StatusCode.UNAUTHENTICATED] * 3
    assert missing.details() == "a valid API key is required (authorization: Bearer <key> or x-api-key metadata)"
    assert bearer.outputs[0].shape == api_key.outputs[0].shape == [1, 10]
    assert probes == [True, True, True]


async def test_rate_limits_are_resource_exhausted_with_retry_info(digit_pngs: list[bytes]) -> None:
    async with grpc_app(rate_limit_enabled=True, rate_limits={"predict": "2/minute", "default": "100/second"}) as g:
        served = [await g.stub.ModelInfer(infer_request(digit_pngs[0]), timeout=10) for _ in range(2)]
        limited = await _fails(g.stub.ModelInfer(infer_request(digit_pngs[0]), timeout=10))
        meta = await g.stub.ModelMetadata(pb.ModelMetadataRequest(name="digits"), timeout=10)
    assert len(served) == 2
    assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert limited.details() == "rate limit 2 per 1 minute exceeded for this client"
    assert 1 <= _retry_delay(limited) <= 60
    assert meta.name == "digits"
