"""The kind cluster behind the ``kind`` e2e target: set up through k8s/e2e/cluster.sh (the script
``make up`` runs, so the suite exercises exactly the user's path) and driven with kubectl/helm."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SH = REPO / "k8s" / "e2e" / "cluster.sh"
TOOLS_BIN = REPO / ".tools" / "bin"
# k8s/kind-config.yaml maps this host port to the chart's NodePort (k8s/e2e/values-kind.yaml).
NODEPORT_URL = "http://127.0.0.1:30800"
SERVICE_PORT = 8000
GRPC_PORT = 8081  # the chart's grpc.port


def server_selector(release: str) -> str:
    """Label selector of a release's API server pods: the chart's Deployment selector
    (ml-api.selectorLabels). The release's other pods, the `helm test` pod kept after its run and the
    development Redis, carry app.kubernetes.io/instance as well."""
    return f"app.kubernetes.io/name=ml-api,app.kubernetes.io/instance={release},app.kubernetes.io/component=server"


def _env(**extra: str) -> dict[str, str]:
    # Same PATH precedence as cluster.sh: the pinned helm/kubectl from `make tools` first.
    env = {**os.environ, "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("DRY_RUN", None)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable_reason() -> str | None:
    """None when docker, kind, kubectl and helm are usable, else what is missing and how to get it."""
    proc = subprocess.run(
        [str(CLUSTER_SH), "check", "docker", "kind", "kubectl", "helm"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    if proc.returncode == 0:
        return None
    missing = [line.strip().removeprefix("- ") for line in proc.stderr.splitlines() if line.startswith("  - ")]
    return (
        "kind target: no kind cluster can be created here ("
        + "; ".join(missing or [proc.stderr.strip()])
        + "; kind also pulls its node image kindest/node from a registry)"
    )


@dataclass
class PortForward:
    """``kubectl port-forward svc/...`` on a fixed loopback port, restarted when it has died (it
    follows one pod, so it ends when a rollout replaces that pod)."""

    cluster: KindCluster
    service: str
    namespace: str
    remote_port: int
    http: bool = True  # False for the gRPC port: alive means a TCP connection is accepted
    local_port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.local_port}"

    def _alive(self) -> bool:
        if self._proc is None or self._proc.poll() is not None:
            return False
        if not self.http:
            try:
                socket.create_connection(("127.0.0.1", self.local_port), timeout=3).close()
            except OSError:
                return False
            return True
        # The listener can outlive the pod it forwards to, so ask for an HTTP answer (any status).
        try:
            httpx.get(self.base_url + "/", timeout=3)
        except httpx.HTTPError:
            return False
        return True

    def ensure(self, timeout_s: float = 60.0) -> None:
        if self._alive():
            return
        self.stop()
        cmd = [
            "kubectl", "--context", self.cluster.context, "-n", self.namespace, "port-forward",
            f"svc/{self.service}", f"{self.local_port}:{self.remote_port}", "--address", "127.0.0.1",
        ]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                out = self._proc.stdout.read() if self._proc.stdout else ""
                raise RuntimeError(f"kubectl port-forward exited ({self._proc.returncode}): {out[-2000:]}")
            if self._alive():
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"kubectl port-forward to svc/{self.service} not listening after {timeout_s:.0f}s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None


@dataclass
class KindCluster:
    name: str = "ml-api"
    namespace: str = "ml-api"
    release: str = "ml-api"
    image: str = "ml-api:local"

    @property
    def context(self) -> str:
        return f"kind-{self.name}"

    def script(self, *args: str, timeout_s: float = 1800, **env: str) -> str:
        """Run k8s/e2e/cluster.sh; raise with its output on failure, return stdout otherwise."""
        proc = subprocess.run(
            [str(CLUSTER_SH), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env=_env(CLUSTER=self.name, NAMESPACE=self.namespace, RELEASE=self.release, IMAGE=self.image, **env),
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"cluster.sh {' '.join(args)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}"
            )
        return proc.stdout

    def up(self) -> None:
        self.script("up")

    def install(
        self, *values: str, extra: Sequence[str] = (), release: str | None = None,
        namespace: str | None = None, wait: bool = True,
    ) -> None:  # fmt: skip
        """helm upgrade --install with values-kind.yaml + ``values`` (paths relative to the repo)."""
        env = {"HELM_WAIT": "1" if wait else "0"}
        if release:
            env["RELEASE"] = release
        if namespace:
            env["NAMESPACE"] = namespace
        self.script("install", *values, *(["--", *extra] if extra else []), **env)

    def run(
        self, tool: str, *args: str, timeout_s: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        ctx = ["--context", self.context] if tool == "kubectl" else ["--kube-context", self.context]
        proc = subprocess.run(
            [tool, *ctx, *args], capture_output=True, text=True, timeout=timeout_s, check=False, env=_env()
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}"
            )
        return proc

    def kubectl(self, *args: str, timeout_s: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, timeout_s=timeout_s, check=check)

    def helm(self, *args: str, timeout_s: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, timeout_s=timeout_s, check=check)

    def get_json(self, *args: str, namespace: str | None = None) -> Any:
        ns = ["-n", namespace or self.namespace]
        return json.loads(self.kubectl("get", *args, *ns, "-o", "json").stdout)

    def pods(self, release: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
        """The release's API server pods, terminating ones included."""
        selector = server_selector(release or self.release)
        return list(self.get_json("pods", "-l", selector, namespace=namespace)["items"])

    def serving_pods(self, release: str | None = None, namespace: str | None = None) -> set[str]:
        """Names of the release's API server pods that are not being deleted."""
        pods = self.pods(release, namespace)
        return {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}

    def logs(self, tail: int = 200) -> str:
        proc = self.kubectl(
            "-n", self.namespace, "logs", "-l", f"app.kubernetes.io/instance={self.release}",
            "--all-containers", "--prefix", f"--tail={tail}", check=False,
        )  # fmt: skip
        return proc.stdout + proc.stderr

    def port_forward(
        self, service: str | None = None, namespace: str | None = None, port: int = SERVICE_PORT, *, http: bool = True
    ) -> PortForward:
        return PortForward(self, service or self.release, namespace or self.namespace, port, http)


@contextlib.contextmanager
def forwarded(pf: PortForward) -> Iterator[PortForward]:
    pf.ensure()
    try:
        yield pf
    finally:
        pf.stop()


def wait_for(predicate: Any, timeout_s: float, interval_s: float = 2.0, what: str = "condition") -> Any:
    """Poll ``predicate()`` until it returns something truthy (returned), at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")
