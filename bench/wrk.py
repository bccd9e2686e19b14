"""wrk as the load generator: a C event loop (one thread) with a Lua script that POSTs a fixed body.

wrk keeps exactly ``connections`` requests in flight (a closed loop: concurrency N), costs a few
percent of one core at these rates, and its ``done`` hook writes the summary and latency
percentiles as JSON. Its own CPU time comes from ``wait4``'s rusage.

Every body is a :class:`Body`: the file sent, its content type, extra headers (the Open Inference
Protocol's binary form needs ``Inference-Header-Content-Length``) and the path it is POSTed to.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import run_measured

LUA = r"""
local function env(name) local v = os.getenv(name); assert(v, name .. " unset"); return v end
local f = assert(io.open(env("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = env("BENCH_CONTENT_TYPE")
-- extra headers, one "Name: value" per line
for name, value in (os.getenv("BENCH_HEADERS") or ""):gmatch("([^:\n]+):%s*([^\n]*)") do
  wrk.headers[name] = value
end

function done(summary, latency, requests)
  local e = summary.errors
  local out = assert(io.open(env("BENCH_OUT"), "w"))
  out:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p95":%d,"p99":%d}}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99)))
  out:close()
end
"""


def wrk_path() -> str | None:
    """wrk when installed (apt-get install wrk / brew install wrk), else None: bench.pyload is used."""
    if os.environ.get("BENCH_LOADGEN") == "python":
        return None
    return shutil.which("wrk")


def loadgen_name() -> str:
    return "wrk -t1 (closed loop)" if wrk_path() else "bench.pyload (asyncio fallback, wrk not installed)"


UPLOAD_PATH = "/api/v1/predict/upload"  # raw image/* body or multipart "file"
JSON_PATH = "/api/v1/predict"  # {"image_base64": ...}


@dataclass(frozen=True)
class Body:
    """One request body on disk and how it is sent."""

    file: Path
    content_type: str
    path: str  # URL path it is POSTed to
    headers: dict[str, str] = field(default_factory=dict)


def write_bodies(image: bytes, workdir: Path) -> dict[str, Body]:
    """The three /api/v1 forms of the same JPEG: a raw ``image/jpeg`` upload, a multipart ``file``
    upload, and the JSON body of ``POST /api/v1/predict`` with the file as ``image_base64``."""
    workdir.mkdir(parents=True, exist_ok=True)
    raw = workdir / "body.raw"
    raw.write_bytes(image)
    boundary = "ml-api-bench-9f1c2e"  # fixed: concurrent runs rewrite the same files
    multipart = workdir / "body.multipart"
    multipart.write_bytes(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="image.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    as_json = workdir / "body.base64.json"
    as_json.write_text(json.dumps({"image_base64": base64.b64encode(image).decode("ascii")}))
    (workdir / "post.lua").write_text(LUA)
    return {
        "raw": Body(raw, "image/jpeg", UPLOAD_PATH),
        "multipart": Body(multipart, f"multipart/form-data; boundary={boundary}", UPLOAD_PATH),
        "base64": Body(as_json, "application/json", JSON_PATH),
    }


def run_wrk(url: str, body: Body, connections: int, seconds: float, workdir: Path, timeout_s: int = 30) -> dict:
    """``url`` is the server's base (``http://127.0.0.1:PORT``); the body says the path."""
    out = workdir / f"wrk-{uuid.uuid4().hex[:8]}.json"
    env = {
        **os.environ,
        "BENCH_BODY_FILE": str(body.file),
        "BENCH_CONTENT_TYPE": body.content_type,
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in body.headers.items()),
        "BENCH_OUT": str(out),
    }
    url = url.rstrip("/") + body.path
    if not (workdir / "post.lua").exists():
        (workdir / "post.lua").write_text(LUA)
    wrk = wrk_path()
    cmd = [
        wrk or "",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(workdir / "post.lua"),
        url,
    ]
    if wrk is None:
        cmd = [
            sys.executable,
            "-m",
            "bench.pyload",
            url,
            str(body.file),
            body.content_type,
            str(connections),
            str(seconds),
            str(out),
        ]
    code, text, cpu_s, wall = run_measured(cmd, env, seconds + timeout_s + 10)  # the margin bounds a hung wrk
    if code != 0 or not out.exists():
        raise RuntimeError(f"wrk failed ({code}): {text[-2000:]}")
    result = json.loads(out.read_text())
    out.unlink()
    result["cpu_s"] = cpu_s
    result["wall_s"] = wall
    result["tool"] = "wrk" if wrk else "bench.pyload"
    return result
