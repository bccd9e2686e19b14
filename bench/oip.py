"""Open Inference Protocol (KServe v2) levels: ``POST /v2/models/{name}/infer`` over HTTP, and gRPC.

The bench JPEG travels as one ``BYTES`` tensor of shape ``[1]``, named :data:`INPUT_NAME` unless the
model's metadata (``GET /v2/models/{name}``) names its first input otherwise. What the service
accepts is found out, not assumed: :func:`prepare` tries each request form once and keeps the first
that answers 200 (HTTP) or OK (gRPC), and says why when none does, or when the service has no
``/v2`` at all (404) or nothing listens on its gRPC port (``ML_API_GRPC_PORT``).

Load generators, in order of preference:

- ``perf_analyzer`` (Triton's, the usual tool for this protocol): used when it runs here and can
  drive this service. It needs more than the KServe protocol: server metadata (``GET /v2``), a model
  configuration (Triton's model-configuration extension, ``GET /v2/models/{name}/config`` or the
  ``ModelConfig`` RPC), every output declared in the metadata, and over HTTP the binary tensor
  extension (``Inference-Header-Content-Length``). ``make bench-tools`` installs the binary that the
  ``tritonclient`` wheel ships (the ``perf-analyzer`` package on the index here is an empty
  placeholder); ``BENCH_PERF_ANALYZER`` points at another.
- otherwise HTTP rows are driven by wrk with the accepted JSON body (the same closed loop as the
  ``/api/v1`` rows), and gRPC rows by :func:`grpc_load` (``python -m bench.oip grpc-load``: grpc.aio,
  one channel per connection, one call in flight on each, requests serialised once).
"""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import os
import re
import shutil
import struct
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from bench.procs import http_get, http_request, run_measured
from bench.wrk import Body

INPUT_NAME = "image"  # the service's v2 input tensor: the encoded image file, one element
DATATYPE = "BYTES"
GRPC_SERVICE = "inference.GRPCInferenceService"
ROOT = Path(__file__).resolve().parent.parent
PERF_ANALYZER_DIR = ROOT / ".bench" / "perf_analyzer"  # where make bench-tools puts it
CUDART_DIR = PERF_ANALYZER_DIR / "cudart" / "nvidia" / "cuda_runtime" / "lib"  # the binary links libcudart.so.12


# --- gRPC messages -------------------------------------------------------------------------------
# The subset of grpc_predict_v2.proto (package inference) this bench sends and reads, with the
# protocol's field numbers, built into a private descriptor pool: no generated stubs to keep in step,
# and no clash with the service's own stubs if a test process imports both.


