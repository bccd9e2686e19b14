"""docs/benchmarks.md, docs/benchmarks.json and the PNG figures from a ``python -m bench`` result."""

from __future__ import annotations

import json
from pathlib import Path

from bench.summary import targets

NOTES = Path(__file__).with_name("notes.md")


def _fmt(v: object, suffix: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}{suffix}" if abs(v) < 10 else f"{v:.1f}{suffix}"
    return f"{v}{suffix}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _verdict(t: dict) -> str:
    if t["met"] is None:
        return "not measured" + (f" ({t['note']})" if t.get("note") else "")
    ratio = t["value"] / t["goal"]
    margin = abs(t["margin"]) * 100
    if t["direction"] == ">=":  # a floor
        text = f"met, {margin:.0f}% above" if t["met"] else f"**missed** by {margin:.0f}% ({ratio:.2f}x the goal)"
    else:  # a ceiling
        text = f"met, {margin:.0f}% below" if t["met"] else f"**missed**: {ratio:.2f}x the goal"
    return text + (f"; {t['note']}" if t.get("note") else "")


def targets_table(report: dict) -> list[str]:
    rows = targets(report)
    lines = [
        "| model | target | figure | verdict |",
        "|---|---|---|---|",
    ]
    for t in rows:
        lines.append(f"| {t['model']} | {t['target']} | {t['figure']} | {_verdict(t)} |")
    met = sum(1 for t in rows if t["met"])
    missed = sum(1 for t in rows if t["met"] is False)
    unmeasured = sum(1 for t in rows if t["met"] is None)
    return [
        f"{met} met, {missed} missed, {unmeasured} not measured. Margins are relative to the goal.",
        "",
        *lines,
    ]


