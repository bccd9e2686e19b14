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


def notes(*args: str) -> str:
    """NOTES.txt as `helm install` prints it, for the default values plus ``args``."""
    version = run_helm("version", "--template", "{{.Version}}")
    if version.startswith("v3."):
        pytest.skip(f"helm {version} cannot render NOTES without a cluster (install --dry-run contacts it)")
    out = run_helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", *args)
    return out.split("NOTES:", 1)[1]


def test_notes_give_exact_port_forward_and_curl_commands(helm: str) -> None:
    text = notes()
    assert f"kubectl -n {NAMESPACE} port-forward service/{FULLNAME} 8000:8000" in text
    assert "curl -s http://127.0.0.1:8000/health/ready" in text
    assert "http://127.0.0.1:8000/api/v1/predict" in text
    assert f"helm test {RELEASE} -n {NAMESPACE}" in text


def test_gpu_notes_name_the_request_and_only_the_selector_that_is_set(helm: str) -> None:
    plain = notes("--set", "gpu.enabled=true").split("GPU: ", 1)[1]
    assert plain.startswith("pods request 1 nvidia.com/gpu, so only nodes advertising it (a device plugin) qualify.")
    assert "labelled" not in plain and "RuntimeClass" not in plain
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=server"
    assert f"kubectl -n {NAMESPACE} describe pod -l {selector}" in plain
    operator = notes("-f", str(CHART / "ci" / "gpu-values.yaml")).split("GPU: ", 1)[1]
    assert 'among them those labelled {"nvidia.com/gpu.present":"true"}.' in operator
    assert "RuntimeClass nvidia must exist (kubectl get runtimeclass)." in operator
    assert "GPU: " not in notes()


def test_notes_say_which_release_label_the_prometheus_selectors_need(helm: str) -> None:
    # kube-prometheus-stack's default ruleSelector and serviceMonitorSelector match release=<its release>.
    unlabelled = notes("--set", "prometheusRule.enabled=true", "--set", "serviceMonitor.enabled=true")
    for kind, key in (("ServiceMonitor", "serviceMonitor"), ("PrometheusRule", "prometheusRule")):
        assert f"{kind} {FULLNAME} has no release label." in unlabelled
        assert f"--set {key}.additionalLabels.release=kube-prometheus-stack" in unlabelled
    assert "PodMonitor" not in unlabelled
    labelled = notes("-f", str(CHART / "ci" / "monitoring-values.yaml"))
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert f"{kind} {FULLNAME} is labelled release=kube-prometheus-stack" in labelled
    assert "has no release label" not in labelled
    pod_monitor = notes("-f", str(CHART / "ci" / "podmonitor-values.yaml"))
    assert f"PodMonitor {FULLNAME} is labelled release=kube-prometheus-stack" in pod_monitor
    assert "has no release label" not in notes()
