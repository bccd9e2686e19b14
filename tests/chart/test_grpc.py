"""The gRPC port of the Open Inference Protocol: container and Service port ``grpc``, the setting that
turns it off, Kubernetes' native gRPC probes and the headless Service for client-side balancing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.helm import FULLNAME, CaseDocs, HelmError, find, main_container, one, render

pytestmark = pytest.mark.helm

HEADLESS = f"{FULLNAME}-grpc"


def _config(docs: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = one(docs, "ConfigMap", FULLNAME)["data"]
    return data


def _ingress_ports(docs: list[dict[str, Any]]) -> list[Any]:
    (rule,) = one(docs, "NetworkPolicy", FULLNAME)["spec"]["ingress"]
    return [p["port"] for p in rule["ports"]]


def test_grpc_is_on_by_default_over_http_probes(default_docs: list[dict[str, Any]]) -> None:
    container = main_container(default_docs)
    assert _config(default_docs)["ML_API_GRPC_PORT"] == "8081"
    assert {"name": "grpc", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    assert _ingress_ports(default_docs) == ["http", "grpc"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert find(default_docs, "Service", HEADLESS) == []


def test_native_grpc_probes_and_the_headless_service(case_docs: CaseDocs) -> None:
    docs = case_docs("grpc")
    container = main_container(docs)
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert liveness["grpc"] == {"port": 8081, "service": "liveness"} and "httpGet" not in liveness
    assert readiness["grpc"] == {"port": 8081} and "httpGet" not in readiness
    assert (liveness["periodSeconds"], readiness["periodSeconds"]) == (10, 5)  # the probes' own timing stays
    assert container["startupProbe"]["httpGet"]["path"] == "/health/startup"
    headless = one(docs, "Service", HEADLESS)
    main = one(docs, "Service", FULLNAME)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["ports"] == [
        {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"}
    ]
    assert headless["spec"]["selector"] == main["spec"]["selector"]
    assert headless["metadata"]["annotations"]["example.com/balancing"] == "client-side"
    grpc_port = next(p for p in main["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port["nodePort"] == 30081


def test_grpc_disabled_leaves_no_grpc_port_anywhere(case_docs: CaseDocs) -> None:
    docs = case_docs("grpc-disabled")
    container = main_container(docs)
    assert _config(docs)["ML_API_GRPC_PORT"] == "0"
    assert [p["name"] for p in container["ports"]] == ["http"]
    assert [p["name"] for p in one(docs, "Service", FULLNAME)["spec"]["ports"]] == ["http"]
    assert _ingress_ports(docs) == ["http"]
    # Native probes need the gRPC port: without it the HTTP probes stay.
    assert "httpGet" in container["livenessProbe"] and "httpGet" in container["readinessProbe"]
    assert find(docs, "Service", HEADLESS) == []


def test_another_grpc_port_moves_every_reference(helm: str) -> None:
    docs = render(sets=["grpc.port=9090", "grpc.nativeProbes.enabled=true", "grpc.headlessService.enabled=true"])
    container = main_container(docs)
    assert _config(docs)["ML_API_GRPC_PORT"] == "9090"
    assert {"name": "grpc", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    assert container["readinessProbe"]["grpc"] == {"port": 9090}
    for name in (FULLNAME, HEADLESS):
        ports = {p["name"]: p["port"] for p in one(docs, "Service", name)["spec"]["ports"]}
        assert ports["grpc"] == 9090


@pytest.mark.parametrize(
    "value", ["grpc.port=8000", "grpc.port=0", "grpc.headlessService.clusterIP=1.2.3.4", "grpc.appProtocol="]
)
def test_invalid_grpc_values_are_refused(helm: str, value: str) -> None:
    with pytest.raises(HelmError, match="values don't meet the specifications of the schema"):
        render(sets=[value])


def test_notes_give_the_grpc_port_forward_and_the_headless_target(helm: str) -> None:
    from tests.chart.helm import CHART, NAMESPACE
    from tests.chart.test_notes import notes

    default = notes()
    assert f"kubectl -n {NAMESPACE} port-forward service/{FULLNAME} 8081:8081" in default
    assert "dns:///" not in default
    headless = notes("-f", str(CHART / "ci" / "grpc-values.yaml"))
    assert f"dns:///{HEADLESS}.{NAMESPACE}.svc.cluster.local:8081 and the round_robin policy" in headless
    assert "8081" not in notes("--set", "grpc.enabled=false")
