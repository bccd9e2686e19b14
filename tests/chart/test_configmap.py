"""templates/configmap.yaml: the ML_API_* settings, the checksum that rolls pods, no secrets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.chart.helm import (
    FULLNAME,
    CaseDocs,
    HelmError,
    checksum,
    ci_cases,
    configmap_data,
    find,
    main_container,
    render,
)

pytestmark = pytest.mark.helm

CASES = list(ci_cases())
SECRET_ENV = {"ML_API_API_KEYS", "ML_API_REDIS_URL", "ML_API_RATE_LIMIT_STORAGE_URI"}


def test_settings_are_env_from_the_configmap(default_docs: list[dict[str, Any]]) -> None:
    c = main_container(default_docs)
    assert c["envFrom"][0] == {"configMapRef": {"name": FULLNAME}}
    data = configmap_data(default_docs)
    assert json.loads(data["ML_API_MODELS"]) == [{"name": "digits", "version": "1", "source": "bundled"}]
    assert data["ML_API_PORT"] == "8000"
    assert data["ML_API_DEVICE"] == "auto"
    assert data["ML_API_MAX_BODY_BYTES"] == "10485760"
    assert json.loads(data["ML_API_RATE_LIMITS"]) == {"default": "100/second"}
    assert all(isinstance(v, str) for v in data.values())


def test_config_change_changes_the_checksum(default_docs: list[dict[str, Any]], helm: str) -> None:
    base = checksum(default_docs)
    changed = checksum(render(sets=["config.maxBatchSize=32"]))
    assert changed != base
    assert len(base) == 64 and len(changed) == 64
    # A change outside the ConfigMap must not roll the pods for nothing.
    assert checksum(render(sets=["replicaCount=3"])) == base


@pytest.mark.parametrize(
    ("sets", "threads", "instances"),
    [
        ([], "0", "0"),  # adaptive: the service reads the CPU limit from its cgroup
        (["resources.limits.cpu=8", "config.workers=2"], "0", "0"),
        (["config.torchThreads=3"], "3", "0"),
        (["config.modelInstances=2"], "0", "2"),
    ],
)
def test_threads_and_instances_are_adaptive_unless_pinned(
    helm: str, sets: list[str], threads: str, instances: str
) -> None:
    data = configmap_data(render(sets=sets))
    assert (data["ML_API_TORCH_THREADS"], data["ML_API_MODEL_INSTANCES"]) == (threads, instances)


@pytest.mark.parametrize("case", CASES)
def test_secrets_never_rendered_into_configmaps(case_docs: CaseDocs, case: str) -> None:
    for cm in find(case_docs(case), "ConfigMap"):
        leaked = SECRET_ENV & set(cm.get("data", {}))
        assert not leaked, f"{cm['metadata']['name']} holds {leaked}"
        assert "redis://" not in json.dumps(cm.get("data", {})), cm["metadata"]["name"]


def test_secret_looking_extra_config_is_refused(helm: str) -> None:
    with pytest.raises(HelmError) as exc:
        render(sets=["config.extra.ML_API_REDIS_URL=redis://u:p@h:6379/0"])
    assert "config.extra.ML_API_REDIS_URL looks like a secret" in exc.value.stderr
