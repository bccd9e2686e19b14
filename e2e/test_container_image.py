"""The production image, built from this work tree and run hardened (read-only root, tmpfs /tmp,
UID 10001, no capabilities, no-new-privileges, published on 127.0.0.1 only).

Skipped with the reason when no Docker daemon is reachable or the local base image cannot be made;
a failing image build fails. Image size, build time and time to ready are printed and written to
build/image/container-report.json.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from e2e.container import (
    REPO,
    BuildResult,
    ContainerUnavailable,
    RunningContainer,
    build_image,
    image_size_bytes,
    run_container,
)

# The first test's setup may build the image from cold (minutes), which the default timeout
# (pytest-timeout, fixtures included) would cut short.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]

REPORT = REPO / "build" / "image" / "container-report.json"
PREDICT = "/api/v1/predict/upload"


def _report(config: pytest.Config, *, fresh: bool = False, **values: object) -> None:
    """Merge ``values`` into this run's JSON report (``fresh``: start it) and show them."""
    data = json.loads(REPORT.read_text()) if REPORT.is_file() and not fresh else {}
    data.update(values)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # else the line lands in the captured output
            reporter.write_line(f"container image: {json.dumps(values, sort_keys=True)}")


def digit_png(index: int) -> tuple[bytes, str]:
    """scikit-learn's digit ``index`` as a 32x32 8-bit grayscale PNG, and its true label."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images[index] * (255 / 16)).round().astype("uint8")
    image = Image.fromarray(pixels, mode="L").resize((32, 32), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue(), str(int(digits.target[index]))


@pytest.fixture(scope="module")
def built(request: pytest.FixtureRequest) -> BuildResult:
    try:
        result = build_image()
    except ContainerUnavailable as exc:
        pytest.skip(f"container tests need Docker: {exc}")
    values: dict[str, object] = {
        "image": result.tag,
        "image_size_bytes": image_size_bytes(result.tag),
        "image_size_gib": round(image_size_bytes(result.tag) / 2**30, 2),
        "inputs_hash": result.inputs_hash,
    }
    if result.built:
        values["build_seconds"] = round(result.seconds, 1)
    else:
        values["reused_up_to_date_image"] = True
    _report(request.config, fresh=True, **values)
    return result


@pytest.fixture(scope="module")
def server(built: BuildResult, request: pytest.FixtureRequest) -> Iterator[RunningContainer]:
    with run_container(built.tag, env={"ML_API_LOG_FORMAT": "json"}) as c:
        assert c.time_to_ready_s is not None
        _report(request.config, time_to_ready_seconds=round(c.time_to_ready_s, 2))
        yield c


def _inspect(tag: str) -> dict:
    out = subprocess.run(
        ["/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker", "image", "inspect", tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)[0]


def _exec(c: RunningContainer, *argv: str) -> subprocess.CompletedProcess[str]:
    docker = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
    return subprocess.run([docker, "exec", c.container_id, *argv], capture_output=True, text=True, check=False)


# ---------------------------------------------------------------------------------------------
# Image metadata


def test_image_config_runs_gunicorn_as_uid_10001_on_port_8000_and_grpc_on_8081(built: BuildResult) -> None:
    config = _inspect(built.tag)["Config"]
    assert config["User"] == "10001:10001"
    assert config["ExposedPorts"] == {"8000/tcp": {}, "8081/tcp": {}}
    assert config["Cmd"] == ["gunicorn", "-c", "python:service.gunicorn_conf", "service.app:create_app()"]
    assert config["Entrypoint"] is None  # exec-form CMD: gunicorn itself is PID 1
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["HOME"] == "/tmp"
    assert env["TORCH_HOME"] == "/opt/weights"
    assert env["ML_API_GRPC_PORT"] == "8081"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert config["Healthcheck"]["Test"][0] == "CMD"


def test_oci_labels_name_source_version_and_a_commit_of_this_repo(built: BuildResult) -> None:
    labels = _inspect(built.tag)["Config"]["Labels"]
    version = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M)
    assert version is not None
    assert labels["org.opencontainers.image.version"] == version.group(1)
    assert labels["org.opencontainers.image.source"].startswith("https://")
    revision = labels["org.opencontainers.image.revision"]
    if revision != "unknown":  # a work tree with no commit yet
        assert re.fullmatch(r"[0-9a-f]{12}", revision)
        known = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{revision}^{{commit}}"], check=False)
        assert known.returncode == 0, f"revision label {revision} is not a commit of this repository"
    assert labels["io.ml-api.inputs-hash"] == built.inputs_hash


def test_layers_hold_no_secret_pip_cache_or_build_context(built: BuildResult) -> None:
    """The CA secret, pip caches and the builder's /src never reach the runtime image."""
    docker = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
    history = subprocess.run(
        [docker, "history", "--no-trunc", "--format", "{{.CreatedBy}}", built.tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "PIP_INDEX_URL" not in history and "secrets" not in history
    # Files: list the whole filesystem from inside (as root, read-only, no network), which is
    # much faster than exporting the multi-GB image.
    listing = subprocess.run(
        [
            docker,
            "run",
            "--rm",
            "--network",
            "none",
            "--read-only",
            "--user",
            "0",
            built.tag,
            "find",
            "/",
            "-xdev",
            "(",
            "-path",
            "/proc",
            "-o",
            "-path",
            "/sys",
            ")",
            "-prune",
            "-o",
            "-print",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    names = listing.stdout.splitlines()
    assert "/opt/venv/lib/python3.11/site-packages/service/app.py" in names
    offenders = [
        n
        for n in names
        if n.startswith(("/root/.cache/", "/tmp/", "/src/", "/run/secrets/"))
        or "/.cache/pip/" in n
        or n.endswith((".netrc", "pip.conf", "id_rsa"))
    ]
    assert offenders == []


# ---------------------------------------------------------------------------------------------
# A running container


def test_container_runs_as_10001_with_pid1_gunicorn(server: RunningContainer) -> None:
    ids = _exec(server, "python", "-c", "import os; print(os.getuid(), os.getgid(), os.getgroups())")
    assert ids.stdout.split(maxsplit=2)[:2] == ["10001", "10001"]
    cmdline = _exec(server, "python", "-c", "print(open('/proc/1/cmdline').read().replace('\\0', ' ').strip())")
    assert "gunicorn" in cmdline.stdout and "service.app:create_app()" in cmdline.stdout


def test_only_tmp_is_writable(server: RunningContainer) -> None:
    probe = (
        "import os\n"
        "for d in ['/', '/opt/venv', '/opt/weights', '/etc', '/var/tmp', '/tmp']:\n"
        "    try:\n"
        "        open(os.path.join(d, '.probe'), 'w').close()\n"
        "        print(d, 'writable')\n"
        "    except OSError:\n"
        "        print(d, 'denied')\n"
    )
    out = _exec(server, "python", "-c", probe).stdout.splitlines()
    assert out == [
        "/ denied",
        "/opt/venv denied",
        "/opt/weights denied",
        "/etc denied",
        "/var/tmp denied",
        "/tmp writable",
    ]


def test_health_endpoints_answer(server: RunningContainer) -> None:
    assert httpx.get(f"{server.base_url}/health/live").json() == {"status": "alive"}
    assert httpx.get(f"{server.base_url}/health/ready").json() == {"status": "ready"}
    assert httpx.get(f"{server.base_url}/health/startup").status_code == 200


def test_grpc_on_8081_is_serving_with_health_and_reflection(server: RunningContainer) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService", "liveness"):
            response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for s in answer.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names


def test_classifies_a_digit(server: RunningContainer) -> None:
    """scikit-learn's first digit (a 0), as a raw PNG upload."""
    png, label = digit_png(0)
    assert label == "0"
    resp = httpx.post(f"{server.base_url}{PREDICT}", content=png, headers={"Content-Type": "image/png"}, timeout=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["model_name"], body["model_version"]) == ("digits", "1")
    assert body["predictions"][0]["label"] == "0"
    assert body["predictions"][0]["confidence"] > 0.5


def test_the_ml_api_command_is_in_the_image(server: RunningContainer) -> None:
    """`kubectl exec deploy/ml-api -- ml-api ...`: the console script, on PATH, against the pod itself."""
    health = _exec(server, "ml-api", "health", "--json")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["status"] == "healthy"
    png, label = digit_png(0)
    script = f"open('/tmp/zero.png', 'wb').write(bytes.fromhex('{png.hex()}'))"
    assert _exec(server, "python", "-c", script).returncode == 0
    predicted = _exec(server, "ml-api", "predict", "/tmp/zero.png", "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["predictions"][0]["label"] == label


def test_predictions_match_the_bundled_model_run_in_process(server: RunningContainer) -> None:
    """The image serves the same model, preprocessing and numerics as the source tree: the
    container's top-1 answers for 20 digits equal the in-process run's (right or wrong)."""
    from tests.inprocess import bundled_model, classify_in_process

    samples = [digit_png(i) for i in range(20)]
    reference = classify_in_process(bundled_model(), [png for png, _ in samples], top_k=1)
    served = []
    for png, _ in samples:
        resp = httpx.post(
            f"{server.base_url}{PREDICT}?top_k=1", content=png, headers={"Content-Type": "image/png"}, timeout=30
        )
        assert resp.status_code == 200, resp.text
        served.append(resp.json()["predictions"][0])
    assert [p["label"] for p in served] == [r.predictions[0].label for r in reference]
    for got, want in zip(served, reference, strict=True):
        assert got["confidence"] == pytest.approx(want.predictions[0].confidence, abs=1e-4)
    # And the model is a digits model worth serving: at least 18 of these 20 right.
    assert sum(p["label"] == label for p, (_, label) in zip(served, samples, strict=True)) >= 18


def test_metrics_count_the_predictions(server: RunningContainer) -> None:
    png, _ = digit_png(0)
    ok = httpx.post(f"{server.base_url}{PREDICT}", content=png, headers={"Content-Type": "image/png"}, timeout=30)
    assert ok.status_code == 200
    resp = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    success = re.search(
        r'^ml_api_predictions_total\{(?=[^}]*model="digits")(?=[^}]*outcome="success")[^}]*\} (\S+)$',
        resp.text,
        re.M,
    )
    assert success is not None, "ml_api_predictions_total{model=digits,outcome=success} missing"
    assert float(success.group(1)) >= 1
    assert re.search(r'^ml_api_model_loaded\{[^}]*model="digits"[^}]*\} 1\.0$', resp.text, re.M)
    assert "http_requests_total{" in resp.text


# ---------------------------------------------------------------------------------------------
# Graceful shutdown


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None  # None: no HTTP response
    error: str  # "" for a response, else the transport error's class name
    body: str


def _slow_body(png: bytes, chunks: int, pause_s: float, sent_first: threading.Event) -> Iterator[bytes]:
    step = -(-len(png) // chunks)
    for i in range(0, len(png), step):
        yield png[i : i + step]
        sent_first.set()
        time.sleep(pause_s)


def test_sigterm_drains_in_flight_requests_and_exits_0(built: BuildResult) -> None:
    """SIGTERM while requests are in flight: every request the server accepted completes, later
    ones are refused cleanly (503 SHUTTING_DOWN or no connection), and gunicorn exits 0."""
    png, label = digit_png(3)
    with run_container(built.tag, env={"ML_API_SHUTDOWN_GRACE_S": "15", "ML_API_LOG_FORMAT": "json"}) as c:
        url = f"{c.base_url}{PREDICT}"
        sigterm_at: list[float] = []
        slow: list[Outcome] = []
        looped: list[Outcome] = []
        lock = threading.Lock()
        stop_loops = threading.Event()

        def slow_upload(first_chunk_sent: threading.Event) -> None:
            # Accepted for certain before SIGTERM: its body is still streaming when the signal lands.
            started = time.monotonic()
            try:
                resp = httpx.post(
                    url,
                    content=_slow_body(png, 6, 0.4, first_chunk_sent),
                    headers={"Content-Type": "image/png"},
                    timeout=30,
                )
                out = Outcome(started, time.monotonic(), resp.status_code, "", resp.text)
            except httpx.HTTPError as exc:
                out = Outcome(started, time.monotonic(), None, type(exc).__name__, str(exc))
            with lock:
                slow.append(out)

        def loop() -> None:
            # A fresh connection per request, so a refused request shows as a connect error
            # instead of racing a keep-alive connection the server is closing.
            with httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
                while not stop_loops.is_set():
                    started = time.monotonic()
                    try:
                        resp = client.post(url, content=png, headers={"Content-Type": "image/png"})
                        out = Outcome(started, time.monotonic(), resp.status_code, "", resp.text)
                    except httpx.HTTPError as exc:
                        out = Outcome(started, time.monotonic(), None, type(exc).__name__, str(exc))
                    with lock:
                        looped.append(out)
                    if out.status is None and sigterm_at:
                        return  # the server is gone; nothing more to learn
                    time.sleep(0.01)

        first_chunks = [threading.Event() for _ in range(4)]
        threads = [threading.Thread(target=slow_upload, args=(e,)) for e in first_chunks]
        threads += [threading.Thread(target=loop) for _ in range(4)]
        for t in threads:
            t.start()
        for e in first_chunks:
            assert e.wait(10), "slow upload never started"
        time.sleep(0.5)  # the loops have completed requests before the signal
        sigterm_at.append(time.monotonic())
        exit_code = c.stop(signal.SIGTERM, timeout_s=60)
        stop_loops.set()
        for t in threads:
            t.join(60)
        logs = c.logs()

    t0 = sigterm_at[0]
    assert exit_code == 0, logs[-3000:]
    # Requests accepted before the signal all succeed, with the right answer.
    assert len(slow) == 4
    for out in slow:
        assert out.started < t0 < out.ended
        assert (out.status, out.error) == (200, ""), out.body
        assert json.loads(out.body)["predictions"][0]["label"] == label
    before = [o for o in looped if o.ended < t0]
    assert before and all(o.status == 200 for o in before)
    # Every HTTP response is a success or a clean drain refusal; transport errors only after the
    # signal, when the listener is closed.
    for out in looped:
        if out.status is not None:
            assert out.status in (200, 503), out.body
            if out.status == 503:
                assert json.loads(out.body)["error"] == "SHUTTING_DOWN"
        else:
            assert out.started >= t0 or out.ended > t0, f"transport error before SIGTERM: {out.error}"
            assert out.error in {"ConnectError", "RemoteProtocolError", "ReadError"}, out.error
    assert "Traceback" not in logs


# ---------------------------------------------------------------------------------------------
# Weights baked from the build context


def test_weights_from_the_build_context_are_baked_and_served_offline(
    built: BuildResult, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """TORCHVISION_WEIGHTS with the checkpoint in weights/: the build finds it there (no download),
    and the image serves that very checkpoint from /opt/weights."""
    import torch
    import torchvision

    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md", ".dockerignore"):
        shutil.copy2(REPO / name, context / name)
    shutil.copytree(REPO / "service", context / "service", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        REPO / "build" / "image", context / "build" / "image", ignore=shutil.ignore_patterns("*.log", "*.json")
    )
    # A real resnet18 state dict under the file name torchvision's IMAGENET1K_V1 entry expects;
    # seeded random values stand in for the ImageNet training (not downloadable here).
    checkpoints = context / "weights" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    filename = Path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url).name
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), checkpoints / filename)

    tag = "ml-api:weights-test"
    proc = subprocess.run(
        [
            "make", "-C", str(REPO), "--no-print-directory", "image", f"IMAGE={tag}",
            f"IMAGE_CONTEXT={context}", f"IMAGE_BUILD_LOG={tmp_path / 'build.log'}",
            "TORCHVISION_WEIGHTS=resnet18:IMAGENET1K_V1",
        ],
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    docker = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
    request.addfinalizer(lambda: subprocess.run([docker, "rmi", "-f", tag], capture_output=True, check=False))

    models = [
        {"name": "digits", "version": "1", "source": "bundled"},
        {"name": "resnet18", "version": "v1", "source": "torchvision", "arch": "resnet18", "weights": "IMAGENET1K_V1"},
    ]
    with run_container(tag, env={"ML_API_MODELS": json.dumps(models)}) as c:
        listing = _exec(c, "find", "/opt/weights", "-type", "f").stdout.split()
        assert listing == [f"/opt/weights/hub/checkpoints/{filename}"]
        png, _ = digit_png(0)
        resp = httpx.post(
            f"{c.base_url}{PREDICT}?model=resnet18&top_k=3",
            content=png,
            headers={"Content-Type": "image/png"},
            timeout=120,
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert (body["model_name"], body["model_version"], len(body["predictions"])) == ("resnet18", "v1", 3)
    # The served network is the baked checkpoint: same answer as that file run in-process.
    from service.inference.sources import load_model
    from service.settings import ModelSpec
    from tests.inprocess import classify_in_process

    spec = ModelSpec(**models[1])
    reference = load_model(spec, torch.device("cpu"), weights_dir=str(checkpoints))
    want = classify_in_process(reference, [png], top_k=3)[0].predictions
    assert [p["label"] for p in body["predictions"]] == [p.label for p in want]
    assert body["predictions"][0]["confidence"] == pytest.approx(want[0].confidence, abs=1e-4)


def test_two_workers_share_metrics_from_tmp_and_exit_0(built: BuildResult) -> None:
    """ML_API_WORKERS=2 needs prometheus_client's multiprocess directory: it must land in the
    tmpfs (the root is read-only), /metrics must aggregate both workers, and SIGTERM still exits 0."""
    with run_container(built.tag, env={"ML_API_WORKERS": "2"}) as c:
        png, _ = digit_png(0)
        for _ in range(6):
            resp = httpx.post(f"{c.base_url}{PREDICT}", content=png, headers={"Content-Type": "image/png"}, timeout=30)
            assert resp.status_code == 200
        metrics = httpx.get(f"{c.base_url}/metrics", timeout=10).text
        total = sum(
            float(m.group(1))
            for m in re.finditer(r'^ml_api_predictions_total\{[^}]*outcome="success"[^}]*\} (\S+)$', metrics, re.M)
        )
        assert total == 6  # the sum over both workers, whichever served which request
        dbs = _exec(c, "python", "-c", "import glob; print(len(glob.glob('/tmp/**/*.db', recursive=True)))")
        assert int(dbs.stdout) >= 2  # prometheus_client's per-process files, on the tmpfs
        assert c.stop(signal.SIGTERM) == 0
