"""Behaviour of the rendered chart: what each values case must and must not produce."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from tests.chart.helm import (
    CHART,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    ROOT,
    CaseDocs,
    all_containers,
    ci_cases,
    env_of,
    find,
    main_container,
    one,
    pod_specs,
    render,
    run_helm,
)

pytestmark = pytest.mark.helm

CASES = list(ci_cases())
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
SECRET_ENV = {"ML_API_API_KEYS", "ML_API_REDIS_URL", "ML_API_RATE_LIMIT_STORAGE_URI"}


def _deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", FULLNAME)


def _pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _deployment(docs)["spec"]["template"]["spec"]


def _configmap_data(docs: list[dict[str, Any]]) -> dict[str, str]:
    return one(docs, "ConfigMap", FULLNAME)["data"]


def _checksum(docs: list[dict[str, Any]]) -> str:
    return _deployment(docs)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


# --- defaults -------------------------------------------------------------------------------------


def test_defaults_render_only_core_resources(default_docs: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in default_docs)
    assert kinds == ["ConfigMap", "Deployment", "NetworkPolicy", "Pod", "Service", "ServiceAccount"]


def test_defaults_have_no_monitoring_objects_or_dashboards(default_docs: list[dict[str, Any]]) -> None:
    assert not [d for d in default_docs if d["kind"] in MONITORING_KINDS]
    dashboards = [d for d in find(default_docs, "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]]
    assert dashboards == []


def test_service_exposes_port_8000_named_http(default_docs: list[dict[str, Any]]) -> None:
    svc = one(default_docs, "Service", FULLNAME)
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert main_container(default_docs)["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    pod_labels = _deployment(default_docs)["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_replicas_rendered_without_autoscaler(default_docs: list[dict[str, Any]]) -> None:
    assert _deployment(default_docs)["spec"]["replicas"] == 1


def test_service_links_disabled_so_they_cannot_shadow_ml_api_settings(default_docs: list[dict[str, Any]]) -> None:
    # A Service named ml-api would otherwise inject ML_API_PORT=tcp://... into the container.
    assert _pod_spec(default_docs)["enableServiceLinks"] is False


def test_global_values_from_a_parent_chart_are_accepted(helm: str) -> None:
    assert render(sets=["global.imageRegistry=mirror.local"])


def test_service_account_token_not_mounted(default_docs: list[dict[str, Any]]) -> None:
    sa = one(default_docs, "ServiceAccount", FULLNAME)
    assert sa["automountServiceAccountToken"] is False
    spec = _pod_spec(default_docs)
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == FULLNAME


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
    assert _configmap_data(default_docs)["ML_API_SHUTDOWN_GRACE_S"] == "20"
    assert _pod_spec(default_docs)["terminationGracePeriodSeconds"] == 10 + 20 + 10


def test_termination_grace_follows_settings_and_override(helm: str) -> None:
    docs = render(sets=["preStop.sleepSeconds=5", "config.shutdownGraceS=45"])
    assert _pod_spec(docs)["terminationGracePeriodSeconds"] == 60
    docs = render(sets=["terminationGracePeriodSeconds=120"])
    assert _pod_spec(docs)["terminationGracePeriodSeconds"] == 120
    docs = render(sets=["preStop.enabled=false"])
    assert "lifecycle" not in main_container(docs)
    assert _pod_spec(docs)["terminationGracePeriodSeconds"] == 30


def test_native_sleep_action_is_opt_in(helm: str) -> None:
    docs = render(sets=["preStop.useSleepAction=true", "preStop.sleepSeconds=15"])
    assert main_container(docs)["lifecycle"]["preStop"] == {"sleep": {"seconds": 15}}


def test_prometheus_scrape_annotations_only_without_monitors(case_docs: CaseDocs) -> None:
    annotations = _deployment(case_docs("default"))["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8000"
    assert annotations["prometheus.io/path"] == "/metrics"
    for case in ("monitoring", "podmonitor"):
        annotations = _deployment(case_docs(case))["spec"]["template"]["metadata"]["annotations"]
        assert not [k for k in annotations if k.startswith("prometheus.io/")], case


@pytest.mark.parametrize("case", CASES)
def test_standard_labels_on_every_resource(case_docs: CaseDocs, case: str) -> None:
    for doc in case_docs(case):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "ml-api"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "ml-api-0.1.0"
        assert labels["app.kubernetes.io/version"] == "0.1.0"


# --- security -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_restricted_pod_security_on_every_container(case_docs: CaseDocs, case: str) -> None:
    specs = list(pod_specs(case_docs(case)))
    assert specs, "no workloads rendered"
    for where, spec in specs:
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        assert pod_sc.get("fsGroup") == 10001, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        assert not [v for v in spec.get("volumes", []) if "hostPath" in v], where
        for c in all_containers(spec):
            at = f"{where} container {c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, at
            assert sc.get("privileged") is False, at
            assert sc.get("capabilities") == {"drop": ["ALL"]}, at
            assert sc.get("readOnlyRootFilesystem") is True, at
            assert sc.get("runAsNonRoot") is True, at
            assert sc.get("runAsUser") == 10001 and sc.get("runAsGroup") == 10001, at
            assert sc.get("seccompProfile") == {"type": "RuntimeDefault"}, at
            res = c.get("resources", {})
            assert {"cpu", "memory"} <= set(res.get("requests", {})), at
            assert {"cpu", "memory"} <= set(res.get("limits", {})), at
            # A read-only root needs somewhere writable for Python and torch temp files.
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, at
            tmp = next(v for v in spec["volumes"] if v["name"] == mounts["/tmp"])
            assert "emptyDir" in tmp, at


@pytest.mark.parametrize("case", CASES)
def test_secrets_never_rendered_into_configmaps(case_docs: CaseDocs, case: str) -> None:
    for cm in find(case_docs(case), "ConfigMap"):
        leaked = SECRET_ENV & set(cm.get("data", {}))
        assert not leaked, f"{cm['metadata']['name']} holds {leaked}"
        assert "redis://" not in json.dumps(cm.get("data", {})), cm["metadata"]["name"]


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
    assert _configmap_data(docs)["ML_API_JOBS_BACKEND"] == "redis"
    assert _configmap_data(docs)["ML_API_RATE_LIMIT_ENABLED"] == "true"
    assert not find(docs, "Deployment", f"{FULLNAME}-redis")


def test_redis_egress_allowed_when_egress_is_closed(case_docs: CaseDocs) -> None:
    np = one(case_docs("redis"), "NetworkPolicy", FULLNAME)
    ports = [p["port"] for rule in np["spec"]["egress"] for p in rule.get("ports", [])]
    assert ports == [53, 53, 6379]


def test_dev_redis_is_hardened_with_aof_and_isolated_from_the_api_selector(case_docs: CaseDocs) -> None:
    docs = case_docs("redis-dev")
    redis = one(docs, "Deployment", f"{FULLNAME}-redis")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert container["image"] == "docker.io/library/redis:7.4-alpine"
    svc = one(docs, "Service", f"{FULLNAME}-redis")
    assert svc["spec"]["ports"][0]["port"] == 6379
    env = env_of(main_container(docs))
    assert env["ML_API_REDIS_URL"]["value"] == f"redis://{FULLNAME}-redis:6379/0"
    # Neither selector may pick up the other's pods, or the API Service would route to Redis.
    api = _deployment(docs)
    api_sel = api["spec"]["selector"]["matchLabels"].items()
    redis_sel = redis["spec"]["selector"]["matchLabels"].items()
    assert not api_sel <= redis["spec"]["template"]["metadata"]["labels"].items()
    assert not redis_sel <= api["spec"]["template"]["metadata"]["labels"].items()
    api_svc_sel = one(docs, "Service", FULLNAME)["spec"]["selector"].items()
    assert not api_svc_sel <= redis["spec"]["template"]["metadata"]["labels"].items()
    np = one(docs, "NetworkPolicy", f"{FULLNAME}-redis")
    assert np["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == dict(api_sel)


def test_secret_looking_extra_config_is_refused(helm: str) -> None:
    from tests.chart.helm import HelmError

    with pytest.raises(HelmError) as exc:
        render(sets=["config.extra.ML_API_REDIS_URL=redis://u:p@h:6379/0"])
    assert "config.extra.ML_API_REDIS_URL looks like a secret" in exc.value.stderr


# --- config and checksum --------------------------------------------------------------------------


def test_settings_are_env_from_the_configmap(default_docs: list[dict[str, Any]]) -> None:
    c = main_container(default_docs)
    assert c["envFrom"][0] == {"configMapRef": {"name": FULLNAME}}
    data = _configmap_data(default_docs)
    assert json.loads(data["ML_API_MODELS"]) == [{"name": "digits", "version": "1", "source": "bundled"}]
    assert data["ML_API_PORT"] == "8000"
    assert data["ML_API_DEVICE"] == "auto"
    assert data["ML_API_MAX_BODY_BYTES"] == "10485760"
    assert json.loads(data["ML_API_RATE_LIMITS"]) == {"default": "100/second"}
    assert all(isinstance(v, str) for v in data.values())


def test_config_change_changes_the_checksum(default_docs: list[dict[str, Any]], helm: str) -> None:
    base = _checksum(default_docs)
    changed = _checksum(render(sets=["config.maxBatchSize=32"]))
    assert changed != base
    assert len(base) == 64 and len(changed) == 64
    # A change outside the ConfigMap must not roll the pods for nothing.
    assert _checksum(render(sets=["replicaCount=3"])) == base


@pytest.mark.parametrize(
    ("sets", "threads"),
    [
        ([], "2"),
        (["resources.limits.cpu=1500m"], "1"),
        (["resources.limits.cpu=500m"], "1"),
        (["resources.limits.cpu=8", "config.workers=2"], "4"),
        (["config.torchThreads=3"], "3"),
        (["resources.limits.cpu=null"], "0"),
    ],
)
def test_torch_threads_match_the_cpu_limit(helm: str, sets: list[str], threads: str) -> None:
    assert _configmap_data(render(sets=sets))["ML_API_TORCH_THREADS"] == threads


# --- GPU ------------------------------------------------------------------------------------------


def test_gpu_case_schedules_only_on_gpu_nodes(case_docs: CaseDocs) -> None:
    docs = case_docs("gpu")
    spec = _pod_spec(docs)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["runtimeClassName"] == "nvidia"
    c = main_container(docs)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    shm = next(v for v in spec["volumes"] if v["name"] == mounts["/dev/shm"])
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert _configmap_data(docs)["ML_API_DEVICE"] == "cuda"


def test_cpu_only_by_default(default_docs: list[dict[str, Any]]) -> None:
    spec = _pod_spec(default_docs)
    assert "nodeSelector" not in spec and "tolerations" not in spec and "runtimeClassName" not in spec
    assert "nvidia.com/gpu" not in json.dumps(main_container(default_docs)["resources"])
    assert "/dev/shm" not in json.dumps(main_container(default_docs)["volumeMounts"])


def test_gpu_merges_user_scheduling_settings(helm: str) -> None:
    docs = render(
        sets=[
            "gpu.enabled=true",
            "gpu.count=2",
            "nodeSelector.pool=inference",
            "tolerations[0].key=dedicated",
            "tolerations[0].operator=Equal",
            "tolerations[0].value=ml",
            "tolerations[0].effect=NoSchedule",
            "priorityClassName=high",
        ]
    )
    spec = _pod_spec(docs)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true", "pool": "inference"}
    assert [t["key"] for t in spec["tolerations"]] == ["dedicated", "nvidia.com/gpu"]
    assert spec["priorityClassName"] == "high"
    assert main_container(docs)["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_topology_spread_and_affinity_go_through_tpl(case_docs: CaseDocs) -> None:
    spec = _pod_spec(case_docs("hardened"))
    assert spec["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    term = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    assert spec["priorityClassName"] == "ml-serving"
    assert main_container(case_docs("hardened"))["image"].endswith(
        "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )


# --- autoscaling ----------------------------------------------------------------------------------


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
    assert "replicas" not in _deployment(docs)["spec"]
    assert not find(docs, "ScaledObject")


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
    assert "replicas" not in _deployment(docs)["spec"]
    assert not find(docs, "HorizontalPodAutoscaler")


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
        assert spec.pop("selector")["matchLabels"] == _deployment(case_docs(case))["spec"]["selector"]["matchLabels"]
        assert spec == pdb


def test_pdb_follows_hpa_minimum_not_replica_count(helm: str) -> None:
    docs = render(sets=["replicaCount=5", "autoscaling.enabled=true", "autoscaling.minReplicas=1"])
    assert find(docs, "PodDisruptionBudget") == []


# --- monitoring -----------------------------------------------------------------------------------


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


def test_pod_monitor_targets_the_pods(case_docs: CaseDocs) -> None:
    docs = case_docs("podmonitor")
    pm = one(docs, "PodMonitor", FULLNAME)
    pod_labels = _deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert pm["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert not find(docs, "ServiceMonitor")


def test_prometheus_rule_carries_the_alert_groups_verbatim(case_docs: CaseDocs) -> None:
    alerts_file = CHART / "files" / "alerts.yaml"
    if not alerts_file.is_file():
        pytest.skip("charts/ml-api/files/alerts.yaml not generated yet (observability work)")
    rule = one(case_docs("monitoring"), "PrometheusRule", FULLNAME)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == yaml.safe_load(alerts_file.read_text())["groups"]
    alert_names = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alert_names, "no alerting rules"


def test_prometheus_rule_fails_clearly_without_alerts_file(helm: str, chart_copy: Path) -> None:
    from tests.chart.helm import HelmError

    (chart_copy / "files" / "alerts.yaml").unlink(missing_ok=True)
    assert render(chart=chart_copy)  # disabled: renders fine without the file
    with pytest.raises(HelmError) as exc:
        render(sets=["prometheusRule.enabled=true"], chart=chart_copy)
    assert "prometheusRule.enabled needs files/alerts.yaml" in exc.value.stderr


def _dashboard_configmaps(docs: list[dict[str, Any]], label: str = "grafana_dashboard") -> list[dict[str, Any]]:
    return [d for d in find(docs, "ConfigMap") if label in d["metadata"].get("labels", {})]


def test_one_dashboard_configmap_per_json_file(case_docs: CaseDocs) -> None:
    files = sorted((CHART / "dashboards").glob("*.json"))
    if not files:
        pytest.skip("charts/ml-api/dashboards/*.json not generated yet (make dashboards)")
    cms = _dashboard_configmaps(case_docs("monitoring"))
    assert len(cms) == len(files)
    by_key = {k: v for cm in cms for k, v in cm["data"].items()}
    for f in files:
        dashboard = json.loads(by_key[f.name])
        assert dashboard == json.loads(f.read_text())
        # Portable dashboards pick the datasource through a variable, never a fixed UID.
        assert "${datasource}" in by_key[f.name] or "$datasource" in by_key[f.name], f.name
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "Serving"


def test_grafana_operator_dashboards_reference_the_configmaps(case_docs: CaseDocs) -> None:
    files = sorted((CHART / "dashboards").glob("*.json"))
    if not files:
        pytest.skip("charts/ml-api/dashboards/*.json not generated yet (make dashboards)")
    docs = case_docs("monitoring")
    crs = find(docs, "GrafanaDashboard")
    assert len(crs) == len(files)
    configmaps = {cm["metadata"]["name"]: cm for cm in _dashboard_configmaps(docs)}
    for cr in crs:
        ref = cr["spec"]["configMapRef"]
        assert ref["key"] in configmaps[ref["name"]]["data"]
        assert cr["spec"]["instanceSelector"] == {"matchLabels": {"dashboards": "grafana"}}
        assert cr["spec"]["folder"] == "Serving"
    assert not find(case_docs("default"), "GrafanaDashboard")


def test_dashboard_label_folder_and_files_are_configurable(helm: str, chart_copy: Path) -> None:
    dash_dir = chart_copy / "dashboards"
    for old in dash_dir.glob("*.json"):
        old.unlink()
    (dash_dir / "A_Latency.json").write_text('{"title": "a", "templating": {"list": []}}')
    (dash_dir / "b.json").write_text('{"title": "b"}')
    (dash_dir / "notes.txt").write_text("not a dashboard")
    docs = render(
        sets=[
            "dashboards.enabled=true",
            "dashboards.label=my_dash",
            "dashboards.labelValue=yes",
            "dashboards.folderAnnotation=k8s-sidecar-target-directory",
            "dashboards.folder=/tmp/dashboards/ML",
        ],
        chart=chart_copy,
    )
    cms = _dashboard_configmaps(docs, "my_dash")
    assert sorted(cm["metadata"]["name"] for cm in cms) == [
        f"{FULLNAME}-dashboard-a-latency",
        f"{FULLNAME}-dashboard-b",
    ]
    for cm in cms:
        assert cm["metadata"]["labels"]["my_dash"] == "yes"
        assert cm["metadata"]["annotations"]["k8s-sidecar-target-directory"] == "/tmp/dashboards/ML"
    assert {k for cm in cms for k in cm["data"]} == {"A_Latency.json", "b.json"}
    # Zero dashboards is a valid state (before `make dashboards` ran).
    for f in dash_dir.glob("*.json"):
        f.unlink()
    assert _dashboard_configmaps(render(sets=["dashboards.enabled=true"], chart=chart_copy)) == []


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


# --- weights, ingress, network --------------------------------------------------------------------


def test_weights_from_existing_pvc(case_docs: CaseDocs) -> None:
    docs = case_docs("pvc-weights")
    spec = _pod_spec(docs)
    vol = next(v for v in spec["volumes"] if v["name"] == "weights")
    assert vol["persistentVolumeClaim"] == {"claimName": "ml-models", "readOnly": True}
    mount = next(m for m in main_container(docs)["volumeMounts"] if m["name"] == "weights")
    assert mount == {"name": "weights", "mountPath": "/models", "readOnly": True, "subPath": "digits"}
    data = _configmap_data(docs)
    assert data["ML_API_WEIGHTS_DIR"] == "/models"
    assert data["TORCH_HOME"] == "/models"
    assert "ML_API_WEIGHTS_DIR" not in _configmap_data(case_docs("default"))


def test_weights_from_init_container(case_docs: CaseDocs) -> None:
    docs = case_docs("init-weights")
    spec = _pod_spec(docs)
    (init,) = spec["initContainers"]
    assert init["image"] == "registry.example.com/ml/weights-digits:3"
    assert {"name": "weights", "mountPath": "/models"} in init["volumeMounts"]
    vol = next(v for v in spec["volumes"] if v["name"] == "weights")
    assert vol["emptyDir"] == {"sizeLimit": "2Gi"}


def test_ingress_routes_to_the_http_port(case_docs: CaseDocs) -> None:
    ing = one(case_docs("ingress"), "Ingress", FULLNAME)
    assert ing["spec"]["ingressClassName"] == "nginx"
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "ml-api.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "http"}}
    assert ing["spec"]["tls"] == [{"secretName": "ml-api-tls", "hosts": ["ml-api.example.com"]}]
    assert not find(case_docs("default"), "Ingress")


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


# --- helm test and NOTES --------------------------------------------------------------------------


def test_helm_test_pod_checks_readiness_and_one_prediction(default_docs: list[dict[str, Any]]) -> None:
    pod = one(default_docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    c = pod["spec"]["containers"][0]
    assert c["image"] == "docker.io/curlimages/curl:8.11.1"
    env = env_of(c)
    assert env["BASE_URL"]["value"] == f"http://{FULLNAME}.{NAMESPACE}.svc:8000"
    script = c["args"][0]
    assert '"$BASE_URL/health/ready"' in script
    assert '"$BASE_URL/api/v1/predict"' in script
    png = base64.b64decode(env["IMAGE_B64"]["value"], validate=True)
    with Image.open(io.BytesIO(png)) as img:
        assert (img.format, img.size) == ("PNG", (8, 8))


def test_helm_test_image_is_overridable_and_can_be_disabled(helm: str) -> None:
    docs = render(sets=["tests.image.registry=mirror.local", "tests.image.repository=tools/curl", "tests.image.tag=1"])
    assert one(docs, "Pod")["spec"]["containers"][0]["image"] == "mirror.local/tools/curl:1"
    assert not find(render(sets=["tests.enabled=false"]), "Pod")


def test_notes_give_exact_port_forward_and_curl_commands(helm: str) -> None:
    version = run_helm("version", "--template", "{{.Version}}")
    if version.startswith("v3."):
        pytest.skip(f"helm {version} cannot render NOTES without a cluster (install --dry-run contacts it)")
    out = run_helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    notes = out.split("NOTES:", 1)[1]
    assert f"kubectl -n {NAMESPACE} port-forward service/{FULLNAME} 8000:8000" in notes
    assert "curl -s http://127.0.0.1:8000/health/ready" in notes
    assert "http://127.0.0.1:8000/api/v1/predict" in notes
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes


def test_render_does_not_depend_on_cluster_capabilities(helm: str) -> None:
    # helm template and helm install must produce the same objects: no silent .Capabilities guessing.
    files = [str(CHART / "ci" / "monitoring-values.yaml")]
    base = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", files[0]]
    plain = run_helm(*base)
    with_apis = run_helm(*base, "--api-versions", "monitoring.coreos.com/v1", "--api-versions", "keda.sh/v1alpha1")
    assert plain == with_apis
    assert "kind: ServiceMonitor" in plain


def _consumer_value_sets() -> list[list[Path]]:
    # The kind dev loop and the e2e suite layer these files on the chart (skaffold.yaml, e2e/kind.py).
    e2e = ROOT / "k8s" / "e2e"
    base = e2e / "values-kind.yaml"
    if not base.is_file():
        return []
    return [[base]] + [[base, f] for f in sorted(e2e.glob("values-*.yaml")) if f != base]


@pytest.mark.parametrize("files", _consumer_value_sets(), ids=lambda fs: "+".join(f.stem for f in fs))
def test_values_used_by_the_dev_loop_and_e2e_render(helm: str, files: list[Path]) -> None:
    docs = render(values_files=files)
    assert one(docs, "Deployment", FULLNAME)
