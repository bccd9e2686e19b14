"""k8s/observability/kube-prometheus-stack.yaml: Prometheus, Grafana datasources and dashboard sidecar."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.observability.upstream import CHART_VALUES, find, render, values

NAME = "kube-prometheus-stack.yaml"


def test_grafana_datasource_links_point_at_provisioned_uids() -> None:
    grafana = values(NAME)["grafana"]
    sources = {ds["uid"]: ds for ds in grafana["additionalDataSources"]}
    assert set(sources) == {"tempo", "loki"}
    # kube-prometheus-stack provisions the default Prometheus datasource with uid "prometheus".
    uids = {*sources, "prometheus"}
    exemplars = grafana["sidecar"]["datasources"]["exemplarTraceIdDestinations"]
    assert exemplars["datasourceUid"] == "tempo"
    # The service's exemplars are {"trace_id": "<32 hex>"} (service/observability/metrics.py).
    assert exemplars["traceIdLabelName"] == "trace_id"
    tempo = sources["tempo"]["jsonData"]
    for link in ("tracesToLogsV2", "tracesToMetrics", "serviceMap", "lokiSearch"):
        assert tempo[link]["datasourceUid"] in uids, link
    assert tempo["tracesToLogsV2"]["filterByTraceID"] is True
    # Grafana provisioning expands $VAR; "$$" keeps the literal "$__tags" for Grafana's query templating.
    for query in tempo["tracesToMetrics"]["queries"]:
        assert "$$__tags" in query["query"]
    (derived,) = sources["loki"]["jsonData"]["derivedFields"]
    assert derived["datasourceUid"] == "tempo"
    line = '{"message": "prediction", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}'
    assert re.search(derived["matcherRegex"], line).group(1) == "4bf92f3577b34da6a3ce929d0e0e4736"  # type: ignore[union-attr]


def test_prometheus_keeps_exemplars_and_selects_every_release() -> None:
    spec = values(NAME)["prometheus"]["prometheusSpec"]
    assert "exemplar-storage" in spec["enableFeatures"]
    for key in ("serviceMonitorSelectorNilUsesHelmValues", "ruleSelectorNilUsesHelmValues"):
        assert spec[key] is False


def test_dashboard_sidecar_matches_the_chart_dashboard_configmaps() -> None:
    sidecar = values(NAME)["grafana"]["sidecar"]["dashboards"]
    chart = yaml.safe_load(CHART_VALUES.read_text())["dashboards"]
    assert (sidecar["label"], sidecar["labelValue"]) == (chart["label"], str(chart["labelValue"]))
    assert sidecar["folderAnnotation"] == chart["folderAnnotation"]
    assert sidecar["searchNamespace"] == "ALL"


@pytest.mark.helm
def test_rendered_prometheus_keeps_exemplars_and_selects_every_monitor_and_rule() -> None:
    objects = render(NAME)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    prometheus = find(objects, "Prometheus")
    assert "exemplar-storage" in prometheus["spec"]["enableFeatures"]
    assert prometheus["spec"]["ruleSelector"] == {} and prometheus["spec"]["serviceMonitorSelector"] == {}
    # Tempo's metrics generator remote-writes span metrics and the service graph here.
    assert prometheus["spec"]["enableRemoteWriteReceiver"] is True
    assert ("Service", "kps-prometheus") in kinds and ("Service", "grafana") in kinds


@pytest.mark.helm
def test_rendered_grafana_provisions_the_datasources_and_the_dashboard_sidecar() -> None:
    objects = render(NAME)
    datasources = find(objects, "ConfigMap", "kps-grafana-datasource")
    provisioned = yaml.safe_load(next(iter(datasources["data"].values())))["datasources"]
    default = next(d for d in provisioned if d["uid"] == "prometheus")
    assert default["jsonData"]["exemplarTraceIdDestinations"] == [
        {"datasourceUid": "tempo", "name": "trace_id", "urlDisplayLabel": "View trace"}
    ]
    assert {d["uid"] for d in provisioned} >= {"prometheus", "tempo", "loki"}
    grafana = find(objects, "Deployment", "grafana")
    sidecar = next(c for c in grafana["spec"]["template"]["spec"]["containers"] if c["name"] == "grafana-sc-dashboard")
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert (env["LABEL"], env["LABEL_VALUE"], env["FOLDER_ANNOTATION"]) == (
        "grafana_dashboard",
        "1",
        "grafana_folder",
    )


@pytest.mark.helm
def test_rendered_kube_state_metrics_exports_the_series_the_alerts_join_on() -> None:
    # MlApiPodsNotReady joins pods to the release's Deployment through their owners: kube-state-metrics
    # must export pods and ReplicaSets (its default resources), with no label allowlist needed.
    ksm = find(render(NAME), "Deployment", "kube-state-metrics")
    args = ksm["spec"]["template"]["spec"]["containers"][0]["args"]
    (resources,) = [a.removeprefix("--resources=").split(",") for a in args if a.startswith("--resources=")]
    assert {"pods", "replicasets", "deployments", "horizontalpodautoscalers"} <= set(resources)
    assert not [a for a in args if a.startswith("--metric-labels-allowlist")]
