"""Pinned values for the upstream charts of the monitoring stack (k8s/observability/*.yaml).

The upstream charts cannot be downloaded everywhere, so each values file is checked two ways:

1. Always: every key path is one the pinned upstream chart reads. The allowed paths below were
   read from each chart's values.yaml at the pinned version (or, where noted, from the subchart's
   values.yaml or the chart's templates); subtrees the charts pass through verbatim (collector
   config, resources, datasource lists) are allowed as a whole. A typo or a key that moved in a
   chart upgrade fails here instead of being silently ignored by helm.
2. When `ML_API_UPSTREAM_CHARTS` names a directory with the pinned chart archives
   (`make observability-pull` fills .cache/charts), `helm template` renders each chart with its
   values; what each rendered chart must contain is checked in the test file named after it
   (test_tempo.py, test_otel_collector.py, ...).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.observability.upstream import CHARTS, MAKEFILE, OBS, pinned_versions, render, values

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
        # subchart kube-state-metrics 8.4.0 _helpers (fullnameOverride)
        "kube-state-metrics.fullnameOverride",
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
        "tempo.overrides.*",  # Tempo's overrides block, passed through (defaults: the new format)
        "config",  # the Tempo configuration file, a template the chart renders with tpl
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
        "tolerations",
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


def test_every_values_file_is_pinned_and_checked() -> None:
    files = {p.name for p in OBS.glob("*.yaml")} - {"alerts_test.yaml"}
    assert files == set(CHARTS) == set(ALLOWED)
    versions = pinned_versions()
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
    unknown = [path for path in _paths(values(name)) if not _allowed(path, ALLOWED[name])]
    assert not unknown, f"{name}: keys the pinned chart does not read: {unknown}"


def test_in_cluster_addresses_match_release_names() -> None:
    kps = values("kube-prometheus-stack.yaml")
    prometheus = f"{kps['fullnameOverride']}-prometheus.monitoring.svc"
    adapter = values("prometheus-adapter.yaml")["prometheus"]
    assert (adapter["url"], adapter["port"]) == (f"http://{prometheus}", 9090)
    assert (
        values("tempo.yaml")["tempo"]["metricsGenerator"]["remoteWriteUrl"] == f"http://{prometheus}:9090/api/v1/write"
    )
    exporters = values("otel-collector.yaml")["config"]["exporters"]
    assert exporters["otlp/tempo"]["endpoint"] == "tempo.monitoring.svc:4317"
    assert exporters["otlphttp/loki"]["endpoint"] == "http://loki.monitoring.svc:3100/otlp"
    grafana = {ds["uid"]: ds["url"] for ds in kps["grafana"]["additionalDataSources"]}
    assert grafana == {"tempo": "http://tempo.monitoring.svc:3200", "loki": "http://loki.monitoring.svc:3100"}


@pytest.mark.helm
@pytest.mark.parametrize("name", sorted(CHARTS))
def test_values_render_with_the_pinned_upstream_chart(name: str) -> None:
    assert render(name)
