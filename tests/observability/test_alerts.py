"""Alert rules: promtool check and unit tests, one firing and one quiet case per alert, runbooks.

The unit tests run against the rules as the chart's PrometheusRule carries them (rendered by the
real helm), since rules that select the release's own objects get its fullname from the template."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.promql_sources import ALERTS_FILE, ALERTS_TEST_FILE, ROOT

CHART = ROOT / "charts" / "ml-api"
PLACEHOLDER = "ML_API_FULLNAME"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not on PATH (apt-get install prometheus)"
)


def _helm() -> str:
    helm = ROOT / ".tools" / "bin" / "helm"
    if not helm.is_file():
        pytest.skip("helm not installed (make tools): the rules are tested as the chart renders them")
    return str(helm)


def render_rules(out: Path, *sets: str, chart: Path = CHART, release: str = "ml-api") -> Path:
    """The PrometheusRule's groups for ``release`` (plus ``sets``) as a Prometheus rules file."""
    args = ["template", release, str(chart), "--set", "prometheusRule.enabled=true", *sets]
    args += ["--show-only", "templates/prometheusrule.yaml"]
    proc = subprocess.run([_helm(), *args], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    rule = yaml.safe_load(proc.stdout)
    out.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return out


def _unit_tests(rules: Path, out: Path, tests: list[dict[str, Any]] | None = None) -> Path:
    """alerts_test.yaml (or ``tests``) pointed at ``rules``."""
    document = yaml.safe_load(ALERTS_TEST_FILE.read_text())
    document["rule_files"] = [str(rules)]
    if tests is not None:
        document["tests"] = tests
    out.write_text(yaml.safe_dump(document, sort_keys=False))
    return out


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS_FILE.read_text())["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, check=False)


@needs_promtool
def test_promtool_check_rules_accepts_every_rule(tmp_path: Path) -> None:
    for rules in (ALERTS_FILE, render_rules(tmp_path / "rules.yaml")):
        result = _promtool("check", "rules", str(rules))
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    # alerts_test.yaml reads the rendered rules from where `make alerts-test` writes them.
    assert yaml.safe_load(ALERTS_TEST_FILE.read_text())["rule_files"] == ["../../build/alerts/ml-api-rules.yaml"]
    tests = _unit_tests(render_rules(tmp_path / "rules.yaml"), tmp_path / "alerts_test.yaml")
    result = _promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_only_the_release_scoped_rule_names_the_fullname_and_the_chart_fills_it_in(tmp_path: Path) -> None:
    scoped = [r.get("alert") for r in _rules() if PLACEHOLDER in yaml.safe_dump(r)]
    assert scoped == ["MlApiPodsNotReady"]
    for release, sets, fullname in (
        ("ml-api", [], "ml-api"),
        ("prod", [], "prod-ml-api"),
        ("ml-api", ["--set", "nameOverride=inference"], "ml-api-inference"),
        ("ml-api", ["--set", "fullnameOverride=classifier"], "classifier"),
    ):
        text = render_rules(tmp_path / f"{release}-{fullname}.yaml", *sets, release=release).read_text()
        assert PLACEHOLDER not in text
        (rule,) = [
            r for g in yaml.safe_load(text)["groups"] for r in g["rules"] if r.get("alert") == "MlApiPodsNotReady"
        ]
        assert f'owner_name="{fullname}"' in rule["expr"]
        assert rule["labels"] == {"severity": "warning", "deployment": fullname}
        assert rule["annotations"]["summary"].startswith(f"ml-api {{{{ $labels.namespace }}}}/{fullname}: ")


@needs_promtool
def test_pods_not_ready_follows_name_override(tmp_path: Path) -> None:
    # nameOverride=inference: the Deployment is ml-api-inference. Its Pending pod fires; the pods of
    # a Deployment named ml-api (another release of the chart) are that release's rule's business.
    rules = render_rules(tmp_path / "rules.yaml", "--set", "nameOverride=inference")

    def pod(name: str, replicaset: str, phase: str) -> list[dict[str, str]]:
        base = f'job="kube-state-metrics",namespace="prod",pod="{name}"'
        return [
            {"series": f'kube_pod_owner{{{base},owner_kind="ReplicaSet",owner_name="{replicaset}"}}', "values": "1x20"},
            {"series": f'kube_pod_status_phase{{{base},phase="{phase}"}}', "values": "1x20"},
        ]

    def deployment(name: str, replicaset: str) -> dict[str, str]:
        labels = f'namespace="prod",replicaset="{replicaset}",owner_kind="Deployment",owner_name="{name}"'
        return {"series": f"kube_replicaset_owner{{{labels}}}", "values": "1x20"}

    tests = [
        {
            "name": "nameOverride: the release's Pending pod fires under its fullname",
            "interval": "1m",
            "input_series": [
                deployment("ml-api-inference", "ml-api-inference-6b7c8d9f4"),
                *pod("ml-api-inference-6b7c8d9f4-abcde", "ml-api-inference-6b7c8d9f4", "Pending"),
                deployment("ml-api", "ml-api-7d9f8c6b5"),
                *pod("ml-api-7d9f8c6b5-fghij", "ml-api-7d9f8c6b5", "Pending"),
                *pod("ml-api-7d9f8c6b5-klmno", "ml-api-7d9f8c6b5", "Pending"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "15m",
                    "alertname": "MlApiPodsNotReady",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "namespace": "prod",
                                "deployment": "ml-api-inference",
                            },
                            "exp_annotations": {
                                "summary": "ml-api prod/ml-api-inference: 1 pod(s) not ready or Pending",
                                **{
                                    k: v
                                    for k, v in next(r for r in _alerts() if r["alert"] == "MlApiPodsNotReady")[
                                        "annotations"
                                    ].items()
                                    if k != "summary"
                                },
                            },
                        }
                    ],
                }
            ],
        }
    ]
    result = _promtool("test", "rules", str(_unit_tests(rules, tmp_path / "tests.yaml", tests)))
    assert result.returncode == 0, result.stdout + result.stderr


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
        "MlApiGpuFallback",
        "MlApiShadowDisagreement",
        "MlApiModelConfigRejected",
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
    chart = tmp_path / "ml-api"
    shutil.copytree(CHART, chart)
    (chart / "files" / "alerts.yaml").write_text(text.replace(old, new))
    rules = render_rules(tmp_path / "rules.yaml", chart=chart)
    # Only the alert's own cases: the long-window burn-rate cases take most of promtool's time.
    cases = yaml.safe_load(ALERTS_TEST_FILE.read_text())["tests"]
    cases = [t for t in cases if any(c["alertname"] == alert for c in t["alert_rule_test"])]
    return _promtool("test", "rules", str(_unit_tests(rules, tmp_path / "alerts_test.yaml", cases)))


