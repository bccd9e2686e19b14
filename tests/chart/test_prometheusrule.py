"""templates/prometheusrule.yaml: files/alerts.yaml as a PrometheusRule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.chart.helm import (
    CHART,
    FULLNAME,
    CaseDocs,
    HelmError,
    one,
    render,
)

pytestmark = pytest.mark.helm


def test_prometheus_rule_carries_the_alert_groups_with_the_fullname_filled_in(case_docs: CaseDocs) -> None:
    alerts_file = CHART / "files" / "alerts.yaml"
    if not alerts_file.is_file():
        pytest.skip("charts/ml-api/files/alerts.yaml not generated yet (observability work)")
    rule = one(case_docs("monitoring"), "PrometheusRule", FULLNAME)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    source = alerts_file.read_text()
    assert "ML_API_FULLNAME" in source
    assert rule["spec"]["groups"] == yaml.safe_load(source.replace("ML_API_FULLNAME", FULLNAME))["groups"]
    alert_names = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alert_names, "no alerting rules"


def test_prometheus_rule_fails_clearly_without_alerts_file(helm: str, chart_copy: Path) -> None:
    (chart_copy / "files" / "alerts.yaml").unlink(missing_ok=True)
    assert render(chart=chart_copy)  # disabled: renders fine without the file
    with pytest.raises(HelmError) as exc:
        render(sets=["prometheusRule.enabled=true"], chart=chart_copy)
    assert "prometheusRule.enabled needs files/alerts.yaml" in exc.value.stderr
