"""``make bench``: the limit, the naive seed and this service, side by side, in one run.

For each model (resnet18 with random weights by default, and the bundled offline digits model):
1. the limit: ``bench.limit`` in a subprocess (best batch size of decode + preprocess + model);
2. this service under gunicorn + uvicorn worker (``service/gunicorn_conf.py``, production settings);
3. the naive seed pattern (``bench/naive_app.py``) under uvicorn, one worker.
Each server is driven by wrk at concurrency 1, 4, 16, 64 with the JPEG as a raw body and as
multipart, while a probe loop times ``/health/live`` on fresh connections. CPU use of the server,
wrk, this driver and everything else on the machine is recorded per level.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.images import make_jpeg
from bench.procs import Probe, Server, free_port, http_get, system_busy_seconds, vm_hwm_mib
from bench.wrk import loadgen_name, run_wrk, write_bodies, wrk_path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
VENV_BIN = Path(PY).parent

MODELS = {
    "resnet18": lambda arch: {
        "name": arch,
        "version": "random",
        "source": "torchvision",
        "arch": arch,
        "weights": "IMAGENET1K_V1",
        "pretrained": False,
    },
    "digits": lambda _arch: {"name": "digits", "version": "1", "source": "bundled"},
}


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return round(ordered[k], 2)


def batch_histogram(port: int) -> tuple[float, float] | None:
    """(sum, count) of ``ml_api_batch_size`` over every label set, from ``/metrics``."""
    try:
        status, body = http_get(port, "/metrics", timeout=10)
    except OSError:
        return None
    if status != 200:
        return None
    total = count = 0.0
    for line in body.decode(errors="replace").splitlines():
        m = re.match(r"^ml_api_batch_size_(sum|count)(\{[^}]*\})? ([0-9.eE+-]+)", line)
        if m:
            if m.group(1) == "sum":
                total += float(m.group(3))
            else:
                count += float(m.group(3))
    return total, count


def inflight(port: int) -> float | None:
    try:
        status, body = http_get(port, "/metrics", timeout=10)
    except OSError:
        return None
    m = re.search(rb"^ml_api_inflight_requests(?:\{[^}]*\})? ([0-9.eE+-]+)", body, re.M)
    return float(m.group(1)) if status == 200 and m else None


def drain(server: Server, timeout: float = 20.0) -> float:
    """Wait until requests abandoned by the last wrk run are done (wrk closes connections mid-request,
    and neither server cancels work on disconnect), so each level starts from an idle server."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(OSError):
            http_get(server.port, "/health/live", timeout=timeout)  # queued behind a blocked loop
        n = inflight(server.port) if server.name == "service" else 0
        if not n:
            break
        time.sleep(0.05)
    return round(time.monotonic() - started, 2)


