"""Shared plumbing of the model-operations benchmarks (bench/shadow.py, bench/priorities.py,
bench/reload.py): one ``python -m service`` on 127.0.0.1 reading a ConfigMap-style models file, and
bounded closed-loop clients (each waits for its answer before the next request)."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import free_port, system_busy_seconds

ROOT = Path(__file__).resolve().parent.parent
RESNET18 = {
    "source": "torchvision",
    "arch": "resnet18",
    "weights": "IMAGENET1K_V1",  # labels and preprocessing from the weights' metadata; nothing downloaded
    "pretrained": False,
}


class ModelsMount:
    """kubelet's ConfigMap layout: ``models.json -> ..data/models.json``, updated by a ``..data`` swap."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.updates = 0

    @property
    def file(self) -> Path:
        return self.root / "models.json"

    def write(self, content: Any) -> float:
        """Swap in ``content``; returns the monotonic time the swap happened."""
        self.updates += 1
        target = self.root / f"..update_{self.updates:03d}"
        target.mkdir()
        (target / "models.json").write_text(json.dumps(content))
        link = self.root / "..data_tmp"
        link.symlink_to(target.name)
        os.replace(link, self.root / "..data")
        swapped = time.monotonic()
        if not self.file.is_symlink():
            self.file.symlink_to("..data/models.json")
        return swapped


@dataclass
class Service:
    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def metrics(self) -> str:
        return httpx.get(f"{self.base}/metrics", timeout=10).text

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(
            sample.value
            for family in text_string_to_metric_families(self.metrics())
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def generation(self) -> int:
        return int(httpx.get(f"{self.base}/api/v1/models", timeout=10).json()["config"]["generation"])

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 180.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the service exited: {self.log.read_text()[-2000:]}")
            try:
                value = predicate()
            except httpx.HTTPError:
                value = None
            if value:
                return value
            time.sleep(0.05)
        raise SystemExit(f"timed out waiting for {what}")

    def log_lines(self, pattern: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if re.search(pattern, line):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out


@contextmanager
def service(work: Path, models: Any, env: dict[str, str] | None = None) -> Iterator[tuple[Service, ModelsMount]]:
    mount = ModelsMount(work / "models")
    mount.write(models)
    port = free_port()
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ML_API_", "OTEL_", "PROMETHEUS_"))},
        "ML_API_HOST": "127.0.0.1",
        "ML_API_PORT": str(port),
        "ML_API_LOG_FORMAT": "json",
        "ML_API_MODELS_FILE": str(mount.file),
        "OTEL_TRACES_EXPORTER": "none",
        **(env or {}),
    }
    log = work / "service.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=sink
        )
        svc = Service(f"http://127.0.0.1:{port}", process, log)
        try:
            svc.wait(lambda: httpx.get(f"{svc.base}/health/ready", timeout=2).status_code == 200, "readiness")
            yield svc, mount
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@dataclass
class Sample:
    started: float
    seconds: float
    status: int
    version: str | None


@dataclass
class ClosedLoop:
    """``clients`` threads, each sending ``request(http)`` and waiting for it, until stopped or bounded."""

    base: str
    request: Callable[[httpx.Client], httpx.Response]
    clients: int = 1
    max_requests: int = 100_000
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as http:
            for _ in range(self.max_requests):
                if self._stop.is_set():
                    return
                started = time.monotonic()
                try:
                    response = self.request(http)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                version = None
                if response.status_code == 200:
                    version = response.json().get("model_version")
                self.samples.append(Sample(started, time.monotonic() - started, response.status_code, version))

    def start(self) -> ClosedLoop:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)


def run_for(loop: ClosedLoop, seconds: float) -> tuple[list[Sample], float]:
    """Run ``loop`` for ``seconds``; returns its samples and the other-than-us CPU busy fraction."""
    busy0, t0 = system_busy_seconds(), time.monotonic()
    loop.start()
    time.sleep(seconds)
    loop.stop()
    return loop.samples, (system_busy_seconds() - busy0) / (time.monotonic() - t0)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    ordered = sorted(values)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


def upload(image: bytes, content_type: str = "image/jpeg", **params: str) -> Callable[[httpx.Client], httpx.Response]:
    def send(http: httpx.Client) -> httpx.Response:
        return http.post("/api/v1/predict/upload", content=image, headers={"content-type": content_type}, params=params)

    return send
