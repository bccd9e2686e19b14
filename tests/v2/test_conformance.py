"""The Open Inference Protocol spoken with its own clients: tritonclient (HTTP, gRPC) and kserve (REST,
gRPC) against a real ``python -m service``, every answer judged against ``/api/v1``'s for the same images.

Each client runs its scenarios in a process of its own (``tests/v2/clients``); a test here judges one
scenario's outcome, so a failure names the client and the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from service import __version__
from tests.servers import Server, server
from tests.v2.conformance import (
    CLIENTS,
    Top,
    assert_same_classification,
    assert_same_predictions,
    model_metadata_json,
    result_of,
    run_client,
    v1_answers,
)

pytestmark = pytest.mark.slow

INFER = {
    "triton_http": (
        "infer_bytes_binary",
        "infer_bytes_json",
        "infer_uint8_binary",
        "infer_uint8_json",
        "infer_fp32_binary",
        "infer_fp32_json",
        "infer_version",
        "infer_default_outputs",
    ),
    "triton_grpc": ("infer_bytes", "infer_uint8", "infer_fp32", "infer_version", "infer_default_outputs"),
    "kserve_rest": (
        "infer_bytes_binary",
        "infer_bytes_json",
        "infer_uint8_binary",
        "infer_uint8_json",
        "infer_fp32_binary",
        "infer_fp32_json",
        "infer_version",
    ),
    "kserve_grpc": (
        "infer_bytes_raw",
        "infer_bytes_contents",
        "infer_uint8_raw",
        "infer_uint8_contents",
        "infer_fp32_raw",
        "infer_fp32_contents",
        "infer_version",
    ),
}
CLASSIFICATION = {
    "triton_http": ("infer_classification_binary", "infer_classification_json"),
    "triton_grpc": ("infer_classification",),
    "kserve_rest": ("infer_classification",),
    "kserve_grpc": ("infer_classification",),
}
# (status as the client reports it, the start of the message)
NOT_FOUND = {
    "triton_http": "404",
    "triton_grpc": "StatusCode.NOT_FOUND",
    "kserve_rest": 404,
    "kserve_grpc": "NOT_FOUND",
}
BAD = {
    "triton_http": "400",
    "triton_grpc": "StatusCode.INVALID_ARGUMENT",
    "kserve_rest": 400,
    "kserve_grpc": "INVALID_ARGUMENT",
}
UINT8_IS = "input 'image_uint8' of digits:1 is UINT8 of shape [-1, 8, 8, 1], not"
FP32_IS = "input 'image_fp32' of digits:1 is FP32 of shape [-1, 1, 8, 8], not"
ERRORS: dict[str, dict[str, tuple[str, str]]] = {
    "triton_http": {
        "error_unknown_model": ("not_found", "model 'no-such-model' is not registered"),
        "error_unknown_version": ("not_found", "model 'digits' has no version '99'"),
        "error_unknown_model_metadata": ("not_found", "model 'no-such-model' is not registered"),
        "error_wrong_datatype": ("bad", f"{UINT8_IS} FP32"),
        "error_wrong_shape": ("bad", f"{UINT8_IS} UINT8 [1, 4"),
        "error_unknown_input": ("bad", "unknown input 'pixels'"),
        "error_not_an_image": ("bad", "the bytes are not a decodable image"),
        "error_not_base64": ("bad", "tensor 'image': an element is not valid base64"),
        "error_unknown_output": ("bad", "unknown output 'logits'"),
    },
    "triton_grpc": {
        "error_unknown_model": ("not_found", "model 'no-such-model' is not registered"),
        "error_unknown_version": ("not_found", "model 'digits' has no version '99'"),
        "error_unknown_model_metadata": ("not_found", "model 'no-such-model' is not registered"),
        "error_wrong_datatype": ("bad", f"{UINT8_IS} FP32"),
        "error_wrong_shape": ("bad", f"{FP32_IS} FP32 [1, 1, 4"),
        "error_unknown_input": ("bad", "unknown input 'pixels'"),
        "error_not_an_image": ("bad", "the bytes are not a decodable image"),
        "error_unknown_output": ("bad", "unknown output 'logits'"),
    },
    "kserve_rest": {
        "error_unknown_model": ("not_found", "model 'no-such-model' is not registered"),
        "error_wrong_shape": ("bad", f"{UINT8_IS} UINT8 [1, 4"),
        "error_not_an_image": ("bad", "the bytes are not a decodable image"),
    },
    "kserve_grpc": {
        "error_unknown_model": ("not_found", "model 'no-such-model' is not registered"),
        "error_wrong_datatype": ("bad", f"{FP32_IS} FP64"),
        "error_not_an_image": ("bad", "the bytes are not a decodable image"),
    },
}
HEALTH = {
    "triton_http": {"server_live": True, "server_ready": True, "model_ready": [True, True]},
    "triton_grpc": {"server_live": True, "server_ready": True, "model_ready": [True, True]},
    "kserve_rest": {"server_live": True, "server_ready": True, "model_ready": True},
    "kserve_grpc": {"server_live": True, "server_ready": True, "model_ready": True},
}
SERVER_METADATA = {
    "name": "ml-api",
    "version": __version__,
    "extensions": ["binary_tensor_data", "classification", "model_configuration"],
}
# Scenarios judged by their own tests below rather than by the tables.
OTHERS = {
    "triton_http": {"server_metadata", "model_metadata", "model_metadata_version", "model_config", "request_id"},
    "triton_grpc": {"server_metadata", "model_metadata", "model_metadata_version", "model_config", "request_id"},
    "kserve_rest": set(),
    "kserve_grpc": set(),
}


@pytest.fixture(scope="module")
def v2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with server("uvicorn", {}, tmp_path_factory.mktemp("v2") / "stderr.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def v1(v2_server: Server) -> list[list[Top]]:
    return v1_answers(v2_server.base)


_OUTCOMES: dict[str, Any] = {}


@pytest.fixture
def outcomes(v2_server: Server, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The outcomes of the client the test is parametrized with (run once per module)."""
    client: str = request.node.callspec.params["client"]
    key = f"{v2_server.base}/{client}"
    if key not in _OUTCOMES:
        _OUTCOMES[key] = run_client(client, v2_server.base, v2_server.grpc_target)
    result: dict[str, Any] = _OUTCOMES[key]
    return result


