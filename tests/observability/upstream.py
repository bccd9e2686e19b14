"""The monitoring stack's values files (k8s/observability/*.yaml) and the pinned upstream charts.

The upstream chart repositories are not reachable everywhere the tests run, so rendering a values
file with its chart happens only where `ML_API_UPSTREAM_CHARTS` names a directory with the pinned
chart archives (`make observability-pull` fills .cache/charts); elsewhere those tests skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.promql_sources import ROOT

OBS = ROOT / "k8s" / "observability"
MAKEFILE = ROOT / "mk" / "observability.mk"
CHART_VALUES = ROOT / "charts" / "ml-api" / "values.yaml"

# file -> (chart name, version variable in mk/observability.mk, release, namespace)
CHARTS = {
    "kube-prometheus-stack.yaml": ("kube-prometheus-stack", "KPS_VERSION", "kube-prometheus-stack", "monitoring"),
    "tempo.yaml": ("tempo", "TEMPO_VERSION", "tempo", "monitoring"),
    "loki.yaml": ("loki", "LOKI_VERSION", "loki", "monitoring"),
    "otel-collector.yaml": ("opentelemetry-collector", "OTEL_COLLECTOR_VERSION", "otel-collector", "monitoring"),
    "prometheus-adapter.yaml": ("prometheus-adapter", "ADAPTER_VERSION", "prometheus-adapter", "monitoring"),
    "metrics-server.yaml": ("metrics-server", "METRICS_SERVER_VERSION", "metrics-server", "kube-system"),
}


def values(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((OBS / name).read_text())
    return data


def pinned_versions() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+_VERSION) := (\S+)$", MAKEFILE.read_text(), re.M))


def _helm() -> str | None:
    local = ROOT / ".tools" / "bin" / "helm"
    return str(local) if local.exists() else shutil.which("helm")


def archive(name: str) -> Path:
    """The pinned chart archive for values file ``name``; skips the test when it is not at hand."""
    directory = os.environ.get("ML_API_UPSTREAM_CHARTS")
    if not directory:
        pytest.skip("ML_API_UPSTREAM_CHARTS not set: no upstream chart archives here (make observability-pull)")
    chart, variable, _release, _namespace = CHARTS[name]
    path = Path(directory) / f"{chart}-{pinned_versions()[variable]}.tgz"
    if not path.exists():
        pytest.skip(f"{path} not present (make observability-pull)")
    return path


@cache
def _render(name: str, chart_archive: str, values_file: str, extra: tuple[str, ...]) -> str:
    helm = _helm()
    assert helm is not None
    _chart, _variable, release, namespace = CHARTS[name]
    result = subprocess.run(
        [helm, "template", release, chart_archive, "--namespace", namespace, "-f", values_file, *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(name: str, *extra: str, values_file: Path | None = None) -> list[dict[str, Any]]:
    """`helm template` of the pinned upstream chart with values file ``name`` (as `make observability`
    installs it), or with ``values_file`` instead, as a list of objects. Skips without helm or
    without the archive."""
    if _helm() is None:
        pytest.skip("helm not installed (make tools)")
    text = _render(name, str(archive(name)), str(values_file or OBS / name), extra)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (and ``name``, when given)."""
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]
