"""``python -m service.cli``: explicit, offline-friendly model chores (never run while serving).

fetch-weights ARCH WEIGHTS [--dest DIR]   download torchvision weights into the torch hub cache
list-weights ARCH                         the weights enum members an architecture has
"""

from __future__ import annotations

import argparse

import torchvision

from service.inference.sources import ModelLoadError, checkpoint_path, fetch_weights, torchvision_weights


def _parse_pair(arch: str, weights: str | None) -> tuple[str, str]:
    # Accept both "resnet50 IMAGENET1K_V2" and "ResNet50_Weights.IMAGENET1K_V2".
    if weights is None and "." in arch:
        enum_name, member = arch.split(".", 1)
        return enum_name.removesuffix("_Weights").lower(), member
    if weights is None:
        raise SystemExit("give ARCH and WEIGHTS, e.g. resnet50 IMAGENET1K_V2")
    return arch, weights


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m service.cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch-weights", help="download torchvision weights into the hub cache")
    fetch.add_argument("arch")
    fetch.add_argument("weights", nargs="?")
    fetch.add_argument("--dest", help="TORCH_HOME to fill (default: the current one)")
    listing = sub.add_parser("list-weights", help="list an architecture's weights")
    listing.add_argument("arch")
    args = parser.parse_args(argv)

    if args.command == "list-weights":
        for member in torchvision.models.get_model_weights(args.arch):
            print(member.name)
        return
    arch, name = _parse_pair(args.arch, args.weights)
    weights = torchvision_weights(arch, name)
    assert weights is not None
    try:
        print(f"already cached: {checkpoint_path(weights)}")
        return
    except ModelLoadError:
        pass
    try:
        path = fetch_weights(weights, args.dest)
    except OSError as exc:  # urllib's URLError included: no network, proxy trouble
        raise SystemExit(
            f"cannot download {weights.url}: {exc}; copy the file into $TORCH_HOME/hub/checkpoints"
        ) from None
    print(f"fetched {weights} -> {path}")


if __name__ == "__main__":
    main()
