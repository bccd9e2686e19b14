"""Pinned values for the upstream charts of the monitoring stack.

The upstream charts cannot be downloaded here, so each values file is checked two ways:

1. Always: every key path is one the pinned upstream chart reads. The allowed paths below were
   read from each chart's values.yaml at the pinned version (or, where noted, from the subchart's
   values.yaml or the chart's templates); subtrees the charts pass through verbatim (collector
   config, resources, datasource lists) are allowed as a whole. A typo or a key that moved in a
   chart upgrade fails here instead of being silently ignored by helm.
2. When `ML_API_UPSTREAM_CHARTS` names a directory with the pinned chart archives
   (`make observability-pull` fills .cache/charts), `helm template` renders each chart with its
   values and the rendered objects are checked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.promql_sources import ROOT

OBS = ROOT / "k8s" / "observability"
MAKEFILE = ROOT / "mk" / "observability.mk"
CHART_VALUES = ROOT / "charts" / "ml-api" / "values.yaml"

# file -> (chart name, version variable in mk/observability.mk, release, namespace)
CHARTS = {
    "kube-prometheus-stack.yaml": ("kube-prometheus-stack", "KPS_VERSION", "kube-prometheus-stack", "monitoring"),
    "tempo.yaml": ("tempo", "TEMPO_VERSION", "tempo", "monitoring"),
    "loki.yaml": ("loki", "LOKI_VERSION", "loki", "monitoring"),
    "otel-collector.yaml": ("opentelemetry-collector", "OTEL_COLLECTOR_VERSION", "otel-collector", "monitoring"),
    "prometheus-adapter.yaml": ("prometheus-adapter", "ADAPTER_VERSION", "prometheus-adapter", "monitoring"),
    "metrics-server.yaml": ("metrics-server", "METRICS_SERVER_VERSION", "metrics-server", "kube-system"),
}

# Key paths read by the pinned charts. A trailing ".*" allows the whole subtree.
ALLOWED: dict[str, set[str]] = {
    # prometheus-community/helm-charts charts/kube-prometheus-stack/values.yaml 88.5.3
    "kube-prometheus-stack.yaml": {
        "fullnameOverride",
        "prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues",
        "prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues",
        "prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues",
        "prometheus.prometheusSpec.enableFeatures",
        "prometheus.prometheusSpec.exemplars.*",  # Prometheus CR spec.exemplars (maxSize)
        "prometheus.prometheusSpec.enableRemoteWriteReceiver",
        "prometheus.prometheusSpec.scrapeInterval",
        "prometheus.prometheusSpec.evaluationInterval",
        "prometheus.prometheusSpec.retention",
        "prometheus.prometheusSpec.resources.*",
        "alertmanager.alertmanagerSpec.resources.*",
        # subchart kube-state-metrics 8.4.0 values.yaml (metricLabelsAllowlist), _helpers (fullnameOverride)
        "kube-state-metrics.fullnameOverride",
        "kube-state-metrics.metricLabelsAllowlist",
        "prometheus-node-exporter.fullnameOverride",
        # subchart grafana 12.11.1 (grafana-community): values.yaml sidecar.*, adminPassword; _helpers fullnameOverride
        "grafana.fullnameOverride",
        "grafana.adminPassword",
        "grafana.sidecar.dashboards.enabled",
        "grafana.sidecar.dashboards.label",
        "grafana.sidecar.dashboards.labelValue",
        "grafana.sidecar.dashboards.searchNamespace",
        "grafana.sidecar.dashboards.folderAnnotation",
        "grafana.sidecar.dashboards.provider.foldersFromFilesStructure",
        # kube-prometheus-stack templates/grafana/configmaps-datasources.yaml reads these three
        "grafana.sidecar.datasources.exemplarTraceIdDestinations.datasourceUid",
        "grafana.sidecar.datasources.exemplarTraceIdDestinations.traceIdLabelName",
        "grafana.sidecar.datasources.exemplarTraceIdDestinations.urlDisplayLabel",
        "grafana.additionalDataSources",
    },
    # grafana-community/helm-charts charts/tempo/values.yaml 2.2.4
    "tempo.yaml": {
        "tempo.reportingEnabled",
        "tempo.retention",
        "tempo.receivers.*",
        "tempo.metricsGenerator.enabled",
        "tempo.metricsGenerator.remoteWriteUrl",
        "tempo.storage.*",
        "persistence.enabled",
    },
    # grafana-community/helm-charts charts/loki/values.yaml 18.11.0
    "loki.yaml": {
        "deploymentMode",
        "loki.auth_enabled",
        "loki.commonConfig.replication_factor",
        "loki.storage.type",
        "loki.schemaConfig.*",
        "singleBinary.replicas",
        "read.replicas",
        "write.replicas",
        "backend.replicas",
        "chunksCache.enabled",
        "resultsCache.enabled",
        "lokiCanary.enabled",
        "test.enabled",
        "gateway.enabled",
    },
    # open-telemetry/opentelemetry-helm-charts charts/opentelemetry-collector/values.yaml 0.170.0
    "otel-collector.yaml": {
        "fullnameOverride",
        "mode",
        "image.repository",
        "command.name",
        "presets.logsCollection.enabled",
        "presets.kubernetesAttributes.enabled",
        "service.enabled",
        "ports.jaeger-compact.enabled",
        "ports.jaeger-thrift.enabled",
        "ports.jaeger-grpc.enabled",
        "ports.zipkin.enabled",
        "config.*",  # the collector configuration, merged over the chart's default config
        "resources.*",
    },
    # prometheus-community/helm-charts charts/prometheus-adapter/values.yaml 5.3.0
    "prometheus-adapter.yaml": {
        "prometheus.url",
        "prometheus.port",
        "prometheus.path",
        "metricsRelistInterval",
        "rules.default",
        "rules.custom",
    },
    # kubernetes-sigs/metrics-server charts/metrics-server/values.yaml 3.13.1
    "metrics-server.yaml": {"args"},
}


def _values(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((OBS / name).read_text())
    return data


def _paths(node: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.extend(_paths(value, path))
        else:
            out.append(path)
    return out


def _allowed(path: str, allowed: set[str]) -> bool:
    return path in allowed or any(a.endswith(".*") and path.startswith(a[:-1]) for a in allowed)


def _pinned_versions() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+_VERSION) := (\S+)$", MAKEFILE.read_text(), re.M))


def test_every_values_file_is_pinned_and_checked() -> None:
    files = {p.name for p in OBS.glob("*.yaml")} - {"alerts_test.yaml"}
    assert files == set(CHARTS) == set(ALLOWED)
    versions = _pinned_versions()
    for chart, variable, _release, _namespace in CHARTS.values():
        assert re.fullmatch(r"\d+\.\d+\.\d+", versions[variable]), (chart, versions.get(variable))
    install = MAKEFILE.read_text()
    for name, (chart, variable, release, namespace) in CHARTS.items():
        # `make observability` installs each chart at its pinned version with its values file.
        pattern = (
            rf"upgrade --install {re.escape(release)} [\w-]+/{re.escape(chart)} --version \$\({variable}\) \\\s*"
            rf"--namespace (\$\(OBS_NAMESPACE\)|{namespace})\s.*-f \$\(OBS_DIR\)/{re.escape(name)}"
        )
        assert re.search(pattern, install), f"no pinned install line for {name}"


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_values_use_only_keys_the_pinned_chart_reads(name: str) -> None:
    unknown = [path for path in _paths(_values(name)) if not _allowed(path, ALLOWED[name])]
    assert not unknown, f"{name}: keys the pinned chart does not read: {unknown}"


def test_grafana_datasource_links_point_at_provisioned_uids() -> None:
    grafana = _values("kube-prometheus-stack.yaml")["grafana"]
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
    spec = _values("kube-prometheus-stack.yaml")["prometheus"]["prometheusSpec"]
    assert "exemplar-storage" in spec["enableFeatures"]
    for key in ("serviceMonitorSelectorNilUsesHelmValues", "ruleSelectorNilUsesHelmValues"):
        assert spec[key] is False


def test_dashboard_sidecar_matches_the_chart_dashboard_configmaps() -> None:
    sidecar = _values("kube-prometheus-stack.yaml")["grafana"]["sidecar"]["dashboards"]
    chart = yaml.safe_load(CHART_VALUES.read_text())["dashboards"]
    assert (sidecar["label"], sidecar["labelValue"]) == (chart["label"], str(chart["labelValue"]))
    assert sidecar["folderAnnotation"] == chart["folderAnnotation"]
    assert sidecar["searchNamespace"] == "ALL"


def test_in_cluster_addresses_match_release_names() -> None:
    kps = _values("kube-prometheus-stack.yaml")
    prometheus = f"{kps['fullnameOverride']}-prometheus.monitoring.svc"
    adapter = _values("prometheus-adapter.yaml")["prometheus"]
    assert (adapter["url"], adapter["port"]) == (f"http://{prometheus}", 9090)
    assert (
        _values("tempo.yaml")["tempo"]["metricsGenerator"]["remoteWriteUrl"] == f"http://{prometheus}:9090/api/v1/write"
    )
    exporters = _values("otel-collector.yaml")["config"]["exporters"]
    assert exporters["otlp/tempo"]["endpoint"] == "tempo.monitoring.svc:4317"
    assert exporters["otlphttp/loki"]["endpoint"] == "http://loki.monitoring.svc:3100/otlp"
    grafana = {ds["uid"]: ds["url"] for ds in kps["grafana"]["additionalDataSources"]}
    assert grafana == {"tempo": "http://tempo.monitoring.svc:3200", "loki": "http://loki.monitoring.svc:3100"}


def test_adapter_exposes_inflight_requests_as_a_pods_metric() -> None:
    values = _values("prometheus-adapter.yaml")
    assert values["rules"]["default"] is False
    (rule,) = values["rules"]["custom"]
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert re.fullmatch(rule["name"]["matches"], "ml_api_inflight_requests")
    assert rule["name"]["as"] == "ml_api_inflight_requests"
    for template in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert template in rule["metricsQuery"]


def test_metrics_server_trusts_kind_kubelets() -> None:
    assert _values("metrics-server.yaml")["args"] == ["--kubelet-insecure-tls"]


def _helm() -> str | None:
    local = ROOT / ".tools" / "bin" / "helm"
    return str(local) if local.exists() else shutil.which("helm")


def _charts_dir() -> Path | None:
    value = os.environ.get("ML_API_UPSTREAM_CHARTS")
    return Path(value) if value else None


@pytest.mark.helm
@pytest.mark.parametrize("name", sorted(CHARTS))
def test_values_render_with_the_pinned_upstream_chart(name: str, tmp_path: Path) -> None:
    helm, charts = _helm(), _charts_dir()
    if helm is None:
        pytest.skip("helm not installed (make tools)")
    if charts is None:
        pytest.skip("ML_API_UPSTREAM_CHARTS not set: no upstream chart archives here (make observability-pull)")
    chart, variable, release, namespace = CHARTS[name]
    archive = charts / f"{chart}-{_pinned_versions()[variable]}.tgz"
    if not archive.exists():
        pytest.skip(f"{archive} not present (make observability-pull)")
    result = subprocess.run(
        [helm, "template", release, str(archive), "--namespace", namespace, "-f", str(OBS / name)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    if name == "prometheus-adapter.yaml":
        config = next(o for o in objects if o["kind"] == "ConfigMap" and "config.yaml" in o.get("data", {}))
        rules = yaml.safe_load(config["data"]["config.yaml"])["rules"]
        assert [r["name"]["as"] for r in rules] == ["ml_api_inflight_requests"]
    elif name == "kube-prometheus-stack.yaml":
        prometheus = next(o for o in objects if o["kind"] == "Prometheus")
        assert "exemplar-storage" in prometheus["spec"]["enableFeatures"]
        assert prometheus["spec"]["ruleSelector"] == {} and prometheus["spec"]["serviceMonitorSelector"] == {}
        assert ("Service", "kps-prometheus") in kinds and ("Service", "grafana") in kinds
        datasources = next(
            o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "kps-grafana-datasource"
        )
        provisioned = yaml.safe_load(next(iter(datasources["data"].values())))["datasources"]
        default = next(d for d in provisioned if d["uid"] == "prometheus")
        assert default["jsonData"]["exemplarTraceIdDestinations"] == [
            {"datasourceUid": "tempo", "name": "trace_id", "urlDisplayLabel": "View trace"}
        ]
        assert {d["uid"] for d in provisioned} >= {"prometheus", "tempo", "loki"}
        ksm = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "kube-state-metrics")
        assert (
            "--metric-labels-allowlist=pods=[app.kubernetes.io/name,app.kubernetes.io/instance]"
            in (ksm["spec"]["template"]["spec"]["containers"][0]["args"])
        )
        grafana = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "grafana")
        sidecar = next(
            c for c in grafana["spec"]["template"]["spec"]["containers"] if c["name"] == "grafana-sc-dashboard"
        )
        env = {e["name"]: e.get("value") for e in sidecar["env"]}
        assert (env["LABEL"], env["LABEL_VALUE"], env["FOLDER_ANNOTATION"]) == (
            "grafana_dashboard",
            "1",
            "grafana_folder",
        )
    elif name == "otel-collector.yaml":
        # The chart names the DaemonSet "<fullname>-agent"; the Service keeps the fullname.
        assert ("DaemonSet", "otel-collector-agent") in kinds and ("Service", "otel-collector") in kinds
        config = next(o for o in objects if o["kind"] == "ConfigMap")
        relay = yaml.safe_load(config["data"]["relay"])
        assert set(relay["receivers"]) == {"otlp", "file_log", "prometheus"}
        assert relay["service"]["pipelines"]["traces"]["exporters"] == ["otlp/tempo"]
        assert relay["service"]["pipelines"]["logs"]["exporters"] == ["otlphttp/loki"]
        assert "k8s_attributes" in relay["service"]["pipelines"]["traces"]["processors"]
    elif name == "tempo.yaml":
        assert ("Service", "tempo") in kinds
        config = next(o for o in objects if o["kind"] == "ConfigMap" and "tempo.yaml" in o.get("data", {}))
        tempo = yaml.safe_load(config["data"]["tempo.yaml"])
        assert tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    elif name == "loki.yaml":
        assert ("Service", "loki") in kinds
        assert any(o["kind"] == "StatefulSet" and o["metadata"]["name"] == "loki" for o in objects)
    elif name == "metrics-server.yaml":
        deployment = next(o for o in objects if o["kind"] == "Deployment")
        assert "--kubelet-insecure-tls" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
