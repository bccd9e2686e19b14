"""Settings: read from the environment, invalid values stop start-up naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.settings import Settings
from tests.conftest import ROOT


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ML_API_MAX_BATCH_SIZE": "0"}, "ML_API_MAX_BATCH_SIZE"),
        ({"ML_API_DEVICE": "tpu"}, "ML_API_DEVICE"),
        ({"ML_API_MODELS": "not json"}, "ML_API_MODELS"),
        ({"ML_API_DEFAULT_MODEL": "missing"}, "ML_API_DEFAULT_MODEL"),
        ({"ML_API_URL_FETCH_ALLOWED_NETWORKS": '["not-a-cidr"]'}, "ML_API_URL_FETCH_ALLOWED_NETWORKS"),
    ],
)
def test_invalid_settings_stop_start_up_naming_the_variable(env: dict[str, str], variable: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from service.settings import load_settings; load_settings()"],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_settings_read_json_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_API_MODELS", '[{"name":"digits","version":"1"},{"name":"digits","version":"2"}]')
    monkeypatch.setenv("ML_API_TRAFFIC_SPLIT", '{"digits":{"1":80,"2":20}}')
    settings = Settings(_env_file=None)
    assert settings.versions_of("digits") == ["1", "2"]
    assert settings.traffic_split == {"digits": {"1": 80.0, "2": 20.0}}
