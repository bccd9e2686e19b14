"""Chart-wide behaviour: what every values case renders, and renders the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chart.helm import (
    CHART,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    ROOT,
    CaseDocs,
    ci_cases,
    find,
    one,
    render,
    run_helm,
)

pytestmark = pytest.mark.helm

CASES = list(ci_cases())
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def test_defaults_render_only_core_resources(default_docs: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in default_docs)
    assert kinds == ["ConfigMap", "Deployment", "NetworkPolicy", "Pod", "Service", "ServiceAccount"]


def test_defaults_have_no_monitoring_objects_or_dashboards(default_docs: list[dict[str, Any]]) -> None:
    assert not [d for d in default_docs if d["kind"] in MONITORING_KINDS]
    dashboards = [d for d in find(default_docs, "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]]
    assert dashboards == []


def test_global_values_from_a_parent_chart_are_accepted(helm: str) -> None:
    assert render(sets=["global.imageRegistry=mirror.local"])


@pytest.mark.parametrize("case", CASES)
def test_standard_labels_on_every_resource(case_docs: CaseDocs, case: str) -> None:
    for doc in case_docs(case):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "ml-api"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "ml-api-0.1.0"
        assert labels["app.kubernetes.io/version"] == "0.1.0"


def test_render_does_not_depend_on_cluster_capabilities(helm: str) -> None:
    # helm template and helm install must produce the same objects: no silent .Capabilities guessing.
    files = [str(CHART / "ci" / "monitoring-values.yaml")]
    base = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", files[0]]
    plain = run_helm(*base)
    with_apis = run_helm(*base, "--api-versions", "monitoring.coreos.com/v1", "--api-versions", "keda.sh/v1alpha1")
    assert plain == with_apis
    assert "kind: ServiceMonitor" in plain


def _consumer_value_sets() -> list[list[Path]]:
    # The kind dev loop and the e2e suite layer these files on the chart (skaffold.yaml, e2e/kind.py).
    e2e = ROOT / "k8s" / "e2e"
    base = e2e / "values-kind.yaml"
    if not base.is_file():
        return []
    return [[base]] + [[base, f] for f in sorted(e2e.glob("values-*.yaml")) if f != base]


@pytest.mark.parametrize("files", _consumer_value_sets(), ids=lambda fs: "+".join(f.stem for f in fs))
def test_values_used_by_the_dev_loop_and_e2e_render(helm: str, files: list[Path]) -> None:
    docs = render(values_files=files)
    assert one(docs, "Deployment", FULLNAME)
