"""templates/podmonitor.yaml: scraping the pods directly, under the same job a ServiceMonitor gives."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.helm import (
    FULLNAME,
    NAMESPACE,
    CaseDocs,
    deployment,
    find,
    one,
    render,
)

pytestmark = pytest.mark.helm

JOB_RELABELING = {"action": "replace", "targetLabel": "job", "replacement": FULLNAME}


def operator_job(monitor: dict[str, Any], pod_labels: dict[str, str], service_name: str | None = None) -> str:
    """The `job` label prometheus-operator gives a monitor's targets: a ServiceMonitor without
    jobLabel names it after the Service, a PodMonitor after itself (<namespace>/<name>); a jobLabel
    takes that label's value instead (of the Service or pod); then the endpoint's relabelings run,
    in order, after the operator's own."""
    spec = monitor["spec"]
    if monitor["kind"] == "ServiceMonitor":
        assert service_name is not None and not spec.get("jobLabel")
        job = service_name
        endpoint = spec["endpoints"][0]
    else:
        job = f"{monitor['metadata']['namespace']}/{monitor['metadata']['name']}"
        if spec.get("jobLabel") and pod_labels.get(spec["jobLabel"]):
            job = pod_labels[spec["jobLabel"]]
        endpoint = spec["podMetricsEndpoints"][0]
    for relabeling in endpoint.get("relabelings", []):
        if relabeling.get("targetLabel") == "job" and not relabeling.get("sourceLabels"):
            assert relabeling.get("action", "replace") == "replace", relabeling
            job = relabeling["replacement"]
    return job


def test_pod_monitor_targets_the_pods(case_docs: CaseDocs) -> None:
    docs = case_docs("podmonitor")
    pm = one(docs, "PodMonitor", FULLNAME)
    pod_labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert not find(docs, "ServiceMonitor")


def test_pod_monitor_job_is_the_one_the_service_monitor_path_produces(helm: str) -> None:
    # The dashboard's release variable lists `job` values, and its HPA panels match the HPA (named
    # after the fullname) against the chosen job: a job of <namespace>/<PodMonitor> emptied both.
    pm_docs = render(sets=["podMonitor.enabled=true", "autoscaling.enabled=true"])
    sm_docs = render(sets=["serviceMonitor.enabled=true", "autoscaling.enabled=true"])
    pod_labels = deployment(pm_docs)["spec"]["template"]["metadata"]["labels"]
    pm = one(pm_docs, "PodMonitor", FULLNAME)
    sm = one(sm_docs, "ServiceMonitor", FULLNAME)
    service = one(sm_docs, "Service", FULLNAME)["metadata"]["name"]
    hpa = one(pm_docs, "HorizontalPodAutoscaler", FULLNAME)["metadata"]["name"]
    assert pm["spec"]["podMetricsEndpoints"][0]["relabelings"] == [JOB_RELABELING]
    assert "jobLabel" not in pm["spec"]
    assert operator_job(pm, pod_labels) == operator_job(sm, pod_labels, service) == hpa == FULLNAME
    # Without the chart's relabeling the operator's default would be this:
    assert operator_job({**pm, "spec": {"podMetricsEndpoints": [{}]}}, pod_labels) == f"{NAMESPACE}/{FULLNAME}"


def test_pod_monitor_keeps_user_relabelings_after_the_job_one(case_docs: CaseDocs) -> None:
    pm = one(case_docs("podmonitor"), "PodMonitor", FULLNAME)
    assert pm["spec"]["podMetricsEndpoints"][0]["relabelings"] == [
        JOB_RELABELING,
        {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"},
    ]


def test_pod_monitor_job_label_is_passed_through_and_then_wins(helm: str) -> None:
    docs = render(sets=["podMonitor.enabled=true", "podMonitor.jobLabel=app.kubernetes.io/name"])
    pm = one(docs, "PodMonitor", FULLNAME)
    assert pm["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert "relabelings" not in pm["spec"]["podMetricsEndpoints"][0]
    pod_labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert operator_job(pm, pod_labels) == "ml-api"
