"""From a model's measured levels to its headline figures, and every target met or missed by how much.

Pure functions of the result dictionaries (no torch, no servers), so the report can be rebuilt
from a saved ``results.json`` and the arithmetic is tested on its own.
"""

from __future__ import annotations

from typing import Any

from bench.limit_runner import Layout

API_BODIES = ("raw", "multipart", "base64")
SATURATED_FROM = 16  # "at saturation": the best level at this concurrency or more

# The targets, in one place: (goal, direction). ">=" goals are floors, "<=" and "<" ceilings.
GOALS: dict[str, tuple[float, str]] = {
    "served_over_limit_raw": (0.95, ">="),
    "served_over_limit_multipart": (0.90, ">="),
    "served_over_limit_base64": (0.90, ">="),
    "served_over_naive": (1.0, ">="),
    "p99_over_p50_c16": (2.0, "<="),
    "probe_max_ms_c64": (50.0, "<"),
    "digits_over_limit": (0.5, ">="),
    "digits_request_path_cpu_ms": (0.5, "<"),
    "best_backend_over_torch_limit": (1.5, ">="),
    "memory_two_over_one": (1.3, "<="),
}


def ok_rows(server: dict | None, body: str | None = None) -> list[dict]:
    rows = (server or {}).get("levels", [])
    return [r for r in rows if "skipped" not in r and (body is None or r["body"] == body)]


def saturated(rows: list[dict], levels: list[int]) -> dict | None:
    sat = [c for c in levels if c >= SATURATED_FROM] or levels[-1:]
    cands = [r for r in rows if r["concurrency"] in sat]
    return max(cands, key=lambda r: r["images_per_s"]) if cands else None


def top1(answer: dict | None) -> int | None:
    preds = (answer or {}).get("top5") or []
    return preds[0]["class_id"] if preds else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def summarise(name: str, result: dict, levels: list[int]) -> dict[str, Any]:
    limits: dict[str, dict] = result.get("limits", {})
    torch_limit = limits.get("torch", {})
    limit_ips = torch_limit.get("images_per_s")
    limit_cpu = torch_limit.get("cpu_ms_per_image")
    servers: dict[str, dict] = result.get("servers", {})
    out: dict[str, Any] = {
        "model": name,
        "limit_images_per_s": limit_ips,
        "limit_layout": torch_limit.get("layout"),
        "limit_batch_size": torch_limit.get("best_batch_size"),
        "limit_cpu_ms_per_image": limit_cpu,
        "limits": {
            b: {
                "images_per_s": v.get("images_per_s"),
                "layout": v.get("layout"),
                "batch_size": v.get("best_batch_size"),
                "over_torch": _ratio(v.get("images_per_s"), limit_ips),
                "top1": top1(v),
                "error": v.get("error"),
            }
            for b, v in limits.items()
        },
    }

    served: dict[str, dict[str, dict]] = {}
    for key, srv in servers.items():
        for body in dict.fromkeys(r["body"] for r in ok_rows(srv)):
            s = saturated(ok_rows(srv, body), levels)
            if s is None:
                continue
            cpu = s.get("server_cpu_ms_per_image")
            served.setdefault(key, {})[body] = {
                "images_per_s": s["images_per_s"],
                "concurrency": s["concurrency"],
                "over_limit": _ratio(s["images_per_s"], limit_ips),
                "cpu_ms_per_image": cpu,
                # what the request path (HTTP, JSON, queues, hand-offs) costs beyond the limit's own work
                "request_path_cpu_ms": round(cpu - limit_cpu, 3) if cpu is not None and limit_cpu else None,
            }
    out["served"] = served

    svc, naive = servers.get("service"), servers.get("naive")
    pairs = []
    for s in ok_rows(svc):
        if s["body"] not in API_BODIES:
            continue
        n = next((r for r in ok_rows(naive, s["body"]) if r["concurrency"] == s["concurrency"]), None)
        if n and n["images_per_s"]:
            pairs.append({"ratio": round(s["images_per_s"] / n["images_per_s"], 3), **_at(s)})
    if pairs:
        out["served_over_naive"] = {"min": min(pairs, key=lambda p: p["ratio"]), "all": pairs}
    c16 = [{"ratio": round(r["p99_ms"] / r["p50_ms"], 2), **_at(r)} for r in ok_rows(svc) if _at_conc(r, 16)]
    if c16:
        out["p99_over_p50_c16"] = c16
    c64 = [{"ms": r["probe_max_ms"], **_at(r)} for r in ok_rows(svc) if r["concurrency"] == 64 and r["probe_max_ms"]]
    if c64:
        out["probe_max_ms_c64"] = c64

    backends = [(k, s) for k, s in servers.items() if s.get("kind") == "service" and s.get("backend") != "torch"]
    reference = top1(torch_limit)
    cands = []
    for key, srv in backends:
        raw = served.get(key, {}).get("raw")
        if raw:
            cands.append(
                {
                    "key": key,
                    "backend": srv["backend"],
                    "served_images_per_s": raw["images_per_s"],
                    "concurrency": raw["concurrency"],
                    "over_torch_limit": raw["over_limit"],
                    "top1": top1(srv.get("answer")),
                    "top1_same_as_torch": reference is not None and top1(srv.get("answer")) == reference,
                    "limit_images_per_s": limits.get(srv["backend"], {}).get("images_per_s"),
                }
            )
    if cands:
        out["best_backend"] = max(cands, key=lambda c: c["served_images_per_s"])
        out["backends_served"] = cands

    by_instances: dict[int, dict] = {}
    for key, srv in servers.items():
        if srv.get("kind") != "service" or srv.get("backend") != "torch" or srv.get("layout") in (None, "auto"):
            continue
        layout = Layout.parse(srv["layout"])
        mem = srv.get("memory") or {}
        if mem.get("peak_rss_mib"):
            by_instances.setdefault(layout.instances, {"key": key, "layout": layout.name, **mem})
    if 1 in by_instances and 2 in by_instances:
        one, two = by_instances[1], by_instances[2]
        out["memory"] = {
            "one": one,
            "two": two,
            "peak_rss_ratio": _ratio(two["peak_rss_mib"], one["peak_rss_mib"]),
            "pss_ratio": _ratio(two.get("pss_mib"), one.get("pss_mib")),
        }

    answers = {k: top1(s.get("answer")) for k, s in servers.items()}
    out["top1"] = {
        "limit_torch": reference,
        "servers": answers,
        "service_same_as_naive": None
        if answers.get("service") is None or answers.get("naive") is None
        else answers["service"] == answers["naive"],
        "service_same_as_limit": None if answers.get("service") is None else answers["service"] == reference,
        "top5": {k: (s.get("answer") or {}).get("top5") for k, s in servers.items()},
    }
    out["served_errors"] = sum(r["errors"] for s in servers.values() if s.get("kind") == "service" for r in ok_rows(s))
    return out


