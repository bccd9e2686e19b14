"""templates/networkpolicy.yaml: who may reach the API and where it may connect."""

from __future__ import annotations

import pytest

from tests.chart.helm import (
    FULLNAME,
    CaseDocs,
    one,
)

pytestmark = pytest.mark.helm


def test_redis_egress_allowed_when_egress_is_closed(case_docs: CaseDocs) -> None:
    np = one(case_docs("redis"), "NetworkPolicy", FULLNAME)
    ports = [p["port"] for rule in np["spec"]["egress"] for p in rule.get("ports", [])]
    assert ports == [53, 53, 6379]


def test_closed_network_policy_admits_only_labelled_clients(case_docs: CaseDocs) -> None:
    docs = case_docs("hardened")
    np = one(docs, "NetworkPolicy", FULLNAME)
    (rule,) = np["spec"]["ingress"]
    peers = rule["from"]
    assert peers[0] == {"podSelector": {"matchLabels": {f"{FULLNAME}-client": "true"}}}
    assert peers[1] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    assert peers[2] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert np["spec"]["egress"] == [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]
    test_pod = one(docs, "Pod")
    assert test_pod["metadata"]["labels"][f"{FULLNAME}-client"] == "true"
