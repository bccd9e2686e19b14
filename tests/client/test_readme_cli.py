"""The README's `ml-api` block, run verbatim with the installed console script against a real server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.readme import DEFAULT_URL_IN_DOCS, cli_block, ml_api_script, python_block, run_cli_block, write_digit3
from tests.conftest import ROOT
from tests.servers import Server


def test_the_readme_shows_the_cli_next_to_curl() -> None:
    block = cli_block()
    for command in ("health", "models", "predict", "jobs submit"):
        assert f'ml-api --url "$ML_API" {command}' in block


def test_the_readme_cli_block_runs(served: Server, tmp_path: Path) -> None:
    script = ml_api_script()
    if script is None:
        pytest.skip("the ml-api console script is not installed here (pip install -e . creates it)")
    write_digit3(tmp_path)
    proc = run_cli_block(script, served.base, tmp_path)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    out = proc.stdout
    assert out.startswith("status: healthy")
    assert re.search(r"^digit3\.png +3 ", out, re.M), out
    assert re.search(r"^digits/more/again\.png +3 ", out, re.M), out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(line["image"], line["predictions"][0]["label"]) for line in lines] == [
        ("digits/digit3.png", "3"),
        ("digits/more/again.png", "3"),
    ]
    assert re.search(r"^job [0-9a-f]+: completed$", out, re.M), out


def test_the_readme_python_example_runs(served: Server, tmp_path: Path) -> None:
    write_digit3(tmp_path)
    (tmp_path / "digits" / "more").mkdir(parents=True)
    (tmp_path / "digits" / "more" / "again.png").write_bytes((tmp_path / "digit3.png").read_bytes())
    code = python_block()
    assert DEFAULT_URL_IN_DOCS in code
    proc = subprocess.run(
        [sys.executable, "-c", code.replace(DEFAULT_URL_IN_DOCS, served.base)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    first, *streamed = proc.stdout.splitlines()
    assert first == "3"
    assert sorted(line.split()[0] for line in streamed) == ["0", "1"]
    assert all("predictions=[Prediction(label='3'" in line for line in streamed), streamed
