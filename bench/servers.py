"""The servers of one model's run: the service in each configuration, and the naive app.

- ``service``: the production server with the default settings (model instances and threads
  sized by the service itself: ``ML_API_MODEL_INSTANCES`` and ``ML_API_TORCH_THREADS`` unset);
  every body, and the Open Inference Protocol rows;
- ``service-NxT``: N model instances of T threads each (``ML_API_MODEL_INSTANCES=N``,
  ``ML_API_TORCH_THREADS=T``), raw body;
- ``service-<backend>``: the default layout with ``"backend"`` in the model's ``ML_API_MODELS``
  entry (onnxruntime, openvino, torch_compile), raw body;
- ``naive``: ``bench/naive_app.py`` under uvicorn, every /api/v1 body.

Each service gets its own HTTP and gRPC port (``ML_API_GRPC_PORT``) and the bench's export cache
(``ML_API_BACKEND_CACHE_DIR``), shared with the limit's processes so a backend is exported once.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench import oip
from bench.levels import Load, Target
from bench.limit_runner import Layout
from bench.procs import Server, free_port, http_get, http_request
from bench.wrk import Body, run_wrk

PY = sys.executable
VENV_BIN = Path(PY).parent
API_BODIES = ("raw", "multipart", "base64")
OIP_BODIES = ("v2-http", "v2-grpc")


def service_env(spec: dict, args: argparse.Namespace, port: int, grpc_port: int, layout: Layout | None) -> dict:
    env = {
        "ML_API_HOST": "127.0.0.1",
        "ML_API_PORT": str(port),
        "ML_API_GRPC_PORT": str(grpc_port),  # several services run side by side: never the default 8081
        "ML_API_MODELS": json.dumps([spec]),
        "ML_API_DEFAULT_MODEL": spec["name"],
        "ML_API_DEVICE": args.device,
        "ML_API_PRECISION": args.precision,
        "ML_API_BACKEND_CACHE_DIR": str(args.cache_dir),
    }
    env.update(dict(kv.split("=", 1) for kv in args.env))
    if layout is not None:  # the layout's own settings win over --env
        env["ML_API_MODEL_INSTANCES"] = str(layout.instances)
        env["ML_API_TORCH_THREADS"] = str(layout.threads)
    return env


def service_server(key: str, model: str, spec: dict, args: argparse.Namespace, layout: Layout | None) -> Server:
    port, grpc_port = free_port(), free_port()
    cmd = [str(VENV_BIN / "gunicorn"), "-c", "python:service.gunicorn_conf", "service.app:create_app()"]
    slow = spec.get("backend") == "torch_compile"  # compiles at load: minutes on 2 cores
    return Server(
        key,
        cmd,
        service_env(spec, args, port, grpc_port, layout),
        port,
        args.workdir / f"{key}-{model}.log",
        grpc_port=grpc_port,
        start_timeout=900.0 if slow else 300.0,
    )


def naive_server(model: str, spec: dict, args: argparse.Namespace) -> Server:
    port = free_port()
    env = {
        "BENCH_NAIVE_MODEL": "digits" if model == "digits" else spec["arch"],
        "BENCH_NAIVE_SEED": str(spec.get("seed", 0)),
    }
    if args.device == "cuda":
        env["BENCH_NAIVE_DEVICE"] = "cuda"
    cmd = [PY, "-m", "uvicorn", "bench.naive_app:app", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1", "--no-access-log", "--log-level", "warning"]
    return Server("naive", cmd, env, port, args.workdir / f"naive-{model}.log")


def wrk_load(server: Server, body: Body, workdir: Path) -> Load:
    def go(conc: int, seconds: float) -> dict:
        return run_wrk(f"http://127.0.0.1:{server.port}", body, conc, seconds, workdir)

    return Load(go, go)


def build_targets(model: str, spec: dict, args: argparse.Namespace, bodies: dict[str, Body]) -> list[Target]:
    """Every server of this model, in the order they start and take each level."""
    api = [b for b in args.body_list if b in API_BODIES]
    targets: list[Target] = []

    def add(key: str, server: Server, body_names: list[str], info: dict) -> None:
        loads = {b: wrk_load(server, bodies[b], args.workdir) for b in body_names if b in API_BODIES}
        if server.name == "service" and args.oip_levels:
            loads |= {b: Load(_pending, _pending) for b in OIP_BODIES}  # set by prepare_oip
        targets.append(Target(key, server, loads, info))

    if args.only != "naive":
        add(
            "service",
            service_server("service", model, spec, args, None),
            api,
            {
                "label": "service (default layout)",
                "kind": "service",
                "layout": "auto",
                "backend": "torch",
                "settings": [],
            },
        )
        for layout in args.layout_list:
            key = f"service-{layout.name}"
            add(
                key,
                service_server(key, model, spec, args, layout),
                ["raw"],
                {
                    "label": f"service {layout.name}",
                    "kind": "service",
                    "layout": layout.name,
                    "backend": "torch",
                    "settings": [
                        f"ML_API_MODEL_INSTANCES={layout.instances}",
                        f"ML_API_TORCH_THREADS={layout.threads}",
                    ],
                },
            )
        for backend in args.served_backends if model == "resnet18" else []:
            key = f"service-{backend}"
            add(
                key,
                service_server(key, model, {**spec, "backend": backend}, args, None),
                ["raw"],
                {
                    "label": f"service {backend}",
                    "kind": "service",
                    "layout": "auto",
                    "backend": backend,
                    "settings": [f'ML_API_MODELS[0].backend="{backend}"'],
                },
            )
    if args.only != "service":
        add(
            "naive",
            naive_server(model, spec, args),
            api,
            {
                "label": "naive",
                "kind": "naive",
                "layout": "1 process",
                "backend": "torch (eager, inline)",
                "settings": [f"BENCH_NAIVE_SEED={spec.get('seed', 0)}"] if model != "digits" else [],
            },
        )
    return targets


def _pending(conc: int, seconds: float) -> dict:
    raise RuntimeError("the Open Inference Protocol levels were not prepared")


def top5(port: int, body: Body) -> dict:
    """The server's answer for the bench image (for the top-1 agreement checks)."""
    try:
        code, text = http_request(
            port, "POST", body.path, body.file.read_bytes(), {"Content-Type": body.content_type}, 60
        )
        doc = json.loads(text)
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}
    if code != 200:
        return {"error": f"{code}: {text[:300].decode(errors='replace')}"}
    preds = doc.get("predictions") or []
    return {
        "top5": [
            {"class_id": p.get("class_id"), "label": p.get("label"), "confidence": round(p.get("confidence", 0), 6)}
            for p in preds[:5]
        ]
    }