def run_level(server: Server, bodies: dict, body: str, conc: int, args: argparse.Namespace, workdir: Path) -> dict:
    url = f"http://127.0.0.1:{server.port}/api/v1/predict/upload"
    if args.warmup > 0:
        run_wrk(url, bodies[body], conc, args.warmup, workdir)
        drain(server)
    hist0 = batch_histogram(server.port)
    probe = Probe(server.port, interval=args.probe_interval)
    t0, cpu0, sys0, self0 = time.monotonic(), server.cpu_seconds(), system_busy_seconds(), time.process_time()
    probe.start()
    res = run_wrk(url, bodies[body], conc, args.seconds, workdir)
    probe.stop()
    t1, cpu1, sys1, self1 = time.monotonic(), server.cpu_seconds(), system_busy_seconds(), time.process_time()
    hist1 = batch_histogram(server.port)
    drained_s = drain(server)
    seconds = res["duration_us"] / 1e6
    errors = sum(res["errors"].values())
    ok = res["requests"] - res["errors"]["status"]
    lat = res["latency_us"]
    mean_batch = None
    if hist0 and hist1 and hist1[1] > hist0[1]:
        mean_batch = round((hist1[0] - hist0[0]) / (hist1[1] - hist0[1]), 2)
    server_cpu, wrk_cpu, self_cpu = cpu1 - cpu0, res["cpu_s"], self1 - self0
    other_cpu = max(0.0, (sys1 - sys0) - server_cpu - wrk_cpu - self_cpu)
    wall = t1 - t0  # the CPU readings' window (wrk's run plus the probe's last round trip)
    row = {
        "concurrency": conc,
        "body": body,
        "seconds": round(seconds, 2),
        "requests": res["requests"],
        "images_per_s": round(ok / seconds, 2),
        "p50_ms": round(lat["p50"] / 1000, 1),
        "p95_ms": round(lat["p95"] / 1000, 1),
        "p99_ms": round(lat["p99"] / 1000, 1),
        "max_ms": round(lat["max"] / 1000, 1),
        "errors": errors,
        "error_detail": res["errors"],
        "mean_batch": mean_batch,
        "probe_p99_ms": percentile(probe.latencies_ms, 99),
        "probe_max_ms": round(max(probe.latencies_ms), 2) if probe.latencies_ms else None,
        "probe_samples": len(probe.latencies_ms),
        "probe_failures": probe.failures,
        # CPU in cores (1.0 = one core busy for the whole level).
        "server_cpu": round(server_cpu / wall, 2),
        "server_cpu_ms_per_image": round(1000 * server_cpu / ok, 1) if ok else None,
        "loadgen_cpu": round(wrk_cpu / wall, 3),
        "driver_cpu": round(self_cpu / wall, 3),
        "other_cpu": round(other_cpu / wall, 2),
        "drain_after_s": drained_s,
    }
    print(
        f"  {server.name:8s} {body:9s} c={conc:<3d} {row['images_per_s']:7.1f} img/s  p50 {row['p50_ms']:7.1f}"
        f"  p99 {row['p99_ms']:7.1f} ms  err {errors}  batch {mean_batch}  probe max {row['probe_max_ms']} ms"
        f"  cpu srv {row['server_cpu']} wrk {row['loadgen_cpu']} other {row['other_cpu']}",
        flush=True,
    )
    return row


def service_server(model: str, spec: dict, args: argparse.Namespace, workdir: Path) -> Server:
    port = free_port()
    env = {
        "ML_API_HOST": "127.0.0.1",
        "ML_API_PORT": str(port),
        "ML_API_MODELS": json.dumps([spec]),
        "ML_API_DEFAULT_MODEL": spec["name"],
        "ML_API_DEVICE": args.device,
        "ML_API_PRECISION": args.precision,
    }
    env.update(dict(kv.split("=", 1) for kv in args.env))
    cmd = [str(VENV_BIN / "gunicorn"), "-c", "python:service.gunicorn_conf", "service.app:create_app()"]
    return Server("service", cmd, env, port, workdir / f"service-{model}.log")


