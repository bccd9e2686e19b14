"""templates/servicemonitor.yaml: scraping through the Service."""

from __future__ import annotations

import pytest

from tests.chart.helm import (
    FULLNAME,
    NAMESPACE,
    CaseDocs,
    find,
    one,
)

pytestmark = pytest.mark.helm


def test_service_monitor_targets_the_service_port(case_docs: CaseDocs) -> None:
    docs = case_docs("monitoring")
    sm = one(docs, "ServiceMonitor", FULLNAME)
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["metadata"]["namespace"] == NAMESPACE
    svc = one(docs, "Service", FULLNAME)
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == svc["spec"]["ports"][0]["name"] == "http"
    assert ep["path"] == "/metrics"
    assert (ep["interval"], ep["scrapeTimeout"], ep["honorLabels"]) == ("15s", "10s", True)
    assert ep["relabelings"][0]["targetLabel"] == "node"
    assert ep["metricRelabelings"][0]["action"] == "drop"
    assert not find(docs, "PodMonitor")
