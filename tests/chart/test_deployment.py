"""templates/deployment.yaml: replicas, probes, shutdown, env from Secrets, OTel, weights, scheduling."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.helm import (
    FULLNAME,
    RELEASE,
    CaseDocs,
    configmap_data,
    deployment,
    env_of,
    find,
    main_container,
    one,
    pod_spec,
    render,
)

pytestmark = pytest.mark.helm


def test_replicas_rendered_without_autoscaler(default_docs: list[dict[str, Any]]) -> None:
    assert deployment(default_docs)["spec"]["replicas"] == 1


def test_service_links_disabled_so_they_cannot_shadow_ml_api_settings(default_docs: list[dict[str, Any]]) -> None:
    # A Service named ml-api would otherwise inject ML_API_PORT=tcp://... into the container.
    assert pod_spec(default_docs)["enableServiceLinks"] is False


def test_probes_follow_the_http_contract(default_docs: list[dict[str, Any]]) -> None:
    c = main_container(default_docs)
    assert c["startupProbe"]["httpGet"] == {"path": "/health/startup", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    # Model load gets five minutes before the kubelet gives up; liveness only starts afterwards.
    start = c["startupProbe"]
    assert start["failureThreshold"] * start["periodSeconds"] == 300
    assert "enabled" not in start


def test_custom_probe_replaces_and_disabled_probe_disappears(helm: str) -> None:
    docs = render(
        sets=[
            "customLivenessProbe.tcpSocket.port=http",
            "customLivenessProbe.periodSeconds=7",
            "readinessProbe.enabled=false",
        ]
    )
    c = main_container(docs)
    assert c["livenessProbe"] == {"tcpSocket": {"port": "http"}, "periodSeconds": 7}
    assert "readinessProbe" not in c
    assert c["startupProbe"]["httpGet"]["path"] == "/health/startup"


def test_termination_grace_covers_prestop_sleep_and_drain(default_docs: list[dict[str, Any]]) -> None:
    c = main_container(default_docs)
    assert c["lifecycle"]["preStop"] == {"exec": {"command": ["/bin/sleep", "10"]}}
    assert configmap_data(default_docs)["ML_API_SHUTDOWN_GRACE_S"] == "20"
    assert pod_spec(default_docs)["terminationGracePeriodSeconds"] == 10 + 20 + 10


def test_termination_grace_follows_settings_and_override(helm: str) -> None:
    docs = render(sets=["preStop.sleepSeconds=5", "config.shutdownGraceS=45"])
    assert pod_spec(docs)["terminationGracePeriodSeconds"] == 60
    docs = render(sets=["terminationGracePeriodSeconds=120"])
    assert pod_spec(docs)["terminationGracePeriodSeconds"] == 120
    docs = render(sets=["preStop.enabled=false"])
    assert "lifecycle" not in main_container(docs)
    assert pod_spec(docs)["terminationGracePeriodSeconds"] == 30


def test_native_sleep_action_is_opt_in(helm: str) -> None:
    docs = render(sets=["preStop.useSleepAction=true", "preStop.sleepSeconds=15"])
    assert main_container(docs)["lifecycle"]["preStop"] == {"sleep": {"seconds": 15}}


def test_prometheus_scrape_annotations_only_without_monitors(case_docs: CaseDocs) -> None:
    annotations = deployment(case_docs("default"))["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8000"
    assert annotations["prometheus.io/path"] == "/metrics"
    for case in ("monitoring", "podmonitor"):
        annotations = deployment(case_docs(case))["spec"]["template"]["metadata"]["annotations"]
        assert not [k for k in annotations if k.startswith("prometheus.io/")], case


def test_api_keys_come_from_the_existing_secret(case_docs: CaseDocs) -> None:
    env = env_of(main_container(case_docs("hardened")))
    assert env["ML_API_API_KEYS"]["valueFrom"] == {"secretKeyRef": {"name": "ml-api-keys", "key": "api-keys"}}
    assert "ML_API_API_KEYS" not in env_of(main_container(case_docs("default")))
    # The helm test needs a key to call /api/v1/predict when auth is on.
    test_pod = one(case_docs("hardened"), "Pod")
    assert env_of(test_pod["spec"]["containers"][0])["API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "ml-api-keys"


def test_redis_url_comes_from_the_existing_secret(case_docs: CaseDocs) -> None:
    docs = case_docs("redis")
    env = env_of(main_container(docs))
    assert env["ML_API_REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": "ml-api-redis", "key": "redis-url"}}
    # Dependent env expansion: the storage URI reuses the secret value without a second copy.
    assert env["ML_API_RATE_LIMIT_STORAGE_URI"] == {
        "name": "ML_API_RATE_LIMIT_STORAGE_URI",
        "value": "$(ML_API_REDIS_URL)",
    }
    names = [e["name"] for e in main_container(docs)["env"]]
    assert names.index("ML_API_REDIS_URL") < names.index("ML_API_RATE_LIMIT_STORAGE_URI")
    assert configmap_data(docs)["ML_API_JOBS_BACKEND"] == "redis"
    assert configmap_data(docs)["ML_API_RATE_LIMIT_ENABLED"] == "true"
    assert not find(docs, "Deployment", f"{FULLNAME}-redis")


def test_otel_env_with_downward_api_resource_attributes(case_docs: CaseDocs) -> None:
    c = main_container(case_docs("monitoring"))
    env = env_of(c)
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector.observability.svc:4318"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "http/protobuf"
    assert env["OTEL_SERVICE_NAME"]["value"] == FULLNAME
    assert env["OTEL_TRACES_SAMPLER"]["value"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"]["value"] == "0.25"
    attrs = dict(kv.split("=", 1) for kv in env["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(","))
    assert attrs["k8s.pod.name"] == "$(POD_NAME)"
    assert attrs["k8s.namespace.name"] == "$(POD_NAMESPACE)"
    assert attrs["deployment.environment"] == "staging"
    # $(VAR) expands only from variables defined earlier in the list.
    names = [e["name"] for e in c["env"]]
    assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
    assert not [n for n in env_of(main_container(case_docs("default"))) if n.startswith("OTEL_")]


def test_weights_from_existing_pvc(case_docs: CaseDocs) -> None:
    docs = case_docs("pvc-weights")
    spec = pod_spec(docs)
    vol = next(v for v in spec["volumes"] if v["name"] == "weights")
    assert vol["persistentVolumeClaim"] == {"claimName": "ml-models", "readOnly": True}
    mount = next(m for m in main_container(docs)["volumeMounts"] if m["name"] == "weights")
    assert mount == {"name": "weights", "mountPath": "/models", "readOnly": True, "subPath": "digits"}
    data = configmap_data(docs)
    assert data["ML_API_WEIGHTS_DIR"] == "/models"
    assert data["TORCH_HOME"] == "/models"
    assert "ML_API_WEIGHTS_DIR" not in configmap_data(case_docs("default"))


def test_weights_from_init_container(case_docs: CaseDocs) -> None:
    docs = case_docs("init-weights")
    spec = pod_spec(docs)
    (init,) = spec["initContainers"]
    assert init["image"] == "registry.example.com/ml/weights-digits:3"
    assert {"name": "weights", "mountPath": "/models"} in init["volumeMounts"]
    vol = next(v for v in spec["volumes"] if v["name"] == "weights")
    assert vol["emptyDir"] == {"sizeLimit": "2Gi"}


def test_topology_spread_and_affinity_go_through_tpl(case_docs: CaseDocs) -> None:
    spec = pod_spec(case_docs("hardened"))
    assert spec["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    term = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    assert spec["priorityClassName"] == "ml-serving"
    assert main_container(case_docs("hardened"))["image"].endswith(
        "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
