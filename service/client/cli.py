"""``ml-api``: the command line on the client, for a port-forwarded or local service."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from service import __version__
from service.client._core import DEFAULT_TIMEOUT_S, DEFAULT_URL, ImageResult
from service.client.aio import AsyncMlApiClient
from service.client.errors import ApiError, JobFailedError, MlApiConnectionError, MlApiError
from service.client.images import is_url
from service.client.output import Format, print_health, print_job, print_model, print_models, print_predictions
from service.client.retry import DEFAULT_RETRIES
from service.client.sync import MlApiClient

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
# Files a directory contributes; a file named on the command line is sent whatever its name.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
UNREACHABLE_CODES = frozenset({"CONNECTION_ERROR", "TIMEOUT"})

EPILOG = f"""\
environment:
  ML_API_URL      default for --url ({DEFAULT_URL})
  ML_API_KEY      default for --api-key (ML_API_API_KEY is read too)

exit status:
  {EXIT_OK}  every image (or the request) succeeded
  {EXIT_FAILED}  the server answered with an error for at least one image or for the request
     (a failed job, an unhealthy service)
  {EXIT_USAGE}  usage error: bad arguments, a path that does not exist, no image files found
  {EXIT_UNREACHABLE}  the server could not be reached or did not answer in time (after retries)

examples:
  ml-api health
  ml-api predict digit3.png photos/ --top-k 3
  ml-api predict photos/ --json > results.jsonl
  ml-api jobs submit digit3.png --wait
