"""Wrong values make `helm template` fail with a message that names the problem."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.chart.helm import HelmError, render

pytestmark = pytest.mark.helm

INVALID: list[tuple[list[str], str]] = [
    # values.schema.json: unknown keys, at the top level and inside the chart's own objects
    (["replicas=3"], "additional properties 'replicas' not allowed"),
    (["config.maxBatchSze=8"], "additional properties 'maxBatchSze' not allowed"),
    (["autoscaling.targetCPU=80"], "additional properties 'targetCPU' not allowed"),
    # values.schema.json: wrong types and ranges
    (["replicaCount=three"], "at '/replicaCount': got string, want integer"),
    (["gpu.enabled=yes"], "at '/gpu/enabled': got string, want boolean"),
    (["service.port=70000"], "at '/service/port'"),
    (["config.device=tpu"], "at '/config/device'"),
    (["config.models=digits"], "at '/config/models': got string, want array"),
    (["image.digest=latest"], "at '/image/digest'"),
    (["resources=big"], "at '/resources': got string, want object"),
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
        results = list(pool.map(attempt, [s for s, _ in INVALID]))
    return {tuple(s): r for (s, _), r in zip(INVALID, results, strict=True)}


@pytest.mark.parametrize(("sets", "message"), INVALID, ids=[" ".join(s) for s, _ in INVALID])
def test_invalid_values_fail_with_a_readable_message(
    outcomes: dict[tuple[str, ...], HelmError | None], sets: list[str], message: str
) -> None:
    error = outcomes[tuple(sets)]
    assert error is not None, f"helm template accepted {sets}"
    assert message in error.stderr
    assert "ml-api" in error.stderr  # the failing chart is named
