"""wrk as the load generator: a C event loop (one thread) with a Lua script that POSTs a fixed body.

wrk keeps exactly ``connections`` requests in flight (a closed loop: concurrency N), costs a few
percent of one core at these rates, and its ``done`` hook writes the summary and latency
percentiles as JSON. Its own CPU time comes from ``wait4``'s rusage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

LUA = r"""
local function env(name) local v = os.getenv(name); assert(v, name .. " unset"); return v end
local f = assert(io.open(env("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = env("BENCH_CONTENT_TYPE")

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


def write_bodies(image: bytes, workdir: Path) -> dict[str, tuple[Path, str]]:
    """The two upload forms of the same JPEG: a raw ``image/jpeg`` body and multipart ``file``."""
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
    (workdir / "post.lua").write_text(LUA)
    return {"raw": (raw, "image/jpeg"), "multipart": (multipart, f"multipart/form-data; boundary={boundary}")}


def run_wrk(
    url: str, body: tuple[Path, str], connections: int, seconds: float, workdir: Path, timeout_s: int = 30
) -> dict:
    out = workdir / f"wrk-{uuid.uuid4().hex[:8]}.json"
    env = {**os.environ, "BENCH_BODY_FILE": str(body[0]), "BENCH_CONTENT_TYPE": body[1], "BENCH_OUT": str(out)}
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
            str(body[0]),
            body[1],
            str(connections),
            str(seconds),
            str(out),
        ]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # wait4 gives wrk's own CPU use; the extra margin bounds a hung wrk.
    deadline = started + seconds + timeout_s + 10
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    text = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"wrk failed ({proc.returncode}): {text[-2000:]}")
    result = json.loads(out.read_text())
    out.unlink()
    result["cpu_s"] = rusage.ru_utime + rusage.ru_stime
    result["wall_s"] = wall
    return result
