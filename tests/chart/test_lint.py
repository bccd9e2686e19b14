"""`helm lint --strict` on the default values and on every ci/*-values.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.helm import CHART, ci_cases, run_helm

pytestmark = pytest.mark.helm

CASES = ci_cases()


@pytest.mark.parametrize("case", list(CASES))
def test_helm_lint_strict_passes(helm: str, case: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for f in CASES[case]:
        args += ["-f", str(f)]
    out = run_helm(*args)
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out


def test_ci_values_cover_the_documented_scenarios() -> None:
    names = {p.name for p in (CHART / "ci").glob("*-values.yaml")}
    expected = {
        "minimal-values.yaml",
        "gpu-values.yaml",
        "hpa-custom-metrics-values.yaml",
        "keda-values.yaml",
        "monitoring-values.yaml",
        "podmonitor-values.yaml",
        "ingress-values.yaml",
        "pvc-weights-values.yaml",
        "redis-values.yaml",
        "hardened-values.yaml",
    }
    assert expected <= names, f"missing ci cases: {sorted(expected - names)}"
    assert all(Path(CHART / "ci" / n).stat().st_size > 0 for n in names)
