"""templates/pdb.yaml: a PodDisruptionBudget only where it cannot block every eviction."""

from __future__ import annotations

import pytest

from tests.chart.helm import (
    CaseDocs,
    deployment,
    find,
    render,
)

pytestmark = pytest.mark.helm


@pytest.mark.parametrize(
    ("case", "pdb"),
    [
        ("default", None),
        ("minimal", None),
        ("hpa-custom-metrics", {"maxUnavailable": 1}),
        ("keda", {"maxUnavailable": 1}),
        ("hardened", {"minAvailable": 2}),
    ],
)
def test_pdb_only_when_minimum_replicas_above_one(case_docs: CaseDocs, case: str, pdb: dict[str, int] | None) -> None:
    found = find(case_docs(case), "PodDisruptionBudget")
    if pdb is None:
        assert found == []
    else:
        (p,) = found
        spec = dict(p["spec"])
        assert spec.pop("selector")["matchLabels"] == deployment(case_docs(case))["spec"]["selector"]["matchLabels"]
        assert spec == pdb


def test_pdb_follows_hpa_minimum_not_replica_count(helm: str) -> None:
    docs = render(sets=["replicaCount=5", "autoscaling.enabled=true", "autoscaling.minReplicas=1"])
    assert find(docs, "PodDisruptionBudget") == []
