"""The committed chart README's parameters table is what readme-generator-for-helm makes of values.yaml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.chart.helm import CHART, ROOT

GENERATOR = ROOT / ".tools" / "node" / "node_modules" / ".bin" / "readme-generator"


def test_readme_parameters_table_is_in_sync(tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: needed by @bitnami/readme-generator-for-helm")
    if not GENERATOR.is_file():
        pytest.skip("readme-generator not installed: run `make tools` (needs npm) or `make chart-readme`")
    readme = tmp_path / "README.md"
    shutil.copy(CHART / "README.md", readme)
    proc = subprocess.run(
        [str(GENERATOR), "--values", str(CHART / "values.yaml"), "--readme", str(readme)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert readme.read_text() == (CHART / "README.md").read_text(), (
        "charts/ml-api/README.md is stale: run `make chart-readme` and commit the result"
    )


def test_every_value_is_documented() -> None:
    # The generator refuses undocumented keys; this keeps the check visible even without node.
    values = (CHART / "values.yaml").read_text()
    assert "## @param" in values
    readme = (CHART / "README.md").read_text()
    assert "| `replicaCount`" in readme
    assert "| `gpu.enabled`" in readme
