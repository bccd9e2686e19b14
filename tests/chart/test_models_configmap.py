"""models.fromConfigMap: the model list in a ConfigMap of its own, mounted as ML_API_MODELS_FILE, so a
change to it reloads the running pods instead of rolling them; read by the service itself."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.inference.model_config import parse_model_file
from tests.chart.helm import (
    CI_DIR,
    FULLNAME,
    CaseDocs,
    configmap_data,
    container_env,
    deployment,
    find,
    main_container,
    one,
    pod_spec,
    render,
)
from tests.conftest import make_settings
from tests.dataplane.test_reload_live import ConfigMapMount
from tests.servers import server

pytestmark = pytest.mark.helm

CASE = CI_DIR / "models-configmap-values.yaml"
MODELS_CM = f"{FULLNAME}-models"


def models_json(docs: list[dict[str, Any]]) -> str:
    text: str = one(docs, "ConfigMap", MODELS_CM)["data"]["models.json"]
    return text


def test_by_default_the_models_are_settings_and_nothing_is_mounted(default_docs: list[dict[str, Any]]) -> None:
    data = configmap_data(default_docs)
    assert json.loads(data["ML_API_MODELS"]) == [{"name": "digits", "version": "1", "source": "bundled"}]
    assert json.loads(data["ML_API_SHADOW"]) == {}
    assert data["ML_API_PREDICTION_LOG_RATE"] == "0" and data["ML_API_SHADOW_MAX_INFLIGHT"] == "8"
    assert "ML_API_MODELS_FILE" not in data
    assert not find(default_docs, "ConfigMap", MODELS_CM)
    assert "models" not in {v["name"] for v in pod_spec(default_docs)["volumes"]}


def test_the_models_configmap_is_the_file_the_service_reads(case_docs: CaseDocs) -> None:
    docs = case_docs("models-configmap")
    data = configmap_data(docs)
    for key in ("ML_API_MODELS", "ML_API_DEFAULT_MODEL", "ML_API_TRAFFIC_SPLIT", "ML_API_SHADOW"):
        assert key not in data, key
    assert data["ML_API_MODELS_FILE"] == "/etc/ml-api/models/models.json"
    assert data["ML_API_MODELS_FILE_POLL_S"] == "1"
    assert data["ML_API_PREDICTION_LOG_RATE"] == "0.05"
    config = parse_model_file(models_json(docs), make_settings())
    assert [s.key for s in config.models] == [("digits", "1"), ("digits", "2")]
    assert config.shadow["digits"].version == "2" and config.shadow["digits"].rate == 0.1
    assert config.serving_versions("digits") == ["1"]
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["models"] == {"name": "models", "configMap": {"name": MODELS_CM}}
    (mount,) = [m for m in main_container(docs)["volumeMounts"] if m["name"] == "models"]
    # A subPath mount is a bind of one file at pod start: kubelet would never update it.
    assert mount == {"name": "models", "mountPath": "/etc/ml-api/models", "readOnly": True}


def _template(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(docs)["spec"]["template"]
    return spec


def _values(tmp_path: Path, name: str, values: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}-values.yaml"
    path.write_text(json.dumps(values))  # JSON is YAML; floats stay floats (helm --set makes them strings)
    return path


def test_changing_the_models_rolls_no_pod_but_a_new_image_does(helm: str, tmp_path: Path) -> None:
    base = render([CASE])
    three = [{"name": "digits", "version": v, "source": "bundled"} for v in ("1", "2", "3")]
    update = {"config": {"models": three, "shadow": {"digits": {"version": "3", "rate": 0.5}}}}
    changed = render([CASE, _values(tmp_path, "update", update)])
    assert models_json(changed) != models_json(base)
    assert _template(changed) == _template(base)  # the pods see the new file where they run
    assert _template(render([CASE], sets=["image.tag=2.0.0"])) != _template(base)
    # Without the ConfigMap mount, the same change is a setting: envFrom is read at start, so it rolls.
    plain = render(sets=["config.defaultModel=digits"])
    assert _template(render(sets=["config.trafficSplit.digits.1=1"])) != _template(plain)


@pytest.mark.slow
def test_a_rendered_update_reloads_a_running_server(
    tmp_path: Path, case_docs: CaseDocs, digit_pngs: list[bytes]
) -> None:
    """The chart's files as kubelet would lay them out, a real server on them, and a second render
    (shadow off, version 2 taking all traffic) swapped in: served without a restart."""
    docs = case_docs("models-configmap")
    mount = ConfigMapMount(tmp_path / "models")
    mount.write(models_json(docs))
    env = {k: v for k, v in container_env(docs).items() if k.startswith("ML_API_")}
    for key in ("ML_API_HOST", "ML_API_PORT"):
        env.pop(key)
    env.update(ML_API_MODELS_FILE=str(mount.file), ML_API_MODELS_FILE_POLL_S="0.2")
    with server("uvicorn", env, tmp_path / "stderr.log") as srv:
        listed = httpx.get(f"{srv.base}/api/v1/models", timeout=10).json()
        assert {m["version"]: m["shadow_rate"] for m in listed["models"]} == {"1": None, "2": 0.1}
        update = render(
            [CASE, _values(tmp_path, "update", {"config": {"shadow": None, "trafficSplit": {"digits": {"2": 1}}}})]
        )
        mount.write(models_json(update))
        deadline = time.monotonic() + 60
        while (body := httpx.get(f"{srv.base}/api/v1/models", timeout=10).json())["config"]["generation"] < 2:
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
        answer = httpx.post(
            f"{srv.base}/api/v1/predict/upload", content=digit_pngs[0], headers={"content-type": "image/png"}
        )
        assert answer.json()["model_version"] == "2"
        assert {m["version"]: m["shadow_rate"] for m in body["models"]} == {"1": None, "2": None}
        assert srv.process.poll() is None  # the same process: reloaded, not restarted


def test_notes_say_the_models_reload_without_a_rollout(helm: str) -> None:
    from tests.chart.test_notes import notes

    text = notes("-f", str(CASE))
    assert f"they are in ConfigMap {MODELS_CM}, mounted at /etc/ml-api/models/models.json" in text
    assert "A new image or any other setting still rolls the pods" in text
    assert "Models reload without a rollout" not in notes()
