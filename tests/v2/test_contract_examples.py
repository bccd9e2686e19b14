"""The tritonclient examples of docs/api-contract.md ("Open Inference Protocol v2") run as written
against a real server (the addresses swapped for its ports), each in a process of its own."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.servers import Server, server

pytestmark = pytest.mark.slow

CONTRACT = ROOT / "docs" / "api-contract.md"
README = ROOT / "README.md"
EXAMPLE = re.compile(r"<!-- test: v2-example -->\s*\n```python\n(.*?)\n```", re.S)


def examples() -> list[str]:
    return EXAMPLE.findall(CONTRACT.read_text())


@pytest.fixture(scope="module")
def v2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with server("uvicorn", {}, tmp_path_factory.mktemp("examples") / "stderr.log") as srv:
        yield srv


def test_the_contract_has_the_two_examples() -> None:
    assert len(examples()) == 2


@pytest.mark.parametrize(("index", "expected"), [(0, r"\[\[b'[0-9.]+:3:3' b'"), (1, r"^\[3\]$")], ids=["http", "grpc"])
def test_example_runs_as_written(v2_server: Server, tmp_path: Path, index: int, expected: str) -> None:
    png = re.search(r"echo '([A-Za-z0-9+/=]+)' \| base64 -d > digit3.png", README.read_text())
    assert png is not None, "the README writes digit3.png"
    (tmp_path / "digit3.png").write_bytes(base64.b64decode(png.group(1)))
    code = examples()[index].replace("127.0.0.1:8000", v2_server.base.removeprefix("http://"))
    code = code.replace("127.0.0.1:8081", v2_server.grpc_target)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(expected, proc.stdout.strip()), proc.stdout
