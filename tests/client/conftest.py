"""Real servers for the client and CLI tests (``python -m service``, JSON logs captured), digit files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.helpers import Digit, digit_samples
from tests.servers import Server, server

API_KEY = "client-test-key"


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default settings (what `make run` serves), plus image URLs on loopback for the URL tests."""
    env = {"ML_API_URL_FETCH_ALLOWED_NETWORKS": '["127.0.0.0/8"]'}
    with server("uvicorn", env, tmp_path_factory.mktemp("logs") / "default.log") as srv:
        yield srv


@pytest.fixture(scope="package")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """API keys on: every /api/v1 call needs ``API_KEY``."""
    log = tmp_path_factory.mktemp("logs") / "keyed.log"
    with server("uvicorn", {"ML_API_API_KEYS": f'["{API_KEY}"]'}, log) as srv:
        yield srv


@pytest.fixture(scope="package")
def samples() -> tuple[Digit, ...]:
    return digit_samples()


@pytest.fixture
def digit_dir(tmp_path: Path, samples: tuple[Digit, ...]) -> tuple[Path, dict[str, str]]:
    """Three PNGs in a directory tree (one nested, one upper-case suffix), each file's expected label."""
    root = tmp_path / "digits"
    (root / "nested").mkdir(parents=True)
    expected = {}
    for index, relative in enumerate(("a.png", "b.PNG", "nested/c.png")):
        path = root / relative
        path.write_bytes(samples[index].png)
        expected[str(path)] = samples[index].label
    return root, expected
