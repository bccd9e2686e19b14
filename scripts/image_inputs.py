"""What the container image is built from, for ``make image`` (``mk/image.mk``) and the e2e suite.

``python scripts/image_inputs.py constraints DIR`` writes the pins of the running interpreter's
environment (the tested ``.venv``) that the Dockerfile installs with; ``python scripts/image_inputs.py
inputs-hash`` prints the hash ``make image`` stamps into the ``io.ml-api.inputs-hash`` label, so an
image whose label matches the current inputs is reused instead of rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASE_IMAGE = os.environ.get("BASE_IMAGE", "ml-api-base:bookworm")
HASH_LABEL = "io.ml-api.inputs-hash"
# Files and directories the image is built from (must match the allow-list in .dockerignore).
_INPUT_FILES = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    "build/image/constraints.txt",
    "build/image/constraints-torch.txt",
)
_INPUT_DIRS = ("service", "weights")
# Build args that change the image; their values (from the environment, as make sees them) are
# part of the inputs hash.
BUILD_ARGS = ("BASE_IMAGE", "TORCH_INDEX_URL", "TORCHVISION_WEIGHTS", "IMAGE_PIP_INDEX_URL", "IMAGE_TARGET")


def base_image_id(tag: str) -> str:
    """The local base image's ID ("" when Docker or the image is missing): a rebuilt base image (new
    Debian security updates) must rebuild the app image too."""
    docker = os.environ.get("DOCKER") or ("/usr/bin/docker" if Path("/usr/bin/docker").is_file() else None)
    docker = docker or shutil.which("docker")
    if docker is None:
        return ""
    try:
        proc = subprocess.run(
            [docker, "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def requirement_closure(roots: Sequence[str]) -> dict[str, str]:
    """``{name: version}`` of the installed distributions that ``roots`` need, extras and
    environment markers honoured, as resolved in the running interpreter's environment."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(r, frozenset()) for r in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # a marker-gated or optional dependency this environment does not have
        found[canonicalize_name(dist.metadata["Name"])] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in ({""} | set(extras))]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, frozenset(req.extras)))
    return found


def write_constraints(out_dir: Path) -> tuple[Path, Path]:
    """Pin the image to the versions the test suite ran against: ``constraints-torch.txt`` (the
    torch + torchvision closure, for the torch layer) and ``constraints.txt`` (everything ml-api
    needs at run time). Files are rewritten only when their content changes, so Docker's layer
    cache and the inputs hash stay stable."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch_pins = requirement_closure(["torch", "torchvision"])
    all_pins = requirement_closure(["ml-api"])
    all_pins.pop("ml-api", None)
    written = []
    for name, pins in (("constraints-torch.txt", torch_pins), ("constraints.txt", all_pins)):
        path = out_dir / name
        text = "# Written by `make image` from the tested .venv; do not edit.\n" + "".join(
            f"{n}=={v}\n" for n, v in sorted(pins.items())
        )
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written[0], written[1]


def build_args_from_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    args = {k: os.environ.get(k, "") for k in BUILD_ARGS}
    args["BASE_IMAGE"] = args["BASE_IMAGE"] or DEFAULT_BASE_IMAGE
    args["IMAGE_TARGET"] = args["IMAGE_TARGET"] or "cpu"
    args.update(overrides or {})
    return args


def inputs_hash(build_args: Mapping[str, str] | None = None) -> str:
    """Hash of everything the image is built from; equal hashes mean an equal image."""
    args = build_args_from_env(build_args)
    h = hashlib.sha256()
    paths: list[Path] = [REPO / f for f in _INPUT_FILES]
    for d in _INPUT_DIRS:
        root = REPO / d
        if root.is_dir():
            paths += sorted(
                p
                for p in root.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".pyo"}
            )
    for p in paths:
        if p.is_file():
            h.update(str(p.relative_to(REPO)).encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
    for k in sorted(args):
        h.update(f"{k}={args[k]}\0".encode())
    # A rebuilt base image (new Debian security updates) must rebuild the app image too.
    h.update(base_image_id(args["BASE_IMAGE"]).encode())
    return h.hexdigest()[:24]


def main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "constraints":
        for path in write_constraints(Path(argv[1])):
            print(path)
        return 0
    if len(argv) == 1 and argv[0] == "inputs-hash":
        print(inputs_hash())
        return 0
    print("usage: image_inputs.py constraints DIR | inputs-hash", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
