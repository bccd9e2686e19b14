"""Forward time, CPU time and memory of each inference backend on random-weight resnet18.

    python -m bench.backends                      # every backend, batches 1/4/16, 2 then 1 threads
    python -m bench.backends --backends torch onnxruntime --threads 2 --rounds 3 --seconds 1

Each backend lives in its own worker process (so its memory is its own and no thread pool or
allocator state leaks between backends), loaded once. The timed call is ``LoadedModel.run`` (the
batcher's call: forward, softmax, top-5) on a seeded uint8 batch. The workers are measured in
**interleaved rounds** (every backend at every batch size, in a shuffled order, then again):
on a shared machine a burst of foreign load then hits every backend alike instead of whichever ran
during it. Reported per batch size: the median over rounds of each round's median, the spread of
the round medians, and process CPU ms per image (less sensitive to foreign load than wall time).
``torch`` runs in two workers (``torch`` and ``torch#2``): their gap is the noise floor. ``other
CPU`` is cores busy outside the measured worker during its timed loops (from /proc/stat).

The service's settings apply: channels_last on and ``OMP_WAIT_POLICY=PASSIVE`` (importing
``service.inference`` sets it before torch). ``openvino_throughput`` is OpenVINO with the
THROUGHPUT hint instead of the backend's LATENCY, built from the same cached export. Load times
include the equivalence gate, and the export when the cache (``--cache-dir``) is cold.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import service.inference  # noqa: F401  (sets OMP_WAIT_POLICY before torch is imported)
from bench.procs import cpu_seconds, system_busy_seconds, vm_hwm_mib

BACKENDS = ["torch", "onnxruntime", "openvino", "openvino_throughput", "torch_compile"]
SPEC = {
    "name": "resnet18",
    "source": "torchvision",
    "arch": "resnet18",
    "weights": "IMAGENET1K_V1",
    "pretrained": False,
}


def _vm_rss_mib() -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def worker(backend: str, threads: int, max_batch: int, cache_dir: str) -> None:
    """Load ``backend``, then answer timing requests (one JSON object per line) on stdin."""
    import torch

    from service.inference.model import RunOptions
    from service.inference.sources import load_model
    from service.settings import ModelSpec

    torch.set_num_threads(threads)
    kind = "openvino" if backend == "openvino_throughput" else backend
    started = time.perf_counter()
    model = load_model(
        ModelSpec(**SPEC, backend=kind),  # type: ignore[arg-type]
        torch.device("cpu"),
        channels_last=True,
        backend_cache_dir=cache_dir,
        threads=threads,
        max_batch_size=max_batch,
    )
    if backend == "openvino_throughput":
        from service.inference.backends.ov import OpenVinoBackend

        [entry] = [p for p in Path(cache_dir).iterdir() if p.name.startswith("openvino-")]
        throughput = OpenVinoBackend(
            entry / "model.onnx", ["features", "logits"], threads=threads, device=torch.device("cpu"), hint="THROUGHPUT"
        )
        model = dataclasses.replace(model, backend=throughput)
    print(json.dumps({"load_s": round(time.perf_counter() - started, 2), "rss_mib": _vm_rss_mib()}), flush=True)
    generator = torch.Generator().manual_seed(0)
    images: dict[int, torch.Tensor] = {}
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        n, seconds = request["batch"], request["seconds"]
        if n not in images:
            images[n] = torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, generator=generator)
        for _ in range(2):  # warm-up: allocator, oneDNN primitive cache
            model.run(images[n], [RunOptions()] * n)
        times: list[float] = []
        busy0, own0, wall0 = system_busy_seconds(), cpu_seconds(os.getpid()), time.perf_counter()
        while (time.perf_counter() - wall0 < seconds or len(times) < 3) and len(times) < 1000:
            t0 = time.perf_counter()
            model.run(images[n], [RunOptions()] * n)
            times.append(time.perf_counter() - t0)
        wall, own = time.perf_counter() - wall0, cpu_seconds(os.getpid()) - own0
        other = max(0.0, (system_busy_seconds() - busy0) - own) / wall
        reply = {"times": times, "cpu_s": own, "other_cpu": other}
        print(json.dumps(reply), flush=True)
    print(json.dumps({"peak_rss_mib": vm_hwm_mib(os.getpid()), "rss_mib": _vm_rss_mib()}), flush=True)


class Worker:
    def __init__(self, label: str, backend: str, threads: int, max_batch: int, cache_dir: str) -> None:
        self.label, self.backend = label, backend
        command = [sys.executable, "-m", "bench.backends", "--worker", backend, "--threads", str(threads),
                   "--batches", str(max_batch), "--cache-dir", cache_dir]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.loaded: dict[str, Any] = {}

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self.read()

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.label} exited with {self.process.wait()}")
        reply: dict[str, Any] = json.loads(line)
        return reply


def run_threads(args: argparse.Namespace, threads: int) -> list[dict[str, Any]]:
    labels = [(b, b) for b in args.backends]
    if "torch" in args.backends:
        labels.insert(1, ("torch#2", "torch"))
    workers = []
    for label, backend in labels:  # loaded one after another: loads (exports, compiles) do not overlap
        w = Worker(label, backend, threads, max(args.batches), args.cache_dir)
        try:
            w.loaded = w.read()
        except RuntimeError as exc:
            print(f"{label} failed to load: {exc}", file=sys.stderr)
            continue
        workers.append(w)
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {}
    rng = random.Random(0)
    for round_ in range(args.rounds):
        for n in args.batches:
            order = workers[:]
            rng.shuffle(order)
            for w in order:
                samples.setdefault((w.label, n), []).append(w.ask({"batch": n, "seconds": args.seconds}))
        print(f"threads {threads}: round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    results = []
    for w in workers:
        final = w.ask({"quit": True})
        w.process.wait(timeout=60)
        points = []
        for n in args.batches:
            rounds = samples[(w.label, n)]
            medians = [statistics.median(r["times"]) * 1000 for r in rounds]
            runs = sum(len(r["times"]) for r in rounds)
            points.append(
                {
                    "batch": n,
                    "runs": runs,
                    "median_ms": round(statistics.median(medians), 1),
                    "round_medians_ms": [round(m, 1) for m in medians],
                    "cpu_ms_per_image": round(
                        1000 * statistics.median(r["cpu_s"] / (len(r["times"]) * n) for r in rounds), 1
                    ),
                    "other_cpu": round(statistics.mean(r["other_cpu"] for r in rounds), 2),
                }
            )
        results.append({"backend": w.label, "threads": threads, **w.loaded, **final, "points": points})
    return results


def table(results: list[dict[str, Any]]) -> str:
    batches = [p["batch"] for p in results[0]["points"]]
    head = ["backend", "threads", *[f"batch {b}: ms [round range], CPU ms/img" for b in batches],
            "RSS MiB", "peak RSS MiB", "load s", "other CPU"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [
            f"{p['median_ms']} [{min(p['round_medians_ms'])}-{max(p['round_medians_ms'])}], {p['cpu_ms_per_image']}"
            for p in r["points"]
        ]
        other = max(p["other_cpu"] for p in r["points"])
        row = [r["backend"], r["threads"], *cells, r["rss_mib"], r["peak_rss_mib"], r["load_s"], other]
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backends", description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    parser.add_argument("--threads", nargs="+", type=int, default=[2, 1])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per batch size and round")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "ml-api-bench-backends"))
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker(args.worker, args.threads[0], max(args.batches), args.cache_dir)
        return 0
    results = [r for threads in args.threads for r in run_threads(args, threads)]
    if results:
        print(table(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
