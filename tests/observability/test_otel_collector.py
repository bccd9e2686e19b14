"""k8s/observability/otel-collector.yaml: the per-node OpenTelemetry Collector."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.observability.promql_sources import ROOT
from tests.observability.upstream import find, render, values

NAME = "otel-collector.yaml"
# GKE's and the GPU Operator's GPU taint, and the one k8s/kind-config.yaml gives the GPU-like worker.
GPU_TAINTS = [
    {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
    {"key": "nvidia.com/gpu", "effect": "NoSchedule"},
]


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, str]) -> bool:
    """Kubernetes' matching rule: a toleration matches a taint when the keys match (an empty key
    with Exists matches every key), the values match (Exists ignores them) and the effects match
    (an empty effect matches every effect)."""
    for t in tolerations:
        operator = t.get("operator", "Equal")
        if t.get("key", "") not in ("", taint["key"]) or (not t.get("key") and operator != "Exists"):
            continue
        if operator == "Equal" and t.get("value", "") != taint.get("value", ""):
            continue
        if t.get("effect", "") in ("", taint["effect"]):
            return True
    return False


def test_collector_daemonset_tolerates_gpu_nodes() -> None:
    kind_gpu_worker = yaml.safe_load((ROOT / "k8s" / "kind-config.yaml").read_text())["nodes"][2]
    (patch,) = [yaml.safe_load(p) for p in kind_gpu_worker["kubeadmConfigPatches"]]
    taints = [*GPU_TAINTS, *patch["nodeRegistration"]["taints"]]
    tolerations = values(NAME)["tolerations"]
    for taint in taints:
        assert tolerates(tolerations, taint), taint
    # The matcher has teeth: the chart's default (none) and a toleration for another key fail.
    assert not tolerates([], taints[0])
    assert not tolerates([{"key": "dedicated", "operator": "Exists"}], taints[0])


@pytest.mark.helm
def test_rendered_collector_runs_on_tainted_nodes_behind_a_node_local_service() -> None:
    objects = render(NAME)
    daemonset = find(objects, "DaemonSet", "otel-collector-agent")
    tolerations = daemonset["spec"]["template"]["spec"]["tolerations"]
    assert tolerations == values(NAME)["tolerations"]
    assert all(tolerates(tolerations, taint) for taint in GPU_TAINTS)
    # Why it matters: the Service only routes to the collector on the sender's node.
    assert find(objects, "Service", "otel-collector")["spec"]["internalTrafficPolicy"] == "Local"


@pytest.mark.helm
def test_rendered_collector_pipelines_send_traces_to_tempo_and_logs_to_loki() -> None:
    objects = render(NAME)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    # The chart names the DaemonSet "<fullname>-agent"; the Service keeps the fullname.
    assert ("DaemonSet", "otel-collector-agent") in kinds and ("Service", "otel-collector") in kinds
    config = find(objects, "ConfigMap")
    relay = yaml.safe_load(config["data"]["relay"])
    assert set(relay["receivers"]) == {"otlp", "file_log", "prometheus"}
    assert relay["service"]["pipelines"]["traces"]["exporters"] == ["otlp/tempo"]
    assert relay["service"]["pipelines"]["logs"]["exporters"] == ["otlphttp/loki"]
    assert "k8s_attributes" in relay["service"]["pipelines"]["traces"]["processors"]
