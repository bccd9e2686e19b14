"""The chart works with Helm 3 as well as Helm 4: same lint verdict, byte-identical renders."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.chart.helm import CHART, NAMESPACE, RELEASE, ROOT, ci_cases, run_helm

pytestmark = pytest.mark.helm

CASES = ci_cases()


@pytest.fixture(scope="module")
def helm3() -> str:
    path = os.environ.get("HELM3") or str(ROOT / ".tools" / "bin" / "helm3")
    if not Path(path).is_file():
        pytest.skip("helm3 not installed: run `make tools` (pinned Helm 3 in .tools/bin/helm3) or set HELM3")
    version = subprocess.run([path, "version", "--template", "{{.Version}}"], capture_output=True, text=True).stdout
    assert version.startswith("v3."), version
    return path


def _run(binary: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def _args(files: list[Path]) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for f in files:
        args += ["-f", str(f)]
    return args


def test_every_case_renders_identically_with_helm3(helm: str, helm3: str) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        v3 = dict(zip(CASES, pool.map(lambda files: _run(helm3, _args(files)), CASES.values()), strict=True))
    for case, files in CASES.items():
        assert v3[case].returncode == 0, f"{case}: {v3[case].stderr}"
        assert v3[case].stdout == run_helm(*_args(files)), f"{case} renders differently under Helm 3"


def test_helm3_lint_strict_passes(helm3: str) -> None:
    def lint(files: list[Path]) -> subprocess.CompletedProcess[str]:
        return _run(helm3, ["lint", "--strict", str(CHART), *[a for f in files for a in ("-f", str(f))]])

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(CASES, pool.map(lint, CASES.values()), strict=True))
    for case, proc in results.items():
        assert proc.returncode == 0, f"{case}: {proc.stdout}{proc.stderr}"


def test_helm3_fails_on_the_same_invalid_values(helm3: str) -> None:
    keda_and_hpa = _run(helm3, [*_args([]), "--set", "autoscaling.enabled=true", "--set", "keda.enabled=true"])
    assert keda_and_hpa.returncode != 0
    assert "autoscaling.enabled and keda.enabled are both true" in keda_and_hpa.stderr
    unknown = _run(helm3, [*_args([]), "--set", "replicas=3"])
    assert unknown.returncode != 0
    assert "Additional property replicas is not allowed" in unknown.stderr
