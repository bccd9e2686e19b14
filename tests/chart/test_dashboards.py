"""templates/dashboards.yaml: one ConfigMap (and optionally a GrafanaDashboard) per dashboards/*.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helm import (
    CHART,
    FULLNAME,
    CaseDocs,
    find,
    render,
)

pytestmark = pytest.mark.helm


def _dashboard_configmaps(docs: list[dict[str, Any]], label: str = "grafana_dashboard") -> list[dict[str, Any]]:
    return [d for d in find(docs, "ConfigMap") if label in d["metadata"].get("labels", {})]


def test_one_dashboard_configmap_per_json_file(case_docs: CaseDocs) -> None:
    files = sorted((CHART / "dashboards").glob("*.json"))
    if not files:
        pytest.skip("charts/ml-api/dashboards/*.json not generated yet (make dashboards)")
    cms = _dashboard_configmaps(case_docs("monitoring"))
    assert len(cms) == len(files)
    by_key = {k: v for cm in cms for k, v in cm["data"].items()}
    for f in files:
        dashboard = json.loads(by_key[f.name])
        assert dashboard == json.loads(f.read_text())
        # Portable dashboards pick the datasource through a variable, never a fixed UID.
        assert "${datasource}" in by_key[f.name] or "$datasource" in by_key[f.name], f.name
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "Serving"


def test_grafana_operator_dashboards_reference_the_configmaps(case_docs: CaseDocs) -> None:
    files = sorted((CHART / "dashboards").glob("*.json"))
    if not files:
        pytest.skip("charts/ml-api/dashboards/*.json not generated yet (make dashboards)")
    docs = case_docs("monitoring")
    crs = find(docs, "GrafanaDashboard")
    assert len(crs) == len(files)
    configmaps = {cm["metadata"]["name"]: cm for cm in _dashboard_configmaps(docs)}
    for cr in crs:
        ref = cr["spec"]["configMapRef"]
        assert ref["key"] in configmaps[ref["name"]]["data"]
        assert cr["spec"]["instanceSelector"] == {"matchLabels": {"dashboards": "grafana"}}
        assert cr["spec"]["folder"] == "Serving"
    assert not find(case_docs("default"), "GrafanaDashboard")


def test_dashboard_label_folder_and_files_are_configurable(helm: str, chart_copy: Path) -> None:
    dash_dir = chart_copy / "dashboards"
    for old in dash_dir.glob("*.json"):
        old.unlink()
    (dash_dir / "A_Latency.json").write_text('{"title": "a", "templating": {"list": []}}')
    (dash_dir / "b.json").write_text('{"title": "b"}')
    (dash_dir / "notes.txt").write_text("not a dashboard")
    docs = render(
        sets=[
            "dashboards.enabled=true",
            "dashboards.label=my_dash",
            "dashboards.labelValue=yes",
            "dashboards.folderAnnotation=k8s-sidecar-target-directory",
            "dashboards.folder=/tmp/dashboards/ML",
        ],
        chart=chart_copy,
    )
    cms = _dashboard_configmaps(docs, "my_dash")
    assert sorted(cm["metadata"]["name"] for cm in cms) == [
        f"{FULLNAME}-dashboard-a-latency",
        f"{FULLNAME}-dashboard-b",
    ]
    for cm in cms:
        assert cm["metadata"]["labels"]["my_dash"] == "yes"
        assert cm["metadata"]["annotations"]["k8s-sidecar-target-directory"] == "/tmp/dashboards/ML"
    assert {k for cm in cms for k in cm["data"]} == {"A_Latency.json", "b.json"}
    # Zero dashboards is a valid state (before `make dashboards` ran).
    for f in dash_dir.glob("*.json"):
        f.unlink()
    assert _dashboard_configmaps(render(sets=["dashboards.enabled=true"], chart=chart_copy)) == []
