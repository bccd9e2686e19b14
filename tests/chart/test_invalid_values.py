"""Wrong values make `helm template` fail with a message that names the problem."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.chart.helm import HelmError, render

pytestmark = pytest.mark.helm

# values.schema.json violations: (--set values, location reported, words the message must contain).
# Helm 3 and Helm 4 use different JSON-schema libraries, so the wording differs while the location
# and the key facts do not; the checks below accept both spellings.
SCHEMA_INVALID: list[tuple[list[str], str, list[str]]] = [
    # unknown keys, at the top level and inside the chart's own objects
    (["replicas=3"], "", ["additional propert", "replicas"]),
    (["config.maxBatchSze=8"], "config", ["additional propert", "maxbatchsze"]),
    (["autoscaling.targetCPU=80"], "autoscaling", ["additional propert", "targetcpu"]),
    # wrong types and ranges
    (["replicaCount=three"], "replicaCount", ["integer", "string"]),
    (["gpu.enabled=yes"], "gpu.enabled", ["boolean", "string"]),
    (["service.port=70000"], "service.port", ["65", "535"]),
    (["config.device=tpu"], "config.device", ["one of", "auto", "cpu", "cuda"]),
    (["config.deviceRequired=sometimes"], "config.deviceRequired", ["boolean", "string"]),
    (["otel.protocol=http/json"], "otel.protocol", ["one of", "http/protobuf", "grpc"]),
    (["config.models=digits"], "config.models", ["array", "string"]),
    (["image.digest=latest"], "image.digest", ["pattern", "sha256"]),
    (["resources=big"], "resources", ["object", "string"]),
]


def _locations(path: str) -> tuple[str, str]:
    """How Helm 4 ("at '/a/b':") and Helm 3 ("a.b:") start the line about a location in values."""
    if not path:
        return "at '':", "(root):"
    return f"at '/{path.replace('.', '/')}':", f"{path}:"


# Combinations a schema cannot express: the templates `fail` with these exact messages.
INVALID: list[tuple[list[str], str]] = [
    # template checks (fail) for combinations a schema cannot express
    (
        ["autoscaling.enabled=true", "keda.enabled=true"],
        "autoscaling.enabled and keda.enabled are both true; KEDA creates its own HPA",
    ),
    (
        ["serviceMonitor.enabled=true", "podMonitor.enabled=true"],
        "serviceMonitor.enabled and podMonitor.enabled are both true",
    ),
    (
        ["autoscaling.enabled=true", "autoscaling.minReplicas=5", "autoscaling.maxReplicas=3"],
        "autoscaling.minReplicas (5) is greater than autoscaling.maxReplicas (3)",
    ),
    (
        ["autoscaling.enabled=true", "autoscaling.targetCPUUtilizationPercentage="],
        "autoscaling.enabled needs at least one metric",
    ),
    (["redis.enabled=true"], "redis.enabled needs redis.existingSecret"),
    (["redis.dev.enabled=true"], "set redis.enabled=true as well"),
    (["otel.enabled=true"], "otel.enabled needs otel.endpoint"),
    (
        ["weights.existingClaim=w", "weights.initContainer.enabled=true", "weights.initContainer.image=i"],
        "weights.existingClaim and weights.initContainer.enabled are both set",
    ),
    (['config.extra.ML_API_API_KEYS=["k"]'], "looks like a secret"),
]


@pytest.fixture(scope="module")
def outcomes(helm: str) -> dict[tuple[str, ...], HelmError | None]:
    """Render all invalid cases concurrently (helm start-up dominates each call)."""

    def attempt(sets: list[str]) -> HelmError | None:
        try:
            render(sets=sets)
        except HelmError as e:
            return e
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        all_sets = [s for s, _, _ in SCHEMA_INVALID] + [s for s, _ in INVALID]
        results = list(pool.map(attempt, all_sets))
    return {tuple(s): r for s, r in zip(all_sets, results, strict=True)}


@pytest.mark.parametrize(("sets", "path", "words"), SCHEMA_INVALID, ids=[" ".join(s) for s, _, _ in SCHEMA_INVALID])
def test_schema_rejects_unknown_keys_and_wrong_types(
    outcomes: dict[tuple[str, ...], HelmError | None], sets: list[str], path: str, words: list[str]
) -> None:
    error = outcomes[tuple(sets)]
    assert error is not None, f"helm template accepted {sets}"
    assert "values don't meet the specifications of the schema" in error.stderr
    (problem,) = [line for line in error.stderr.splitlines() if line.startswith("- ")]
    assert problem.removeprefix("- ").startswith(_locations(path)), problem
    assert all(w in problem.lower() for w in words), problem


@pytest.mark.parametrize(("sets", "message"), INVALID, ids=[" ".join(s) for s, _ in INVALID])
def test_invalid_values_fail_with_a_readable_message(
    outcomes: dict[tuple[str, ...], HelmError | None], sets: list[str], message: str
) -> None:
    error = outcomes[tuple(sets)]
    assert error is not None, f"helm template accepted {sets}"
    assert message in error.stderr
    # A template `fail`, prefixed with the chart name, not some YAML or type error further down.
    assert "execution error at (ml-api/templates/" in error.stderr
    assert "ml-api: " in error.stderr
