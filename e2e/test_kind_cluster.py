"""Cluster-only e2e tests (kind target): what only a real cluster can show. Run in file order after
the shared tests (they replace pods); each restores the main release it changes.

The load in the rolling-upgrade and HPA tests goes through the Service's NodePort, mapped to
127.0.0.1:30800 by k8s/kind-config.yaml, so it is balanced over the ready endpoints the way
in-cluster clients see them (a port-forward would pin one pod)."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from e2e.kind import NODEPORT_URL, KindCluster, forwarded, wait_for
from e2e.targets import wait_ready

# Generous: cluster setup (when this file runs alone), metrics-server, the observability stack.
pytestmark = [pytest.mark.kind, pytest.mark.slow, pytest.mark.timeout(3600)]

GPU_RELEASE = "ml-api-gpu"
GPU_NAMESPACE = "ml-api-gpu"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Load:
    """``workers`` threads sending predictions through the NodePort until stopped (bounded by
    ``max_s``), counting every outcome. Each request opens its own connection: the test measures
    the server side (readiness, endpoint removal, drain), not a client's keep-alive retry policy."""

    def __init__(self, png: bytes, workers: int = 4, max_s: float = 600) -> None:
        self.body = {"image_base64": b64(png)}
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + max_s
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _run(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=NODEPORT_URL, timeout=30, limits=limits) as client:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                try:
                    resp = client.post("/api/v1/predict", json=self.body)
                    key = str(resp.status_code)
                    detail = "" if resp.status_code == 200 else resp.text[:200]
                except httpx.HTTPError as exc:
                    key, detail = type(exc).__name__, str(exc)[:200]
                with self._lock:
                    self.outcomes[key] += 1
                    if detail:
                        self.failures.append(f"{key}: {detail}")

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def deployment(cluster: KindCluster, name: str = "ml-api", namespace: str | None = None) -> dict[str, Any]:
    return dict(cluster.get_json("deployment", name, namespace=namespace))


def test_rollout_becomes_ready(kind_cluster: KindCluster) -> None:
    kind_cluster.kubectl("-n", kind_cluster.namespace, "rollout", "status", "deployment/ml-api", "--timeout=300s")
    status = deployment(kind_cluster)["status"]
    assert status["readyReplicas"] == status["replicas"] == 2
    wait_ready(NODEPORT_URL, timeout_s=60)


