"""The Open Inference Protocol levels of the bench, against a stand-in v2 server."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import oip
from bench.images import make_jpeg
from bench.wrk import run_wrk
from tests.bench.v2_stub import plain_http, v2_stub


def test_messages_use_the_protocols_field_numbers() -> None:
    m = oip.messages()
    assert m["ModelInferRequest"](model_name="m").SerializeToString() == b"\x0a\x01m"  # field 1, string
    [(_, typed), (_, raw)] = oip.grpc_requests("m", "image", b"\xff\xd8x")
    req = m["ModelInferRequest"].FromString(typed)
    assert typed[3] == 0x2A  # inputs: field 5, length-delimited
    assert (req.inputs[0].name, req.inputs[0].datatype, list(req.inputs[0].shape)) == ("image", "BYTES", [1])
    assert list(req.inputs[0].contents.bytes_contents) == [b"\xff\xd8x"]
    assert list(m["ModelInferRequest"].FromString(raw).raw_input_contents) == [b"\x03\x00\x00\x00\xff\xd8x"]


def test_prepare_finds_the_accepted_forms_and_both_loads_run(tmp_path: Path) -> None:
    image = make_jpeg(64, 48)
    with v2_stub() as (port, grpc_port):
        plan = oip.prepare(port, grpc_port, "m", image, tmp_path)
        assert plan.http.available and plan.http.form == "json-base64", plan.http
        assert plan.grpc.available and plan.grpc.form == "bytes_contents", plan.grpc
        assert plan.input_name == "image"
        assert plan.http.body is not None and plan.grpc.request_file is not None
        http = run_wrk(f"http://127.0.0.1:{port}", plan.http.body, 2, 1.0, tmp_path)
        assert http["requests"] > 0 and sum(http["errors"].values()) == 0, http
        rpc = oip.grpc_load(f"127.0.0.1:{grpc_port}", plan.grpc.request_file, 2, 1.0, tmp_path)
        assert rpc["requests"] > 0 and sum(rpc["errors"].values()) == 0, rpc
        assert rpc["latency_us"]["p50"] > 0 and rpc["cpu_s"] > 0


def test_without_v2_both_protocols_are_skipped_with_a_reason(tmp_path: Path) -> None:
    with plain_http() as port:
        from bench.procs import free_port

        plan = oip.prepare(port, free_port(), "m", make_jpeg(64, 48), tmp_path)
    assert not plan.http.available and "404 on /v2" in (plan.http.reason or "")
    assert not plan.grpc.available and "ServerLive" in (plan.grpc.reason or "")


def test_perf_analyzer_drives_the_stub_when_installed(tmp_path: Path) -> None:
    cmd, env, why = oip.perf_analyzer()
    if cmd is None:
        pytest.skip(why or "no perf_analyzer")
    image = make_jpeg(64, 48)
    with v2_stub() as (port, _):
        data = oip.perf_analyzer_data("image", image, tmp_path)
        res = oip.run_perf_analyzer(
            cmd, env, protocol="http", url=f"127.0.0.1:{port}", model="m", input_name="image",
            data_file=data, concurrency=2, seconds=1.0, workdir=tmp_path,
        )  # fmt: skip
    assert res["requests"] > 0 and res["latency_us"]["p99"] > 0 and res["tool"] == "perf_analyzer"