def resolved_layout(port: int) -> dict | None:
    """Instances and threads the service chose, where it reports them (``/metrics`` or ``/health``):
    any series or key naming instances or torch threads. None when it reports neither."""
    found: dict = {}
    try:
        code, text = http_get(port, "/metrics", timeout=10)
        if code == 200:
            for line in text.decode(errors="replace").splitlines():
                if not line.startswith("#") and re.search(r"instance|torch_threads", line.split(" ")[0]):
                    name, _, value = line.rpartition(" ")
                    found[name] = value
        code, text = http_get(port, "/health", timeout=10)
        if code == 200:
            _collect(json.loads(text), found, "health")
    except (OSError, ValueError):
        pass
    return found or None


def _collect(doc: object, found: dict, path: str) -> None:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if re.search(r"instances|torch_threads|threads", str(k)) and not isinstance(v, (dict, list)):
                found[f"{path}.{k}"] = v
            else:
                _collect(v, found, f"{path}.{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:16]):
            _collect(v, found, f"{path}[{i}]")


def prepare(model: str, image: bytes, bodies: dict[str, Body], args: argparse.Namespace) -> Callable[[Target], None]:
    """Checks run on each server once it is ready, before any level: its answer for the bench image,
    the layout it chose, and for the default service what it serves of the Open Inference Protocol."""

    def check(t: Target) -> None:
        t.info["answer"] = top5(t.server.port, bodies["raw"])
        if t.info["kind"] == "service":
            t.info["resolved_layout"] = resolved_layout(t.server.port)
        if not any(b in t.loads for b in OIP_BODIES):
            return
        plan = oip.prepare(t.server.port, t.server.grpc_port, model, image, args.workdir)
        t.info["oip"] = plan.as_json()
        t.info.setdefault("skip", {})
        for body, proto, name in (("v2-http", plan.http, "http"), ("v2-grpc", plan.grpc, "grpc")):
            if not proto.available:
                t.info["skip"][body] = proto.reason or "not available"
                print(f"  {t.key} {body}: skipped: {proto.reason}", flush=True)
                continue
            t.loads[body] = _oip_load(t.server, plan, name, proto, args.workdir)
            print(
                f"  {t.key} {body}: {proto.form}, driven by {proto.tool}"
                + (f" ({proto.tool_note})" if proto.tool_note else ""),
                flush=True,
            )

    return check


def _oip_load(server: Server, plan: oip.OipPlan, name: str, proto: oip.Protocol, workdir: Path) -> Load:
    if name == "http":
        assert proto.body is not None
        fallback = wrk_load(server, proto.body, workdir)
    else:
        assert proto.request_file is not None and plan.grpc_target is not None
        fallback_fn = partial(_grpc, plan.grpc_target, proto.request_file, workdir)
        fallback = Load(fallback_fn, fallback_fn)
    if proto.tool != "perf_analyzer" or plan.pa_cmd is None or plan.pa_data is None:
        return fallback
    url = f"127.0.0.1:{server.port}" if name == "http" else plan.grpc_target or ""
    cmd, env, data = plan.pa_cmd, plan.pa_env, plan.pa_data

    def measure(conc: int, seconds: float) -> dict:
        return oip.run_perf_analyzer(
            cmd, env, protocol=name, url=url, model=plan.model, input_name=plan.input_name,
            data_file=data, concurrency=conc, seconds=seconds, workdir=workdir,
        )  # fmt: skip

    return Load(measure, fallback.warm)


def _grpc(target: str, request_file: Path, workdir: Path, conc: int, seconds: float) -> dict:
    return oip.grpc_load(target, request_file, conc, seconds, workdir)
