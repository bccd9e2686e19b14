"""The README's `ml-api` block run verbatim against each target, like the curl blocks (e2e/test_docs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e.targets import Target
from tests.client.readme import ml_api_script, run_cli_block, write_digit3


@pytest.mark.slow
def test_the_cli_block_in_the_docs_works_against_the_target(target: Target, tmp_path: Path) -> None:
    script = ml_api_script()
    if script is None:
        pytest.skip("the ml-api console script is not installed here (pip install -e . creates it)")
    target.refresh()
    write_digit3(tmp_path)
    proc = run_cli_block(script, target.base_url, tmp_path)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    labels = [json.loads(line)["predictions"][0]["label"] for line in proc.stdout.splitlines() if line.startswith("{")]
    assert labels == ["3", "3"]
    assert ": completed" in proc.stdout
