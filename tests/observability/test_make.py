"""`make observability` / `make grafana`: tool checks and the exact helm/kubectl calls.

helm and kubectl are replaced by recording stand-ins on PATH (no cluster here); make and the
recipes are the real ones.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.observability.promql_sources import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def _tool(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(f'#!/bin/bash\necho "{name} $*" >> "{directory}/calls.log"\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _make(target: str, bin_dir: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    # PATH holds only the stand-ins and the basic system tools, so a real helm/kubectl cannot leak in.
    basics = bin_dir / "basics"
    basics.mkdir(exist_ok=True)
    for tool in ("base64", "mkdir", "sed", "cat"):
        found = shutil.which(tool)
        if found and not (basics / tool).exists():
            (basics / tool).symlink_to(found)
    env = {"PATH": f"{bin_dir}:{basics}", "HOME": str(bin_dir)}
    args = [shutil.which("make") or "make", "-s", "--no-print-directory", target]
    args += [f"{k}={v}" for k, v in variables.items()]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


def _calls(bin_dir: Path) -> list[str]:
    log = bin_dir / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_observability_names_the_missing_helm_and_how_to_get_it(tmp_path: Path) -> None:
    result = _make("observability", tmp_path, HELM=str(tmp_path / "none"), KUBECTL=str(tmp_path / "none"))
    assert result.returncode != 0
    assert "helm not found: run 'make tools'" in result.stdout + result.stderr


def test_observability_names_the_missing_kubectl(tmp_path: Path) -> None:
    helm = _tool(tmp_path, "helm", "exit 0")
    result = _make("observability", tmp_path, HELM=str(helm), KUBECTL=str(tmp_path / "none"))
    assert result.returncode != 0
    assert "kubectl not found: run 'make tools'" in result.stdout + result.stderr
    assert _calls(tmp_path) == []


def test_observability_stops_when_no_cluster_is_reachable(tmp_path: Path) -> None:
    helm = _tool(tmp_path, "helm", "exit 0")
    kubectl = _tool(tmp_path, "kubectl", 'case "$1" in version) exit 1;; config) echo kind-gone;; esac')
    result = _make("observability", tmp_path, HELM=str(helm), KUBECTL=str(kubectl))
    assert result.returncode != 0
    assert "no reachable cluster in the current kubectl context (kind-gone)" in result.stdout
    assert not any(call.startswith("helm") for call in _calls(tmp_path))


def test_observability_installs_every_release_at_its_pinned_version(tmp_path: Path) -> None:
    helm = _tool(tmp_path, "helm", "exit 0")
    kubectl = _tool(tmp_path, "kubectl", "exit 0")
    result = _make("observability", tmp_path, HELM=str(helm), KUBECTL=str(kubectl))
    assert result.returncode == 0, result.stdout + result.stderr
    versions = dict(re.findall(r"^([A-Z_]+_VERSION) := (\S+)$", (ROOT / "mk/observability.mk").read_text(), re.M))
    installs = [c.split() for c in _calls(tmp_path) if c.startswith("helm upgrade --install")]
    assert [(c[3], c[4], c[c.index("--version") + 1], c[c.index("--namespace") + 1]) for c in installs] == [
        ("metrics-server", "metrics-server/metrics-server", versions["METRICS_SERVER_VERSION"], "kube-system"),
        ("kube-prometheus-stack", "prometheus-community/kube-prometheus-stack", versions["KPS_VERSION"], "monitoring"),
        ("tempo", "grafana-community/tempo", versions["TEMPO_VERSION"], "monitoring"),
        ("loki", "grafana-community/loki", versions["LOKI_VERSION"], "monitoring"),
        ("otel-collector", "open-telemetry/opentelemetry-collector", versions["OTEL_COLLECTOR_VERSION"], "monitoring"),
        ("prometheus-adapter", "prometheus-community/prometheus-adapter", versions["ADAPTER_VERSION"], "monitoring"),
    ]
    for call in installs:
        values = call[call.index("-f") + 1]
        assert (ROOT / values).is_file() and values.startswith("k8s/observability/")
        assert "--wait" in call


def test_grafana_prints_the_login_and_port_forwards(tmp_path: Path) -> None:
    helm = _tool(tmp_path, "helm", "exit 0")
    # `get secret` answers with base64 of "s3cret", as kubectl's jsonpath output would.
    kubectl = _tool(tmp_path, "kubectl", 'for a in "$@"; do [[ $a == secret ]] && printf czNjcmV0; done; exit 0')
    result = _make("grafana", tmp_path, HELM=str(helm), KUBECTL=str(kubectl), GRAFANA_PORT="3999")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Grafana: http://127.0.0.1:3999  user: admin  password: s3cret" in result.stdout
    assert "http://127.0.0.1:3999/d/ml-api-overview" in result.stdout
    assert "kubectl -n monitoring port-forward svc/grafana 3999:80" in _calls(tmp_path)


def test_observability_with_kube_context_targets_it_in_every_cluster_call(tmp_path: Path) -> None:
    # k8s/e2e/cluster.sh (skaffold's pre-deploy hook) passes the kind context instead of switching
    # the user's current one.
    helm = _tool(tmp_path, "helm", "exit 0")
    kubectl = _tool(tmp_path, "kubectl", "exit 0")
    result = _make("observability", tmp_path, HELM=str(helm), KUBECTL=str(kubectl), KUBE_CONTEXT="kind-ml-api")
    assert result.returncode == 0, result.stdout + result.stderr
    calls = _calls(tmp_path)
    cluster_calls = [c.split() for c in calls if not c.startswith("helm repo")]
    assert len([c for c in cluster_calls if c[:3] == ["helm", "upgrade", "--install"]]) == 6
    for call in cluster_calls:
        flag = "--kube-context" if call[0] == "helm" else "--context"
        assert call[call.index(flag) + 1] == "kind-ml-api", call
    assert not [c for c in calls if c.startswith("kubectl config")]


def test_without_kube_context_make_observability_uses_the_current_context(tmp_path: Path) -> None:
    helm = _tool(tmp_path, "helm", "exit 0")
    kubectl = _tool(tmp_path, "kubectl", "exit 0")
    result = _make("observability", tmp_path, HELM=str(helm), KUBECTL=str(kubectl))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [c for c in _calls(tmp_path) if "--kube-context" in c or "--context" in c]


def test_observability_names_the_unreachable_kube_context(tmp_path: Path) -> None:
    helm = _tool(tmp_path, "helm", "exit 0")
    kubectl = _tool(tmp_path, "kubectl", 'case "$1" in version) exit 1;; esac')
    result = _make("observability", tmp_path, HELM=str(helm), KUBECTL=str(kubectl), KUBE_CONTEXT="kind-ml-api")
    assert result.returncode != 0
    assert "no reachable cluster in the kubectl context kind-ml-api: create one with 'make up'" in result.stdout
    assert _calls(tmp_path) == ["kubectl version --context kind-ml-api --request-timeout=5s"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not on PATH (apt-get install prometheus)")
def test_alerts_test_renders_the_chart_rules_then_runs_the_unit_tests(tmp_path: Path) -> None:
    # The real target with the real helm and promtool (venv prerequisite skipped: this interpreter).
    helm = ROOT / ".tools" / "bin" / "helm"
    if not helm.is_file():
        pytest.skip("helm not installed (make tools)")
    rendered = ROOT / "build" / "alerts" / "ml-api-rules.yaml"
    rendered.unlink(missing_ok=True)
    result = subprocess.run(
        [shutil.which("make") or "make", "--no-print-directory", "-o", "venv", "alerts-test", f"PY={sys.executable}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 3  # source rules, rendered rules, unit tests
    rules = [r for g in yaml.safe_load(rendered.read_text())["groups"] for r in g["rules"]]
    (pods_not_ready,) = [r for r in rules if r.get("alert") == "MlApiPodsNotReady"]
    assert 'owner_name="ml-api"' in pods_not_ready["expr"]
