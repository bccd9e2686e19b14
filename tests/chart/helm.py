"""Helpers to run the real helm binary on charts/ml-api and to look at the rendered manifests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ml-api"
CI_DIR = CHART / "ci"
RELEASE = "rel"
NAMESPACE = "ml"
FULLNAME = f"{RELEASE}-ml-api"

CaseDocs = Callable[[str], list[dict[str, Any]]]

# Kinds whose schemas come from CRDs rather than from Kubernetes itself.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com/servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com/podmonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com/prometheusrule_v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh/scaledobject_v1alpha1.json",
    ("grafana.integreatly.org/v1beta1", "GrafanaDashboard"): "grafana.integreatly.org/grafanadashboard_v1beta1.json",
}


def helm_path() -> str | None:
    """The pinned helm from `make tools`, or $HELM; None when neither exists."""
    env = os.environ.get("HELM")
    if env:
        return env if Path(env).is_file() or shutil.which(env) else None
    pinned = ROOT / ".tools" / "bin" / "helm"
    return str(pinned) if pinned.is_file() else None


def schemas_dir() -> Path | None:
    """The CRD schemas (``crds/`` under the shared schemas root)."""
    from tests.conftest import schemas_root

    root = schemas_root()
    return root / "crds" if root is not None and (root / "crds").is_dir() else None


class HelmError(Exception):
    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(f"helm {' '.join(args)} exited {returncode}: {stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr


def run_helm(*args: str, chart: Path = CHART, timeout: float = 60) -> str:
    helm = helm_path()
    if helm is None:
        raise RuntimeError("helm not found (run `make tools` or set HELM)")
    proc = subprocess.run([helm, *args], capture_output=True, text=True, timeout=timeout, cwd=chart.parent, check=False)
    if proc.returncode != 0:
        raise HelmError(args, proc.returncode, proc.stderr)
    return proc.stdout


def template_args(values_files: Iterable[Path] = (), sets: Iterable[str] = (), chart: Path = CHART) -> list[str]:
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for f in values_files:
        args += ["-f", str(f)]
    for s in sets:
        args += ["--set", s]
    return args


@lru_cache(maxsize=256)
def _render_cached(values_files: tuple[str, ...], sets: tuple[str, ...], chart: str) -> str:
    return run_helm(*template_args([Path(f) for f in values_files], sets, Path(chart)), chart=Path(chart))


def render(
    values_files: Iterable[Path | str] = (), sets: Iterable[str] = (), chart: Path = CHART
) -> list[dict[str, Any]]:
    """`helm template` output as a list of documents (memoised per arguments; raises HelmError)."""
    text = _render_cached(tuple(str(f) for f in values_files), tuple(sets), str(chart))
    return [d for d in yaml.safe_load_all(text) if d]


def ci_cases() -> dict[str, list[Path]]:
    """Render cases: the defaults plus one per ci/*-values.yaml (the chart-testing convention)."""
    cases: dict[str, list[Path]] = {"default": []}
    for f in sorted(CI_DIR.glob("*-values.yaml")):
        cases[f.name.removesuffix("-values.yaml")] = [f]
    return cases


@dataclass
class Rendered:
    docs: list[dict[str, Any]] | None
    error: HelmError | None


def render_all(cases: dict[str, list[Path]]) -> dict[str, Rendered]:
    """Render every case concurrently: each helm process is single-threaded and mostly start-up cost."""

    def one(files: list[Path]) -> Rendered:
        try:
            return Rendered(render(files), None)
        except HelmError as e:
            return Rendered(None, e)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = list(pool.map(one, cases.values()))
    return dict(zip(cases, results, strict=True))


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected exactly one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(resource name, pod spec) for every workload and bare pod (the helm test hook included)."""
    for d in docs:
        if d["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield f"Pod/{d['metadata']['name']}", d["spec"]


def all_containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def main_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deploy = one(docs, "Deployment", FULLNAME)
    (c,) = [c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == "ml-api"]
    return c


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", FULLNAME)


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The server Deployment's pod spec."""
    return deployment(docs)["spec"]["template"]["spec"]


def configmap_data(docs: list[dict[str, Any]]) -> dict[str, str]:
    return one(docs, "ConfigMap", FULLNAME)["data"]


def checksum(docs: list[dict[str, Any]]) -> str:
    return deployment(docs)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


# Stand-ins for the existing Secrets and downward-API fields the kubelet would resolve.
SECRETS = {
    ("ml-api-keys", "api-keys"): '["chart-test-key"]',
    ("ml-api-redis", "redis-url"): "redis://127.0.0.1:6379/0",
}
FIELDS = {"metadata.name": f"{FULLNAME}-abc12-xyz34", "metadata.namespace": "ml"}


def container_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The env the kubelet would build: envFrom ConfigMap first, then env entries with $(VAR) expansion."""
    c = main_container(docs)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        name = source["configMapRef"]["name"]
        env.update(one(docs, "ConfigMap", name)["data"])
    for entry in c.get("env", []):
        if "value" in entry:
            env[entry["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), entry["value"]
            )
        elif "secretKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = SECRETS[(ref["name"], ref["key"])]
        else:
            env[entry["name"]] = FIELDS[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    return env
