"""Alert rules: promtool check and unit tests, one firing and one quiet case per alert, runbooks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.promql_sources import ALERTS_FILE, ALERTS_TEST_FILE

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not on PATH (apt-get install prometheus)"
)


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS_FILE.read_text())["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, check=False)


@needs_promtool
def test_promtool_check_rules_accepts_every_rule() -> None:
    result = _promtool("check", "rules", str(ALERTS_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", str(ALERTS_TEST_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = [case for test in yaml.safe_load(ALERTS_TEST_FILE.read_text())["tests"] for case in test["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    names = {a["alert"] for a in _alerts()}
    assert names == {
        "MlApiHighErrorRatio",
        "MlApiLatencyBudgetBurnFast",
        "MlApiLatencyBudgetBurnSlow",
        "MlApiQueueSaturated",
        "MlApiInflightNearCapacity",
        "MlApiPodsNotReady",
        "MlApiModelNotLoaded",
    }
    assert fires == names, f"alerts never shown firing: {names - fires}"
    assert quiet == names, f"alerts never shown quiet: {names - quiet}"


def test_every_alert_has_severity_for_duration_and_runbook_annotations() -> None:
    for alert in _alerts():
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        assert re.fullmatch(r"\d+m", alert["for"]), alert["alert"]
        annotations = alert["annotations"]
        assert set(annotations) == {"summary", "description", "runbook"}, alert["alert"]
        assert len(annotations["runbook"]) > 80 and "docs/observability.md#runbooks" in annotations["runbook"]


def test_rules_file_is_plain_prometheus_groups_without_helm_templating() -> None:
    # The chart embeds the file with .Files.Get + toYaml (no tpl), so Prometheus' own `{{ $labels.x }}`
    # templates must be the only braces, and the top level must be `groups:` only.
    document = yaml.safe_load(ALERTS_FILE.read_text())
    assert list(document) == ["groups"]
    braces = re.findall(r"\{\{(.*?)\}\}", ALERTS_FILE.read_text())
    assert braces and all(re.fullmatch(r" \$(labels\.\w+|value)( \| humanizePercentage)? ", b) for b in braces)


def _mutated_run(tmp_path: Path, old: str, new: str, alert: str) -> subprocess.CompletedProcess[str]:
    text = ALERTS_FILE.read_text()
    assert old in text
    (tmp_path / "alerts.yaml").write_text(text.replace(old, new))
    tests = yaml.safe_load(ALERTS_TEST_FILE.read_text())
    tests["rule_files"] = [str(tmp_path / "alerts.yaml")]
    # Only the alert's own cases: the long-window burn-rate cases take most of promtool's time.
    tests["tests"] = [t for t in tests["tests"] if any(c["alertname"] == alert for c in t["alert_rule_test"])]
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    return _promtool("test", "rules", str(tmp_path / "alerts_test.yaml"))


@needs_promtool
@pytest.mark.parametrize(
    ("old", "new", "failing_alert"),
    [
        ("ml_api:http_errors:ratio_rate5m > 0.05", "ml_api:http_errors:ratio_rate5m > 0.5", "MlApiHighErrorRatio"),
        # Counting probes as requests dilutes the error ratio below the threshold.
        ('handler!~"/metrics|/health.*"', 'handler!~"/metrics"', "MlApiHighErrorRatio"),
        ("avg_per_pod > 12", "avg_per_pod > 10", "MlApiInflightNearCapacity"),
        ("unless on (namespace, pod)\n", "or on (namespace, pod)\n", "MlApiPodsNotReady"),
        # "Ever 0 in a long window" would page for every pod that loaded slowly.
        (
            "max_over_time(ml_api_model_loaded[5m]) == 0",
            "min_over_time(ml_api_model_loaded[15m]) == 0",
            "MlApiModelNotLoaded",
        ),
    ],
)
def test_unit_tests_catch_a_broken_rule(tmp_path: Path, old: str, new: str, failing_alert: str) -> None:
    result = _mutated_run(tmp_path, old, new, failing_alert)
    assert result.returncode != 0, f"promtool tests still pass with {new!r}"
    assert f"alertname: {failing_alert}" in result.stdout + result.stderr
