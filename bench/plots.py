"""PNG figures of a ``python -m bench`` result: images/s and p99 latency against concurrency.

Per model and metric one figure of two panels, so no panel has more than a handful of lines:
left, the bodies (the service solid, the naive app dashed, one colour per body; the Open Inference
Protocol rows as markers); right, the raw body across instance layouts and backends, with the
limits as horizontal lines. matplotlib with the Agg backend (no display).
"""

from __future__ import annotations

from pathlib import Path

from bench.summary import ok_rows

BODY_COLOURS = {
    "raw": "tab:blue",
    "multipart": "tab:orange",
    "base64": "tab:green",
    "v2-http": "tab:purple",
    "v2-grpc": "tab:brown",
}
METRICS = {
    "throughput": ("images_per_s", "images/s (higher is better)", False),
    "p99": ("p99_ms", "p99 latency, ms (lower is better, log scale)", True),
}


def _series(server: dict | None, body: str, field: str) -> tuple[list[int], list[float]]:
    rows = sorted(ok_rows(server, body), key=lambda r: r["concurrency"])
    pts = [(r["concurrency"], r[field]) for r in rows if r.get(field) is not None]
    return [c for c, _ in pts], [v for _, v in pts]


def write_plots(report: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    levels = report["config"]["levels"]
    for name, result in report["models"].items():
        servers = result.get("servers", {})
        for metric, (field, ylabel, log_y) in METRICS.items():
            fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True, constrained_layout=True)
            for body, colour in BODY_COLOURS.items():
                x, y = _series(servers.get("service"), body, field)
                if x:
                    oip = body.startswith("v2")
                    left.plot(x, y, color=colour, marker="s" if oip else "o", linestyle=":" if oip else "-",
                              label=f"service {body}")  # fmt: skip
                x, y = _series(servers.get("naive"), body, field)
                if x:
                    left.plot(x, y, color=colour, marker="x", linestyle="--", alpha=0.8, label=f"naive {body}")
            left.set_title(f"{name}: bodies (service solid, naive dashed)")
            styles = iter(["-", "--", "-.", ":"] * 4)
            palette = iter(["black", "tab:red", "tab:cyan", "tab:olive", "tab:pink", "tab:gray", "tab:purple"] * 2)
            colours: dict[str, str] = {}
            for key, srv in servers.items():
                if srv.get("kind") != "service":
                    continue
                x, y = _series(srv, "raw", field)
                if x:
                    colours[key] = next(palette)
                    right.plot(x, y, color=colours[key], linestyle=next(styles), marker="o",
                               label=srv.get("label", key))  # fmt: skip
            if metric == "throughput":  # each limit in its served line's colour (torch: the default service's)
                for backend, lim in result.get("limits", {}).items():
                    if lim.get("images_per_s"):
                        key = "service" if backend == "torch" else f"service-{backend}"
                        right.axhline(lim["images_per_s"], linewidth=1.0, alpha=0.7, linestyle=(0, (6, 3)),
                                      color=colours.get(key, "tab:gray"),
                                      label=f"limit {backend} ({lim.get('layout')})")  # fmt: skip
            right.set_title(f"{name}: raw body, layouts and backends")
            for ax in (left, right):
                ax.set_xscale("log", base=2)
                ax.set_xticks(levels, [str(c) for c in levels])
                ax.set_xlabel("concurrency (requests in flight)")
                ax.grid(True, which="both", alpha=0.3)
                if log_y:
                    ax.set_yscale("log")
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=7, loc="best")
            if not log_y:
                left.set_ylim(bottom=0)
            left.set_ylabel(ylabel)
            path = out_dir / f"benchmarks-{name}-{metric}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
    return written
