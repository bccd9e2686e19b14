"""200 images through ``ml-api predict`` with stderr on a pseudo-terminal: the progress bar renders and
every label is the in-process model's. The throughput is written to .artifacts/ (reported, not asserted)."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.client.helpers import Digit
from tests.conftest import ROOT
from tests.servers import Server

pytestmark = pytest.mark.slow

ARTIFACTS = ROOT / ".artifacts"


def _drain(fd: int, sink: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed its end
            return
        if not chunk:
            return
        sink.extend(chunk)


def test_two_hundred_images_with_a_progress_bar(served: Server, samples: tuple[Digit, ...], tmp_path: Path) -> None:
    folder = tmp_path / "digits"
    expected = {}
    for index, digit in enumerate(samples):
        path = folder / f"{index // 50:02d}" / f"digit-{index:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(digit.png)
        expected[str(path)] = digit.label
    assert len(expected) == 200

    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_API")}
    env.update({"TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"})
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.client", "predict", str(folder), "--json", "--url", served.base],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    terminal = bytearray()
    reader = threading.Thread(target=_drain, args=(master, terminal), daemon=True)
    reader.start()
    try:
        stdout, _ = proc.communicate(timeout=240)
    finally:
        reader.join(timeout=10)
        os.close(master)
    elapsed = time.perf_counter() - started

    assert proc.returncode == 0, terminal.decode(errors="replace")[-2000:]
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    assert len(lines) == 200
    assert {line["image"]: line["predictions"][0]["label"] for line in lines} == expected

    screen = terminal.decode(errors="replace")
    # rich redraws the bar in place: the last frame shows every image done, next to the bar itself.
    assert "classifying" in screen
    assert "200/200" in screen
    assert "━" in screen
    assert "\x1b[" in screen  # drawn with terminal control sequences, as on a real terminal
    summary = re.search(r"200 images, 0 failed, ([0-9.]+)s \(([0-9.]+) images/s\)", screen)
    assert summary, screen[-500:]

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "cli-throughput.txt").write_text(
        f"ml-api predict: 200 images (32x32 PNG digits), --concurrency 8, against python -m service on loopback\n"
        f"CLI's own figure: {summary.group(2)} images/s ({summary.group(1)} s for the requests)\n"
        f"whole process (start-up included): {200 / elapsed:.1f} images/s ({elapsed:.2f} s)\n"
    )
