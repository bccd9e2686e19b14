"""Figures and tables of the model-operations benchmarks (``python -m bench ops``), from their raw
rounds. No I/O here: ``bench/report.py`` renders the docs section from it, the scripts print with it."""

from __future__ import annotations

import statistics
from typing import Any

COUNTS = ("errors", "shadow_success", "shadow_dropped", "shadow_failed", "jobs_completed")


def combine(rounds: list[dict[str, float]]) -> dict[str, float]:
    """One figure per key over the rounds: counts summed, everything else the median, so one round
    hit by a burst of foreign load on a shared machine does not move the figure."""
    keys = dict.fromkeys(k for r in rounds for k in r)
    out: dict[str, float] = {}
    for key in keys:
        values = [r[key] for r in rounds if key in r and r[key] == r[key]]  # NaN: no samples that round
        if not values:
            out[key] = float("nan")
        elif key in COUNTS:
            out[key] = sum(values)
        else:
            out[key] = statistics.median(values)
    return out


def _ratio(value: float, base: float) -> float:
    return value / base if base and base == base and value == value else float("nan")


def shadow_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per concurrency and shadow rate: the primary's latency, its ratio to the same concurrency with
    the shadow off, and the noise to judge that ratio by (the spread of the shadow-off rounds' p50)."""
    rows = []
    for level in result["levels"]:
        configs = {c["rate"]: c["rounds"] for c in level["configs"]}
        off = combine(configs[0.0]) if 0.0 in configs else None
        off_p50s = [r["p50"] for r in configs.get(0.0, []) if r["p50"] == r["p50"]]
        noise = max(off_p50s) / min(off_p50s) if len(off_p50s) > 1 and min(off_p50s) > 0 else float("nan")
        for rate, rounds in configs.items():
            med = combine(rounds)
            rows.append(
                {
                    "concurrency": level["concurrency"],
                    "rate": rate,
                    **med,
                    "p50_ratio": _ratio(med["p50"], off["p50"]) if off else float("nan"),
                    "p99_ratio": _ratio(med["p99"], off["p99"]) if off else float("nan"),
                    "off_p50_spread": noise,
                }
            )
    return rows


def priorities_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per scenario: the measured interactive client's latency and its ratio to it running alone."""
    scenarios = {s["scenario"]: combine(s["rounds"]) for s in result["scenarios"]}
    alone = scenarios.get("alone")
    return [
        {
            "scenario": name,
            **med,
            "p50_ratio": _ratio(med["p50"], alone["p50"]) if alone else float("nan"),
            "p99_ratio": _ratio(med["p99"], alone["p99"]) if alone else float("nan"),
        }
        for name, med in scenarios.items()
    ]


def _n(v: float | None, digits: int = 1) -> str:
    return "-" if v is None or v != v else f"{v:.{digits}f}"


def _x(v: float) -> str:
    return "-" if v != v else f"{v:.2f}x"


def shadow_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| concurrency | shadow | primary p50 ms | p95 ms | p99 ms | p50 / off | p99 / off | req/s | errors "
        "| copies ok | dropped | CPU busy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in shadow_rows(result):
        off = r["rate"] == 0.0
        lines.append(
            f"| {r['concurrency']} | {r['rate']:.0%} | {_n(r['p50'])} | {_n(r['p95'])} | {_n(r['p99'])} "
            f"| {'-' if off else _x(r['p50_ratio'])} | {'-' if off else _x(r['p99_ratio'])} | {_n(r['rps'])} "
            f"| {r['errors']:.0f} | {r.get('shadow_success', 0):.0f} | {r.get('shadow_dropped', 0):.0f} "
            f"| {_n(r['cpu_busy'], 2)} |"
        )
    return lines


def reload_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | reloads | file swap to first answer from the new version, median / max s | load + warm s "
        "| unload s | requests during the run | failed | client p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        switch = r["swap_to_first_new_answer_s"]
        warm = r["load_and_warm_s"] or {}
        unload = r["unload_s"] or {}
        lines.append(
            f"| {r['model']} | {r['repeats']} | {_n(switch['median'], 2)} / {_n(switch['max'], 2)} "
            f"| {_n(warm.get('median'), 2)} | {_n(unload.get('median'), 2)} | {r['requests']} | {r['failed']} "
            f"| {_n(r['latency_ms']['p50'])} / {_n(r['latency_ms']['p99'])} |"
        )
    return lines


def priorities_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| scenario | interactive p50 ms | p95 ms | p99 ms | p50 / alone | p99 / alone | req/s | errors "
        "| jobs completed | jobs/s | competing interactive req/s | CPU busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in priorities_rows(result):
        alone = r["scenario"] == "alone"
        lines.append(
            f"| {r['scenario']} | {_n(r['p50'])} | {_n(r['p95'])} | {_n(r['p99'])} "
            f"| {'-' if alone else _x(r['p50_ratio'])} | {'-' if alone else _x(r['p99_ratio'])} | {_n(r['rps'])} "
            f"| {r['errors']:.0f} | {r['jobs_completed']:.0f} | {_n(r['jobs_per_s'])} | {_n(r['rival_rps'])} "
            f"| {_n(r['cpu_busy'], 2)} |"
        )
    return lines


def section(ops: dict[str, Any]) -> list[str]:
    """The docs/benchmarks.md section of a ``python -m bench ops`` result."""
    m = ops.get("machine", {})

    def load(v: str | None) -> str:
        return " ".join((v or "-").split()[:3])

    out = [
        "## Model operations",
        "",
        f"Generated by `{ops.get('command', 'python -m bench ops')}` on {ops.get('generated_at')} "
        f"({ops.get('elapsed_s')} s; {m.get('cores')} cores, load average "
        f"{load(m.get('loadavg_at_start'))} at the start, {load(m.get('loadavg_at_end'))} at the end). "
        "One `python -m service` on 127.0.0.1 with its model list in "
        "`ML_API_MODELS_FILE` (a ConfigMap-style `..data` symlink swap), closed-loop clients on "
        "`POST /api/v1/predict/upload` with the same JPEG; `CPU busy` is cores busy on the whole machine.",
        "",
    ]
    if ops.get("service_env"):
        out += [
            "Service settings added to the defaults: " + ", ".join(f"`{k}={v}`" for k, v in ops["service_env"].items()),
            "",
        ]
    if "shadow" in ops:
        s = ops["shadow"]
        out += [
            "### Shadow traffic",
            "",
            f"{s['model']}, versions 1 (primary) and 2 (its shadow), one process; the shadow rate changed "
            "through the models file between rounds, the rates interleaved round by round; "
            f"{s['rounds']} rounds of {s['seconds']:g} s per rate and concurrency, medians over rounds. "
            "`p50 / off` is the primary's p50 against the same concurrency with the shadow off; the noise to "
            "judge it by is the spread of the shadow-off rounds' p50 (max / min): "
            + ", ".join(f"c={r['concurrency']} {_x(r['off_p50_spread'])}" for r in shadow_rows(s) if r["rate"] == 0.0)
            + ".",
            "",
            *shadow_table(s),
            "",
        ]
    if "reload" in ops:
        out += [
            "### Reloading the model list",
            "",
            "Two closed-loop clients run throughout; each reload swaps in a file whose only version is new "
            "(the previous one drains and unloads). Swap to first answer includes the 1 s poll "
            "(`ML_API_MODELS_FILE_POLL_S`); in Kubernetes kubelet's ConfigMap refresh (about 60-90 s) comes "
            "before the swap. `load + warm` and `unload` are the service's own log lines.",
            "",
            *reload_table(ops["reload"]),
            "",
        ]
    if "priorities" in ops:
        p = ops["priorities"]
        out += [
            "### Priorities under an async-job load",
            "",
            f"{p['model']}; one measured interactive client; `jobs`: a submitter keeps about {p['backlog']} async "
            f"jobs queued ({p['job_workers']} job workers, background priority); `interactive competition`: "
            f"{p['job_workers']} more interactive clients instead, the same load without priorities. "
            f"{p['rounds']} rounds of {p['seconds']:g} s per scenario, interleaved, medians over rounds.",
            "",
            *priorities_table(p),
            "",
        ]
    for part, why in ops.get("skipped", {}).items():
        out += [f"- {part}: skipped ({why})", ""]
    return out
