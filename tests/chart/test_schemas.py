"""Every rendered manifest of every case validates: built-in kinds with kubernetes-validate (strict)
against the oldest supported and the newest available Kubernetes, CRD kinds against the CRD schemas."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions

from tests.chart.helm import CHART, CRD_KINDS, CaseDocs, ci_cases, render, schemas_dir

pytestmark = pytest.mark.helm

OLDEST = "1.29.0"  # Chart.yaml kubeVersion >=1.29
NEWEST = all_versions()[-1]
K8S_VERSIONS = sorted({OLDEST, NEWEST})
CASES = list(ci_cases())


def _is_crd(doc: dict[str, Any]) -> bool:
    return (doc["apiVersion"], doc["kind"]) in CRD_KINDS


def _validate_builtin(docs: list[dict[str, Any]], version: str) -> list[str]:
    errors = []
    for doc in docs:
        if _is_crd(doc):
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{where}: {'.'.join(str(p) for p in e.path)}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{where}: {e.message}")
    return errors


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_builtin_kinds_validate_strictly(case_docs: CaseDocs, case: str, version: str) -> None:
    errors = _validate_builtin(case_docs(case), version)
    assert errors == [], "\n".join(errors)


def test_native_sleep_prestop_validates_on_newest_kubernetes(helm: str) -> None:
    # The sleep action is alpha (feature-gated) in 1.29 and on by default from 1.30, hence opt-in.
    docs = render(sets=["preStop.useSleepAction=true"])
    assert _validate_builtin(docs, NEWEST) == []


def _strict(schema: Any) -> Any:
    """CRD schemas leave additionalProperties open (the API server prunes unknown fields); close every
    object that lists its properties so a misspelt field fails here instead of vanishing in the cluster."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def _crd_validator(rel: str) -> jsonschema.Draft7Validator:
    base = schemas_dir()
    assert base is not None
    schema = json.loads(Path(base / rel).read_text())
    return jsonschema.Draft7Validator(_strict(copy.deepcopy(schema)))


@pytest.fixture(scope="module")
def crd_schemas() -> Path:
    base = schemas_dir()
    if base is None:
        pytest.skip(
            "CRD schemas not found: provide ../shared/schemas/crds or set ML_API_SCHEMAS_DIR to a dir with crds/"
        )
    return base


@pytest.mark.parametrize("case", CASES)
def test_crd_kinds_validate_against_crd_schemas(crd_schemas: Path, case_docs: CaseDocs, case: str) -> None:
    errors = []
    for doc in case_docs(case):
        rel = CRD_KINDS.get((doc["apiVersion"], doc["kind"]))
        if rel is None:
            continue
        for err in _crd_validator(rel).iter_errors(doc):
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {err.json_path}: {err.message}")
    assert errors == [], "\n".join(errors)


def test_every_crd_kind_is_rendered_by_some_case(case_docs: CaseDocs) -> None:
    # Guards the CRD validation above against silently checking nothing.
    kinds = {(d["apiVersion"], d["kind"]) for case in CASES for d in case_docs(case)}
    expected = {
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PodMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("keda.sh/v1alpha1", "ScaledObject"),
    }
    if list((CHART / "dashboards").glob("*.json")):
        expected.add(("grafana.integreatly.org/v1beta1", "GrafanaDashboard"))
    assert expected <= kinds


def test_strict_crd_validation_rejects_a_misspelt_field(crd_schemas: Path, case_docs: CaseDocs) -> None:
    sm = next(d for d in case_docs("monitoring") if d["kind"] == "ServiceMonitor")
    bad = copy.deepcopy(sm)
    bad["spec"]["endpoints"][0]["intervall"] = "15s"
    assert list(_crd_validator(CRD_KINDS[("monitoring.coreos.com/v1", "ServiceMonitor")]).iter_errors(bad))
