"""gRPC in real server processes: SIGTERM drains it with the HTTP server, several gunicorn workers serve
one port."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.grpc.proto import inference_v2_pb2 as pb
from service.grpc.proto.inference_v2_pb2_grpc import GRPCInferenceServiceStub
from tests.grpc.helpers import infer_request, metric
from tests.servers import Server, server

pytestmark = pytest.mark.slow


def _infer(target: str, png: bytes, request_id: str, timeout: float = 30) -> pb.ModelInferResponse:
    """One call on a channel of its own: a new connection (not one from gRPC's process-wide pool of
    subchannels), which the kernel gives to any worker."""
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        response: pb.ModelInferResponse = GRPCInferenceServiceStub(channel).ModelInfer(
            infer_request(png), metadata=(("x-request-id", request_id),), timeout=timeout
        )
        return response


def _wait_inflight(srv: Server, count: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while metric(httpx.get(f"{srv.base}/metrics", timeout=5).text, "ml_api_inflight_requests") < count:
        assert time.monotonic() < deadline, f"{count} calls never were in flight together"
        time.sleep(0.02)


def _sigterm_with_calls_in_flight(srv: Server, png: bytes, grace_s: float) -> None:
    """Calls held in the batch queue (max_batch_wait_ms) when SIGTERM arrives finish; calls after it
    are refused with UNAVAILABLE, health turns NOT_SERVING, and the process exits 0 within the grace."""
    results: list[object] = []
    lock = threading.Lock()

    def call(index: int) -> None:
        try:
            response = _infer(srv.grpc_target, png, f"drain-{index}")
            outcome: object = list(response.outputs[0].shape)
        except grpc.RpcError as exc:
            outcome = exc.code()  # type: ignore[attr-defined]
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    _wait_inflight(srv, 4)
    signalled = time.monotonic()
    srv.process.send_signal(signal.SIGTERM)
    with grpc.insecure_channel(srv.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 5
        seen = None
        while seen != "drained" and time.monotonic() < deadline:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                seen = "drained" if status == health_pb2.HealthCheckResponse.NOT_SERVING else "serving"
            except grpc.RpcError as exc:
                seen = "drained" if exc.code() == grpc.StatusCode.UNAVAILABLE else str(exc.code())  # type: ignore[attr-defined]
            time.sleep(0.02)
        assert seen == "drained"
        with pytest.raises(grpc.RpcError) as refused:
            GRPCInferenceServiceStub(channel).ModelInfer(infer_request(png), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    for thread in threads:
        thread.join(timeout=30)
    returncode = srv.process.wait(timeout=grace_s + 10)
    assert results == [[1, 10]] * 4
    assert returncode == 0
    assert time.monotonic() - signalled < grace_s
    records = srv.log_records()
    finished = [r for r in records if r.get("logger") == "service.access" and r["request_id"].startswith("drain-")]
    assert sorted((r["request_id"], r["status"]) for r in finished) == [(f"drain-{i}", "OK") for i in range(4)]
    assert [r for r in records if r["level"] in ("ERROR", "CRITICAL")] == []


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_sigterm_drains_grpc_with_calls_in_flight(kind: str, tmp_path: Path, digit_pngs: list[bytes]) -> None:
    env = {"ML_API_SHUTDOWN_GRACE_S": "10", "ML_API_MAX_BATCH_WAIT_MS": "1000", "ML_API_WORKERS": "1"}
    srv = Server(kind, env, tmp_path / "stderr.log")
    try:
        srv.wait_ready()
        # gunicorn's graceful_timeout is the grace period plus 5 s (gunicorn_conf).
        _sigterm_with_calls_in_flight(srv, digit_pngs[0], grace_s=10 if kind == "uvicorn" else 15)
    finally:
        srv.terminate()


def test_two_gunicorn_workers_serve_the_grpc_port(tmp_path: Path, digit_pngs: list[bytes]) -> None:
    """Both workers listen on the port (SO_REUSEPORT); new connections reach either, and the pod's
    metrics add up both workers' calls."""
    env = {"ML_API_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    with server("gunicorn", env, tmp_path / "stderr.log") as srv:
        # Ready means one worker is; the other may still be loading its model (and not listening yet).
        deadline = time.monotonic() + 90
        while len(_listening(srv)) < 2:
            assert time.monotonic() < deadline, "the second worker never served gRPC"
            time.sleep(0.2)
        pids: set[int] = set()
        sent = 0
        for index in range(40):  # bounded: 2 workers * connections spread by the kernel's hash
            response = _infer(srv.grpc_target, digit_pngs[index % len(digit_pngs)], f"mw-{index}")
            assert list(response.outputs[0].shape) == [1, 10]
            sent += 1
            (line,) = srv.wait_for_log(lambda r, i=index: r.get("request_id") == f"mw-{i}" and r.get("status") == "OK")
            pids.add(line["pid"])
            if len(pids) == 2 and sent >= 10:
                break
        assert len(pids) == 2, f"all {sent} connections went to one worker ({pids})"
        assert _listening(srv) == pids
        for _ in range(4):  # each scrape may land on either worker and must report the whole pod
            text = httpx.get(f"{srv.base}/metrics", timeout=10).text
            assert metric(text, "ml_api_protocol_requests_total", {"protocol": "v2-grpc", "outcome": "success"}) == sent


def _listening(srv: Server) -> set[int]:
    return {r["pid"] for r in srv.log_records() if r.get("message", "").startswith("gRPC listening on")}


def test_a_taken_grpc_port_stops_a_single_worker_at_start_up(tmp_path: Path) -> None:
    """Without SO_REUSEPORT (one worker), a second server on the same gRPC port fails loudly instead of
    silently sharing it."""
    with server("uvicorn", {}, tmp_path / "first.log") as first:
        second = Server("uvicorn", {"ML_API_GRPC_PORT": str(first.grpc_port)}, tmp_path / "second.log")
        try:
            assert second.process.wait(timeout=60) != 0
            log = second.log_text()
        finally:
            second.terminate()
        assert f"gRPC: cannot listen on 127.0.0.1:{first.grpc_port}" in log
