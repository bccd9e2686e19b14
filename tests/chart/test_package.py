"""`helm package` produces an installable archive that renders exactly like the source tree."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from tests.chart.helm import CHART, run_helm

pytestmark = pytest.mark.helm


def test_helm_package_produces_a_complete_archive(helm: str, tmp_path: Path) -> None:
    out = run_helm("package", str(CHART), "--destination", str(tmp_path))
    archive = tmp_path / "ml-api-0.1.0.tgz"
    assert str(archive) in out
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    for required in [
        "ml-api/Chart.yaml",
        "ml-api/values.yaml",
        "ml-api/values.schema.json",
        "ml-api/README.md",
        "ml-api/templates/deployment.yaml",
        "ml-api/templates/NOTES.txt",
        "ml-api/templates/tests/test-connection.yaml",
    ]:
        assert required in names, required
    if (CHART / "files" / "alerts.yaml").is_file():
        assert "ml-api/files/alerts.yaml" in names
    for dashboard in (CHART / "dashboards").glob("*.json"):
        assert f"ml-api/dashboards/{dashboard.name}" in names
    # ci/ values are for chart testing only (.helmignore).
    assert not [n for n in names if n.startswith("ml-api/ci/")]

    args = ["--namespace", "ml", "--set", "serviceMonitor.enabled=true", "--set", "dashboards.enabled=true"]
    from_dir = run_helm("template", "rel", str(CHART), *args)
    from_archive = run_helm("template", "rel", str(archive), *args)
    assert from_archive == from_dir
