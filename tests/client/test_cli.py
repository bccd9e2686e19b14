"""The ``ml-api`` command as a user runs it (a real process against a real server): outputs and exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.client.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from tests.client.conftest import API_KEY
from tests.client.helpers import Digit
from tests.conftest import ROOT, free_port
from tests.servers import Server


def ml_api(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m service.client`` (what the console script runs), with none of the caller's ML_API_*."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ML_API")}
    return subprocess.run(
        [sys.executable, "-m", "service.client", *args],
        cwd=ROOT,
        env={**base_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_help_documents_the_exit_codes_and_environment() -> None:
    proc = ml_api("--help")
    assert proc.returncode == 0
    for line in ("0  every image", "1  the server answered with an error", "2  usage error", "3  the server could not"):
        assert line in proc.stdout
    assert "ML_API_URL" in proc.stdout and "ML_API_KEY" in proc.stdout
    for command in ("predict", "models", "health", "jobs"):
        assert command in proc.stdout


def test_predict_a_directory_and_a_file_as_json_lines(
    served: Server, digit_dir: tuple[Path, dict[str, str]], samples: tuple[Digit, ...], tmp_path: Path
) -> None:
    root, expected = digit_dir
    (root / "notes.txt").write_text("not an image, and not picked up from a directory")
    single = tmp_path / "single.png"
    single.write_bytes(samples[10].png)
    proc = ml_api("predict", str(root), str(single), "--url", served.base, "--json", "--top-k", "2")
    assert proc.returncode == EXIT_OK, proc.stderr
    lines = json_lines(proc.stdout)
    # Directories expand recursively, sorted, image suffixes only; then the named file.
    assert [line["image"] for line in lines] == [*sorted(expected), str(single)]
    labels = {line["image"]: line["predictions"][0]["label"] for line in lines}  # type: ignore[index]
    assert labels == {**expected, str(single): samples[10].label}
    assert all(len(line["predictions"]) == 2 for line in lines)  # type: ignore[arg-type]
    assert all(line["model_name"] == "digits" for line in lines)


def test_a_failed_image_makes_the_exit_status_1(served: Server, digit_dir: tuple[Path, dict[str, str]]) -> None:
    root, expected = digit_dir
    bad = root / "broken.png"
    bad.write_bytes(b"this is not a PNG")
    proc = ml_api("predict", str(root), "--url", served.base, "--json")
    assert proc.returncode == EXIT_FAILED
    lines = {line["image"]: line for line in json_lines(proc.stdout)}
    assert lines[str(bad)]["error"]["error"] == "INVALID_IMAGE"  # type: ignore[index]
    assert all("predictions" in lines[path] for path in expected)


def test_table_is_the_default_output(served: Server, digit_dir: tuple[Path, dict[str, str]]) -> None:
    root, expected = digit_dir
    proc = ml_api("predict", str(root), "--url", served.base)
    assert proc.returncode == EXIT_OK, proc.stderr
    header, *rows = [line for line in proc.stdout.splitlines() if line.strip() and not set(line) <= {"─", " "}]
    assert header.split()[:3] == ["image", "label", "confidence"]
    assert {row.split()[0]: row.split()[1] for row in rows} == expected
    assert "3 images, 0 failed" in proc.stderr


def test_csv_has_one_row_per_image_and_rank(served: Server, digit_dir: tuple[Path, dict[str, str]]) -> None:
    root, expected = digit_dir
    proc = ml_api("--url", served.base, "predict", str(root), "--csv", "--top-k", "3")
    assert proc.returncode == EXIT_OK, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 3 * len(expected)
    top = {row["image"]: row["label"] for row in rows if row["rank"] == "1"}
    assert top == expected
    assert {row["model_name"] for row in rows} == {"digits"}


def test_url_and_key_from_the_environment(keyed: Server, digit_dir: tuple[Path, dict[str, str]]) -> None:
    root, expected = digit_dir
    env = {"ML_API_URL": keyed.base, "ML_API_KEY": API_KEY}
    proc = ml_api("predict", str(root), "--json", env=env)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert {line["image"]: line["predictions"][0]["label"] for line in json_lines(proc.stdout)} == expected  # type: ignore[index]
    # The brief's name for the variable works too; the flag wins over both.
    assert ml_api("models", env={"ML_API_URL": keyed.base, "ML_API_API_KEY": API_KEY}).returncode == EXIT_OK
    assert ml_api("models", "--api-key", "wrong", env=env).returncode == EXIT_FAILED


def test_no_key_on_a_keyed_server_is_exit_1_with_the_message(keyed: Server) -> None:
    proc = ml_api("models", "--url", keyed.base)
    assert proc.returncode == EXIT_FAILED
    assert "401 UNAUTHORIZED: a valid API key is required" in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["predict", "/no/such/path.png"],
        ["predict", "--top-k", "0", "x.png"],
        ["predict", "--concurrency", "0", "."],
        ["frobnicate"],
        [],
        ["jobs"],
        ["jobs", "submit", "/no/such/image.png"],
    ],
    ids=[
        "missing-path",
        "bad-top-k",
        "bad-concurrency",
        "unknown-command",
        "no-command",
        "no-jobs-command",
        "submit-missing",
    ],
)
def test_usage_errors_exit_2(served: Server, args: list[str]) -> None:
    proc = ml_api(*args, env={"ML_API_URL": served.base})
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "usage: ml-api" in proc.stderr


def test_a_directory_without_images_is_a_usage_error(served: Server, tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    proc = ml_api("predict", str(tmp_path), "--url", served.base)
    assert proc.returncode == EXIT_USAGE
    assert "no image files" in proc.stderr


@pytest.mark.parametrize("args", [["health"], ["models"], ["predict", "{image}"], ["jobs", "status", "x"]])
def test_an_unreachable_server_exits_3(args: list[str], digit_dir: tuple[Path, dict[str, str]]) -> None:
    image = next(iter(digit_dir[1]))
    url = f"http://127.0.0.1:{free_port()}"
    proc = ml_api(*[a.format(image=image) for a in args], "--url", url, "--retries", "1", "--json")
    assert proc.returncode == EXIT_UNREACHABLE, proc.stderr + proc.stdout


def test_models_and_health(served: Server) -> None:
    models = ml_api("models", "--url", served.base, "--json")
    assert models.returncode == EXIT_OK
    [listing] = json_lines(models.stdout)
    assert listing["default"] == "digits"
    health = ml_api("health", "--url", served.base, "--json")
    assert health.returncode == EXIT_OK
    assert json_lines(health.stdout)[0]["status"] == "healthy"
    table = ml_api("health", "--url", served.base)
    assert table.stdout.startswith("status: healthy")


def test_jobs_submit_status_wait(served: Server, samples: tuple[Digit, ...], tmp_path: Path) -> None:
    image = tmp_path / "job.png"
    image.write_bytes(samples[7].png)
    submitted = ml_api("jobs", "submit", str(image), "--url", served.base, "--json")
    assert submitted.returncode == EXIT_OK, submitted.stderr
    [accepted] = json_lines(submitted.stdout)
    assert accepted["status"] == "pending"
    waited = ml_api("jobs", "wait", str(accepted["job_id"]), "--url", served.base, "--json", "--wait-timeout", "60")
    assert waited.returncode == EXIT_OK
    [final] = json_lines(waited.stdout)
    assert final["status"] == "completed"
    assert final["result"]["predictions"][0]["label"] == samples[7].label  # type: ignore[index]
    status = ml_api("jobs", "status", str(accepted["job_id"]), "--url", served.base, "--json")
    assert json_lines(status.stdout)[0]["status"] == "completed"
    in_one = ml_api("jobs", "submit", str(image), "--wait", "--url", served.base)
    assert in_one.returncode == EXIT_OK
    assert ": completed" in in_one.stdout and samples[7].label in in_one.stdout


def test_a_failed_job_and_an_unknown_job_exit_1(served: Server, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"no image")
    failed = ml_api("jobs", "submit", str(bad), "--wait", "--json", "--url", served.base)
    assert failed.returncode == EXIT_FAILED
    assert json_lines(failed.stdout)[0]["error"]["error"] == "INVALID_IMAGE"  # type: ignore[index]
    unknown = ml_api("jobs", "status", "no-such-job", "--url", served.base)
    assert unknown.returncode == EXIT_FAILED
    assert "404 JOB_NOT_FOUND" in unknown.stderr


def test_no_progress_bar_when_stderr_is_not_a_terminal(served: Server, digit_dir: tuple[Path, dict[str, str]]) -> None:
    proc = ml_api("predict", str(digit_dir[0]), "--url", served.base, "--json")
    assert proc.returncode == EXIT_OK
    [summary] = proc.stderr.splitlines()  # no bar, no control sequences: just the closing summary
    assert summary.startswith("3 images, 0 failed, ")
    assert "\x1b" not in proc.stderr