def _at(row: dict) -> dict:
    return {"concurrency": row["concurrency"], "body": row["body"]}


def _at_conc(row: dict, conc: int) -> bool:
    return row["concurrency"] == conc and row["body"] in API_BODIES and bool(row["p50_ms"])


def verdict(value: float | None, key: str) -> dict[str, Any]:
    """met / missed against GOALS[key], and the margin: how far past the goal (positive) or short of
    it (negative), relative to the goal."""
    goal, direction = GOALS[key]
    if value is None:
        return {"goal": goal, "direction": direction, "value": None, "met": None, "margin": None}
    if direction == ">=":
        met, margin = value >= goal, (value - goal) / goal
    elif direction == "<=":
        met, margin = value <= goal, (goal - value) / goal
    else:
        met, margin = value < goal, (goal - value) / goal
    return {"goal": goal, "direction": direction, "value": value, "met": met, "margin": round(margin, 3)}


def targets(report: dict) -> list[dict[str, Any]]:
    """Every target of every model, in the order the report lists them."""
    out: list[dict[str, Any]] = []

    def add(model: str, text: str, key: str, value: float | None, figure: str, note: str = "") -> None:
        out.append({"model": model, "target": text, "key": key, "figure": figure, "note": note, **verdict(value, key)})

    for slot, result in report.get("models", {}).items():
        s = result.get("summary", {})
        name = s.get("model", slot)
        lim = s.get("limit_images_per_s")
        served = s.get("served", {})
        svc = served.get("service", {})
        is_digits = result.get("slot") == "digits" or name == "digits"
        if not is_digits:
            for body, frac in (("raw", "0.95"), ("multipart", "0.90"), ("base64", "0.90")):
                f = svc.get(body)
                best_layout = max(
                    (
                        (k, v["raw"])
                        for k, v in served.items()
                        if k.startswith("service-") and "raw" in v and _torch(result, k)
                    ),
                    key=lambda kv: kv[1]["images_per_s"],
                    default=None,
                )
                figure = (
                    f"{f['images_per_s']:.1f} images/s = {_pct(f['over_limit'])} of {lim:.1f} ({s.get('limit_layout')})"
                    if f and lim
                    else "not measured"
                )
                if body == "raw" and best_layout and best_layout[1].get("over_limit") is not None:
                    figure += (
                        f"; best layout {best_layout[0].removeprefix('service-')}: {_pct(best_layout[1]['over_limit'])}"
                    )
                add(name, f"served at saturation >= {frac} of the best-layout limit ({body})",
                    f"served_over_limit_{body}", f["over_limit"] if f else None, figure)  # fmt: skip
        w = s.get("served_over_naive", {}).get("min")
        add(
            name,
            "served >= naive at every concurrency, every body",
            "served_over_naive",
            w["ratio"] if w else None,
            f"lowest {w['ratio']:.2f}x (c={w['concurrency']}, {w['body']})" if w else "not measured",
        )
        p = s.get("p99_over_p50_c16", [])
        worst = max(p, key=lambda r: r["ratio"]) if p else None
        add(
            name,
            "p99 <= 2x p50 at concurrency 16",
            "p99_over_p50_c16",
            worst["ratio"] if worst else None,
            (
                "worst "
                + f"{worst['ratio']:.2f}x ({worst['body']}); "
                + ", ".join(f"{r['body']} {r['ratio']:.2f}x" for r in p)
            )
            if worst
            else "not measured",
        )
        q = s.get("probe_max_ms_c64", [])
        worst = max(q, key=lambda r: r["ms"]) if q else None
        add(
            name,
            "`/health/live` max < 50 ms at concurrency 64, every body",
            "probe_max_ms_c64",
            worst["ms"] if worst else None,
            (
                "worst "
                + f"{worst['ms']:.1f} ms ({worst['body']}); "
                + ", ".join(f"{r['body']} {r['ms']:.1f}" for r in q)
            )
            if worst
            else "not measured",
        )
        if is_digits:
            raw = svc.get("raw")
            add(
                name,
                "served at saturation >= 0.5 of its limit (raw)",
                "digits_over_limit",
                raw["over_limit"] if raw else None,
                f"{raw['images_per_s']:.1f} of {lim:.1f} images/s = {_pct(raw['over_limit'])}"
                if raw and lim
                else "not measured",
            )
            path = raw.get("request_path_cpu_ms") if raw else None
            add(
                name,
                "request path CPU < 0.5 ms per request (server CPU per request - the limit's CPU per image, raw)",
                "digits_request_path_cpu_ms",
                path,
                f"{raw['cpu_ms_per_image']:.2f} - {s.get('limit_cpu_ms_per_image'):.2f} = {path:.2f} ms"
                if raw and path is not None
                else "not measured",
            )
        else:
            b = s.get("best_backend")
            value = b["over_torch_limit"] if b and b["top1_same_as_torch"] else None
            if b:
                figure = (
                    f"{b['backend']}: {b['served_images_per_s']:.1f} images/s = {b['over_torch_limit']:.2f}x "
                    f"the torch-eager limit; top-1 {'same' if b['top1_same_as_torch'] else 'DIFFERENT'}"
                )
            else:
                figure = "not measured"
            add(name, "best backend served >= 1.5x the torch-eager limit, same top-1",
                "best_backend_over_torch_limit", value, figure,
                "" if not b or b["top1_same_as_torch"] else "top-1 differs: not counted")  # fmt: skip
        m = s.get("memory")
        note = ""
        if "ML_API_MODEL_INSTANCES" in report.get("missing_settings", []):
            # Both layouts ran one instance: a ratio near 1.0 would read as met while measuring nothing.
            m, note = None, "the service has no ML_API_MODEL_INSTANCES setting yet"
        add(
            name,
            "peak RSS per pod, 2 instances <= 1.3x 1 instance",
            "memory_two_over_one",
            m["peak_rss_ratio"] if m else None,
            f"{m['two']['layout']} {m['two']['peak_rss_mib']:.0f} MiB / {m['one']['layout']} "
            f"{m['one']['peak_rss_mib']:.0f} MiB = {m['peak_rss_ratio']:.2f}x"
            + (f" (PSS {m['pss_ratio']:.2f}x)" if m.get("pss_ratio") else "")
            if m
            else "not measured",
            note,
        )
    return out


def _torch(result: dict, key: str) -> bool:
    return result.get("servers", {}).get(key, {}).get("backend") == "torch"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"
