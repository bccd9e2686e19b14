"""Triton's perf_analyzer drives /v2 over HTTP and gRPC, at concurrency 1 and 16, with no errors.

perf_analyzer needs more of the server than the required protocol: server and model metadata, the
model configuration extension, and the binary tensor data extension (it sends BYTES as raw data).
The binary is not on PyPI (the ``perf-analyzer`` package there is an empty placeholder): ``make
bench-tools`` takes it from the tritonclient wheel into .bench/perf_analyzer; ``PERF_ANALYZER`` points
at another. Without one that runs here, these tests skip and say why.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.oip.tensors import serialize_bytes
from tests.conftest import ROOT
from tests.grpc.helpers import metric
from tests.servers import Server, server

pytestmark = pytest.mark.slow

BENCH_TOOLS = ROOT / ".bench" / "perf_analyzer"
# The tritonclient wheel's binary links libcudart.so.12 even on CPU; make bench-tools puts it here.
CUDART = BENCH_TOOLS / "cudart" / "nvidia" / "cuda_runtime" / "lib"


def perf_analyzer() -> tuple[str, dict[str, str]]:
    env = dict(os.environ)
    extra = [p for p in (os.environ.get("PERF_ANALYZER_LIBRARY_PATH"), str(CUDART) if CUDART.is_dir() else None) if p]
    if extra:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*extra, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    for candidate in (
        os.environ.get("PERF_ANALYZER"),
        shutil.which("perf_analyzer"),
        str(BENCH_TOOLS / "bin/perf_analyzer"),
    ):
        if candidate and Path(candidate).is_file():
            probe = subprocess.run([candidate, "--version"], env=env, capture_output=True, text=True, timeout=30)
            if probe.returncode != 0:
                pytest.skip(f"perf_analyzer at {candidate} does not run here: {(probe.stderr or probe.stdout)[-300:]}")
            return candidate, env
    pytest.skip("no perf_analyzer: `make bench-tools` (from the tritonclient wheel) or PERF_ANALYZER=/path/to/it")


@pytest.fixture(scope="module")
def tool() -> tuple[str, dict[str, str]]:
    return perf_analyzer()


@pytest.fixture(scope="module")
def v2_server(tmp_path_factory: pytest.TempPathFactory, tool: tuple[str, dict[str, str]]) -> Iterator[Server]:
    with server("uvicorn", {"ML_API_LOG_LEVEL": "WARNING"}, tmp_path_factory.mktemp("pa") / "stderr.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def input_data(tmp_path_factory: pytest.TempPathFactory, digit_pngs: list[bytes]) -> Path:
    """``--input-data``: ``b64`` is the tensor's raw data, so for BYTES the length-prefixed elements."""
    path = tmp_path_factory.mktemp("pa-data") / "digit.json"
    raw = serialize_bytes([digit_pngs[0]])
    path.write_text(json.dumps({"data": [{"image": {"b64": base64.b64encode(raw).decode(), "shape": [1]}}]}))
    return path


def command(tool: str, url: str, protocol: str, concurrency: int, data: Path) -> list[str]:
    """The command line (the one docs/api-contract.md gives): short windows, a loose stability bar, as
    the machine is shared; three windows at most."""
    return [
        tool,
        "-m",
        "digits",
        "-u",
        url,
        "-i",
        protocol,
        "--input-data",
        str(data),
        "--shape",
        "image:1",
        "--concurrency-range",
        f"{concurrency}:{concurrency}",
        "--measurement-mode",
        "time_windows",
        "-p",
        "1000",
        "-s",
        "1000",
        "--max-trials",
        "3",
    ]


def run(cmd: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize("concurrency", [1, 16])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_drives_v2(
    tool: tuple[str, dict[str, str]], v2_server: Server, input_data: Path, protocol: str, concurrency: int
) -> None:
    url = v2_server.base.removeprefix("http://") if protocol == "http" else v2_server.grpc_target
    before = httpx.get(f"{v2_server.base}/metrics", timeout=10).text
    out = run(command(tool[0], url, protocol, concurrency, input_data), tool[1])
    after = httpx.get(f"{v2_server.base}/metrics", timeout=10).text
    throughput = float(re.findall(r"Throughput: ([0-9.]+) infer/sec", out)[-1])
    assert throughput > 0
    label = {"protocol": "v2-rest" if protocol == "http" else "v2-grpc", "outcome": "success"}
    served = metric(after, "ml_api_protocol_requests_total", label) - metric(
        before, "ml_api_protocol_requests_total", label
    )
    assert served >= int(re.findall(r"Request count: (\d+)", out)[-1])
    failures = sum(
        metric(after, "ml_api_protocol_requests_total", {**label, "outcome": o})
        for o in ("invalid", "denied", "rate_limited", "unavailable", "timeout", "error")
    )
    assert failures == 0


def test_both_protocols_at_once_fill_shared_batches(
    tool: tuple[str, dict[str, str]], v2_server: Server, input_data: Path
) -> None:
    """HTTP and gRPC at concurrency 16 together: their requests meet in the same batches."""
    digits = {"model": "digits", "version": "1"}
    before = httpx.get(f"{v2_server.base}/metrics", timeout=10).text
    outputs: dict[str, str] = {}
    runs = {
        "http": command(tool[0], v2_server.base.removeprefix("http://"), "http", 16, input_data),
        "grpc": command(tool[0], v2_server.grpc_target, "grpc", 16, input_data),
    }
    threads = [
        threading.Thread(target=lambda k=k, c=c: outputs.__setitem__(k, run(c, tool[1]))) for k, c in runs.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert set(outputs) == {"http", "grpc"}
    after = httpx.get(f"{v2_server.base}/metrics", timeout=10).text
    images = metric(after, "ml_api_batch_size_sum", digits) - metric(before, "ml_api_batch_size_sum", digits)
    batches = metric(after, "ml_api_batch_size_count", digits) - metric(before, "ml_api_batch_size_count", digits)
    assert images / batches > 1.5, f"{images} images in {batches} batches"
