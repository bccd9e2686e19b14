"""The README's `ml-api` block, run verbatim with the installed console script against a real server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.client.readme import cli_block, ml_api_script, run_cli_block, write_digit3
from tests.ops.servers import Server


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