@needs_promtool
@pytest.mark.parametrize(
    ("old", "new", "failing_alert"),
    [
        ("ml_api:http_errors:ratio_rate5m > 0.05", "ml_api:http_errors:ratio_rate5m > 0.5", "MlApiHighErrorRatio"),
        # Counting probes as requests dilutes the error ratio below the threshold.
        ('handler!~"/metrics|/health.*"', 'handler!~"/metrics"', "MlApiHighErrorRatio"),
        ("avg_per_pod > 12", "avg_per_pod > 10", "MlApiInflightNearCapacity"),
        ("unless on (namespace, pod)\n", "or on (namespace, pod)\n", "MlApiPodsNotReady"),
        # Only unready pods: an Unschedulable pod has no Ready condition, so it would never count.
        (
            '\n              or on (namespace, pod)\n              kube_pod_status_phase{phase="Pending"} == 1',
            "",
            "MlApiPodsNotReady",
        ),
        # Any fallback blip would page; the GPU coming up a minute late is normal.
        (
            "max by (namespace, pod) (ml_api_device_fallback) > 0\n        for: 5m",
            "max by (namespace, pod) (ml_api_device_fallback) > 0\n        for: 1m",
            "MlApiGpuFallback",
        ),
        # Every Deployment's pods (the dev Redis included) instead of the release's own.
        ('owner_name="ML_API_FULLNAME"', 'owner_name=~".+"', "MlApiPodsNotReady"),
        # A threshold that lets an 80%-agreeing candidate through.
        (
            "ml_api:shadow_agreement:ratio_rate30m < 0.9",
            "ml_api:shadow_agreement:ratio_rate30m < 0.75",
            "MlApiShadowDisagreement",
        ),
        # Without the traffic floor a handful of copies would page.
        (
            "increase(ml_api_shadow_agreement_total[30m])) >= 100",
            "increase(ml_api_shadow_agreement_total[30m])) >= 1",
            "MlApiShadowDisagreement",
        ),
        # Without the `or 0 *` arm a candidate that never agrees has no ratio, so never pages.
        (
            "\n            or\n            0 * sum by (namespace, job, model, primary_version, shadow_version) "
            "(rate(ml_api_shadow_agreement_total[30m]))",
            "",
            "MlApiShadowDisagreement",
        ),
        # A rejection fixed within minutes (an edit and its correction) must not page.
        (
            "min by (namespace, job, pod) (ml_api_model_config_in_sync) == 0\n        for: 5m",
            "min by (namespace, job, pod) (ml_api_model_config_in_sync) == 0\n        for: 1m",
            "MlApiModelConfigRejected",
        ),
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
