"""Digits with the labels the bundled model gives them in-process, and server-log helpers."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from service.training.digits_data import digit_png, load_split
from tests.inprocess import bundled_model, classify_in_process
from tests.servers import Server


@dataclass(frozen=True)
class Digit:
    png: bytes
    label: str  # the in-process model's top-1: what the service must answer
    confidence: float


@functools.cache
def digit_samples(count: int = 200) -> tuple[Digit, ...]:
    """The first ``count`` held-out digits (never seen in training) as 32x32 PNGs."""
    _, _, images, _ = load_split()
    pngs = [digit_png(image) for image in images[:count]]
    results = classify_in_process(bundled_model(), pngs, top_k=1)
    return tuple(
        Digit(png, r.predictions[0].label, r.predictions[0].confidence) for png, r in zip(pngs, results, strict=True)
    )


def access_lines(srv: Server, request_id: str) -> list[dict[str, Any]]:
    return [r for r in srv.log_records() if r.get("logger") == "service.access" and r.get("request_id") == request_id]


def settle_access_lines(
    srv: Server, request_id: str, *, at_least: int = 1, quiet_s: float = 2.0
) -> list[dict[str, Any]]:
    """The request's access lines once at least ``at_least`` are there and none came for ``quiet_s``.

    Each line is written after its response; a retry would add another. Bounded: 30 s at most.
    """
    deadline = time.monotonic() + 30
    lines = access_lines(srv, request_id)
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        current = access_lines(srv, request_id)
        if len(current) != len(lines):
            lines, last_change = current, time.monotonic()
        if len(lines) >= at_least and time.monotonic() - last_change >= quiet_s:
            break
    return lines
