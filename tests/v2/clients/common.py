"""What every client scenario script shares: the images, the client-side preprocessing, the runner."""

from __future__ import annotations

import argparse
import io
import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from PIL import Image

from service.training.digits_data import digit_png, load_split

MODEL = "digits"
VERSION = "1"
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
}


def digit_images(indices: list[int]) -> list[bytes]:
    """The held-out digits ``indices`` as PNG files (what the parent test sends to /api/v1 too)."""
    _, _, x_test, _ = load_split()
    return [digit_png(x_test[i]) for i in indices]


def rest_parameters(base_url: str, api_key: str = "") -> dict[str, Any]:
    """The preprocessing from the REST model metadata. Triton's and KServe's gRPC ModelMetadataResponse
    have no parameters field (ml-api's own proto has it, field 6), so their gRPC users read it here."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(f"{base_url}/v2/models/{MODEL}", headers=headers, timeout=30)
    response.raise_for_status()
    parameters: dict[str, Any] = response.json()["parameters"]
    return parameters


def preprocess_uint8(png: bytes, parameters: dict[str, Any]) -> np.ndarray:
    """An image as ``image_uint8`` (H, W, C), built from the published parameters of the model's metadata,
    the way a client would: convert, resize (shorter side + centre crop, or straight), nothing else."""
    size = int(parameters["input_size"])
    resample = _RESAMPLE[str(parameters["interpolation"])]
    image = Image.open(io.BytesIO(png)).convert("RGB").convert(str(parameters["color_mode"]))
    if "resize_size" in parameters:
        short = int(parameters["resize_size"])
        scale = short / min(image.size)
        w, h = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        w, h = (short, h) if image.width <= image.height else (w, short)
        image = image.resize((w, h), resample, reducing_gap=None)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    else:
        image = image.resize((size, size), resample)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def preprocess_fp32(png: bytes, parameters: dict[str, Any]) -> np.ndarray:
    """``image_fp32`` (C, H, W): the uint8 pixels normalised with the published mean and std, in float32."""
    pixels = preprocess_uint8(png, parameters).transpose(2, 0, 1).astype(np.float32)
    mean = np.asarray(json.loads(str(parameters["mean"])), dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(json.loads(str(parameters["std"])), dtype=np.float32).reshape(-1, 1, 1)
    return ((pixels / np.float32(255.0) - mean) / std).astype(np.float32)


def probabilities_result(probabilities: np.ndarray) -> dict[str, Any]:
    array = np.asarray(probabilities, dtype=np.float32)
    return {"shape": list(array.shape), "classes": array.argmax(axis=1).tolist(), "probabilities": array.tolist()}


def strings_result(strings: np.ndarray) -> dict[str, Any]:
    array = np.asarray(strings)
    decoded = [
        [s.decode() if isinstance(s, bytes) else str(s) for s in row] for row in array.reshape(array.shape[0], -1)
    ]
    return {"shape": list(array.shape), "strings": decoded}


@dataclass
class Runner:
    """Scenarios register with ``@runner.scenario``; ``main`` runs them all and prints the outcomes."""

    name: str
    scenarios: dict[str, Callable[[argparse.Namespace], Any]] = field(default_factory=dict)

    def scenario(self, fn: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], Any]:
        self.scenarios[fn.__name__] = fn
        return fn

    def main(self, error: Callable[[BaseException], dict[str, Any] | None]) -> None:
        """Reads what to run against from stdin as JSON, ``{"http", "grpc", "images", "api_key"}`` (not
        from argv: importing kserve parses sys.argv for its own model server)."""
        config = json.load(sys.stdin)
        args = argparse.Namespace(
            http=config["http"],
            grpc=config["grpc"],
            api_key=config.get("api_key", ""),
            pngs=digit_images([int(i) for i in config["images"]]),
        )
        outcomes: dict[str, Any] = {}
        for name, fn in self.scenarios.items():
            try:
                outcomes[name] = {"result": fn(args)}
            except BaseException as exc:  # a scenario's failure is its outcome; the test judges it
                described = error(exc)
                outcomes[name] = (
                    {"error": described}
                    if described is not None
                    else {"exception": "".join(traceback.format_exception(exc))[-2000:]}
                )
        json.dump(outcomes, sys.stdout)
