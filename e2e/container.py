"""Build-or-reuse the ml-api image and run it the way production does, for black-box tests.

Usage from a test (pytest or not)::

    from e2e.container import ContainerUnavailable, ensure_image, run_container

    try:
        image = ensure_image()              # tag of an image built from the current work tree
    except ContainerUnavailable as exc:     # no Docker daemon, or the local base image cannot be made
        pytest.skip(str(exc))
    with run_container(image, env={"ML_API_LOG_LEVEL": "DEBUG"}) as c:
        httpx.get(f"{c.base_url}/health/ready")
        c.grpc_target                       # host:port of the image's gRPC server (8081 inside)
        c.time_to_ready_s                   # seconds from `docker run` to the first 200 on /health/ready
        c.logs()                            # stdout + stderr so far
        code = c.stop(signal.SIGTERM)       # send a signal, wait for the exit, return the exit code

``ensure_image`` rebuilds (through ``make image``) only when the image's ``io.ml-api.inputs-hash``
label differs from the hash of the build inputs (Dockerfile, .dockerignore, pyproject.toml,
README.md, service/, weights/, the constraints written from .venv, the build args and the base
image ID), so repeated test runs reuse it. ``run_container`` always runs with ``--read-only
--tmpfs /tmp --user 10001:10001 --cap-drop ALL --security-opt no-new-privileges`` and publishes
port 8000 (HTTP) and 8081 (gRPC) on 127.0.0.1 only, on ports Docker picks.

The build inputs and their hash are ``scripts/image_inputs.py``'s (``make image`` runs it too).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.image_inputs import HASH_LABEL, REPO, build_args_from_env, inputs_hash, write_constraints

DEFAULT_IMAGE = os.environ.get("ML_API_IMAGE", "ml-api:local")
CONTAINER_PORT = 8000
GRPC_CONTAINER_PORT = 8081


class ContainerUnavailable(RuntimeError):
    """Docker or the local base image is not available here: tests should skip, not fail."""


class ContainerFailed(RuntimeError):
    """The container exited or never became ready; the message carries the tail of its logs."""


def docker_bin() -> str:
    """Debian's client: the one first on PATH here may lack BuildKit support (see docs/container.md)."""
    explicit = os.environ.get("DOCKER")
    if explicit:
        return explicit
    if Path("/usr/bin/docker").is_file():
        return "/usr/bin/docker"
    found = shutil.which("docker")
    if not found:
        raise ContainerUnavailable("no docker client on PATH (apt-get install docker.io; scripts/ci-docker.sh)")
    return found


