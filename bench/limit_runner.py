"""The limit for every backend and instance layout: ``bench.limit`` in N processes x T threads.

A layout ``NxT`` is N processes of ``bench.limit``, each with T torch (or runtime) threads, run side by
side and their throughputs summed: the in-process ceiling of N model instances of T threads each,
without HTTP, queues or the GIL shared between instances. The processes load (an ONNX export, a
torch.compile) each at its own pace, report ready, and start their timed loops together.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Settings the layout decides; the rest of --env (channels_last, precision) reaches the limit too.
LAYOUT_SETTINGS = ("ML_API_TORCH_THREADS", "ML_API_MODEL_INSTANCES")


@dataclass(frozen=True)
class Layout:
    instances: int
    threads: int

    @property
    def name(self) -> str:
        return f"{self.instances}x{self.threads}"

    @property
    def text(self) -> str:
        return f"{self.instances} process{'es' if self.instances > 1 else ''} x {self.threads} thread" + (
            "s" if self.threads > 1 else ""
        )

    @classmethod
    def parse(cls, text: str) -> Layout:
        """``2x1`` = 2 instances of 1 thread each."""
        try:
            instances, threads = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"layout {text!r} is not INSTANCESxTHREADS, e.g. 2x1") from None
        if instances < 1 or threads < 1:
            raise ValueError(f"layout {text!r}: instances and threads must be at least 1")
        return cls(instances, threads)


def _launch(cmd: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen[str], queue.Queue[str | None]]:
    with log.open("w") as err:  # stderr to a file: exporters are chatty, and a full pipe would block
        proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def _next_json(lines: queue.Queue[str | None], deadline: float, key: str) -> dict | None:
    """The next stdout line that is a JSON object with ``key``; None at EOF."""
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError from None
        if line is None:
            return None
        try:
            doc = json.loads(line)
        except ValueError:
            continue  # a stray print on stdout
        if isinstance(doc, dict) and key in doc:
            return doc


def measure_layout(
    spec: dict,
    layout: Layout,
    *,
    env_settings: list[str],
    device: str,
    precision: str,
    seconds: float,
    batch_sizes: str,
    cache_dir: Path,
    log_dir: Path,
    load_timeout: float = 600.0,
) -> dict:
    """One backend (``spec["backend"]``) in one layout; raises RuntimeError when a process fails."""
    env = {k: v for k, v in os.environ.items() if k not in LAYOUT_SETTINGS}
    for kv in env_settings:
        key, value = kv.split("=", 1)
        if key not in LAYOUT_SETTINGS:
            env[key] = value
    cmd = [sys.executable, "-m", "bench.limit", "--spec", json.dumps(spec), "--device", device]
    cmd += ["--precision", precision, "--seconds", str(seconds), "--batch-sizes", batch_sizes]
    cmd += ["--threads", str(layout.threads), "--backend-cache-dir", str(cache_dir), "--json", "--wait-for-go"]
    backend = spec.get("backend", "torch")
    logs = [log_dir / f"limit-{spec['name']}-{backend}-{layout.name}-{k}.log" for k in range(layout.instances)]
    procs = [_launch(cmd, {**env, "ML_API_TORCH_THREADS": str(layout.threads)}, log) for log in logs]
    try:
        deadline = time.monotonic() + load_timeout
        for (proc, lines), log in zip(procs, logs, strict=True):
            try:
                ready = _next_json(lines, deadline, "ready")
            except TimeoutError:
                raise RuntimeError(f"limit {backend} {layout.name}: not loaded within {load_timeout:.0f}s") from None
            if ready is None:
                raise RuntimeError(
                    f"limit {backend} {layout.name} exited with {proc.wait(10)}: {log.read_text()[-1500:]}"
                )
        for proc, _ in procs:  # all loaded and warm: start the timed loops together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        n_batches = len(batch_sizes.split(","))
        deadline = time.monotonic() + n_batches * (seconds + 60) + 60
        parts = []
        for (proc, lines), log in zip(procs, logs, strict=True):
            try:
                doc = _next_json(lines, deadline, "points")
            except TimeoutError:
                raise RuntimeError(f"limit {backend} {layout.name}: timed loops overran") from None
            if doc is None:
                raise RuntimeError(
                    f"limit {backend} {layout.name} exited with {proc.wait(10)}: {log.read_text()[-1500:]}"
                )
            parts.append(doc)
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                if proc.stdin is not None:
                    proc.stdin.close()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
    return merge(parts, layout)


def merge(parts: list[dict], layout: Layout) -> dict:
    """Processes run side by side: throughputs add up; per-image figures are weighted by images."""
    points = []
    for k, point in enumerate(parts[0]["points"]):
        same = [p["points"][k] for p in parts]
        images = sum(p["images"] for p in same)
        merged = dict(point)
        merged["images_per_s"] = round(sum(p["images_per_s"] for p in same), 2)
        merged["images"] = images
        for field in ("cpu_ms_per_image", "decode_ms_per_image"):
            merged[field] = round(sum(p[field] * p["images"] for p in same) / images, 3) if images else None
        points.append(merged)
    best = max(points, key=lambda p: p["images_per_s"])
    return {
        **parts[0],
        "points": points,
        "best_batch_size": best["batch_size"],
        "images_per_s": best["images_per_s"],
        "cpu_ms_per_image": best["cpu_ms_per_image"],
        "layout": layout.name,
        "layout_text": layout.text,
        "instances": layout.instances,
        "threads": layout.threads,
        "load_s": max(p.get("load_s") or 0 for p in parts),
    }


def run_limits(
    spec: dict, backends: list[str], layouts: list[Layout], *, label: str = "", **kwargs: object
) -> dict[str, dict]:
    """``{backend: best layout's figures + "variants" (every layout)}``; a backend that cannot be
    measured (library missing, gate refused it) keeps its error instead of stopping the run."""
    out: dict[str, dict] = {}
    for backend in backends:
        variants: list[dict] = []
        for layout in layouts:
            started = time.monotonic()
            try:
                v = measure_layout({**spec, "backend": backend}, layout, **kwargs)  # type: ignore[arg-type]
            except RuntimeError as exc:
                print(f" limit{label} {backend} {layout.name}: failed: {exc}", flush=True)
                variants.append({"layout": layout.name, "layout_text": layout.text, "error": str(exc)[-1500:]})
                continue
            print(
                f" limit{label} {backend} {layout.name}: {v['images_per_s']} img/s at batch {v['best_batch_size']}"
                f" (load {v['load_s']} s, {time.monotonic() - started:.0f} s in all)",
                flush=True,
            )
            variants.append(v)
        ok = [v for v in variants if "error" not in v]
        if ok:
            best = max(ok, key=lambda v: v["images_per_s"])
            out[backend] = {**best, "variants": variants}
        else:
            out[backend] = {
                "backend": backend,
                "images_per_s": None,
                "error": variants[0]["error"],
                "variants": variants,
            }
    return out
