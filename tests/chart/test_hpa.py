"""templates/hpa.yaml: the autoscaling/v2 HorizontalPodAutoscaler."""

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


def test_hpa_scales_on_cpu_and_inflight_requests(case_docs: CaseDocs) -> None:
    docs = case_docs("hpa-custom-metrics")
    hpa = one(docs, "HorizontalPodAutoscaler", FULLNAME)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 20)
    metrics = hpa["spec"]["metrics"]
    assert metrics[0] == {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 75}},
    }
    assert metrics[1] == {
        "type": "Pods",
        "pods": {
            "metric": {"name": "ml_api_inflight_requests"},
            "target": {"type": "AverageValue", "averageValue": "8"},
        },
    }
    assert metrics[2]["type"] == "Object"  # raw passthrough from values
    assert len(metrics) == 3
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert "replicas" not in deployment(docs)["spec"]
    assert not find(docs, "ScaledObject")
