"""Inference core: model registry, dynamic batching, image decoding. Never imports FastAPI."""

import os

# OpenMP threads sleep rather than spin between parallel regions. This package is imported before
# torch, so the setting is in place when libgomp reads it. Spinning burns CPU that decode threads,
# the event loop and neighbours need: on a busy 2-core machine resnet18 took 3x the CPU per image and
# 3-4x the time with spinning (docs/benchmarks.md). An explicit OMP_WAIT_POLICY still wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
