"""templates/service.yaml: the Service in front of the API pods."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.helm import (
    FULLNAME,
    deployment,
    main_container,
    one,
)

pytestmark = pytest.mark.helm


def test_service_exposes_port_8000_named_http_and_8081_named_grpc(default_docs: list[dict[str, Any]]) -> None:
    svc = one(default_docs, "Service", FULLNAME)
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
    ]
    assert main_container(default_docs)["ports"] == [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
    ]
    pod_labels = deployment(default_docs)["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
