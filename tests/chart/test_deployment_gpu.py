"""templates/deployment.yaml with the GPU on: resources, scheduling, runtime class, /dev/shm."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.chart.helm import (
    CaseDocs,
    configmap_data,
    main_container,
    pod_spec,
    render,
)

pytestmark = pytest.mark.helm


def test_gpu_case_schedules_only_on_gpu_nodes(case_docs: CaseDocs) -> None:
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


def test_cpu_only_by_default(default_docs: list[dict[str, Any]]) -> None:
    spec = pod_spec(default_docs)
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
    spec = pod_spec(docs)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true", "pool": "inference"}
    assert [t["key"] for t in spec["tolerations"]] == ["dedicated", "nvidia.com/gpu"]
    assert spec["priorityClassName"] == "high"
    assert main_container(docs)["resources"]["limits"]["nvidia.com/gpu"] == 2