"""


class UsageError(Exception):
    pass


def _api_key_from_env() -> str | None:
    return os.environ.get("ML_API_KEY") or os.environ.get("ML_API_API_KEY") or None


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The connection and output options, valid before or after the command name.

    The copies on each command default to SUPPRESS, so that they override the top-level value only
    when given there.
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--url",
        default=default(os.environ.get("ML_API_URL") or DEFAULT_URL),
        help=f"service address (env ML_API_URL; default {DEFAULT_URL})",
    )
    group.add_argument("--api-key", default=default(_api_key_from_env()), help="API key (env ML_API_KEY)")
    group.add_argument(
        "--timeout",
        type=float,
        default=default(DEFAULT_TIMEOUT_S),
        help=f"seconds per request (default {DEFAULT_TIMEOUT_S:g})",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=default(DEFAULT_RETRIES),
        help=f"retries on 429/502/503 and connection failures (default {DEFAULT_RETRIES})",
    )
    formats = group.add_mutually_exclusive_group()
    formats.add_argument(
        "--json", dest="format", action="store_const", const="json", default=default("table"), help="JSON lines"
    )
    formats.add_argument(
        "--csv", dest="format", action="store_const", const="csv", default=default("table"), help="CSV"
    )


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model name (default: the server's default model)")
    parser.add_argument(
        "--model-version",
        "--version",
        dest="model_version",
        help="model version (default: the traffic split)",
    )
    parser.add_argument("--top-k", type=int, default=5, choices=range(1, 21), metavar="K", help="1..20 (default 5)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ml-api",
        description=f"Command line for the ml-api image classification service (client {__version__}).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help_text: str, target: argparse._SubParsersAction[argparse.ArgumentParser] = commands
    ) -> argparse.ArgumentParser:
        sub = target.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common(sub, suppress=True)
        return sub

    predict = command("predict", "classify images: files, directories (recursively) or http(s) URLs")
    predict.add_argument("paths", nargs="+", metavar="IMAGE|DIR|URL")
    _add_selection(predict)
    predict.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")

    command("models", "list the registered models and versions")
    command("health", "the service's health (exit 1 when unhealthy)")

    jobs = command("jobs", "async jobs: submit, status, wait")
    job_commands = jobs.add_subparsers(dest="job_command", required=True, metavar="JOBS_COMMAND")
    submit = command("submit", "queue an image as an async job (prints the job)", job_commands)
    submit.add_argument("image", metavar="IMAGE|URL")
    _add_selection(submit)
    submit.add_argument("--wait", action="store_true", help="wait for the job and print its result")
    submit.add_argument("--wait-timeout", type=float, default=None, help="seconds to wait at most")
    submit.add_argument("--idempotency-key", help="reuse to make resubmitting the same job safe")
    status = command("status", "a job's state", job_commands)
    status.add_argument("job_id")
    wait = command("wait", "wait for a job to complete or fail; print it (exit 1 when failed)", job_commands)
    wait.add_argument("job_id")
    wait.add_argument("--wait-timeout", type=float, default=None, help="seconds to wait at most")
    return parser


def collect_images(paths: Sequence[str]) -> list[str]:
    """Files as named, directories expanded (recursively, image suffixes only, sorted), URLs kept."""
    found: list[str] = []
    for raw in paths:
        if is_url(raw):
            found.append(raw)
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UsageError(f"{raw}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this directory")
            found.extend(str(p) for p in files)
        elif path.is_file():
            found.append(str(path))
        else:
            raise UsageError(f"{raw}: no such file or directory")
    return found


def _progress(total: int, enabled: bool) -> Progress | None:
    if not enabled or total < 2 or not sys.stderr.isatty():
        return None
    return Progress(
        TextColumn("classifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


async def _predict(args: argparse.Namespace, names: list[str]) -> list[ImageResult]:
    progress = _progress(len(names), not args.no_progress)
    results: list[ImageResult] = []
    async with AsyncMlApiClient(
        args.url,
        api_key=args.api_key,
        timeout=args.timeout,
        retries=args.retries,
        max_connections=args.concurrency,
    ) as client:
        stream = client.predict_many(
            names,
            concurrency=args.concurrency,
            top_k=args.top_k,
            model=args.model,
            version=args.model_version,
        )
        if progress is None:
            results = [result async for result in stream]
        else:
            with progress:
                task = progress.add_task("classifying", total=len(names))
                async for result in stream:
                    results.append(result)
                    progress.advance(task)
    return results


def run_predict(args: argparse.Namespace, out: IO[str]) -> int:
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    names = collect_images(args.paths)
    started = time.perf_counter()
    results = asyncio.run(_predict(args, names))
    elapsed = time.perf_counter() - started
    fmt: Format = args.format
    print_predictions(out, names, results, fmt)
    failed = [r for r in results if not r.ok]
    if len(names) > 1:  # stderr: never mixed into the results a script reads
        sys.stderr.write(
            f"{len(names)} images, {len(failed)} failed, {elapsed:.1f}s ({len(names) / elapsed:.1f} images/s)\n"
        )
    if any(r.error is not None and r.error.error in UNREACHABLE_CODES for r in failed):
        return EXIT_UNREACHABLE
    return EXIT_FAILED if failed else EXIT_OK


def _client(args: argparse.Namespace) -> MlApiClient:
    return MlApiClient(args.url, api_key=args.api_key, timeout=args.timeout, retries=args.retries)


def run_models(args: argparse.Namespace, out: IO[str]) -> int:
    with _client(args) as client:
        listing = client.models()
    print_models(out, listing.default, listing.models, args.format)
    return EXIT_OK


def run_health(args: argparse.Namespace, out: IO[str]) -> int:
    with _client(args) as client:
        health = client.health()
    print_health(out, health, args.format)
    return EXIT_FAILED if health.status == "unhealthy" else EXIT_OK


def run_jobs(args: argparse.Namespace, out: IO[str]) -> int:
    with _client(args) as client:
        if args.job_command == "submit":
            if not is_url(args.image) and not Path(args.image).is_file():
                raise UsageError(f"{args.image}: no such file")
            accepted = client.submit(
                args.image,
                top_k=args.top_k,
                model=args.model,
                version=args.model_version,
                idempotency_key=args.idempotency_key,
            )
            if not args.wait:
                print_model(out, accepted, args.format)
                return EXIT_OK
            job = client.wait(accepted.job_id, timeout=args.wait_timeout)
        elif args.job_command == "status":
            job = client.job(args.job_id)
            print_job(out, job, args.format)
            return EXIT_OK
        else:
            job = client.wait(args.job_id, timeout=args.wait_timeout)
    print_job(out, job, args.format)
    return EXIT_FAILED if job.status == "failed" else EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, IO[str]], int]] = {
    "predict": run_predict,
    "models": run_models,
    "health": run_health,
    "jobs": run_jobs,
}


def _fail(message: str, status: int) -> int:
    sys.stderr.write(f"ml-api: {message}\n")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args, sys.stdout)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        return _fail(str(exc), EXIT_USAGE)
    except ApiError as exc:
        rid = f" (request ID {exc.request_id})" if exc.request_id else ""
        return _fail(f"{exc.status_code} {exc.code}: {exc.message}{rid}", EXIT_FAILED)
    except JobFailedError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except MlApiConnectionError as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    except MlApiError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def entry_point() -> None:
    """The ``ml-api`` console script."""
    raise SystemExit(main())


if __name__ == "__main__":
    entry_point()
