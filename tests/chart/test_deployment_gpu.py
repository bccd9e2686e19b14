"""templates/deployment.yaml with the GPU on: resources, scheduling, runtime class, /dev/shm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import (
    CaseDocs,
    configmap_data,
    main_container,
    pod_spec,
    render,
)

pytestmark = pytest.mark.helm


def test_gpu_operator_case_selects_gpu_nodes_and_the_nvidia_runtime(case_docs: CaseDocs) -> None:
    docs = case_docs("gpu")
    spec = pod_spec(docs)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["runtimeClassName"] == "nvidia"
    c = main_container(docs)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    shm = next(v for v in spec["volumes"] if v["name"] == mounts["/dev/shm"])
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert configmap_data(docs)["ML_API_DEVICE"] == "cuda"
    # The example keeps pods without a usable GPU out of the Service instead of serving on the CPU.
    assert configmap_data(docs)["ML_API_DEVICE_REQUIRED"] == "true"


def test_device_required_is_off_unless_set(helm: str, default_docs: list[dict[str, Any]]) -> None:
    assert configmap_data(default_docs)["ML_API_DEVICE_REQUIRED"] == "false"
    assert configmap_data(render(sets=["gpu.enabled=true"]))["ML_API_DEVICE_REQUIRED"] == "false"
    assert configmap_data(render(sets=["config.deviceRequired=true"]))["ML_API_DEVICE_REQUIRED"] == "true"


def test_cpu_only_by_default(default_docs: list[dict[str, Any]]) -> None:
    spec = pod_spec(default_docs)
    assert "nodeSelector" not in spec and "tolerations" not in spec and "runtimeClassName" not in spec
    assert "nvidia.com/gpu" not in json.dumps(main_container(default_docs)["resources"])
    assert "/dev/shm" not in json.dumps(main_container(default_docs)["volumeMounts"])


def test_gpu_defaults_select_no_node_label_and_no_runtime_class(helm: str) -> None:
    # nvidia.com/gpu.present exists only where GPU Feature Discovery runs: as a default it left pods
    # Pending on stock GKE and EKS GPU nodes. The GPU request is what keeps the pod off CPU nodes.
    docs = render(sets=["gpu.enabled=true"])
    spec = pod_spec(docs)
    assert "nodeSelector" not in spec
    assert "runtimeClassName" not in spec
    # GKE and the GPU Operator taint GPU nodes; without the toleration nothing could schedule there.
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert main_container(docs)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert configmap_data(docs)["ML_API_DEVICE"] == "cuda"


@pytest.mark.parametrize(
    "selector",
    [
        {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
        {"eks.amazonaws.com/nodegroup": "gpu-nodes"},
        {"karpenter.k8s.aws/instance-gpu-count": "1"},
        {"nvidia.com/gpu.present": "true"},
    ],
    ids=["gke", "eks-nodegroup", "karpenter", "gpu-operator"],
)
def test_platform_gpu_selectors_are_opt_in_values(helm: str, tmp_path: Path, selector: dict[str, str]) -> None:
    values = tmp_path / "gpu-selector.yaml"
    values.write_text(yaml.safe_dump({"gpu": {"nodeSelector": selector}}))
    assert pod_spec(render([values], sets=["gpu.enabled=true"]))["nodeSelector"] == selector
    # A GPU node label means nothing while the GPU is off.
    assert "nodeSelector" not in pod_spec(render([values]))


def test_runtime_class_only_when_set_and_gpu_on(helm: str) -> None:
    assert pod_spec(render(sets=["gpu.enabled=true", "gpu.runtimeClassName=nvidia"]))["runtimeClassName"] == "nvidia"
    assert "runtimeClassName" not in pod_spec(render(sets=["gpu.runtimeClassName=nvidia"]))


def test_gpu_merges_user_scheduling_settings(helm: str, tmp_path: Path) -> None:
    values = tmp_path / "gpu-operator.yaml"
    values.write_text(yaml.safe_dump({"gpu": {"nodeSelector": {"nvidia.com/gpu.present": "true"}}}))
    docs = render(
        [values],
        sets=[
            "gpu.enabled=true",
            "gpu.count=2",
            "nodeSelector.pool=inference",
            "tolerations[0].key=dedicated",
            "tolerations[0].operator=Equal",
            "tolerations[0].value=ml",
            "tolerations[0].effect=NoSchedule",
            "priorityClassName=high",
        ],
    )
    spec = pod_spec(docs)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true", "pool": "inference"}
    assert [t["key"] for t in spec["tolerations"]] == ["dedicated", "nvidia.com/gpu"]
    assert spec["priorityClassName"] == "high"
    assert main_container(docs)["resources"]["limits"]["nvidia.com/gpu"] == 2
