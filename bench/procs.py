"""Process plumbing for the bench: servers, CPU and memory accounting from /proc, the probe loop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            kids += [int(p) for p in text.split()]
    except OSError:
        pass
    return kids


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of one live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def system_busy_seconds() -> float:
    """CPU seconds spent busy by every core since boot (user, nice, system, irq, softirq, steal)."""
    parts = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (parts + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def vm_hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def vm_kib(pid: int, field: str) -> int | None:
    """One ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``...) in KiB: cheap to read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def pss_kib(pid: int) -> int | None:
    """Proportional set size (shared pages split between their users). Reading ``smaps_rollup`` walks
    the page tables (~20 ms for a torch process), so it is read between levels, never during one."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def tree_memory(pids: list[int]) -> dict:
    """Memory of a pod-like process tree, in MiB.

    ``peak_rss_mib``: the sum of every process's peak RSS (VmHWM): exact for one process, an upper
    bound for several (pages they share, such as torch's libraries, count once per process).
    ``pss_mib``: the sum of PSS now, which counts shared pages once (closest to a cgroup's charge).
    """
    mib = 1024.0

    def total(values: list[int | None]) -> float | None:
        known = [v for v in values if v is not None]
        return round(sum(known) / mib, 1) if known else None

    return {
        "processes": len(pids),
        "peak_rss_mib": total([vm_kib(p, "VmHWM") for p in pids]),
        "rss_mib": total([vm_kib(p, "VmRSS") for p in pids]),
        "pss_mib": total([pss_kib(p) for p in pids]),
    }


def run_measured(cmd: list[str], env: dict[str, str], limit_s: float) -> tuple[int, str, float, float]:
    """Run a load generator to completion: (exit code, its output, its CPU seconds, wall seconds).

    ``wait4`` gives the tool's own CPU use (children included); ``limit_s`` bounds a hung tool."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read() if proc.stdout else b""))
    reader.start()  # drain its output while it runs: a full pipe would block it
    deadline = started + limit_s
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(5)
    text = b"".join(out_chunks).decode(errors="replace")
    return proc.returncode, text, rusage.ru_utime + rusage.ru_stime, time.monotonic() - started


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """A minimal HTTP/1.1 GET on a fresh connection (as a kubelet probe does)."""
    return http_request(port, "GET", path, timeout=timeout)


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a fresh connection, read to the end; (status, body)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    if body or method != "GET":
        head += f"Content-Length: {len(body)}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall((head + "\r\n").encode() + body)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(body: bytes) -> bytes:
    out, rest = [], body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2 :]
    return b"".join(out)


class Server:
    """A server process started in its own process group, ready when ``/health/ready`` is 200."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str],
        port: int,
        log_path: Path,
        *,
        grpc_port: int | None = None,
        start_timeout: float = 180.0,
    ) -> None:
        self.name, self.cmd, self.port, self.log_path = name, cmd, port, log_path
        self.grpc_port, self.start_timeout = grpc_port, start_timeout
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.live_s: float | None = None
        self.ready_s: float | None = None

    def start(self, timeout: float | None = None) -> None:
        timeout = timeout or self.start_timeout
        log = self.log_path.open("wb")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                status, _ = http_get(self.port, "/health/ready" if self.live_s else "/health/live", timeout=2)
                if self.live_s is None and status == 200:
                    self.live_s = time.monotonic() - started
                    continue
                if self.live_s is not None and status == 200:
                    self.ready_s = time.monotonic() - started
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready within {timeout}s; see {self.log_path}")

    def pids(self) -> list[int]:
        return tree(self.proc.pid) if self.proc else []

    def workers(self) -> list[int]:
        """Serving processes: gunicorn's workers, or the process itself when it has no children."""
        assert self.proc is not None
        kids = [p for p in children(self.proc.pid) if vm_hwm_mib(p) is not None]
        return kids or [self.proc.pid]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)


class Probe(threading.Thread):
    """GET ``/health/live`` on a fresh connection every ``interval`` seconds; records latencies (ms)."""

    def __init__(self, port: int, interval: float = 0.1, timeout: float = 5.0, max_samples: int = 10_000) -> None:
        super().__init__(daemon=True, name="probe")
        self.port, self.interval, self.timeout, self.max_samples = port, interval, timeout, max_samples
        self.latencies_ms: list[float] = []
        self.failures = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set() and len(self.latencies_ms) < self.max_samples:
            started = time.perf_counter()
            try:
                status, _ = http_get(self.port, "/health/live", timeout=self.timeout)
                if status != 200:
                    self.failures += 1
            except OSError:
                self.failures += 1
            elapsed = time.perf_counter() - started
            self.latencies_ms.append(elapsed * 1000)
            self._stop_event.wait(max(0.0, self.interval - elapsed))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(self.timeout + 1)