def test_helm_test_passes(kind_cluster: KindCluster) -> None:
    proc = kind_cluster.helm("test", "ml-api", "--namespace", kind_cluster.namespace, "--timeout", "5m", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Succeeded" in proc.stdout


def test_rolling_helm_upgrade_under_load_loses_no_request(
    kind_cluster: KindCluster, digit_sample: list[tuple[bytes, int]]
) -> None:
    before = kind_cluster.serving_pods()
    assert len(before) == 2, before
    with Load(digit_sample[0][0]) as load:
        time.sleep(5)  # load is flowing before the rollout starts
        # A changed pod annotation is the smallest change that makes Kubernetes replace every pod.
        kind_cluster.install(extra=["--set", f"podAnnotations.e2e-rollout={secrets.token_hex(4)}"])
        kind_cluster.kubectl("-n", kind_cluster.namespace, "rollout", "status", "deployment/ml-api", "--timeout=300s")
        time.sleep(5)  # and still flowing once the old pods are gone
    after = kind_cluster.serving_pods()
    assert len(after) == 2 and before.isdisjoint(after), f"the upgrade did not replace the pods: {before} -> {after}"
    assert load.outcomes["200"] >= 50, load.outcomes
    assert set(load.outcomes) == {"200"}, (load.outcomes, load.failures[:10])


def test_gpu_install_stays_pending_off_gpu_nodes_then_lands_on_the_gpu_worker(kind_cluster: KindCluster) -> None:
    # Left over from an interrupted run: the advertised capacity, and a release whose pod already
    # runs on the GPU worker (withdrawing capacity does not evict it) or whose namespace is still
    # terminating (helm's --create-namespace would fail on it).
    if _gpu_advertised(kind_cluster):
        kind_cluster.script("gpu-capacity", "remove", timeout_s=60)
    _remove_gpu_release(kind_cluster, wait=True)
    try:
        # Its own release and namespace (and a ClusterIP Service: the NodePort belongs to the main one).
        kind_cluster.install(
            "k8s/e2e/values-gpu.yaml",
            extra=["--set", "service.type=ClusterIP", "--set", "service.nodePort="],
            release=GPU_RELEASE,
            namespace=GPU_NAMESPACE,
            wait=False,
        )

        def unschedulable() -> dict[str, Any] | None:
            for pod in kind_cluster.pods(GPU_RELEASE, GPU_NAMESPACE):
                for cond in pod["status"].get("conditions", []):
                    if cond["type"] == "PodScheduled" and cond["status"] == "False":
                        return dict(cond)
            return None

        cond = wait_for(unschedulable, 120, what="the GPU pod to be reported unschedulable")
        assert cond["reason"] == "Unschedulable"
        assert "Insufficient nvidia.com/gpu" in cond["message"], cond["message"]
        time.sleep(15)  # and it stays that way: nothing else would take it
        (pod,) = kind_cluster.pods(GPU_RELEASE, GPU_NAMESPACE)
        assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")

        kind_cluster.script("gpu-capacity", "add", timeout_s=60)
        gpu_nodes = kind_cluster.get_json("nodes", "-l", "nvidia.com/gpu.present=true")["items"]
        (gpu_node,) = [n["metadata"]["name"] for n in gpu_nodes]

        def scheduled_node() -> str | None:
            pods = kind_cluster.pods(GPU_RELEASE, GPU_NAMESPACE)
            return next((p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName")), None)

        assert wait_for(scheduled_node, 120, what="the GPU pod to be scheduled") == gpu_node == "ml-api-worker2"
    finally:
        _remove_gpu_release(kind_cluster, wait=False)
        if _gpu_advertised(kind_cluster):
            kind_cluster.script("gpu-capacity", "remove", timeout_s=60)


def _remove_gpu_release(cluster: KindCluster, wait: bool) -> None:
    cluster.helm("uninstall", GPU_RELEASE, "--namespace", GPU_NAMESPACE, "--wait", "--ignore-not-found", check=False)
    cluster.kubectl(
        "delete", "namespace", GPU_NAMESPACE, "--ignore-not-found", f"--wait={str(wait).lower()}", "--timeout=180s",
        timeout_s=240, check=False,
    )  # fmt: skip


def _gpu_advertised(cluster: KindCluster) -> bool:
    nodes = cluster.get_json("nodes", "-l", "nvidia.com/gpu.present=true")["items"]
    return any("nvidia.com/gpu" in n["status"].get("capacity", {}) for n in nodes)


def test_hpa_scales_out_under_load_and_back_in(
    kind_cluster: KindCluster, digit_sample: list[tuple[bytes, int]]
) -> None:
    kind_cluster.script("metrics-server", timeout_s=600)
    try:
        # The chart stops rendering spec.replicas; Helm was the field's only manager, so the API
        # server resets it to 1, which is also this HPA's minReplicas.
        kind_cluster.install("k8s/e2e/values-hpa.yaml")

        def hpa_status() -> dict[str, Any]:
            return dict(kind_cluster.get_json("hpa", "ml-api").get("status", {}))

        # metrics-server needs a scrape or two before the HPA has a CPU reading.
        wait_for(lambda: hpa_status().get("currentMetrics"), 300, what="HPA CPU metrics")
        wait_for(lambda: hpa_status().get("currentReplicas") == 1, 300, what="HPA at minReplicas before load")
        with Load(digit_sample[0][0], workers=6, max_s=420):
            wait_for(lambda: hpa_status().get("desiredReplicas", 0) > 1, 360, interval_s=5, what="scale-out")
        out = hpa_status()
        assert out["desiredReplicas"] > 1, out
        # Idle again: scale-in after the 30 s stabilisation window (values-hpa.yaml).
        wait_for(lambda: hpa_status().get("desiredReplicas") == 1, 420, interval_s=5, what="scale-in")
        wait_for(
            lambda: deployment(kind_cluster)["status"].get("replicas") == 1, 180, interval_s=5, what="one pod left"
        )
        # Autoscaling off again: the HPA's writes made kube-controller-manager the owner of
        # .spec.replicas; the upgrade takes it back (--force-conflicts) instead of failing on it.
        kind_cluster.install()
        assert deployment(kind_cluster)["spec"]["replicas"] == 2
        assert not kind_cluster.get_json("hpa")["items"]
    finally:
        kind_cluster.install()


def test_observability_servicemonitor_target_is_up_a_trace_reaches_tempo_and_becomes_span_metrics(
    kind_cluster: KindCluster, digit_sample: list[tuple[bytes, int]]
) -> None:
    kind_cluster.script("observability", timeout_s=1800)
    try:
        kind_cluster.install("k8s/e2e/values-observability.yaml")
        with forwarded(kind_cluster.port_forward("kps-prometheus", "monitoring", 9090)) as prom:

            def ml_api_targets_up() -> list[dict[str, Any]]:
                resp = httpx.get(f"{prom.base_url}/api/v1/targets", params={"state": "active"}, timeout=10)
                targets = resp.json()["data"]["activeTargets"]
                ours = [
                    t
                    for t in targets
                    if t["labels"].get("namespace") == kind_cluster.namespace
                    and t["labels"].get("service") == "ml-api"
                    and "serviceMonitor/" in t.get("scrapePool", "")
                ]
                return [t for t in ours if t["health"] == "up"] if ours else []

            up = wait_for(ml_api_targets_up, 300, interval_s=5, what="the ServiceMonitor target up in Prometheus")
            assert len(up) == 2  # one per replica

        # A request that joins a trace we choose, then that trace looked up where the collector sends it.
        trace_id = secrets.token_hex(16)
        traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
        pf_api = kind_cluster.port_forward()
        with forwarded(pf_api), httpx.Client(base_url=pf_api.base_url, timeout=30) as client:
            resp = client.post(
                "/api/v1/predict",
                json={"image_base64": b64(digit_sample[0][0])},
                headers={"traceparent": traceparent},
            )
            assert resp.status_code == 200, resp.text
        with forwarded(kind_cluster.port_forward("tempo", "monitoring", 3200)) as tempo:

            def trace_found() -> bool:
                return httpx.get(f"{tempo.base_url}/api/traces/{trace_id}", timeout=10).status_code == 200

            wait_for(trace_found, 180, interval_s=5, what=f"trace {trace_id} in Tempo via the OTel collector")
        # Tempo's metrics generator (span-metrics processor, k8s/observability/tempo.yaml) remote-writes
        # RED metrics of those spans into Prometheus, under the service name the chart sets.
        with forwarded(kind_cluster.port_forward("kps-prometheus", "monitoring", 9090)) as prom:

            def span_metrics() -> list[dict[str, Any]]:
                query = 'sum by (service) (traces_spanmetrics_calls_total{service="ml-api"})'
                resp = httpx.get(f"{prom.base_url}/api/v1/query", params={"query": query}, timeout=10)
                return list(resp.json()["data"]["result"])

            wait_for(span_metrics, 300, interval_s=10, what="span metrics from Tempo's metrics generator")
    finally:
        kind_cluster.install()