def _cases(table: dict[str, Any]) -> list[Any]:
    return [pytest.param(client, name, id=f"{client}-{name}") for client, names in table.items() for name in names]


@pytest.mark.parametrize(("client", "scenario"), _cases(INFER))
def test_inference_gives_the_v1_predictions(
    client: str, scenario: str, outcomes: dict[str, Any], v1: list[list[Top]]
) -> None:
    assert_same_predictions(result_of(outcomes, scenario), v1)


@pytest.mark.parametrize(("client", "scenario"), _cases(CLASSIFICATION))
def test_the_classification_extension_gives_the_v1_top_classes(
    client: str, scenario: str, outcomes: dict[str, Any], v1: list[list[Top]]
) -> None:
    result = result_of(outcomes, scenario)
    assert result.pop("datatype", "BYTES") == "BYTES"
    assert_same_classification(result, v1)


@pytest.mark.parametrize(("client", "scenario"), _cases(ERRORS))
def test_errors_have_the_protocols_status_and_a_message(client: str, scenario: str, outcomes: dict[str, Any]) -> None:
    kind, message = ERRORS[client][scenario]
    outcome = outcomes[scenario]
    assert "error" in outcome, outcome
    expected_status = NOT_FOUND[client] if kind == "not_found" else BAD[client]
    assert outcome["error"]["status"] == expected_status
    assert outcome["error"]["message"].startswith(message), outcome["error"]["message"]


