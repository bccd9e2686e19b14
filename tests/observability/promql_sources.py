"""Every PromQL expression the project ships, collected from the files themselves.

Sources: the generated dashboards (panel targets and template-variable queries), the Prometheus
rules (recording and alerting), and the prometheus-adapter rule. Tests evaluate them against a real
Prometheus; nothing here is a copy of a query.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "charts" / "ml-api" / "dashboards"
ALERTS_FILE = ROOT / "charts" / "ml-api" / "files" / "alerts.yaml"
ALERTS_TEST_FILE = ROOT / "k8s" / "observability" / "alerts_test.yaml"
ADAPTER_VALUES = ROOT / "k8s" / "observability" / "prometheus-adapter.yaml"
GENERATOR = ROOT / "k8s" / "observability" / "dashboards" / "ml_api_dashboard.py"

# Series that exist only in a Kubernetes cluster (kube-state-metrics, kubelet/cAdvisor, NVIDIA
# DCGM exporter). A local Prometheus scraping the service process cannot have them, so a query
# reading any of them is expected to return nothing here; every other metric name a query uses must
# be one the running service exposes (or Prometheus' own `up`).
KUBERNETES_ONLY_METRICS = frozenset(
    {
        # kube-state-metrics
        "kube_horizontalpodautoscaler_status_current_replicas",
        "kube_horizontalpodautoscaler_status_desired_replicas",
        "kube_horizontalpodautoscaler_spec_min_replicas",
        "kube_horizontalpodautoscaler_spec_max_replicas",
        "kube_horizontalpodautoscaler_spec_target_metric",
        "kube_pod_container_resource_limits",
        "kube_pod_owner",
        "kube_replicaset_owner",
        "kube_pod_status_ready",
        "kube_pod_status_phase",
        # kubelet cAdvisor
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_cpu_cfs_throttled_periods_total",
        "container_cpu_cfs_periods_total",
        # NVIDIA dcgm-exporter
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
    }
)


PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
)


@dataclass(frozen=True)
class Expression:
    source: str  # where it comes from, e.g. "dashboard ml-api-overview.json / Error ratio / B"
    expr: str  # as shipped, template variables unsubstituted
    kind: str  # "panel", "variable", "record", "alert", "adapter-series", "adapter-metrics"


def load_generator() -> ModuleType:
    """Import k8s/observability/dashboards/ml_api_dashboard.py (not an installed package)."""
    spec = importlib.util.spec_from_file_location("ml_api_dashboard", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def iter_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Panels in order, rows' collapsed children included."""
    out: list[dict[str, Any]] = []
    for panel in panels:
        out.append(panel)
        out.extend(iter_panels(panel.get("panels", [])))
    return out


def label_values_selector(query: str) -> tuple[str, str]:
    """`label_values(<selector>, <label>)` -> (selector, label)."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", query, re.S)
    assert match, f"not a label_values() query: {query!r}"
    return match.group(1), match.group(2)


def dashboard_expressions() -> list[Expression]:
    found: list[Expression] = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        model = json.loads(path.read_text())
        for variable in model.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                query = variable["query"]
                text = query["query"] if isinstance(query, dict) else query
                selector, _label = label_values_selector(text)
                found.append(Expression(f"{path.name} / variable {variable['name']}", selector, "variable"))
        for panel in iter_panels(model["panels"]):
            for target in panel.get("targets", []):
                if is_logql(target):  # LogQL for Loki (the prediction log panel), not PromQL
                    continue
                found.append(Expression(f"{path.name} / {panel['title']} / {target['refId']}", target["expr"], "panel"))
    return found


def is_logql(target: dict[str, Any]) -> bool:
    return bool(target.get("datasource", {}).get("type") == "loki")


def rule_expressions() -> list[Expression]:
    rules = yaml.safe_load(ALERTS_FILE.read_text())
    found: list[Expression] = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                found.append(Expression(f"record {rule['record']}", rule["expr"], "record"))
            else:
                found.append(Expression(f"alert {rule['alert']}", rule["expr"], "alert"))
    return found


def adapter_rules() -> list[dict[str, Any]]:
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    rules: list[dict[str, Any]] = values["rules"]["custom"]
    return rules


def adapter_expressions(label_matchers: str, group_by: str) -> list[Expression]:
    """The adapter's queries with its Go templating filled in as the adapter would for one pod.

    The adapter substitutes `<<.Series>>` with the discovered series name, `<<.LabelMatchers>>`
    with `namespace="<ns>",pod=~"<pod>|..."` for the HPA's pods and `<<.GroupBy>>` with `pod`.
    """
    found: list[Expression] = []
    for rule in adapter_rules():
        series = metric_names(rule["seriesQuery"])
        assert len(series) == 1, f"adapter seriesQuery should name exactly one metric: {rule['seriesQuery']}"
        (name,) = series
        found.append(Expression(f"adapter {name} seriesQuery", rule["seriesQuery"], "adapter-series"))
        metrics_query = (
            rule["metricsQuery"]
            .replace("<<.Series>>", name)
            .replace("<<.LabelMatchers>>", label_matchers)
            .replace("<<.GroupBy>>", group_by)
        )
        assert "<<" not in metrics_query, f"unsubstituted adapter template left: {metrics_query}"
        found.append(Expression(f"adapter {name} metricsQuery", metrics_query, "adapter-metrics"))
    return found


def substitute(expr: str, variables: dict[str, str], rate_interval: str = "1m") -> str:
    """Grafana's interpolation for the subset the dashboards use."""
    out = expr.replace("$__rate_interval", rate_interval).replace("${__rate_interval}", rate_interval)
    # Longest names first so `$model` never eats a prefix of a longer variable name.
    for name in sorted(variables, key=len, reverse=True):
        out = out.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    assert "$" not in out, f"unsubstituted variable in {out!r}"
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads, from its text.

    Strings, label matchers `{...}`, grouping clauses `by/on/without/ignoring/group_*( ... )`, range
    selectors `[...]` and numbers are removed first; what remains and is not a function call or a
    keyword is a metric name (recording-rule names included).
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        token, call = match.group(1), match.group(2)
        if call or token in PROMQL_KEYWORDS or re.fullmatch(r"[eE]\d*|Inf|NaN", token):
            continue
        names.add(token)
    return names