@cache
def messages() -> dict[str, Any]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED

    def msg(name: str, *fields: tuple[str, int, int, int, str], nested: tuple = ()) -> descriptor_pb2.DescriptorProto:
        m = descriptor_pb2.DescriptorProto(name=name)
        for fname, number, ftype, label, type_name in fields:
            added = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:  # an empty type_name still counts as set, which protobuf refuses for scalars
                added.type_name = type_name
        m.nested_type.extend(nested)
        return m

    s, b, i64, boolean, m_ = f.TYPE_STRING, f.TYPE_BYTES, f.TYPE_INT64, f.TYPE_BOOL, f.TYPE_MESSAGE
    contents = msg("InferTensorContents", ("bytes_contents", 8, b, rep, ""))
    tensor = (("name", 1, s, opt, ""), ("datatype", 2, s, opt, ""), ("shape", 3, i64, rep, ""))
    header = (("model_name", 1, s, opt, ""), ("model_version", 2, s, opt, ""), ("id", 3, s, opt, ""))
    request = msg(
        "ModelInferRequest",
        *header,
        ("inputs", 5, m_, rep, ".inference.ModelInferRequest.InferInputTensor"),
        ("raw_input_contents", 7, b, rep, ""),
        nested=(msg("InferInputTensor", *tensor, ("contents", 5, m_, opt, ".inference.InferTensorContents")),),
    )
    response = msg(
        "ModelInferResponse",
        *header,
        ("outputs", 5, m_, rep, ".inference.ModelInferResponse.InferOutputTensor"),
        ("raw_output_contents", 6, b, rep, ""),
        nested=(msg("InferOutputTensor", *tensor, ("contents", 5, m_, opt, ".inference.InferTensorContents")),),
    )
    files = descriptor_pb2.FileDescriptorProto(name="bench_oip_v2.proto", package="inference", syntax="proto3")
    files.message_type.extend(
        [
            contents,
            request,
            response,
            msg("ServerLiveRequest"),
            msg("ServerLiveResponse", ("live", 1, boolean, opt, "")),
        ]
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(files)
    names = ("ModelInferRequest", "ModelInferResponse", "ServerLiveRequest", "ServerLiveResponse")
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{n}")) for n in names}


def serialized_bytes_tensor(*elements: bytes) -> bytes:
    """A BYTES tensor as raw content (Triton's convention for raw/binary data): each element
    prefixed by its length, 4 bytes little-endian."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def grpc_requests(model: str, input_name: str, image: bytes) -> list[tuple[str, bytes]]:
    """ModelInferRequest forms, most common first: typed ``bytes_contents``, then raw contents."""
    m = messages()
    typed = m["ModelInferRequest"](model_name=model)
    t = typed.inputs.add(name=input_name, datatype=DATATYPE, shape=[1])
    t.contents.bytes_contents.append(image)
    raw = m["ModelInferRequest"](model_name=model, raw_input_contents=[serialized_bytes_tensor(image)])
    raw.inputs.add(name=input_name, datatype=DATATYPE, shape=[1])
    return [("bytes_contents", typed.SerializeToString()), ("raw_input_contents", raw.SerializeToString())]


def http_bodies(model: str, input_name: str, image: bytes, workdir: Path) -> list[tuple[str, Body]]:
    """``/v2/models/{model}/infer`` bodies, JSON first: the image base64 in ``data`` (the form most
    v2 servers take for bytes in JSON), the same with ``content_type: base64`` on the tensor (MLServer's
    convention), then the binary tensor extension (what perf_analyzer sends)."""
    path = f"/v2/models/{model}/infer"
    b64 = base64.b64encode(image).decode("ascii")
    tensor = {"name": input_name, "shape": [1], "datatype": DATATYPE, "data": [b64]}
    raw = serialized_bytes_tensor(image)
    head = json.dumps(
        {
            "inputs": [
                {"name": input_name, "shape": [1], "datatype": DATATYPE, "parameters": {"binary_data_size": len(raw)}}
            ]
        }
    ).encode()
    forms = {
        "json-base64": (json.dumps({"inputs": [tensor]}).encode(), "application/json", {}),
        "json-base64-content-type": (
            json.dumps({"inputs": [{**tensor, "parameters": {"content_type": "base64"}}]}).encode(),
            "application/json",
            {},
        ),
        "binary-extension": (
            head + raw,
            "application/octet-stream",
            {"Inference-Header-Content-Length": str(len(head))},
        ),
    }
    out = []
    for name, (data, content_type, headers) in forms.items():
        file = workdir / f"body.v2-{model}-{name}"
        file.write_bytes(data)
        out.append((name, Body(file, content_type, path, headers)))
    return out


# --- perf_analyzer ------------------------------------------------------------------------------


def perf_analyzer() -> tuple[list[str] | None, dict[str, str], str | None]:
    """(command, environment, why not): the binary when it runs here."""
    candidates = [os.environ.get("BENCH_PERF_ANALYZER"), shutil.which("perf_analyzer")]
    candidates.append(str(PERF_ANALYZER_DIR / "bin" / "perf_analyzer"))
    env = dict(os.environ)
    if CUDART_DIR.is_dir():
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(CUDART_DIR), env.get("LD_LIBRARY_PATH")]))
    for path in candidates:
        if not path or not Path(path).is_file():
            continue
        code, text, _, _ = run_measured([path, "--version"], env, 20)
        if code == 0:
            return [path], env, None
        return None, env, f"perf_analyzer at {path} does not run here ({code}): {text.strip()[-300:]}"
    return None, env, "perf_analyzer not installed (make bench-tools, or BENCH_PERF_ANALYZER=/path)"


def run_perf_analyzer(
    tool: list[str],
    env: dict[str, str],
    *,
    protocol: str,
    url: str,
    model: str,
    input_name: str,
    data_file: Path,
    concurrency: int,
    seconds: float,
    workdir: Path,
) -> dict:
    """One closed-loop level: 3 time windows of seconds/3 each, accepted as they come (``-s`` 1000%:
    on a shared machine perf_analyzer's stability check would otherwise retry for minutes)."""
    out = workdir / f"pa-{uuid.uuid4().hex[:8]}.csv"
    window_ms = max(200, int(seconds * 1000 / 3))
    cmd = [*tool, "-m", model, "-u", url, "-i", protocol, "--concurrency-range", f"{concurrency}:{concurrency}"]
    cmd += ["--input-data", str(data_file), "--shape", f"{input_name}:1", "-p", str(window_ms)]
    cmd += ["-s", "1000", "--max-trials", "3", "--measurement-mode", "time_windows", "-f", str(out)]
    code, text, cpu_s, wall = run_measured(cmd, env, seconds * 3 + 60)
    if code != 0 or not out.exists():
        lines = [ln for ln in text.splitlines() if ln.strip()]
        raise RuntimeError(f"perf_analyzer failed ({code}): {' | '.join(lines[-3:])[-600:]}")
    with out.open() as f:
        [row] = list(csv.DictReader(f))[-1:]
    out.unlink()
    ips = float(row["Inferences/Second"])
    counts = re.findall(r"Request count: (\d+)", text)
    requests = int(counts[-1]) if counts else round(ips * 3 * window_ms / 1000)
    return {
        "requests": requests,
        "duration_us": int(1e6 * requests / ips) if ips else int(3 * window_ms * 1000),
        "bytes": 0,
        "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0},  # it exits non-zero on errors
        "latency_us": {k: int(row[f"{k} latency"]) for k in ("p50", "p90", "p95", "p99")} | {"max": None},
        "cpu_s": cpu_s,
        "wall_s": wall,
        "tool": "perf_analyzer",
    }


def perf_analyzer_data(input_name: str, image: bytes, workdir: Path) -> Path:
    """``--input-data``: ``b64`` is sent as the tensor's raw bytes, so it holds the serialised tensor."""
    path = workdir / "perf_analyzer-input.json"
    b64 = base64.b64encode(serialized_bytes_tensor(image)).decode("ascii")
    path.write_text(json.dumps({"data": [{input_name: {"b64": b64, "shape": [1]}}]}))
    return path


# --- the gRPC fallback load generator -----------------------------------------------------------


async def _grpc_load(target: str, request: bytes, connections: int, seconds: float) -> dict:
    import grpc

    method = f"/{GRPC_SERVICE}/ModelInfer"
    lat: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    requests = 0
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(connections)]
    started = time.monotonic()
    end = started + seconds

    async def worker(channel: grpc.aio.Channel) -> None:
        nonlocal requests
        call = channel.unary_unary(method)  # no serialisers: bytes in, bytes out
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                await call(request, timeout=30)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    errors["timeout"] += 1
                elif code == grpc.StatusCode.UNAVAILABLE:
                    errors["connect"] += 1
                else:
                    requests += 1
                    errors["status"] += 1
                await asyncio.sleep(0.01)  # a refusing server must not turn this into a busy loop
                continue
            if time.monotonic() > end:
                break  # like wrk, only what completes inside the window counts
            requests += 1
            lat.append(time.monotonic() - t0)

    try:
        await asyncio.gather(*(worker(c) for c in channels))
    finally:
        for c in channels:
            await c.close()
    duration = time.monotonic() - started
    lat.sort()

    def pct(p: float) -> int:
        return int(1e6 * lat[min(len(lat) - 1, int(p / 100 * len(lat)))]) if lat else 0

    return {
        "requests": requests,
        "duration_us": int(duration * 1e6),
        "bytes": 0,
        "errors": errors,
        "latency_us": {
            "min": int(1e6 * lat[0]) if lat else 0,
            "mean": 1e6 * sum(lat) / len(lat) if lat else 0,
            "max": int(1e6 * lat[-1]) if lat else 0,
            "p50": pct(50), "p90": pct(90), "p95": pct(95), "p99": pct(99),
        },
    }  # fmt: skip


def grpc_load(target: str, request_file: Path, connections: int, seconds: float, workdir: Path) -> dict:
    """One closed-loop gRPC level in a subprocess (its CPU is accounted like wrk's)."""
    out = workdir / f"grpc-{uuid.uuid4().hex[:8]}.json"
    cmd = [sys.executable, "-m", "bench.oip", "grpc-load", target, str(request_file), str(connections)]
    cmd += [str(seconds), str(out)]
    code, text, cpu_s, wall = run_measured(cmd, {**os.environ}, seconds + 60)
    if code != 0 or not out.exists():
        raise RuntimeError(f"grpc-load failed ({code}): {text[-1500:]}")
    result: dict = json.loads(out.read_text())
    out.unlink()
    return {**result, "cpu_s": cpu_s, "wall_s": wall, "tool": "bench.oip grpc-load"}


# --- finding out what the service accepts -------------------------------------------------------


@dataclass
class Protocol:
    """One protocol's verdict: usable (``form`` set) or not (``reason``), and which tool drives it."""

    available: bool = False
    reason: str | None = None
    form: str | None = None
    tool: str | None = None
    tool_note: str | None = None  # why perf_analyzer is not the tool, when it is not
    body: Body | None = field(default=None, repr=False)  # HTTP: the accepted body (wrk)
    request_file: Path | None = None  # gRPC: the accepted serialised request


@dataclass
class OipPlan:
    model: str
    input_name: str = INPUT_NAME
    http: Protocol = field(default_factory=Protocol)
    grpc: Protocol = field(default_factory=Protocol)
    grpc_target: str | None = None
    pa_data: Path | None = None
    pa_cmd: list[str] | None = field(default=None, repr=False)
    pa_env: dict[str, str] = field(default_factory=dict, repr=False)

    def as_json(self) -> dict:
        def protocol(p: Protocol) -> dict:
            d = asdict(p)
            d.pop("body", None)
            d["request_file"] = str(p.request_file) if p.request_file else None
            return d

        return {
            "model": self.model,
            "input_name": self.input_name,
            "http": protocol(self.http),
            "grpc": protocol(self.grpc),
            "grpc_target": self.grpc_target,
        }


def _grpc_call(target: str, method: str, request: bytes, timeout: float = 30.0) -> tuple[str, bytes | str]:
    """One unary call: ("OK", response bytes) or (status code name, details)."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        try:
            return "OK", channel.unary_unary(f"/{GRPC_SERVICE}/{method}")(request, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details() or ""


def prepare(port: int, grpc_port: int | None, model: str, image: bytes, workdir: Path) -> OipPlan:
    plan = OipPlan(model)
    status = 0
    try:
        status, _ = http_get(port, "/v2", timeout=10)
    except OSError as exc:
        plan.http.reason = f"GET /v2 failed: {exc}"
    if status == 404:
        plan.http.reason = "the service answers 404 on /v2: no Open Inference Protocol here (yet)"
    elif status and status != 200:
        plan.http.reason = f"GET /v2 answered {status}"
    if status == 200:
        with_meta = _model_metadata(port, model)
        if with_meta.get("inputs"):
            plan.input_name = with_meta["inputs"][0].get("name") or INPUT_NAME
        tried = []
        for form, body in http_bodies(model, plan.input_name, image, workdir):
            code, text = http_request(
                port, "POST", body.path, body.file.read_bytes(), {"Content-Type": body.content_type, **body.headers}, 60
            )
            ok = code == 200 and b'"outputs"' in text
            tried.append(f"{form}: {code} {text[:160].decode(errors='replace')}")
            if ok:
                plan.http = Protocol(True, form=form, body=body, tool="wrk")
                break
        else:
            plan.http.reason = "no request form accepted: " + " | ".join(tried)
    if grpc_port is None:
        plan.grpc.reason = "no gRPC port configured"
    else:
        plan.grpc_target = f"127.0.0.1:{grpc_port}"
        m = messages()
        code, reply = _grpc_call(plan.grpc_target, "ServerLive", m["ServerLiveRequest"]().SerializeToString(), 10)
        if code != "OK":
            plan.grpc.reason = f"ServerLive on {plan.grpc_target} (ML_API_GRPC_PORT): {code} {reply!s:.200}"
        else:
            tried = []
            for form, request in grpc_requests(model, plan.input_name, image):
                code, reply = _grpc_call(plan.grpc_target, "ModelInfer", request, 60)
                if code == "OK" and isinstance(reply, bytes) and m["ModelInferResponse"].FromString(reply).outputs:
                    file = workdir / f"grpc-{model}-{form}.bin"
                    file.write_bytes(request)
                    plan.grpc = Protocol(True, form=form, request_file=file, tool="bench.oip grpc-load")
                    break
                tried.append(f"{form}: {code} {reply!s:.160}")
            else:
                plan.grpc.reason = "no request form accepted: " + " | ".join(tried)
    if plan.http.available or plan.grpc.available:
        _try_perf_analyzer(plan, port, image, workdir)
    return plan


def _model_metadata(port: int, model: str) -> dict:
    try:
        code, text = http_get(port, f"/v2/models/{model}", timeout=10)
        return json.loads(text) if code == 200 else {}
    except (OSError, ValueError):
        return {}


def _try_perf_analyzer(plan: OipPlan, port: int, image: bytes, workdir: Path) -> None:
    """Use perf_analyzer for a protocol only when a one-second run against this service succeeds."""
    cmd, env, why = perf_analyzer()
    plan.pa_data = perf_analyzer_data(plan.input_name, image, workdir)
    for name, proto, url in (("http", plan.http, f"127.0.0.1:{port}"), ("grpc", plan.grpc, plan.grpc_target)):
        if not proto.available:
            continue
        if cmd is None:
            proto.tool_note = why
            continue
        try:
            run_perf_analyzer(
                cmd, env, protocol=name, url=url or "", model=plan.model, input_name=plan.input_name,
                data_file=plan.pa_data, concurrency=1, seconds=1.0, workdir=workdir,
            )  # fmt: skip
        except RuntimeError as exc:
            proto.tool_note = f"perf_analyzer cannot drive this service: {exc}"
            continue
        proto.tool, proto.tool_note = "perf_analyzer", None
        plan.pa_cmd, plan.pa_env = cmd, env


def main(argv: list[str]) -> int:
    if argv[:1] == ["grpc-load"] and len(argv) == 6:
        target, request_file, connections, seconds, out = argv[1:]
        result = asyncio.run(_grpc_load(target, Path(request_file).read_bytes(), int(connections), float(seconds)))
        Path(out).write_text(json.dumps(result))
        return 0
    print("usage: python -m bench.oip grpc-load TARGET REQUEST_FILE CONNECTIONS SECONDS OUT_JSON", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
