"""The Open Inference Protocol conformance suite of ``tests/v2/test_conformance.py`` (tritonclient over
HTTP and gRPC, kserve over REST and gRPC, every answer judged against ``/api/v1``'s) against each e2e
target: on the container target, the image's published ports 8000 and 8081, so the image itself is
shown to serve v2 over both transports.

The tests are that module's own functions, collected here again; only ``v2_server`` differs: the
target instead of a local process.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from e2e.targets import Target

# Imported so pytest collects them in this module, where ``v2_server`` below is the one they see.
from tests.v2.test_conformance import (  # noqa: F401
    outcomes,
    test_errors_have_the_protocols_status_and_a_message,
    test_every_scenario_of_the_client_is_judged,
    test_health_and_readiness,
    test_inference_gives_the_v1_predictions,
    test_the_classification_extension_gives_the_v1_top_classes,
    test_tritonclient_grpc_metadata,
    test_tritonclient_http_binary_outputs_are_binary_and_json_ones_json,
    test_tritonclient_http_metadata,
    v1,
)


@dataclass(frozen=True)
class TargetServer:
    base: str
    grpc_target: str


@pytest.fixture(scope="module")
def v2_server(target: Target) -> TargetServer:
    if not target.grpc_target:
        pytest.skip(f"the {target.name} target reaches no gRPC port (E2E_GRPC_TARGET for the url target)")
    target.refresh()
    return TargetServer(target.base_url, target.grpc_target)