def limit_table(result: dict) -> list[str]:
    limits = result.get("limits", {})
    sizes: list[int] = []
    for lim in limits.values():
        for v in lim.get("variants", []):
            sizes += [p["batch_size"] for p in v.get("points", []) if p["batch_size"] not in sizes]
    head = ["backend", "layout", *[f"batch {b}" for b in sizes], "CPU ms/image (best)", "load s", "top-1"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for backend, lim in limits.items():
        for v in lim.get("variants", []):
            if "error" in v:
                lines.append(f"| {backend} | {v['layout']} | failed: {v['error'][-200:]!r} |" + " |" * (len(head) - 3))
                continue
            by_size = {p["batch_size"]: p["images_per_s"] for p in v["points"]}
            best = v["best_batch_size"]
            cells = [(f"**{_fmt(by_size[b])}**" if b == best else _fmt(by_size.get(b))) for b in sizes]
            top = (v.get("top5") or [{}])[0]
            lines.append(
                f"| {backend} | {v.get('layout_text', v['layout'])} | " + " | ".join(cells) + f" | "
                f"{_fmt(v.get('cpu_ms_per_image'))} | {_fmt(v.get('load_s'))} | {top.get('class_id', '-')} |"
            )
    return lines


def levels_table(result: dict) -> list[str]:
    lines = [
        "| server | body | conc. | images/s | p50 ms | p95 ms | p99 ms | errors | mean batch | /health/live p99 / max ms | server CPU | CPU ms/image | load CPU | other CPU | load generator |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, srv in result.get("servers", {}).items():
        for r in srv.get("levels", []):
            if "skipped" in r:
                lines.append(
                    f"| {key} | {r['body']} | {r['concurrency']} | skipped: {r['skipped'][:160]} |" + " |" * 11
                )
                continue
            lines.append(
                f"| {key} | {r['body']} | {r['concurrency']} | **{_fmt(r['images_per_s'])}** | {_fmt(r['p50_ms'])} | "
                f"{_fmt(r['p95_ms'])} | {_fmt(r['p99_ms'])} | {r['errors']} | {_fmt(r['mean_batch'])} | "
                f"{_fmt(r['probe_p99_ms'])} / {_fmt(r['probe_max_ms'])} | {_fmt(r['server_cpu'])} | "
                f"{_fmt(r.get('server_cpu_ms_per_image'))} | {_fmt(r['loadgen_cpu'])} | {_fmt(r['other_cpu'])} | "
                f"{r.get('loadgen') or '-'} |"
            )
    return lines


def servers_list(result: dict) -> list[str]:
    out = []
    for key, srv in result.get("servers", {}).items():
        extra = ""
        if srv.get("resolved_layout"):
            extra = "; reports " + ", ".join(f"`{k}` = {v}" for k, v in list(srv["resolved_layout"].items())[:6])
        if srv.get("start_error"):
            extra += f"; **did not start**: {srv['start_error'][:300]}"
        out.append(
            f"- `{key}`: {srv.get('label', key)}; settings: "
            + (", ".join(f"`{e}`" for e in srv.get("settings", [])) or "defaults")
            + f"; ready after {_fmt(srv.get('start_to_ready_s'))} s{extra}"
        )
    return out


def memory_table(result: dict) -> list[str]:
    lines = [
        "| server | processes | peak RSS MiB (sum of VmHWM) | PSS MiB (after the levels) | peak RSS per worker MiB |",
        "|---|---:|---:|---:|---|",
    ]
    for key, srv in result.get("servers", {}).items():
        m = srv.get("memory") or {}
        per = ", ".join(_fmt(v) for v in srv.get("peak_rss_mib_per_worker", [])) or "-"
        lines.append(
            f"| {key} | {m.get('processes', '-')} | {_fmt(m.get('peak_rss_mib'))} | {_fmt(m.get('pss_mib'))} | {per} |"
        )
    return lines


def headline(result: dict) -> list[str]:
    s = result["summary"]
    out = []
    lim = s.get("limit_images_per_s")
    kinds = {k: v.get("kind") for k, v in result.get("servers", {}).items()}
    for key, bodies in s.get("served", {}).items():
        for body, f in bodies.items():
            line = f"- `{key}` {body}: served at saturation **{_fmt(f['images_per_s'])} images/s**"
            if f.get("over_limit") is not None:
                line += f" = **{_pct(f['over_limit'])} of the limit** ({_fmt(lim)}, torch eager, best layout)"
            if (
                kinds.get(key) == "service"
                and f.get("cpu_ms_per_image") is not None
                and s.get("limit_cpu_ms_per_image")
            ):
                line += (
                    f"; CPU per image {_fmt(f['cpu_ms_per_image'])} ms vs the limit's "
                    f"{_fmt(s['limit_cpu_ms_per_image'])} ms: request path {_fmt(f['request_path_cpu_ms'])} ms"
                )
            out.append(line)
    b = s.get("best_backend")
    if b:
        out.append(
            f"- **best backend: served at saturation = {_fmt(b['served_images_per_s'])} images/s = "
            f"{b['over_torch_limit']:.2f}x today's torch-eager limit** ({b['backend']}, concurrency {b['concurrency']}; "
            f"its own limit {_fmt(b.get('limit_images_per_s'))} images/s; top-1 "
            f"{'the same as' if b['top1_same_as_torch'] else 'DIFFERENT from'} torch eager)"
        )
    t = s.get("top1", {})
    if t:
        answers = ", ".join(f"{k} {v}" for k, v in t.get("servers", {}).items())
        out.append(
            f"- top-1 class of the bench image: limit (torch eager) {t.get('limit_torch')}; {answers}. Service and naive "
            + {True: "**agree**", False: "**disagree**", None: "not both measured"}[t.get("service_same_as_naive")]
            + " (same seeded weights; the naive app resizes with torchvision transforms, the service with its own "
            "decode path, so random-weight logits may differ slightly)"
        )
    w = s.get("served_over_naive", {}).get("min")
    if w:
        out.append(
            f"- lowest served/naive at any level: {w['ratio']:.2f}x (concurrency {w['concurrency']}, {w['body']})"
        )
    return out


def oip_lines(result: dict) -> list[str]:
    plan = result.get("servers", {}).get("service", {}).get("oip")
    if not plan:
        return []
    out = [f"Open Inference Protocol (`/v2/models/{plan['model']}/infer`, input `{plan['input_name']}`, BYTES [1]):"]
    for name in ("http", "grpc"):
        p = plan[name]
        if p["available"]:
            out.append(
                f"- {name}: request form `{p['form']}`, driven by {p['tool']}"
                + (f" ({p['tool_note']})" if p.get("tool_note") else "")
            )
        else:
            out.append(f"- {name}: **skipped**: {p['reason']}")
    return out


def render(report: dict, plots: dict[str, list[str]] | None = None) -> str:
    m = report["machine"]
    cfg = report["config"]
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench --docs`) on "
        f"{report['generated_at']}; the raw figures are in `benchmarks.json` beside this file.",
        "",
        f"What is compared, in one run, on the same 640x480 JPEG ({report['image']['bytes']} bytes), every model with "
        "random weights seeded by its spec's `seed` (0) where it has no trained ones, so the limit, the service and "
        "the naive app run the same network:",
        "- **limit**: the service's own decode + preprocess + model code in-process (`bench/limit.py`: "
        "`decode_image`, `Preprocessing.to_uint8_tensor`, `LoadedModel.run` of `load_model(spec)`), no HTTP, at its "
        "best batch size, for each backend and instance layout (N processes x T threads side by side, summed); "
        "the targets use torch eager's best layout;",
        "- **service**: this service, production server (`gunicorn -c python:service.gunicorn_conf 'service.app:create_app()'`, "
        "uvicorn worker), with its default settings and in each instance layout (`ML_API_MODEL_INSTANCES`, "
        '`ML_API_TORCH_THREADS`) and backend (`"backend"` in `ML_API_MODELS`); `POST /api/v1/predict/upload` '
        '(raw `image/jpeg` body, multipart `file`), `POST /api/v1/predict` (`{"image_base64": ...}`), and the Open '
        "Inference Protocol's `/v2/models/{name}/infer` over HTTP and gRPC;",
        "- **naive**: the common FastAPI pattern (`bench/naive_app.py`): an `async def` FastAPI endpoint doing PIL decode + "
        "torchvision transforms + one forward pass per request on the event loop, uvicorn, one worker.",
        "",
        f"Load: {cfg['load_generator']}; N connections = N requests in flight, for "
        f"{cfg['seconds_per_level']:g} s per level ({cfg.get('digits_seconds_per_level', cfg['seconds_per_level']):g} s for "
        f"digits) after {cfg['warmup_s']:g} s of warm-up; the server is drained between levels. "
        f"A separate probe loop GETs `/health/live` on a fresh connection every {cfg['probe_interval_s']} s during each level "
        "(as a kubelet does). CPU columns are cores used during the level (1.00 = one core): the server's process tree, "
        "the load generator itself, and everything else on the machine (`other`, from /proc/stat, i.e. not part of the "
        "benchmark). Saturation = the best level at concurrency 16 or more.",
        "",
        "## Targets",
        "",
        *targets_table(report),
        "",
        "## Machine",
        f"- CPU: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; cgroup cpu.max: {m['cgroup_cpu_max'] or 'none (unlimited)'}; kernel {m['kernel']}",
        f"- Python {m['python']}, " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + f"; {m['wrk']}",
        f"- load average at start / end: {m['loadavg_at_start']} / {m.get('loadavg_at_end')}",
        f"- device: {cfg['device']}, precision {cfg['precision']}; service settings added to the defaults: "
        + (", ".join(f"`{e}`" for e in cfg["service_env"]) or "none"),
        f"- run took {report.get('elapsed_s')} s; command: `{report['command']}`",
        "",
    ]
    for note in report.get("notes", []):
        out.append(f"> {note}")
    if report.get("notes"):
        out.append("")
    for name, result in report["models"].items():
        out += [f"## {name}", "", "### Limit", "", *limit_table(result), ""]
        out += ["### Served", "", *servers_list(result), "", *headline(result), ""]
        out += [*oip_lines(result), ""]
        for path in (plots or {}).get(name, []):
            out += [f"![{name} {Path(path).stem.rsplit('-', 1)[-1]}]({Path(path).name})", ""]
        out += ["### Memory", "", *memory_table(result), ""]
        out += ["### Every level", "", *levels_table(result), ""]
    if "ops" in report:
        from bench.opsreport import section

        out += section(report["ops"])
    if NOTES.exists():
        out += [NOTES.read_text().rstrip(), ""]
    return "\n".join(out)


def write_docs(report: dict, docs: Path, *, plots: bool = True) -> list[Path]:
    docs.mkdir(parents=True, exist_ok=True)
    md, js = docs / "benchmarks.md", docs / "benchmarks.json"
    written: list[Path] = []
    by_model: dict[str, list[str]] = {}
    if plots:
        try:
            from bench.plots import write_plots
        except ImportError as exc:  # matplotlib is in the dev extra
            print(f"no plots: {exc}")
        else:
            for path in write_plots(report, docs):
                by_model.setdefault(path.stem.removeprefix("benchmarks-").rsplit("-", 1)[0], []).append(str(path))
                written.append(path)
    md.write_text(render(report, by_model))
    js.write_text(json.dumps(report, indent=1) + "\n")
    return [md, js, *written]


if __name__ == "__main__":
    import sys

    root = Path(__file__).resolve().parent.parent
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else root / ".bench" / "results.json"
    dest = Path(sys.argv[2]) if len(sys.argv) > 2 else root / "docs"
    for path in write_docs(json.loads(src.read_text()), dest):
        print(f"wrote {path}")
