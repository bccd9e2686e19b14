"""templates/ingress.yaml: the optional Ingress to the http port."""

from __future__ import annotations

import pytest

from tests.chart.helm import (
    FULLNAME,
    CaseDocs,
    find,
    one,
)

pytestmark = pytest.mark.helm


def test_ingress_routes_to_the_http_port(case_docs: CaseDocs) -> None:
    ing = one(case_docs("ingress"), "Ingress", FULLNAME)
    assert ing["spec"]["ingressClassName"] == "nginx"
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "ml-api.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "http"}}
    assert ing["spec"]["tls"] == [{"secretName": "ml-api-tls", "hosts": ["ml-api.example.com"]}]
    assert not find(case_docs("default"), "Ingress")
