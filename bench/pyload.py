"""Fallback load generator when wrk is not installed: asyncio, raw HTTP/1.1 keep-alive sockets.

Same model as ``wrk -t1 -cN``: N connections, each with one request in flight, for a fixed time;
writes the same JSON summary as the wrk Lua script. It costs more CPU than wrk (reported the same
way), so prefer wrk on small machines.
Usage: python -m bench.pyload URL BODY_FILE CONTENT_TYPE CONNECTIONS SECONDS OUT_JSON
(extra headers from ``BENCH_HEADERS``, one "Name: value" per line, as for the wrk script).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from urllib.parse import urlsplit


async def _worker(host: str, port: int, request: bytes, end: float, lat: list[float], errors: dict) -> None:
    reader = writer = None
    while time.monotonic() < end:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            started = time.monotonic()
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if time.monotonic() > end:
                break  # like wrk, only what completes inside the window counts
            lat.append(time.monotonic() - started)
            if status >= 400:
                errors["status"] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            errors["read"] += 1
            writer = None
        except TimeoutError:
            errors["timeout"] += 1
            writer = None
    if writer is not None:
        writer.close()


async def main(url: str, body_file: str, content_type: str, connections: int, seconds: float, out: str) -> None:
    parts = urlsplit(url)
    body = open(body_file, "rb").read()  # noqa: SIM115
    extra = "".join(f"{line.strip()}\r\n" for line in os.environ.get("BENCH_HEADERS", "").splitlines() if line.strip())
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    lat: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    started = time.monotonic()
    end = started + seconds
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    await asyncio.gather(*(_worker(host, port, request, end, lat, errors) for _ in range(connections)))
    duration = time.monotonic() - started
    lat.sort()

    def pct(p: float) -> int:
        return int(1e6 * lat[min(len(lat) - 1, int(p / 100 * len(lat)))]) if lat else 0

    summary = {
        "requests": len(lat),
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
    with open(out, "w") as f:
        json.dump(summary, f)


if __name__ == "__main__":
    u, b, ct, c, s, o = sys.argv[1:7]
    asyncio.run(main(u, b, ct, int(c), float(s), o))
