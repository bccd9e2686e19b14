"""The ``ml-api`` console script from a real ``pip install`` into a fresh venv with no torch, FastAPI or
Pillow: the client's own dependencies are enough, and it classifies against a real server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.client.helpers import Digit
from tests.conftest import ROOT
from tests.servers import Server

pytestmark = pytest.mark.slow

CLIENT_DEPENDENCIES = ("httpx", "pydantic", "httpx-retries", "httpx-sse", "rich")
# pip's words for an index it cannot reach (the only reason to skip rather than fail).
UNREACHABLE = (
    "Could not fetch URL",
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
)


def _requirements() -> list[str]:
    """The client's dependencies as pyproject.toml pins them (so this test follows its bounds)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    by_name = {}
    for spec in declared:
        name = spec.split(";")[0].split("[")[0]
        for sep in (">", "<", "=", "!", "~"):
            name = name.split(sep)[0]
        by_name[name.strip().lower()] = spec
    return [by_name[name] for name in CLIENT_DEPENDENCIES]


def _run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-venv")
    # The shared tree's build leftovers must not leak into this install: build from a clean copy.
    source = root / "src"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", ".tools", "build", "*.egg-info", "__pycache__")
    )
    made = _run(sys.executable, "-m", "venv", root / "venv")
    assert made.returncode == 0, made.stderr
    pip = root / "venv" / "bin" / "pip"
    deps = _run(pip, "install", "-q", *_requirements())
    if deps.returncode != 0 and any(s in deps.stderr for s in UNREACHABLE):
        pytest.skip(f"the package index is unreachable from here, so no fresh venv: {deps.stderr[-300:]}")
    assert deps.returncode == 0, deps.stderr
    project = _run(pip, "install", "-q", "--no-deps", source)
    assert project.returncode == 0, project.stderr
    return root / "venv"


def test_the_console_script_runs_without_torch(
    venv: Path, served: Server, samples: tuple[Digit, ...], tmp_path: Path
) -> None:
    python = venv / "bin" / "python"
    missing = _run(
        python, "-c", "import importlib.util as u; print([m for m in ('torch', 'fastapi', 'PIL') if u.find_spec(m)])"
    )
    assert missing.stdout.strip() == "[]", "the throwaway venv must not have the server's dependencies"
    for index in range(3):
        (tmp_path / f"{index}.png").write_bytes(samples[index].png)
    proc = _run(venv / "bin" / "ml-api", "predict", tmp_path, "--json", "--url", served.base, timeout=120)
    assert proc.returncode == 0, proc.stderr
    labels = [json.loads(line)["predictions"][0]["label"] for line in proc.stdout.splitlines()]
    assert labels == [samples[i].label for i in range(3)]
    assert _run(venv / "bin" / "ml-api", "health", "--url", served.base).returncode == 0
