"""The limit: in-process throughput of the service's own decode + preprocess + model pipeline.

No HTTP, no event loop, no queue: one thread decodes and preprocesses ``batch`` images with
``service.inference.images.decode_image`` and ``Preprocessing.to_uint8_tensor``, stacks them and calls
``LoadedModel.run`` (the batcher's call), for each batch size in turn; the best is the limit.

The model is built by ``service.inference.sources.load_model`` from the same spec the service gets
(``backend`` included: torch eager, onnxruntime, openvino, torch_compile, gated as in the service;
random weights seeded by ``seed``), so the limit measures exactly what the service would run. The
top-5 of the bench image is reported, for the top-1 agreement checks. ``--wait-for-go`` makes the
process print ``{"ready": true}`` once loaded and warm and wait for a line on stdin: the driver
starts the timed loops of several processes together (a layout of N processes), however long each
took to load (an ONNX export in one, a cache hit in the other).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from service.inference.device import cpu_quota, select_device, select_dtype, torch_threads_for
from service.inference.images import decode_image
from service.inference.model import RunOptions
from service.inference.sources import load_model
from service.settings import ModelSpec, Settings


@dataclass
class LimitPoint:
    batch_size: int
    images: int
    seconds: float
    images_per_s: float
    decode_ms_per_image: float
    model_ms_per_batch: float
    cpu_ms_per_image: float  # process CPU time (every thread): comparable with the server's under foreign load


def measure_limit(
    spec: ModelSpec,
    image: bytes,
    *,
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16),
    seconds: float = 4.0,
    device: str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    torch_threads: int = 0,
    max_pixels: int = 25_000_000,
    backend_cache_dir: str | None = None,
    ready: Callable[[], None] | None = None,
) -> dict:
    # Fixed threads for the whole run (the service's ML_API_TORCH_THREADS): one instance in this process.
    threads = torch_threads_for(1, torch_threads, cpu_quota())
    torch.set_num_threads(threads)
    dev = select_device(device)
    dtype = select_dtype(precision, dev)
    load_started = time.perf_counter()
    # The ONNX exporter reports progress on stdout, which carries this process's JSON to the driver.
    with contextlib.redirect_stdout(sys.stderr):
        model = load_model(
            spec,
            dev,
            dtype,
            channels_last=channels_last,
            backend_cache_dir=backend_cache_dir,
            max_batch_size=max(batch_sizes),  # torch_compile warms up the batches the loop will use
        )
    load_s = time.perf_counter() - load_started
    pre = model.preprocessing
    sample = pre.to_uint8_tensor(decode_image(image, max_pixels=max_pixels, draft_size=pre.draft_size))
    [first] = model.run(sample.unsqueeze(0), [RunOptions()])
    top5 = [{"class_id": p.class_id, "label": p.label, "confidence": round(p.confidence, 6)} for p in first.predictions]
    if ready is not None:
        ready()

    def one_batch(n: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        tensors = [
            pre.to_uint8_tensor(decode_image(image, max_pixels=max_pixels, draft_size=pre.draft_size)) for _ in range(n)
        ]
        t1 = time.perf_counter()
        model.run(torch.stack(tensors), [RunOptions()] * n)  # .tolist() inside syncs CUDA too
        return t1 - t0, time.perf_counter() - t1

    points = []
    for n in batch_sizes:
        for _ in range(2):  # warm-up: allocator, oneDNN primitive cache, cuDNN autotune
            one_batch(n)
        images, decode_s, model_s, batches = 0, 0.0, 0.0, 0
        start, cpu_start = time.perf_counter(), time.process_time()
        deadline = start + seconds
        while time.perf_counter() < deadline and batches < 10_000:
            d, m = one_batch(n)
            decode_s, model_s, images, batches = decode_s + d, model_s + m, images + n, batches + 1
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        points.append(
            LimitPoint(
                n,
                images,
                round(elapsed, 3),
                round(images / elapsed, 2),
                round(1000 * decode_s / images, 3),
                round(1000 * model_s / batches, 3),
                round(1000 * cpu / images, 2),
            )
        )
    best = max(points, key=lambda p: p.images_per_s)
    return {
        "model": spec.name,
        "arch": spec.arch or spec.source,
        "backend": spec.backend,
        "load_s": round(load_s, 2),
        "top5": top5,
        "device": str(dev),
        "dtype": str(dtype).removeprefix("torch."),
        "channels_last": channels_last,
        "torch_threads": threads,
        "points": [asdict(p) for p in points],
        "best_batch_size": best.batch_size,
        "images_per_s": best.images_per_s,
    }


def main() -> None:
    import argparse
    import json
    import os

    from bench.images import make_jpeg

    p = argparse.ArgumentParser(description="in-process limit of decode + preprocess + model")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--spec", help="a model spec as JSON (ML_API_MODELS item); overrides --arch")
    p.add_argument("--device", default=os.environ.get("ML_API_DEVICE", "cpu"))
    p.add_argument("--precision", default=os.environ.get("ML_API_PRECISION", "fp32"))
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=Settings().channels_last,  # the service's setting: its default or ML_API_CHANNELS_LAST
    )
    p.add_argument("--threads", type=int, default=int(os.environ.get("ML_API_TORCH_THREADS", "0")))
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--batch-sizes", default="1,2,4,8,16")
    p.add_argument("--backend", help="override the spec's backend (torch, onnxruntime, openvino, torch_compile)")
    p.add_argument("--backend-cache-dir", help="ONNX export cache (the service's ML_API_BACKEND_CACHE_DIR)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout, nothing else")
    p.add_argument("--wait-for-go", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    spec = (
        ModelSpec.model_validate_json(a.spec)
        if a.spec
        else ModelSpec(
            name=a.arch, version="random", source="torchvision", arch=a.arch, weights="IMAGENET1K_V1", pretrained=False
        )
    )
    if a.backend:
        spec = ModelSpec.model_validate({**spec.model_dump(), "backend": a.backend})

    def ready() -> None:
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()  # the driver's "go" (or EOF: go anyway)

    result = measure_limit(
        spec,
        make_jpeg(),
        batch_sizes=tuple(int(b) for b in a.batch_sizes.split(",")),
        seconds=a.seconds,
        device=a.device,
        precision=a.precision,
        channels_last=a.channels_last,
        torch_threads=a.threads,
        backend_cache_dir=a.backend_cache_dir,
        ready=ready if a.wait_for_go else None,
    )
    print(json.dumps(result, indent=None if a.json else 1))


if __name__ == "__main__":
    main()