def naive_server(model: str, spec: dict, args: argparse.Namespace, workdir: Path) -> Server:
    port = free_port()
    env = {"BENCH_NAIVE_MODEL": "digits" if model == "digits" else spec["arch"]}
    if args.device == "cuda":
        env["BENCH_NAIVE_DEVICE"] = "cuda"
    cmd = [
        PY,
        "-m",
        "uvicorn",
        "bench.naive_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return Server("naive", cmd, env, port, workdir / f"naive-{model}.log")


def measure_servers(
    servers: list[Server], bodies: dict, args: argparse.Namespace, workdir: Path, body_list: list[str], seconds: float
) -> dict:
    """Start each server alone (start-up time), then run every level on each server back to back
    (service, then naive, at the same load level), so drifting foreign load on a shared machine hits
    both alike. Idle servers cost nothing measurable."""
    started: list[Server] = []
    rows: dict[str, list[dict]] = {s.name: [] for s in servers}
    rss: dict[str, list[float | None]] = {}
    codes: dict[str, int | None] = {}
    level_args = argparse.Namespace(**{**vars(args), "seconds": seconds})
    try:
        for server in servers:
            started.append(server)
            server.start()
            print(f" {server.name}: live after {server.live_s:.2f}s, ready after {server.ready_s:.2f}s", flush=True)
        for body in body_list:
            for conc in args.levels:
                for server in servers:
                    if time.monotonic() > args.deadline:  # keep make bench inside its time budget
                        print(f"  {server.name} {body} c={conc}: skipped, over the --budget", flush=True)
                        rows[server.name].append({"concurrency": conc, "body": body, "skipped": "over the time budget"})
                        continue
                    rows[server.name].append(run_level(server, bodies, body, conc, level_args, workdir))
        for server in servers:
            rss[server.name] = [vm_hwm_mib(pid) for pid in server.workers()]
    finally:
        for server in started:
            codes[server.name] = server.stop()
    return {
        s.name: {
            "start_to_live_s": round(s.live_s or 0, 2),
            "start_to_ready_s": round(s.ready_s or 0, 2),
            "peak_rss_mib_per_worker": rss.get(s.name, []),
            "exit_code": codes.get(s.name),
            "levels": rows[s.name],
        }
        for s in servers
    }


def run_limit(model: str, spec: dict, args: argparse.Namespace) -> dict:
    """The best of: one process using every core (intra-op threads), and one single-threaded process
    per core run side by side (their throughputs summed). Both are the same code the service runs."""
    env = dict(os.environ)
    env.pop("ML_API_TORCH_THREADS", None)
    for kv in args.env:  # the same channels_last / precision as the served run
        key, value = kv.split("=", 1)
        env[key] = value
    cmd = [PY, "-m", "bench.limit", "--spec", json.dumps(spec), "--device", args.device]
    cmd += ["--precision", args.precision, "--seconds", str(args.limit_seconds), "--json"]
    if model == "digits":
        cmd += ["--batch-sizes", "1,16,64"]
    else:
        cmd += ["--batch-sizes", "1,4,8,16"]

    def launch(threads: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            cmd, env={**env, "ML_API_TORCH_THREADS": str(threads)}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip

    def collect(procs: list[subprocess.Popen[str]]) -> list[dict]:
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"limit failed: {err[-2000:]}")
            results.append(json.loads(out))
        return results

    cores = os.cpu_count() or 1
    configured = next((int(kv.split("=", 1)[1]) for kv in args.env if kv.startswith("ML_API_TORCH_THREADS=")), 0)
    single = collect([launch(configured or cores)])[0]
    single["layout"] = f"1 process x {single['torch_threads']} threads"
    variants = [single]
    if args.device == "cpu" and cores > 1:
        parts = collect([launch(1) for _ in range(cores)])
        points = []
        for k, point in enumerate(parts[0]["points"]):
            merged = dict(point)
            merged["images_per_s"] = round(sum(p["points"][k]["images_per_s"] for p in parts), 2)
            merged["images"] = sum(p["points"][k]["images"] for p in parts)
            points.append(merged)
        best = max(points, key=lambda p: p["images_per_s"])
        variants.append(
            {
                **parts[0],
                "points": points,
                "best_batch_size": best["batch_size"],
                "images_per_s": best["images_per_s"],
                "layout": f"{cores} processes x 1 thread",
            }
        )
    best = max(variants, key=lambda v: v["images_per_s"])
    return {**best, "variants": variants}


def machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    versions = subprocess.run(
        [
            PY,
            "-c",
            "import torch, torchvision, PIL, fastapi, uvicorn, gunicorn; print(torch.__version__, "
            "torchvision.__version__, PIL.__version__, fastapi.__version__, uvicorn.__version__, gunicorn.__version__)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.split()
    wrk = wrk_path()
    wrk_v = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.splitlines()[:1] if wrk else []
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "cgroup_cpu_max": _read("/sys/fs/cgroup/cpu.max"),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": dict(
            zip(["torch", "torchvision", "pillow", "fastapi", "uvicorn", "gunicorn"], versions, strict=False)
        ),
        "wrk": wrk_v[0].split(" Copyright")[0].strip() if wrk_v else None,
        "loadavg_at_start": _read("/proc/loadavg"),
    }


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def summarise(model: str, result: dict, levels: list[int]) -> dict:
    limit = result["limit"]["images_per_s"] or float("nan")
    svc = [r for r in result.get("service", {}).get("levels", []) if "skipped" not in r]
    naive = [r for r in result.get("naive", {}).get("levels", []) if "skipped" not in r]
    sat = [c for c in levels if c >= 16] or levels[-1:]

    def best(rows: list[dict], body: str | None = None) -> dict | None:
        cands = [r for r in rows if r["concurrency"] in sat and (body is None or r["body"] == body)]
        return max(cands, key=lambda r: r["images_per_s"]) if cands else None

    out: dict = {"model": model, "limit_images_per_s": limit, "limit_batch_size": result["limit"]["best_batch_size"]}
    for body in ("raw", "multipart"):
        s, n = best(svc, body), best(naive, body)
        if s:
            out[f"served_saturated_{body}"] = s["images_per_s"]
            out[f"served_over_limit_{body}"] = round(s["images_per_s"] / limit, 3)
        lim_point = next(
            (p for p in result["limit"].get("points", []) if p["batch_size"] == result["limit"]["best_batch_size"]),
            None,
        )
        if s and lim_point and lim_point.get("cpu_ms_per_image") and s.get("server_cpu_ms_per_image"):
            # CPU per image does not depend on how much of the machine other work took during the level.
            out[f"served_cpu_ms_per_image_{body}"] = s["server_cpu_ms_per_image"]
            out["limit_cpu_ms_per_image"] = lim_point["cpu_ms_per_image"]
            out[f"cpu_efficiency_{body}"] = round(lim_point["cpu_ms_per_image"] / s["server_cpu_ms_per_image"], 3)
        if s and n:
            out[f"naive_saturated_{body}"] = n["images_per_s"]
            out[f"served_over_naive_{body}"] = round(s["images_per_s"] / n["images_per_s"], 3)
    pairs = []
    for s in svc:
        n = next((r for r in naive if r["concurrency"] == s["concurrency"] and r["body"] == s["body"]), None)
        if n and n["images_per_s"]:
            pairs.append((s["images_per_s"] / n["images_per_s"], s["concurrency"], s["body"]))
    if pairs:
        worst = min(pairs)
        out["served_over_naive_min"] = {"ratio": round(worst[0], 3), "concurrency": worst[1], "body": worst[2]}
    c16 = [r for r in svc if r["concurrency"] == 16]
    if c16:
        out["p99_over_p50_c16"] = {r["body"]: round(r["p99_ms"] / r["p50_ms"], 2) for r in c16 if r["p50_ms"]}
    c64 = [r for r in svc if r["concurrency"] == 64]
    if c64:
        out["probe_max_ms_c64"] = max(r["probe_max_ms"] or 0 for r in c64)
    out["served_errors"] = sum(r["errors"] for r in svc)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default="resnet18,digits", help="comma list of: resnet18 (any --arch), digits")
    p.add_argument(
        "--arch", default="resnet18", help="torchvision architecture for the 'resnet18' slot (e.g. resnet50 on a GPU)"
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"], help="CUDA only (ML_API_PRECISION)")
    p.add_argument("--levels", default="1,4,16,64")
    p.add_argument("--bodies", default="raw,multipart")
    p.add_argument("--digits-bodies", default="raw,multipart")
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level")
    p.add_argument("--digits-seconds", type=float, default=6.0, help="measured seconds per level, digits")
    p.add_argument(
        "--limit-again",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the limit before and after the levels and keep the higher",
    )
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each level")
    p.add_argument("--limit-seconds", type=float, default=2.0, help="seconds per batch size for the limit")
    p.add_argument("--probe-interval", type=float, default=0.1)
    p.add_argument("--no-limit", action="store_true", help="skip the in-process limit (tuning runs)")
    p.add_argument("--only", choices=["service", "naive"], help="skip the other server")
    p.add_argument("--env", action="append", default=[], metavar="ML_API_X=V", help="extra service settings")
    p.add_argument("--budget", type=float, default=540.0, help="seconds; levels past it are skipped")
    p.add_argument("--out", default=".bench/results.json")
    p.add_argument("--docs", action="store_true", help="write docs/benchmarks.md and docs/benchmarks.json")
    p.add_argument(
        "--quick", action="store_true", help="short levels (3 s), concurrency 1,16,64, raw body only for digits"
    )
    args = p.parse_args(argv)
    # SIGTERM (timeout, Ctrl-C in make) unwinds through the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.seconds, args.digits_seconds, args.warmup, args.limit_seconds = 3.0, 3.0, 0.5, 1.5
        args.levels, args.digits_bodies = "1,16,64", "raw"
    args.levels = [int(v) for v in args.levels.split(",")]
    if args.device == "auto":
        args.device = (
            "cuda"
            if subprocess.run(
                [PY, "-c", "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"]
            ).returncode
            == 0
            else "cpu"
        )

    os.chdir(ROOT)
    workdir = ROOT / ".bench"
    workdir.mkdir(exist_ok=True)
    image = make_jpeg(640, 480)
    bodies = write_bodies(image, workdir)
    started = time.monotonic()
    args.deadline = started + args.budget
    report: dict = {
        "issue": 9,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "image": {"width": 640, "height": 480, "format": "JPEG", "bytes": len(image)},
        "config": {
            "levels": args.levels,
            "seconds_per_level": args.seconds,
            "warmup_s": args.warmup,
            "device": args.device,
            "precision": args.precision,
            "service_env": args.env,
            "probe_interval_s": args.probe_interval,
            "load_generator": loadgen_name(),
        },
        "models": {},
    }
    for model in args.models.split(","):
        spec = MODELS[model](args.arch)
        name = spec["name"]
        body_list = (args.digits_bodies if model == "digits" else args.bodies).split(",")
        print(f"== {name}", flush=True)
        result: dict = {"spec": spec}
        result["limit"] = (
            {"images_per_s": None, "best_batch_size": None, "torch_threads": None}
            if args.no_limit
            else run_limit(model, spec, args)
        )
        print(
            f" limit: {result['limit']['images_per_s']} img/s at batch {result['limit']['best_batch_size']}"
            f" ({result['limit']['torch_threads']} torch threads)",
            flush=True,
        )
        servers = []
        if args.only != "naive":
            servers.append(service_server(model, spec, args, workdir))
        if args.only != "service":
            servers.append(naive_server(model, spec, args, workdir))
        seconds = args.digits_seconds if model == "digits" else args.seconds
        result.update(measure_servers(servers, bodies, args, workdir, body_list, seconds))
        if not args.no_limit and args.limit_again:
            again = run_limit(model, spec, args)  # the limit again, after the load levels
            print(f" limit again: {again['images_per_s']} img/s at batch {again['best_batch_size']}", flush=True)
            first = result["limit"]
            result["limit"] = {
                **max((first, again), key=lambda v: v["images_per_s"]),
                "runs": [{k: v for k, v in r.items() if k != "runs"} for r in (first, again)],
            }
        result["summary"] = summarise(name, result, args.levels)
        print(" summary: " + json.dumps(result["summary"]), flush=True)
        report["models"][name] = result
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    report["machine"]["loadavg_at_end"] = _read("/proc/loadavg")
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out} in {report['elapsed_s']} s")
    if args.docs:
        from bench.report import write_docs

        for path in write_docs(report, ROOT):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
