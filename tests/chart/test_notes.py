"""templates/NOTES.txt: what `helm install` prints."""

from __future__ import annotations

import pytest

from tests.chart.helm import (
    CHART,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    run_helm,
)

pytestmark = pytest.mark.helm


def test_notes_give_exact_port_forward_and_curl_commands(helm: str) -> None:
    version = run_helm("version", "--template", "{{.Version}}")
    if version.startswith("v3."):
        pytest.skip(f"helm {version} cannot render NOTES without a cluster (install --dry-run contacts it)")
    out = run_helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    notes = out.split("NOTES:", 1)[1]
    assert f"kubectl -n {NAMESPACE} port-forward service/{FULLNAME} 8000:8000" in notes
    assert "curl -s http://127.0.0.1:8000/health/ready" in notes
    assert "http://127.0.0.1:8000/api/v1/predict" in notes
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes
