"""The client and the CLI import neither torch nor the server's stack, so `pip install` of the client
side alone is enough for them (checked in a fresh interpreter: this one has imported everything)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SERVER_SIDE = (
    "torch",
    "torchvision",
    "fastapi",
    "starlette",
    "uvicorn",
    "sse_starlette",
    "numpy",
    "PIL",
    "prometheus_client",
)


@pytest.mark.parametrize("module", ["service.client", "service.client.cli"])
def test_importing_the_client_loads_no_server_module(module: str) -> None:
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "from service.client import MlApiClient, AsyncMlApiClient\n"
        "MlApiClient('http://127.0.0.1:9').close()\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {SERVER_SIDE!r})))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(proc.stdout) == []


def test_the_cli_help_runs_without_the_server_side() -> None:
    # Poison the server's packages: importing any of them fails, so a stray import is an error here.
    code = (
        "import sys\n"
        f"for name in {SERVER_SIDE!r}:\n"
        "    sys.modules[name] = None\n"
        "from service.client.cli import main\n"
        "sys.exit(main(['--help']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: ml-api" in proc.stdout
