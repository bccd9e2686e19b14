"""The layering the architecture promises, checked on the imports themselves: front ends -> data plane ->
inference core / job backends; HTTP shapes and paths only in the HTTP layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

SERVICE = ROOT / "service"


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (SERVICE / package).rglob("*.py"))


def offending(path: Path, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(
        name
        for name in imports(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden) and name not in allowed
    )


@pytest.mark.parametrize("path", modules("inference", "jobs", "dataplane"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_never_imports_the_web_framework_or_the_http_layer(path: Path) -> None:
    assert offending(path, ("fastapi", "starlette", "sse_starlette", "service.api")) == []


@pytest.mark.parametrize("path", modules("api"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_http_layer_never_imports_torch_or_the_inference_internals(path: Path) -> None:
    # Plain result types are shared by every layer; the rest of the core is reached through the data plane.
    assert offending(path, ("torch", "torchvision", "service.inference"), allowed=("service.inference.results",)) == []


@pytest.mark.parametrize(
    "path", modules("inference", "jobs", "dataplane", "oip"), ids=lambda p: str(p.relative_to(ROOT))
)
def test_the_core_and_the_protocol_never_import_grpc(path: Path) -> None:
    assert offending(path, ("grpc", "grpc_health", "grpc_reflection", "grpc_status", "service.grpc")) == []


@pytest.mark.parametrize("path", modules("oip"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_protocol_layer_is_neither_http_nor_torch(path: Path) -> None:
    """service/oip is the Open Inference Protocol without a transport: both front ends build on it."""
    forbidden = ("fastapi", "starlette", "service.api", "torch", "torchvision", "service.inference")
    assert offending(path, forbidden, allowed=("service.inference.results",)) == []


@pytest.mark.parametrize("path", modules("grpc"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_grpc_front_end_never_imports_torch_the_inference_internals_or_the_http_layer(path: Path) -> None:
    # The request-ID rule is the contract's, kept with the HTTP layer that had it first.
    forbidden = ("torch", "torchvision", "service.inference", "fastapi", "starlette", "service.api")
    allowed = ("service.inference.results", "service.api.request_id")
    assert offending(path, forbidden, allowed=allowed) == []


@pytest.mark.parametrize("path", modules("api"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_http_layer_never_imports_the_grpc_front_end(path: Path) -> None:
    assert offending(path, ("grpc", "service.grpc")) == []


@pytest.mark.parametrize(
    "path", modules("inference", "jobs", "dataplane", "oip", "grpc"), ids=lambda p: str(p.relative_to(ROOT))
)
def test_no_http_path_outside_the_http_layer(path: Path) -> None:
    assert "/api/v1" not in path.read_text()


def test_the_plain_result_types_load_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import service.api.schemas, service.dataplane.sources, service.dataplane.status, "
        "service.dataplane.description, service.oip.types, service.oip.tensors, service.oip.model, "
        "service.jobs.base, service.errors; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
