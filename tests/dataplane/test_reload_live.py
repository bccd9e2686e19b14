"""A real server whose models file (a ConfigMap-style mount) is rewritten under load: no request fails,
readiness never drops, the new version answers, the removed one's memory and series are gone, and a
broken file keeps the old set serving while it is reported."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import Server, server

pytestmark = pytest.mark.slow

CLIENTS = 3
MAX_REQUESTS = 4000  # per client: the bound if the test's stop signal never came
REQUEST_TIMEOUT_S = 30.0
STEP_TIMEOUT_S = 90.0


class ConfigMapMount:
    """kubelet's layout of a ConfigMap volume: ``models.json -> ..data/models.json``, ``..data -> ..<ts>``;
    an update writes a new timestamped directory and renames a new ``..data`` symlink over the old."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir()
        self.updates = 0

    @property
    def file(self) -> Path:
        return self.root / "models.json"

    def write(self, content: Any) -> None:
        self.updates += 1
        target = self.root / f"..2026_01_01_00_00_{self.updates:02d}.000000001"
        target.mkdir()
        (target / "models.json").write_text(content if isinstance(content, str) else json.dumps(content))
        link = self.root / "..data_tmp"
        link.symlink_to(target.name)
        os.replace(link, self.root / "..data")
        if not self.file.is_symlink():
            self.file.symlink_to("..data/models.json")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@dataclass
class Load:
    """Closed-loop clients (each waits for its answer before the next request) plus a readiness poller."""

    base: str
    png: bytes
    failures: list[str] = field(default_factory=list)
    versions: list[tuple[float, str]] = field(default_factory=list)
    not_ready: list[int] = field(default_factory=list)
    requests: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def client(self) -> None:
        with httpx.Client(base_url=self.base, timeout=REQUEST_TIMEOUT_S) as http:
            for _ in range(MAX_REQUESTS):
                if self.stop.is_set():
                    return
                try:
                    response = http.post(
                        "/api/v1/predict/upload", content=self.png, headers={"content-type": "image/png"}
                    )
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.requests += 1
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
                else:
                    self.versions.append((time.monotonic(), response.json()["model_version"]))

    def readiness(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5) as http:
            for _ in range(MAX_REQUESTS):
                if self.stop.wait(0.05):
                    return
                status = http.get("/health/ready").status_code
                if status != 200:
                    self.not_ready.append(status)


@pytest.fixture
def running(tmp_path: Path, digit_pngs: list[bytes]) -> Iterator[tuple[Server, ConfigMapMount, Load]]:
    mount = ConfigMapMount(tmp_path / "mount")
    mount.write([{"name": "digits", "version": "1"}])
    env = {"ML_API_MODELS_FILE": str(mount.file), "ML_API_MODELS_FILE_POLL_S": "0.2"}
    with server("uvicorn", env, tmp_path / "stderr.log") as srv:
        load = Load(srv.base, digit_pngs[0])
        threads = [threading.Thread(target=load.client, daemon=True) for _ in range(CLIENTS)]
        threads.append(threading.Thread(target=load.readiness, daemon=True))
        for thread in threads:
            thread.start()
        try:
            yield srv, mount, load
        finally:
            load.stop.set()
            for thread in threads:
                thread.join(timeout=REQUEST_TIMEOUT_S + 5)


def models(srv: Server) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{srv.base}/api/v1/models", timeout=10).json()
    return body


def wait(predicate: Any, what: str, timeout: float = STEP_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def metrics(srv: Server) -> str:
    return httpx.get(f"{srv.base}/metrics", timeout=10).text


def test_rewriting_the_models_file_under_load(running: tuple[Server, ConfigMapMount, Load], tmp_path: Path) -> None:
    srv, mount, load = running
    pid = srv.process.pid
    wait(lambda: load.requests > 50, "traffic to warm up")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(str(i) for i in range(10)) + "\n")
    big = {
        "name": "digits",
        "version": "big",
        "source": "torchvision",
        "arch": "resnet18",  # 11.7 M parameters: 45 MiB of float32 weights to see come and go
        "pretrained": False,
        "labels": str(labels),
        "input_size": 32,
        "resize_size": 32,
    }
    before = rss_mib(pid)

    # 1. Add a big version (listed first: version 1 still serves unversioned requests).
    mount.write([big, {"name": "digits", "version": "1"}])
    wait(lambda: models(srv)["config"]["generation"] == 2, "generation 2 (big loaded)")
    assert {m["version"]: m["loaded"] for m in models(srv)["models"]} == {"big": True, "1": True}
    loaded = rss_mib(pid)
    assert loaded - before > 30, f"loading resnet18 grew RSS by {loaded - before:.0f} MiB only"

    # 2. Replace it: version 2 (same bundled weights) takes the unversioned traffic, big goes.
    mount.write([{"name": "digits", "version": "1"}, {"name": "digits", "version": "2"}])
    wait(lambda: models(srv)["config"]["generation"] == 3, "generation 3")
    switched = time.monotonic()
    wait(lambda: 'version="big"' not in metrics(srv), "the big version's series to leave /metrics")
    after = rss_mib(pid)
    wait(lambda: any(t > switched and v == "2" for t, v in load.versions), "version 2 to answer")
    assert all(v == "2" for t, v in load.versions if t > switched + 1.0), "version 1 still answered unversioned"
    # Its weights were returned, not kept: within a quarter of what loading it took.
    assert after - before < 0.25 * (loaded - before), (
        f"RSS before {before:.0f}, with big {loaded:.0f}, after removing it {after:.0f} MiB"
    )

    # 3. A broken file: the current set goes on serving, the rejection is shown and counted.
    mount.write("[{broken")
    config = wait(
        lambda: (c := models(srv)["config"])["last_outcome"] == "invalid" and c, "the broken file's rejection"
    )
    assert config["in_sync"] is False and config["generation"] == 3 and "not valid JSON" in config["last_error"]
    assert 'ml_api_model_config_reloads_total{outcome="invalid"} 1.0' in metrics(srv)
    assert "ml_api_model_config_in_sync 0.0" in metrics(srv)
    lines = srv.wait_for_log(lambda r: r.get("level") == "ERROR" and "rejected (invalid)" in r.get("message", ""))
    assert lines and str(mount.file) in lines[0]["message"]
    served = load.requests
    wait(lambda: load.requests > served + 20, "requests served after the broken file")

    load.stop.set()
    time.sleep(0.5)
    assert not load.failures, f"{len(load.failures)} of {load.requests} requests failed: {load.failures[:5]}"
    assert not load.not_ready, f"readiness answered {sorted(set(load.not_ready))} during the reloads"
    assert load.requests > 200
