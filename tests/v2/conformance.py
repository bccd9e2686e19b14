"""Runs the clients' scenarios (``tests/v2/clients``) and judges them against ``/api/v1`` answers; shared by
``tests/v2/test_conformance.py`` (a local server) and ``e2e/test_v2.py`` (the image, a cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.v2.clients.common import MODEL, digit_images

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ("triton_http", "triton_grpc", "kserve_rest", "kserve_grpc")
# Held-out digits of every class: enough to catch a wrong preprocessing, small enough to be quick.
IMAGES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
TOP = 3


def run_client(client: str, http: str, grpc: str, *, api_key: str = "", images: tuple[int, ...] = IMAGES) -> Any:
    """Every scenario of ``client``, run in a process of its own; their outcomes by scenario name."""
    config = json.dumps({"http": http, "grpc": grpc, "images": list(images), "api_key": api_key})
    proc = subprocess.run(
        [sys.executable, "-m", f"tests.v2.clients.{client}"],
        input=config,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, f"{client} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)


@dataclass(frozen=True)
class Top:
    class_id: int
    label: str
    confidence: float


def v1_answers(base_url: str, *, api_key: str = "", images: tuple[int, ...] = IMAGES) -> list[list[Top]]:
    """The top classes ``/api/v1`` gives each image: what every v2 client must get too."""
    headers = {"Content-Type": "image/png", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    answers = []
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for png in digit_images(list(images)):
            response = client.post(f"/api/v1/predict/upload?top_k={TOP}", content=png, headers=headers)
            assert response.status_code == 200, response.text
            answers.append([Top(p["class_id"], p["label"], p["confidence"]) for p in response.json()["predictions"]])
    return answers


def result_of(outcomes: dict[str, Any], scenario: str) -> Any:
    outcome = outcomes[scenario]
    assert "result" in outcome, f"{scenario}: {outcome}"
    return outcome["result"]


def assert_same_predictions(result: dict[str, Any], v1: list[list[Top]]) -> None:
    """Top-1 classes equal exactly; the probabilities of v1's top classes agree (the batches an image
    lands in differ between the two requests, which may move the last float32 bits)."""
    assert result["shape"] == [len(v1), 10]
    assert result["classes"] == [answer[0].class_id for answer in v1]
    for row, answer in zip(result["probabilities"], v1, strict=True):
        assert abs(sum(row) - 1.0) < 1e-4
        for top in answer:
            assert abs(row[top.class_id] - top.confidence) < 1e-5, (row, answer)


def assert_same_classification(result: dict[str, Any], v1: list[list[Top]]) -> None:
    """``"score:index:label"`` strings: v1's top classes in v1's order, scores as printf's %f writes them."""
    assert result["shape"] == [len(v1), TOP]
    for row, answer in zip(result["strings"], v1, strict=True):
        parsed = [entry.split(":", 2) for entry in row]
        assert [(int(index), label) for _, index, label in parsed] == [(t.class_id, t.label) for t in answer]
        for (score, _, _), top in zip(parsed, answer, strict=True):
            assert len(score.split(".")[1]) == 6
            assert abs(float(score) - top.confidence) <= 1e-5


def model_metadata_json() -> dict[str, Any]:
    """The bundled digits model's metadata, as JSON (REST) has it."""
    return {
        "name": MODEL,
        "versions": ["1"],
        "platform": "ml-api_torch",
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
            {"name": "image_uint8", "datatype": "UINT8", "shape": [-1, 8, 8, 1]},
            {"name": "image_fp32", "datatype": "FP32", "shape": [-1, 1, 8, 8]},
        ],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
        "parameters": {"input_size": 8, "color_mode": "L", "interpolation": "box", "mean": "[0.5]", "std": "[0.5]"},
    }
