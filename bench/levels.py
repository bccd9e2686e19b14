"""One load level, and the schedule of every level of a model's servers.

A level is one (server, body, concurrency): an unmeasured warm-up, a drain, then the measured run
of a closed-loop load generator with the ``/health/live`` probe loop beside it and the CPU of the
server, the load generator, this driver and the rest of the machine read before and after, then a
drain again so the next level starts from an idle server.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.procs import Probe, Server, http_get, system_busy_seconds, tree_memory, vm_hwm_mib

# (concurrency, seconds) -> wrk's JSON summary plus cpu_s, wall_s and tool
LoadFn = Callable[[int, float], dict]


@dataclass
class Load:
    """How one body is sent to one server: ``measure`` for the level, ``warm`` for its warm-up (the
    same tool, or for perf_analyzer the fallback, whose start-up is cheaper)."""

    measure: LoadFn
    warm: LoadFn


@dataclass
class Target:
    """A server with what it is measured with: its loads by body."""

    key: str
    server: Server
    loads: dict[str, Load]
    info: dict  # configuration and findings written to the report (label, layout, backend, ...)


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
    values = re.findall(rb"^ml_api_inflight_requests(?:\{[^}]*\})? ([0-9.eE+-]+)", body, re.M)
    return sum(float(v) for v in values) if status == 200 and values else None


def drain(server: Server, timeout: float = 20.0) -> float:
    """Wait until requests abandoned by the last load run are done (wrk closes connections mid-request,
    and neither server cancels work on disconnect), so each level starts from an idle server."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(OSError):
            http_get(server.port, "/health/live", timeout=timeout)  # queued behind a blocked loop
        n = inflight(server.port) if server.name.startswith("service") else 0
        if not n:
            break
        time.sleep(0.05)
    return round(time.monotonic() - started, 2)


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000, 1)


def run_level(target: Target, body: str, conc: int, args: argparse.Namespace) -> dict:
    server, load = target.server, target.loads[body]
    level_started = time.monotonic()
    if args.warmup > 0:
        load.warm(conc, args.warmup)
        drain(server)
    warm_s = time.monotonic() - level_started
    hist0 = batch_histogram(server.port)
    probe = Probe(server.port, interval=args.probe_interval)
    t0, cpu0, sys0, self0 = time.monotonic(), server.cpu_seconds(), system_busy_seconds(), time.process_time()
    probe.start()
    try:
        res = load.measure(conc, args.seconds)
    finally:
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
    server_cpu, tool_cpu, self_cpu = cpu1 - cpu0, res["cpu_s"], self1 - self0
    other_cpu = max(0.0, (sys1 - sys0) - server_cpu - tool_cpu - self_cpu)
    wall = t1 - t0  # the CPU readings' window (the load run plus the probe's last round trip)
    row = {
        "concurrency": conc,
        "body": body,
        "loadgen": res.get("tool"),
        "seconds": round(seconds, 2),
        "requests": res["requests"],
        "images_per_s": round(ok / seconds, 2) if seconds else 0.0,
        "p50_ms": _ms(lat["p50"]),
        "p95_ms": _ms(lat["p95"]),
        "p99_ms": _ms(lat["p99"]),
        "max_ms": _ms(lat.get("max")),
        "errors": errors,
        "error_detail": res["errors"],
        "mean_batch": mean_batch,
        "probe_p99_ms": percentile(probe.latencies_ms, 99),
        "probe_max_ms": round(max(probe.latencies_ms), 2) if probe.latencies_ms else None,
        "probe_samples": len(probe.latencies_ms),
        "probe_failures": probe.failures,
        # CPU in cores (1.0 = one core busy for the whole level).
        "server_cpu": round(server_cpu / wall, 2),
        "server_cpu_ms_per_image": round(1000 * server_cpu / ok, 2) if ok else None,
        "loadgen_cpu": round(tool_cpu / wall, 3),
        "driver_cpu": round(self_cpu / wall, 3),
        "other_cpu": round(other_cpu / wall, 2),
        "drain_after_s": drained_s,
        "warmup_and_drain_s": round(warm_s, 2),
        "level_wall_s": round(time.monotonic() - level_started, 2),  # what the level cost the run
    }
    print(
        f"  {target.key:20s} {body:9s} c={conc:<3d} {row['images_per_s']:7.1f} img/s  p50 {row['p50_ms']}"
        f"  p99 {row['p99_ms']} ms  err {errors}  batch {mean_batch}  probe max {row['probe_max_ms']} ms"
        f"  cpu srv {row['server_cpu']} load {row['loadgen_cpu']} other {row['other_cpu']}",
        flush=True,
    )
    return row


