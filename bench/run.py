"""``make bench``: the limit, the naive pattern and this service, side by side, in one run.

For each model (resnet18 with seeded random weights by default, and the bundled offline digits model):
1. the limit: ``bench.limit`` in subprocesses, for each backend (torch, onnxruntime, openvino;
   torch_compile with --torch-compile; resnet18 only, digits is torch) and each instance layout
   (N processes x T threads side by side): decode + preprocess + model at its best batch size;
2. this service under gunicorn + uvicorn worker (``service/gunicorn_conf.py``, production settings):
   with its default settings (every body, and the Open Inference Protocol over HTTP and gRPC at
   --oip-levels), in each layout (``ML_API_MODEL_INSTANCES`` x ``ML_API_TORCH_THREADS``, raw body), and
   with each backend (``"backend"`` in ``ML_API_MODELS``, raw body; resnet18 only);
3. the naive pattern (``bench/naive_app.py``) under uvicorn, one worker, every /api/v1 body.
Each /api/v1 level is driven by wrk (closed loop) at concurrency 1, 4, 16, 64 with the JPEG as a raw
body, as multipart and as base64 JSON, while a probe loop times ``/health/live`` on fresh connections.
CPU use of the server, the load generator, this driver and everything else is recorded per level,
memory per server after the levels. Then the torch limit is measured again and the higher kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.images import make_jpeg
from bench.levels import measure_servers
from bench.limit_runner import Layout, run_limits
from bench.servers import API_BODIES, OIP_BODIES, build_targets, prepare
from bench.summary import summarise
from bench.wrk import loadgen_name, write_bodies, wrk_path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SEED = 0  # ModelSpec.seed of the random-weight models: the same network in every process and run

MODELS = {
    "resnet18": lambda arch: {
        "name": arch,
        "version": "random",
        "source": "torchvision",
        "arch": arch,
        "weights": "IMAGENET1K_V1",  # labels and transforms only: pretrained false
        "pretrained": False,
        "seed": SEED,
    },
    "digits": lambda _arch: {"name": "digits", "version": "1", "source": "bundled"},
}
BACKENDS = ("onnxruntime", "openvino")


def limits_for(model: str, spec: dict, args: argparse.Namespace, label: str = "") -> dict:
    backends = ["torch", *(args.served_backends if model == "resnet18" else [])]
    layouts = args.limit_layouts if args.device == "cpu" else [Layout(1, args.limit_layouts[0].threads)]
    return run_limits(
        spec,
        backends,
        layouts,
        label=label,
        env_settings=args.env,
        device=args.device,
        precision=args.precision,
        seconds=args.limit_seconds,
        batch_sizes="1,16,64" if model == "digits" else "1,4,8,16",
        cache_dir=args.cache_dir,
        log_dir=args.workdir,
        load_timeout=900.0 if "torch_compile" in backends else 600.0,
    )


def limit_again(first: dict, again: dict) -> dict:
    """Per layout the higher of the two torch runs (foreign load only ever lowers a figure), then the
    best layout; both runs are kept."""
    merged = []
    for a in first.get("variants", []):
        b = next((v for v in again.get("variants", []) if v.get("layout") == a.get("layout")), None)
        cands = [v for v in (a, b) if v and v.get("images_per_s")]
        merged.append(max(cands, key=lambda v: v["images_per_s"]) if cands else a)
    ok = [v for v in merged if v.get("images_per_s")]
    if not ok:
        return first
    best = max(ok, key=lambda v: v["images_per_s"])
    strip = {"variants", "runs"}
    return {
        **best,
        "variants": merged,
        "runs": [{k: v for k, v in r.items() if k not in strip} for r in (first, again)],
    }


def machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    names = ["torch", "torchvision", "PIL", "fastapi", "uvicorn", "gunicorn", "onnxruntime", "openvino"]
    code = (
        f"import importlib\nfor n in {names!r}:\n"
        "    try: print(importlib.import_module(n).__version__)\n"
        "    except Exception: print('-')"
    )
    versions = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=180).stdout.split()
    wrk = wrk_path()
    wrk_v = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.splitlines()[:1] if wrk else []
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "cgroup_cpu_max": _read("/sys/fs/cgroup/cpu.max"),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": dict(zip([n.lower().replace("pil", "pillow") for n in names], versions, strict=False)),
        "wrk": wrk_v[0].split(" Copyright")[0].strip() if wrk_v else None,
        "loadavg_at_start": _read("/proc/loadavg"),
    }


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


WANTED_SETTINGS = {"ML_API_MODEL_INSTANCES": "the instance layouts", "ML_API_GRPC_PORT": "the gRPC rows"}


def missing_settings() -> list[str]:
    """Settings this bench sets that the service checked out here does not have yet: it ignores
    unknown ``ML_API_*`` variables, so those levels then measure its defaults instead."""
    from service.settings import Settings

    known = {f"ML_API_{n.upper()}" for n in Settings.model_fields}
    return [k for k in WANTED_SETTINGS if k not in known]


def settings_notes(missing: list[str]) -> list[str]:
    if not missing:
        return []
    return [
        "This service has no setting "
        + ", ".join(f"`{k}` ({WANTED_SETTINGS[k]})" for k in missing)
        + " yet: it ignores the variable, so those levels measure its defaults (threads still apply)."
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    default_layouts = f"1x{cores},{cores}x1" if cores > 1 else "1x1"
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default="resnet18,digits", help="comma list of: resnet18 (any --arch), digits")
    p.add_argument(
        "--arch", default="resnet18", help="torchvision architecture for the 'resnet18' slot (e.g. resnet50 on a GPU)"
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"], help="CUDA only (ML_API_PRECISION)")
    p.add_argument("--levels", default="1,4,16,64", help="concurrency levels")
    p.add_argument("--bodies", default="raw,multipart,base64", help="/api/v1 bodies of the default service and naive")
    p.add_argument("--digits-bodies", default="raw,multipart,base64")
    p.add_argument(
        "--layouts",
        default=default_layouts,
        help=f"instance layouts INSTANCESxTHREADS: service levels (raw) and the limit (here {default_layouts}); "
        "'' = none (the limit then runs 1xCORES)",
    )
    p.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="backends besides torch, for the limit and as service levels (raw), resnet18 slot only; '' = none",
    )
    p.add_argument("--torch-compile", action="store_true", help="add torch_compile to --backends (compiles: minutes)")
    p.add_argument("--oip-levels", default="1,16", help="concurrency of the /v2 HTTP and gRPC levels; '' = none")
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level")
    p.add_argument("--digits-seconds", type=float, default=6.0, help="measured seconds per level, digits")
    p.add_argument(
        "--limit-again",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the torch limit before and after the levels and keep the higher",
    )
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each level")
    p.add_argument("--limit-seconds", type=float, default=2.0, help="seconds per batch size for the limit")
    p.add_argument("--probe-interval", type=float, default=0.1)
    p.add_argument("--no-limit", action="store_true", help="skip the in-process limit (tuning runs)")
    p.add_argument("--only", choices=["service", "naive"], help="skip the other server kind")
    p.add_argument("--env", action="append", default=[], metavar="ML_API_X=V", help="extra service settings")
    p.add_argument("--budget", type=float, default=1140.0, help="seconds; levels past it are skipped")
    p.add_argument("--out", default=".bench/results.json")
    p.add_argument("--docs", action="store_true", help="write benchmarks.md, benchmarks.json and the PNGs")
    p.add_argument("--docs-dir", default="docs", help="where --docs writes (e.g. .bench/docs for a trial run)")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True, help="PNGs with --docs")
    p.add_argument(
        "--quick",
        action="store_true",
        help="short levels (3 s), concurrency 1,16,64, raw body only for digits, a shorter limit",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.digits_seconds, args.warmup, args.limit_seconds = 3.0, 3.0, 0.5, 1.0
        args.levels, args.digits_bodies, args.limit_again = "1,16,64", "raw", False
    args.levels = [int(v) for v in args.levels.split(",") if v]
    args.oip_levels = [int(v) for v in args.oip_levels.split(",") if v]
    args.layout_list = [Layout.parse(v) for v in args.layouts.split(",") if v]
    args.limit_layouts = args.layout_list or [Layout(1, cores)]
    args.served_backends = [b for b in args.backends.split(",") if b]
    if args.torch_compile and "torch_compile" not in args.served_backends:
        args.served_backends.append("torch_compile")
    for b in (*args.bodies.split(","), *args.digits_bodies.split(",")):
        if b not in API_BODIES:
            p.error(f"unknown body {b!r}: one of {', '.join(API_BODIES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (timeout, Ctrl-C in make) unwinds through the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.device == "auto":
        probe = [PY, "-c", "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"]
        args.device = "cuda" if subprocess.run(probe).returncode == 0 else "cpu"

    os.chdir(ROOT)
    args.workdir = ROOT / ".bench"
    args.workdir.mkdir(exist_ok=True)
    args.cache_dir = args.workdir / "backend-cache"  # ONNX exports, shared by the limit and the services
    image = make_jpeg(640, 480)
    bodies = write_bodies(image, args.workdir)
    started = time.monotonic()
    args.deadline = started + args.budget
    report: dict = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "image": {"width": 640, "height": 480, "format": "JPEG", "bytes": len(image)},
        "config": {
            "levels": args.levels,
            "oip_levels": args.oip_levels,
            "layouts": [v.name for v in args.layout_list],
            "limit_layouts": [v.name for v in args.limit_layouts],
            "backends": args.served_backends,
            "seconds_per_level": args.seconds,
            "digits_seconds_per_level": args.digits_seconds,
            "warmup_s": args.warmup,
            "limit_seconds_per_batch_size": args.limit_seconds,
            "device": args.device,
            "precision": args.precision,
            "service_env": args.env,
            "probe_interval_s": args.probe_interval,
            "load_generator": loadgen_name(),
            "seed": SEED,
        },
        "missing_settings": missing_settings(),
        "models": {},
    }
    report["notes"] = settings_notes(report["missing_settings"])
    for note in report["notes"]:
        print(f"note: {note}", flush=True)
    for model in args.models.split(","):
        spec = MODELS[model](args.arch)
        name = spec["name"]
        api = [b for b in (args.digits_bodies if model == "digits" else args.bodies).split(",") if b]
        args.body_list = api
        print(f"== {name}", flush=True)
        result: dict = {"slot": model, "spec": spec}
        model_started = time.monotonic()
        result["limits"] = {} if args.no_limit else limits_for(model, spec, args)
        targets = build_targets(model, spec, args, bodies)
        seconds = args.digits_seconds if model == "digits" else args.seconds
        levels = {b: args.levels for b in API_BODIES} | {b: args.oip_levels for b in OIP_BODIES}
        body_order = [*api, *[b for b in OIP_BODIES if args.oip_levels]]
        result["servers"] = measure_servers(
            targets, body_order, levels, args, seconds, prepare(name, image, bodies, args)
        )
        if not args.no_limit and args.limit_again and "torch" in result["limits"]:
            again = limits_for(model, {**spec}, argparse.Namespace(**{**vars(args), "served_backends": []}), " again")
            result["limits"]["torch"] = limit_again(result["limits"]["torch"], again["torch"])
        result["elapsed_s"] = round(time.monotonic() - model_started, 1)
        result["summary"] = summarise(name, result, args.levels)
        print(" summary: " + json.dumps({k: v for k, v in result["summary"].items() if k != "top1"}), flush=True)
        report["models"][name] = result
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    report["machine"]["loadavg_at_end"] = _read("/proc/loadavg")
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out} in {report['elapsed_s']} s")
    if args.docs:
        from bench.report import write_docs

        for path in write_docs(report, ROOT / args.docs_dir, plots=args.plots):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