@pytest.mark.parametrize(("client", "scenario"), _cases(HEALTH))
def test_health_and_readiness(client: str, scenario: str, outcomes: dict[str, Any]) -> None:
    assert result_of(outcomes, scenario) == HEALTH[client][scenario]


@pytest.mark.parametrize("client", CLIENTS)
def test_every_scenario_of_the_client_is_judged(client: str, outcomes: dict[str, Any]) -> None:
    judged = {*INFER[client], *CLASSIFICATION[client], *ERRORS[client], *HEALTH[client], *OTHERS[client]}
    assert set(outcomes) == judged


@pytest.mark.parametrize("client", ["triton_http"])
def test_tritonclient_http_metadata(client: str, outcomes: dict[str, Any]) -> None:
    assert result_of(outcomes, "server_metadata") == SERVER_METADATA
    assert result_of(outcomes, "model_metadata") == model_metadata_json()
    assert result_of(outcomes, "model_metadata_version") == model_metadata_json()
    assert result_of(outcomes, "model_config") == {
        "name": "digits",
        "platform": "ml-api_torch",
        "backend": "ml-api",
        "max_batch_size": 0,
        "input": [
            {"name": "image", "data_type": "TYPE_STRING", "format": "FORMAT_NONE", "dims": [-1], "optional": True},
            {
                "name": "image_uint8",
                "data_type": "TYPE_UINT8",
                "format": "FORMAT_NHWC",
                "dims": [-1, 8, 8, 1],
                "optional": True,
            },
            {
                "name": "image_fp32",
                "data_type": "TYPE_FP32",
                "format": "FORMAT_NCHW",
                "dims": [-1, 1, 8, 8],
                "optional": True,
            },
        ],
        "output": [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": [-1, 10]}],
    }
    assert result_of(outcomes, "request_id") == "triton-http-1"


@pytest.mark.parametrize("client", ["triton_http"])
def test_tritonclient_http_binary_outputs_are_binary_and_json_ones_json(client: str, outcomes: dict[str, Any]) -> None:
    for scenario in INFER[client]:
        result = result_of(outcomes, scenario)
        if "binary" in result:
            expected = scenario.endswith("binary") or scenario == "infer_version"
            assert result["binary"] is expected, scenario


@pytest.mark.parametrize("client", ["triton_grpc"])
def test_tritonclient_grpc_metadata(client: str, outcomes: dict[str, Any]) -> None:
    """Over gRPC the metadata is Triton's message (int64 shapes as strings in its JSON form); the
    preprocessing parameters are ml-api's addition (field 6), which Triton's message does not have."""
    meta = model_metadata_json()
    as_grpc = {
        **{k: v for k, v in meta.items() if k != "parameters"},
        "inputs": [{**t, "shape": [str(d) for d in t["shape"]]} for t in meta["inputs"]],
        "outputs": [{**t, "shape": [str(d) for d in t["shape"]]} for t in meta["outputs"]],
    }
    assert result_of(outcomes, "server_metadata") == SERVER_METADATA
    assert result_of(outcomes, "model_metadata") == as_grpc
    assert result_of(outcomes, "model_metadata_version") == as_grpc
    config = result_of(outcomes, "model_config")["config"]
    assert (config["name"], config["platform"], config["backend"]) == ("digits", "ml-api_torch", "ml-api")
    assert [(i["name"], i["data_type"], i["dims"], i["optional"]) for i in config["input"]] == [
        ("image", "TYPE_STRING", ["-1"], True),
        ("image_uint8", "TYPE_UINT8", ["-1", "8", "8", "1"], True),
        ("image_fp32", "TYPE_FP32", ["-1", "1", "8", "8"], True),
    ]
    assert config["output"] == [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": ["-1", "10"]}]
    assert result_of(outcomes, "request_id") == "triton-grpc-1"