@dataclass(frozen=True)
class Planned:
    key: str
    body: str
    concurrency: int


def schedule(targets: list[Target], bodies: list[str], levels: dict[str, list[int]]) -> list[Planned]:
    """Body by body, concurrency by concurrency, every server that takes the body at that level back
    to back: drifting foreign load on a shared machine then hits all of them alike."""
    plan = []
    for body in bodies:
        for conc in levels[body]:
            plan += [Planned(t.key, body, conc) for t in targets if body in t.loads]
    return plan


def measure_servers(
    targets: list[Target],
    bodies: list[str],
    levels: dict[str, list[int]],
    args: argparse.Namespace,
    seconds: float,
    prepare: Callable[[Target], None] | None = None,
) -> dict[str, dict]:
    """Start each server alone (start-up time; ``prepare`` then checks what it serves), run the
    schedule, read memory, stop them. Idle servers cost nothing measurable."""
    started: list[Target] = []
    rows: dict[str, list[dict]] = {t.key: [] for t in targets}
    memory: dict[str, dict] = {}
    workers_rss: dict[str, list[float | None]] = {}
    codes: dict[str, int | None] = {}
    failed: dict[str, str] = {}
    level_args = argparse.Namespace(**{**vars(args), "seconds": seconds})
    by_key = {t.key: t for t in targets}
    try:
        for t in targets:
            try:
                t.server.start()
            except RuntimeError as exc:  # e.g. a backend the gate refused: the others still run
                failed[t.key] = str(exc)
                print(f" {t.key}: failed to start: {exc}", flush=True)
                t.server.stop()
                continue
            started.append(t)
            print(f" {t.key}: live after {t.server.live_s:.2f}s, ready after {t.server.ready_s:.2f}s", flush=True)
            if prepare is not None:
                try:
                    prepare(t)
                except Exception as exc:  # a check that broke must not cost the levels that do not need it
                    t.info["prepare_error"] = repr(exc)[:500]
                    print(f" {t.key}: checks failed: {exc!r}", flush=True)
        live = {t.key for t in started}
        for item in schedule(targets, bodies, levels):
            entry = {"concurrency": item.concurrency, "body": item.body}
            if item.key not in live:
                rows[item.key].append({**entry, "skipped": f"server did not start: {failed.get(item.key, '')[:200]}"})
                continue
            target = by_key[item.key]
            skip = target.info.get("skip", {}).get(item.body)
            if skip:
                rows[item.key].append({**entry, "skipped": skip})
                continue
            if time.monotonic() > args.deadline:  # keep make bench inside its time budget
                print(f"  {item.key} {item.body} c={item.concurrency}: skipped, over the --budget", flush=True)
                rows[item.key].append({**entry, "skipped": "over the time budget"})
                continue
            try:
                rows[item.key].append(run_level(target, item.body, item.concurrency, level_args))
            except RuntimeError as exc:  # a load generator that failed: say so, go on
                print(f"  {item.key} {item.body} c={item.concurrency}: failed: {exc}", flush=True)
                rows[item.key].append({**entry, "skipped": f"load generator failed: {str(exc)[:300]}"})
        for t in started:
            pids = t.server.pids()
            memory[t.key] = tree_memory(pids)
            workers_rss[t.key] = [vm_hwm_mib(pid) for pid in t.server.workers()]
    finally:
        for t in started:
            codes[t.key] = t.server.stop()
    return {
        t.key: {
            **t.info,
            "start_to_live_s": round(t.server.live_s or 0, 2) if t.key in codes else None,
            "start_to_ready_s": round(t.server.ready_s or 0, 2) if t.key in codes else None,
            "start_error": failed.get(t.key),
            "memory": memory.get(t.key),
            "peak_rss_mib_per_worker": workers_rss.get(t.key, []),
            "exit_code": codes.get(t.key),
            "levels": rows[t.key],
        }
        for t in targets
    }
