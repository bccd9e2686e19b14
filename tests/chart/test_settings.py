"""The environment the chart gives the container is accepted by the service itself: every case's
ConfigMap and env parse with `service.settings.Settings`, and the helm test script passes against a
real server started with the chart's settings."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from service.settings import Settings
from tests.chart.helm import (
    CHART,
    NAMESPACE,
    RELEASE,
    SECRETS,
    CaseDocs,
    ci_cases,
    container_env,
    env_of,
    main_container,
    one,
    run_helm,
)
from tests.conftest import live_server

pytestmark = pytest.mark.helm


@pytest.mark.parametrize("case", list(ci_cases()))
def test_service_accepts_the_rendered_settings(
    case_docs: CaseDocs, case: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = container_env(case_docs(case))
    if "ML_API_MODELS_FILE" in env:  # models.fromConfigMap: the file kubelet would mount, here
        models = tmp_path / "models.json"
        models.write_text(one(case_docs(case), "ConfigMap", f"{RELEASE}-ml-api-models")["data"]["models.json"])
        env["ML_API_MODELS_FILE"] = str(models)
    for key in [k for k in os.environ if k.startswith("ML_API_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.port == 8000
    assert settings.grpc_port == int(env["ML_API_GRPC_PORT"]) in (0, 8081)
    assert settings.max_batch_size == int(env["ML_API_MAX_BATCH_SIZE"])
    assert settings.torch_threads == int(env["ML_API_TORCH_THREADS"])
    assert settings.shutdown_grace_s == float(env["ML_API_SHUTDOWN_GRACE_S"])
    assert [m.name for m in settings.models]  # at least one model, default among them
    assert settings.default_model in {m.name for m in settings.models}
    if "ML_API_API_KEYS" in env:
        assert [k.get_secret_value() for k in settings.api_keys] == ["chart-test-key"]
    if settings.jobs_backend == "redis":
        assert settings.redis_url is not None
        assert settings.rate_limit_storage_uri == settings.redis_url.get_secret_value()


@pytest.mark.slow
def test_helm_test_script_passes_against_a_server_with_the_chart_settings(case_docs: CaseDocs) -> None:
    """Runs the hook pod's own shell script (with the local sh and curl) against `python -m service`
    configured from the hardened case: auth on, so the script must find and send the API key."""
    docs = case_docs("hardened")
    env = {k: v for k, v in container_env(docs).items() if k.startswith("ML_API_")}
    env.pop("ML_API_HOST")
    env.pop("ML_API_PORT")
    env.pop("ML_API_GRPC_PORT")  # live_server picks a free one: the chart's 8081 may be taken here
    pod = one(docs, "Pod")
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["/bin/sh", "-ec"]
    script = container["args"][0]
    test_env = {e["name"]: e for e in container["env"]}
    api_keys_ref = test_env["API_KEYS"]["valueFrom"]["secretKeyRef"]
    with live_server(env=env) as base:
        proc = subprocess.run(
            ["/bin/sh", "-ec", script],
            env={
                "PATH": "/usr/bin:/bin",
                "BASE_URL": base,
                "IMAGE_B64": test_env["IMAGE_B64"]["value"],
                "API_KEYS": SECRETS[(api_keys_ref["name"], api_keys_ref["key"])],
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "ok: prediction returned" in proc.stdout
        # Without the key the same script must fail: auth is really on.
        denied = subprocess.run(
            ["/bin/sh", "-ec", script],
            env={"PATH": "/usr/bin:/bin", "BASE_URL": base, "IMAGE_B64": test_env["IMAGE_B64"]["value"]},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert denied.returncode != 0
        assert "401" in denied.stderr
    assert env_of(main_container(docs))["ML_API_API_KEYS"]["valueFrom"]["secretKeyRef"] == api_keys_ref


@pytest.mark.slow
def test_notes_commands_work_against_a_server_with_the_chart_settings(case_docs: CaseDocs, tmp_path: Path) -> None:
    """Every command NOTES.txt prints after port-forward is run as written (the local address swapped
    for a live server configured from the default case)."""
    version = run_helm("version", "--template", "{{.Version}}")
    if version.startswith("v3."):
        pytest.skip(f"helm {version} cannot render NOTES without a cluster")
    notes = run_helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    block = notes.split("Then, in another terminal", 1)[1].split("API docs:", 1)[0]
    commands = [c.strip() for c in block.replace("\\\n", " ").splitlines()[1:] if c.strip()]
    assert [c.split()[0] for c in commands] == ["echo", "curl", "curl", "curl", "curl"]
    env = {k: v for k, v in container_env(case_docs("default")).items() if k.startswith("ML_API_")}
    env.pop("ML_API_HOST")
    env.pop("ML_API_PORT")
    env.pop("ML_API_GRPC_PORT")  # live_server picks a free one: the chart's 8081 may be taken here
    with live_server(env=env) as base:
        outputs = []
        for command in commands:
            proc = subprocess.run(
                ["/bin/sh", "-ec", command.replace("http://127.0.0.1:8000", base)],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert proc.returncode == 0, f"{command}: {proc.stderr}"
            outputs.append(proc.stdout)
    assert (tmp_path / "digit.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads(outputs[1]) == {"status": "ready"}
    assert json.loads(outputs[2])["default"] == "digits"
    for out in outputs[3:]:
        assert json.loads(out)["predictions"], out
