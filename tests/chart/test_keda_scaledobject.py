"""templates/keda-scaledobject.yaml: KEDA as the alternative to the HPA."""

from __future__ import annotations

import pytest

from tests.chart.helm import (
    FULLNAME,
    NAMESPACE,
    CaseDocs,
    deployment,
    find,
    one,
)

pytestmark = pytest.mark.helm


def test_keda_scaled_object_replaces_the_hpa(case_docs: CaseDocs) -> None:
    docs = case_docs("keda")
    so = one(docs, "ScaledObject", FULLNAME)
    assert so["spec"]["scaleTargetRef"]["name"] == FULLNAME
    trigger = so["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == (
        f'sum(ml_api_inflight_requests{{namespace="{NAMESPACE}",pod=~"{FULLNAME}-.*"}})'
    )
    assert trigger["metadata"]["threshold"] == "6"
    assert so["spec"]["triggers"][1]["type"] == "cpu"
    assert "replicas" not in deployment(docs)["spec"]
    assert not find(docs, "HorizontalPodAutoscaler")
