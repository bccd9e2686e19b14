"""How the CLI prints results: a table (rich) for people, JSON lines or CSV for scripts."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import IO, Any, Literal

from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table

from service.api.schemas import HealthResponse, JobStatus, ModelInfo
from service.client._core import ImageResult

Format = Literal["table", "json", "csv"]
CSV_COLUMNS = (
    "image",
    "rank",
    "label",
    "class_id",
    "confidence",
    "model_name",
    "model_version",
    "inference_time_ms",
    "request_id",
    "error",
    "message",
)


def _console(stream: IO[str]) -> Console:
    # Piped output has no terminal width; 160 columns keeps rows of long paths on one line.
    return Console(file=stream, width=None if stream.isatty() else 160, soft_wrap=False)


def _json_line(stream: IO[str], value: dict[str, Any]) -> None:
    stream.write(json.dumps(value, separators=(",", ":")) + "\n")


def print_predictions(stream: IO[str], names: Sequence[str], results: Sequence[ImageResult], fmt: Format) -> None:
    """One entry per image, in the order ``names`` gives (``results[i].index`` points into it)."""
    ordered = sorted(results, key=lambda r: r.index)
    if fmt == "json":
        for result in ordered:
            if result.prediction is not None:
                _json_line(stream, {"image": names[result.index], **result.prediction.model_dump()})
            else:
                assert result.error is not None
                _json_line(stream, {"image": names[result.index], "error": result.error.model_dump(exclude_none=True)})
        return
    if fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for result in ordered:
            name = names[result.index]
            if result.prediction is None:
                assert result.error is not None
                error = result.error
                writer.writerow([name, "", "", "", "", "", "", "", error.request_id, error.error, error.message])
                continue
            p = result.prediction
            for rank, item in enumerate(p.predictions, start=1):
                writer.writerow(
                    [
                        name,
                        rank,
                        item.label,
                        item.class_id,
                        f"{item.confidence:.6f}",
                        p.model_name,
                        p.model_version,
                        f"{p.inference_time_ms:.3f}",
                        p.request_id,
                        "",
                        "",
                    ]
                )
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("image", "label", "confidence", "next", "model", "ms"):
        table.add_column(column, justify="right" if column in ("confidence", "ms") else "left", overflow="fold")
    for result in ordered:
        name = names[result.index]
        if result.prediction is None:
            assert result.error is not None
            table.add_row(name, "[red]error[/red]", "", f"{result.error.error}: {result.error.message}", "", "")
            continue
        p = result.prediction
        top, rest = p.predictions[0], p.predictions[1:]
        others = ", ".join(f"{item.label} {item.confidence:.3f}" for item in rest)
        table.add_row(
            name,
            top.label,
            f"{top.confidence:.3f}",
            others,
            f"{p.model_name}:{p.model_version}",
            f"{p.inference_time_ms:.1f}",
        )
    _console(stream).print(table)


def print_models(stream: IO[str], default: str, models: Sequence[ModelInfo], fmt: Format) -> None:
    if fmt == "json":
        _json_line(stream, {"default": default, "models": [m.model_dump() for m in models]})
        return
    if fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["name", "version", "default", "loaded", "state", "device", "labels", "traffic_weight"])
        for m in models:
            writer.writerow(
                [m.name, m.version, m.default, m.loaded, m.state, m.device, m.labels_count, m.traffic_weight]
            )
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("name", "version", "default", "state", "device", "labels", "traffic"):
        table.add_column(column)
    for m in models:
        weight = "" if m.traffic_weight is None else f"{m.traffic_weight:.0%}"
        table.add_row(
            m.name, m.version, "yes" if m.default else "", m.state, m.device, str(m.labels_count or ""), weight
        )
    _console(stream).print(table)


def print_health(stream: IO[str], health: HealthResponse, fmt: Format) -> None:
    if fmt != "table":
        _json_line(stream, health.model_dump())
        return
    stream.write(
        f"status: {health.status}  model_loaded: {str(health.model_loaded).lower()}  "
        f"gpu_available: {str(health.gpu_available).lower()}  version: {health.version}\n"
    )
    print_models(stream, "", health.models, "table")


def print_model(stream: IO[str], value: BaseModel, fmt: Format) -> None:
    """A job's answer: JSON for scripts (one line), the same JSON indented for people."""
    if fmt == "table":
        stream.write(value.model_dump_json(indent=2) + "\n")
    else:
        _json_line(stream, value.model_dump())


def print_job(stream: IO[str], job: JobStatus, fmt: Format) -> None:
    if fmt != "table" or job.status not in ("completed", "failed"):
        print_model(stream, job, fmt)
        return
    stream.write(f"job {job.job_id}: {job.status}\n")
    if job.result is not None:
        print_predictions(stream, [job.job_id], [ImageResult(0, prediction=job.result)], "table")
    elif job.error is not None:
        stream.write(f"{job.error.error}: {job.error.message}\n")
