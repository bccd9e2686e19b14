"""e2e fixtures: one running service per selected target and session, shared by every test.

Tests that take the ``target`` fixture run once per target in ``E2E_TARGETS`` (or
``--e2e-targets``; default ``container,kind``). A target that cannot run here is skipped with the
reason (no Docker daemon; no kind). Cluster-only tests take ``kind_cluster`` instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from e2e import kind as kindmod
from e2e.container import DEFAULT_IMAGE, ContainerUnavailable, ensure_image, run_container
from e2e.targets import Target, selected_targets, wait_ready
from service.training.digits_data import digit_png, load_split

# Digits per class in the correctness sample: enough to see a broken model, few enough to be quick
# through a port-forward.
SAMPLES_PER_CLASS = 5


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--e2e-targets",
        default=None,
        help="comma-separated e2e targets: container, kind, url (default: $E2E_TARGETS or container,kind)",
    )


def _targets(config: pytest.Config) -> list[str]:
    return selected_targets(config.getoption("--e2e-targets"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" not in metafunc.fixturenames:
        return
    # The first test of a target also pays for its setup (an image build; a kind cluster, image
    # load and helm install), far past the suite's 300 s per-test default.
    marks = {
        "container": [pytest.mark.docker, pytest.mark.timeout(1800)],
        "kind": [pytest.mark.kind, pytest.mark.timeout(3600)],
        "url": [],
    }
    params = [pytest.param(name, marks=marks[name], id=name) for name in _targets(metafunc.config)]
    metafunc.parametrize("target", params, indirect=True, scope="session")


@pytest.fixture(scope="session")
def kind_cluster(request: pytest.FixtureRequest) -> kindmod.KindCluster:
    """The kind cluster with the chart installed by ``k8s/e2e/cluster.sh up`` (what ``make up`` runs).
    The cluster is kept afterwards for the next run; ``make down`` deletes it."""
    if "kind" not in _targets(request.config):
        pytest.skip(f"kind target not selected (E2E_TARGETS={','.join(_targets(request.config))})")
    reason = kindmod.unavailable_reason()
    if reason:
        pytest.skip(reason)
    # The same tag the container target uses ($ML_API_IMAGE, default ml-api:local): one build serves both.
    cluster = kindmod.KindCluster(image=DEFAULT_IMAGE)
    cluster.up()
    return cluster


def _container_target() -> Iterator[Target]:
    try:
        image = ensure_image()
    except ContainerUnavailable as exc:
        pytest.skip(f"container target: {exc}")
    with run_container(image) as running:
        yield Target("container", running.base_url, running.grpc_target, logs=running.logs)


def _kind_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    cluster: kindmod.KindCluster = request.getfixturevalue("kind_cluster")
    pf = cluster.port_forward()
    grpc_pf = cluster.port_forward(port=kindmod.GRPC_PORT, http=False)

    def refresh() -> None:
        pf.ensure()
        grpc_pf.ensure()

    with kindmod.forwarded(pf), kindmod.forwarded(grpc_pf):
        wait_ready(pf.base_url)
        yield Target("kind", pf.base_url, grpc_pf.address, logs=cluster.logs, refresh=refresh)


def _url_target() -> Iterator[Target]:
    base_url = os.environ.get("E2E_BASE_URL", "").rstrip("/")
    if not base_url:
        pytest.skip("url target needs E2E_BASE_URL, e.g. http://127.0.0.1:8000 after make port-forward")
    wait_ready(base_url, timeout_s=30)
    yield Target("url", base_url, os.environ.get("E2E_GRPC_TARGET", ""))


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    name = request.param
    if name == "container":
        yield from _container_target()
    elif name == "kind":
        yield from _kind_target(request)
    else:
        yield from _url_target()


@pytest.fixture
def client(target: Target, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    target.refresh()
    with httpx.Client(base_url=target.base_url, timeout=60) as c:
        yield c
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"--- {target.name} logs (tail) ---\n{target.logs()[-6000:]}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Lets the client fixture print the service's logs only when the test failed.
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep


@pytest.fixture(scope="session")
def digit_sample() -> list[tuple[bytes, int]]:
    """(PNG, true digit) for a stratified sample of the held-out digits (never seen in training):
    8x8 scaled 0..16 -> 0..255, upscaled nearest to 32x32."""
    _, _, x_test, y_test = load_split()
    picked: list[tuple[bytes, int]] = []
    for digit in range(10):
        for index in np.flatnonzero(y_test == digit)[:SAMPLES_PER_CLASS]:
            picked.append((digit_png(x_test[index], scale=4), int(digit)))
    return picked
