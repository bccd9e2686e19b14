"""What the e2e suite runs against, and the HTTP helpers its tests share.

A target is a running ml-api reached over HTTP on loopback:
- ``container``: the image (``make image``) run by Docker, hardened, on 127.0.0.1 (e2e/container.py);
- ``kind``: the chart installed on a kind cluster by ``k8s/e2e/cluster.sh up`` (= ``make up``),
  reached through ``kubectl port-forward`` (e2e/kind.py);
- ``url``: any deployment already reachable at ``E2E_BASE_URL`` (e.g. after ``make port-forward``),
  and over gRPC at ``E2E_GRPC_TARGET`` (host:port) when that is set.
Select with ``E2E_TARGETS=container,kind`` or ``pytest --e2e-targets=...``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

KNOWN_TARGETS = ("container", "kind", "url")
# `make test` runs both: the container where Docker exists, kind where kind can create a cluster.
DEFAULT_TARGETS = "container,kind"


def parse_targets(spec: str) -> list[str]:
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = sorted(set(names) - set(KNOWN_TARGETS))
    if unknown:
        raise ValueError(f"unknown e2e target(s) {unknown}; known: {', '.join(KNOWN_TARGETS)}")
    return list(dict.fromkeys(names))


def selected_targets(option: str | None) -> list[str]:
    return parse_targets(option or os.environ.get("E2E_TARGETS") or DEFAULT_TARGETS)


@dataclass
class Target:
    """A running service. ``refresh`` re-establishes the path to it (a port-forward that died when
    its pod was replaced) before each test; ``logs`` is for failure reports. ``grpc_target`` is the
    host:port of its gRPC server, "" where the target does not reach one."""

    name: str
    base_url: str
    grpc_target: str = ""
    logs: Callable[[], str] = field(default=lambda: "")
    refresh: Callable[[], None] = field(default=lambda: None)


def wait_ready(base_url: str, timeout_s: float = 180.0) -> None:
    """Poll /health/ready until 200, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(f"{base_url}/health/ready", timeout=3)
            if resp.status_code == 200:
                return
            last = f"{resp.status_code} {resp.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise AssertionError(f"{base_url} not ready after {timeout_s:.0f}s: {last}")


def sse_events(response: httpx.Response, max_events: int = 1000) -> Iterator[str]:
    """The ``data:`` payloads of a text/event-stream response, one per event, in order."""
    data: list[str] = []
    count = 0
    for line in response.iter_lines():
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line == "" and data:
            yield "\n".join(data)
            data = []
            count += 1
            if count >= max_events:
                return
    if data:
        yield "\n".join(data)


def sse_json(response: httpx.Response) -> list[Any]:
    """Every event of an SSE response as JSON, ``[DONE]`` kept as the string."""
    return [payload if payload == "[DONE]" else json.loads(payload) for payload in sse_events(response)]
