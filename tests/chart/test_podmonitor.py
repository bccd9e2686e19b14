"""templates/podmonitor.yaml: scraping the pods directly."""

from __future__ import annotations

import pytest

from tests.chart.helm import (
    FULLNAME,
    CaseDocs,
    deployment,
    find,
    one,
)

pytestmark = pytest.mark.helm


def test_pod_monitor_targets_the_pods(case_docs: CaseDocs) -> None:
    docs = case_docs("podmonitor")
    pm = one(docs, "PodMonitor", FULLNAME)
    pod_labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert pm["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert not find(docs, "ServiceMonitor")