def _docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([docker_bin(), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def docker_unavailable_reason() -> str | None:
    """None when a Docker daemon answers, else why not (for ``pytest.skip``)."""
    try:
        proc = _docker("version", "--format", "{{.Server.Version}}", timeout=20, check=False)
    except ContainerUnavailable as exc:
        return str(exc)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker client failed: {exc}"
    if proc.returncode != 0:
        return f"no Docker daemon reachable ({proc.stderr.strip()[:200]}); start one with scripts/ci-docker.sh"
    return None


def image_exists(tag: str) -> bool:
    return _docker("image", "inspect", tag, check=False).returncode == 0


def image_label(tag: str, label: str) -> str | None:
    proc = _docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag, check=False)
    if proc.returncode != 0:
        return None
    return (json.loads(proc.stdout) or {}).get(label)


def image_size_bytes(tag: str) -> int:
    return int(_docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


@dataclass
class BuildResult:
    tag: str
    built: bool  # False: an up-to-date image was reused
    seconds: float
    inputs_hash: str
    log_tail: str = ""


def ensure_image(tag: str = DEFAULT_IMAGE, *, timeout_s: float = 1800, **build_args: str) -> str:
    """Return ``tag`` after making sure it is built from the current inputs (see module doc)."""
    return build_image(tag, timeout_s=timeout_s, **build_args).tag


def build_image(tag: str = DEFAULT_IMAGE, *, timeout_s: float = 1800, **build_args: str) -> BuildResult:
    """Like :func:`ensure_image`, also saying whether it built and how long that took.

    Raises ContainerUnavailable when there is no daemon or the base image cannot be made (skip),
    and RuntimeError when the image build itself fails (a real failure)."""
    reason = docker_unavailable_reason()
    if reason:
        raise ContainerUnavailable(reason)
    env = {**os.environ, **build_args_from_env(build_args)}
    start = time.monotonic()
    base = subprocess.run(
        ["make", "-C", str(REPO), "--no-print-directory", "base-image", f"BASE_IMAGE={env['BASE_IMAGE']}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    if base.returncode != 0:
        raise ContainerUnavailable(f"base image {env['BASE_IMAGE']} cannot be made: {base.stderr.strip()[-800:]}")
    write_constraints(REPO / "build" / "image")
    wanted = inputs_hash(build_args)
    if image_label(tag, HASH_LABEL) == wanted:
        return BuildResult(tag, False, time.monotonic() - start, wanted)
    make_vars = [f"{k}={v}" for k, v in build_args_from_env(build_args).items()]
    proc = subprocess.run(
        ["make", "-C", str(REPO), "--no-print-directory", "image", f"IMAGE={tag}", *make_vars],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
    )
    tail = (proc.stdout + proc.stderr)[-4000:]
    if proc.returncode != 0:
        raise RuntimeError(f"make image failed ({proc.returncode}):\n{tail}")
    return BuildResult(tag, True, time.monotonic() - start, wanted, tail)


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class RunningContainer:
    """A started container. ``stop`` or leaving the ``run_container`` block ends it."""

    container_id: str
    name: str
    base_url: str
    host_port: int
    started_at: float  # time.monotonic() just before `docker run`
    grpc_target: str = ""  # 127.0.0.1:<published port of 8081>
    time_to_ready_s: float | None = None
    _exit_code: int | None = field(default=None, repr=False)

    def logs(self) -> str:
        proc = _docker("logs", self.container_id, check=False)
        return proc.stdout + proc.stderr

    def is_running(self) -> bool:
        proc = _docker("inspect", "--format", "{{.State.Running}}", self.container_id, check=False)
        return proc.stdout.strip() == "true"

    def exit_code(self) -> int | None:
        proc = _docker("inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", self.container_id, check=False)
        running, _, code = proc.stdout.strip().partition(" ")
        return None if running != "false" else int(code)

    def wait_ready(self, timeout_s: float = 180.0, path: str = "/health/ready") -> float:
        """Poll ``path`` until 200; returns and records seconds since ``docker run``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base_url + path, timeout=2) as resp:
                    if resp.status == 200:
                        self.time_to_ready_s = time.monotonic() - self.started_at
                        return self.time_to_ready_s
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if not self.is_running():
                raise ContainerFailed(f"container exited ({self.exit_code()}) before ready:\n{self.logs()[-4000:]}")
            time.sleep(0.2)
        raise ContainerFailed(f"not ready after {timeout_s:.0f}s:\n{self.logs()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Send ``sig`` to PID 1 and wait for the exit; returns the container's exit code.
        SIGKILLs it (and raises) when it outlives ``timeout_s``."""
        if self._exit_code is not None:
            return self._exit_code
        _docker("kill", "--signal", signal.Signals(sig).name, self.container_id, check=False)
        try:
            proc = _docker("wait", self.container_id, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _docker("kill", self.container_id, check=False)
            raise ContainerFailed(f"still running {timeout_s:.0f}s after {signal.Signals(sig).name}") from None
        self._exit_code = int(proc.stdout.strip().splitlines()[-1])
        return self._exit_code

    def remove(self) -> None:
        _docker("rm", "-f", self.container_id, check=False)


def run_container(
    image: str = DEFAULT_IMAGE,
    *,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 180.0,
    wait_ready: bool = True,
    extra_args: Sequence[str] = (),
    memory: str | None = "4g",
) -> contextlib.AbstractContextManager[RunningContainer]:
    """Context manager: start ``image`` hardened as in production and yield a RunningContainer
    once ``/health/ready`` answers 200 (or right away with ``wait_ready=False``). The container is
    removed on exit from the block; its logs are printed to stderr if the block raised."""
    return _run(image, env or {}, ready_timeout_s, wait_ready, extra_args, memory)


def _published(cid: str, port: int) -> int:
    line = _docker("port", cid, f"{port}/tcp").stdout.strip().splitlines()[0]
    return int(line.rsplit(":", 1)[1])


@contextlib.contextmanager
def _run(
    image: str,
    env: Mapping[str, str],
    ready_timeout_s: float,
    wait_ready: bool,
    extra_args: Sequence[str],
    memory: str | None,
) -> Iterator[RunningContainer]:
    name = f"ml-api-e2e-{uuid.uuid4().hex[:10]}"
    args = [
        "run",
        "--detach",
        "--name",
        name,
        "--read-only",
        "--tmpfs",
        "/tmp:rw,nosuid,nodev,size=512m",
        "--user",
        "10001:10001",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        # Docker picks a free host port; loopback only, never a routable address.
        "--publish",
        f"127.0.0.1::{CONTAINER_PORT}",
        "--publish",
        f"127.0.0.1::{GRPC_CONTAINER_PORT}",
        *(["--memory", memory] if memory else []),
    ]
    for k, v in env.items():
        args += ["--env", f"{k}={v}"]
    args += [*extra_args, image]
    started = time.monotonic()
    cid = _docker(*args, timeout=120).stdout.strip()
    container = None
    try:
        host_port = _published(cid, CONTAINER_PORT)
        grpc_target = f"127.0.0.1:{_published(cid, GRPC_CONTAINER_PORT)}"
        container = RunningContainer(cid, name, f"http://127.0.0.1:{host_port}", host_port, started, grpc_target)
        if wait_ready:
            container.wait_ready(ready_timeout_s)
        yield container
    except BaseException:
        logs = container.logs() if container else _docker("logs", cid, check=False).stderr
        print(f"--- logs of {name} ---\n{logs[-6000:]}", file=sys.stderr)
        raise
    finally:
        _docker("rm", "-f", cid, check=False)
