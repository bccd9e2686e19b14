"""The models file format (ML_API_MODELS_FILE) and the shadow settings: what is accepted, what is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.inference.model_config import (
    MAX_FILE_BYTES,
    ModelConfig,
    ModelConfigError,
    parse_model_file,
    read_model_file,
)
from service.settings import Settings
from tests.conftest import ROOT, make_settings

TWO = [{"name": "digits", "version": "1"}, {"name": "digits", "version": "2"}]


def test_a_list_is_the_model_list_and_the_rest_comes_from_the_settings() -> None:
    defaults = make_settings(models=TWO, traffic_split={"digits": {"1": 3, "2": 1}})
    config = parse_model_file(json.dumps(TWO), defaults)
    assert [s.key for s in config.models] == [("digits", "1"), ("digits", "2")]
    assert config.default_model == "digits"
    assert config.traffic_split == {"digits": {"1": 3.0, "2": 1.0}}
    assert config.shadow == {}


def test_an_object_carries_default_model_split_and_shadow() -> None:
    text = json.dumps(
        {
            "models": [*TWO, {"name": "other", "version": "a"}],
            "default_model": "other",
            "traffic_split": {"digits": {"1": 1}},
            "shadow": {"digits": {"version": "2", "rate": 0.25}},
        }
    )
    config = parse_model_file(text, make_settings())
    assert config.default_model == "other"
    assert config.traffic_split == {"digits": {"1": 1.0}}
    assert config.shadow["digits"].version == "2" and config.shadow["digits"].rate == 0.25
    assert config.serving_versions("digits") == ["1"]
    assert config.is_shadow("digits", "2") and not config.is_shadow("digits", "1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('"digits"', "expected a JSON list"),
        ("[]", "models"),
        ('{"default_model": "digits"}', "no 'models' list"),
        ('{"models": [], "extra": 1}', "unknown keys ['extra']"),
        (json.dumps([{"name": "digits", "version": "1"}] * 2), "same name and version twice"),
        (json.dumps({"models": [{"name": "x"}], "default_model": "digits"}), "default_model 'digits'"),
        (json.dumps([{"name": "digits", "source": "file"}]), "needs 'path' and 'labels'"),
        (json.dumps([{"name": "digits", "version": "1", "weights": 3}]), "models.0.weights"),
        (json.dumps({"models": TWO, "traffic_split": {"digits": {"9": 1}}}), "unknown model/version"),
        (json.dumps({"models": TWO, "shadow": {"digits": {"version": "3"}}}), "not in the list"),
        (json.dumps({"models": TWO[:1], "shadow": {"digits": {"version": "1"}}}), "its only version"),
        (json.dumps({"models": TWO, "shadow": {"digits": {"version": "2", "rate": 2}}}), "less than or equal to 1"),
        (
            json.dumps({"models": TWO, "traffic_split": {"digits": {"2": 1}}, "shadow": {"digits": {"version": "2"}}}),
            "has a traffic_split weight",
        ),
    ],
)
def test_a_bad_file_is_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ModelConfigError) as exc:
        parse_model_file(text, make_settings())
    assert message in str(exc.value)


def test_unreadable_oversized_and_binary_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="cannot read"):
        read_model_file(str(tmp_path / "missing.json"), make_settings())
    big = tmp_path / "big.json"
    big.write_text(" " * (MAX_FILE_BYTES + 1))
    with pytest.raises(ModelConfigError, match="larger than"):
        read_model_file(str(big), make_settings())
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe[]")
    with pytest.raises(ModelConfigError, match="not UTF-8"):
        read_model_file(str(binary), make_settings())


def test_the_settings_serve_the_files_models(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": TWO, "shadow": {"digits": {"version": "1", "rate": 0.5}}}))
    settings = make_settings(models_file=str(path))
    assert [s.version for s in settings.models] == ["1", "2"]
    assert settings.shadow["digits"].rate == 0.5
    assert ModelConfig.of_settings(settings).serving_versions("digits") == ["2"]


def test_a_file_naming_a_default_only_it_has_is_fine(tmp_path: Path) -> None:
    # The environment's default model list does not have "other": the file's is what counts.
    path = tmp_path / "models.json"
    path.write_text(json.dumps([{"name": "other", "version": "1"}]))
    assert make_settings(models_file=str(path), default_model="other").default_model == "other"


def test_models_and_models_file_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    path.write_text(json.dumps(TWO))
    with pytest.raises(ValueError, match="not both"):
        make_settings(models_file=str(path), models=TWO)


def test_an_env_shadow_must_name_a_listed_version() -> None:
    with pytest.raises(ValueError, match="ML_API_SHADOW"):
        Settings(_env_file=None, shadow={"digits": {"version": "2"}})
    assert Settings(_env_file=None, models=TWO, shadow={"digits": {"version": "2"}}).shadow["digits"].rate == 0.1


@pytest.mark.parametrize(
    ("content", "shown"),
    [(None, "cannot read"), ("{broken", "not valid JSON"), (json.dumps([{"name": "x"}]), "default_model")],
)
def test_a_bad_file_at_start_up_stops_it_naming_the_variable(tmp_path: Path, content: str | None, shown: str) -> None:
    path = tmp_path / "models.json"
    if content is not None:
        path.write_text(content)
    result = subprocess.run(
        [sys.executable, "-c", "from service.settings import load_settings; load_settings()"],
        env={"PATH": "/usr/bin:/bin", "ML_API_MODELS_FILE": str(path)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ML_API_MODELS_FILE" in result.stderr and shown in result.stderr
    assert "Traceback" not in result.stderr
