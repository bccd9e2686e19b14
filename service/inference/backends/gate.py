"""The numerical-equivalence gate: a backend serves only what torch eager would have served."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from service.inference.backends.base import BackendError, ForwardBackend, ForwardOutput
from service.inference.preprocess import Preprocessing

GATE_SEED = 1234
GATE_RANDOM_IMAGES = 8

# Why these values: an fp32 backend differs from eager only by reordered floating-point sums. On
# resnet18 (logits of magnitude ~8) ONNX Runtime, OpenVINO (f32) and inductor all came within 1e-5 of
# eager. Real defects are far larger: OpenVINO's default bf16 on an AMX CPU is off by 2.8e-2, stale
# weights by O(1). 1e-3 keeps two orders of magnitude of margin on either side. Reduced precision
# (torch_compile on CUDA) is compared with eager in the same dtype: a few units of its epsilon
# (fp16 1e-3, bf16 8e-3) on logits of magnitude ~10.
DEFAULT_TOLERANCE = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 1e-1}


class EquivalenceError(BackendError):
    pass


def gate_images(preprocessing: Preprocessing) -> torch.Tensor:
    """Fixed uint8 NCHW images of the model's input shape: seeded noise plus flat and structured ones."""
    c, s = preprocessing.channels, preprocessing.crop_size
    noise = torch.randint(
        0, 256, (GATE_RANDOM_IMAGES, c, s, s), dtype=torch.uint8, generator=torch.Generator().manual_seed(GATE_SEED)
    )
    black = torch.zeros((1, c, s, s), dtype=torch.uint8)
    white = torch.full((1, c, s, s), 255, dtype=torch.uint8)
    ramp = torch.linspace(0, 255, s).round().to(torch.uint8).expand(1, c, s, s)
    square = max(1, s // 8)
    rows = (torch.arange(s) // square).view(-1, 1)
    cols = (torch.arange(s) // square).view(1, -1)
    checker = (((rows + cols) % 2) * 255).to(torch.uint8).expand(1, c, s, s)
    return torch.cat([noise, black, white, ramp, checker]).contiguous()


@dataclass(frozen=True)
class GateReport:
    backend: str
    images: int
    tolerance: float
    max_logit_diff: float
    max_feature_diff: float | None
    top1_mismatches: int
    problem: str | None = None  # a structural mismatch (shapes, a missing output)

    @property
    def passed(self) -> bool:
        diffs = [self.max_logit_diff] + ([self.max_feature_diff] if self.max_feature_diff is not None else [])
        return self.problem is None and self.top1_mismatches == 0 and all(d <= self.tolerance for d in diffs)

    def summary(self) -> str:
        if self.problem is not None:
            return f"on {self.images} images: {self.problem}"
        features = f", max |feature diff| {self.max_feature_diff:.2e}" if self.max_feature_diff is not None else ""
        return (
            f"on {self.images} images: top-1 differs on {self.top1_mismatches}, "
            f"max |logit diff| {self.max_logit_diff:.2e}{features} (tolerance {self.tolerance:.0e})"
        )


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    diff = float((a.float().cpu() - b.float().cpu()).abs().max())
    return diff if math.isfinite(diff) else math.inf


class EquivalenceGate:
    """Reference outputs of torch eager on ``gate_images``, computed once, against which backends are checked."""

    def __init__(self, reference: ForwardBackend, preprocessing: Preprocessing, tolerance: float) -> None:
        self.images = gate_images(preprocessing)
        self.tolerance = tolerance
        self.reference = _cpu(reference.forward(self.images))

    def check(self, candidate: ForwardBackend) -> GateReport:
        """Run the whole set as one batch and the first image alone (the batch axis must really be dynamic)."""
        n = len(self.images)
        full = _cpu(candidate.forward(self.images))
        single = _cpu(candidate.forward(self.images[:1]))
        ref = self.reference

        def failed(problem: str) -> GateReport:
            return GateReport(candidate.name, n, self.tolerance, math.inf, None, n, problem)

        for got, rows in ((full, n), (single, 1)):
            if got.logits.shape != ref.logits[:rows].shape:
                return failed(f"logits of shape {tuple(got.logits.shape)}, expected {tuple(ref.logits[:rows].shape)}")
            if (got.features is None) != (ref.features is None):
                return failed("the features output is missing" if got.features is None else "unexpected features")
            if (
                got.features is not None
                and ref.features is not None
                and got.features.shape != ref.features[:rows].shape
            ):
                return failed(
                    f"features of shape {tuple(got.features.shape)}, expected {tuple(ref.features[:rows].shape)}"
                )
        logit_diff = max(_max_diff(full.logits, ref.logits), _max_diff(single.logits, ref.logits[:1]))
        feature_diff = None
        if full.features is not None and single.features is not None and ref.features is not None:
            feature_diff = max(_max_diff(full.features, ref.features), _max_diff(single.features, ref.features[:1]))
        top1 = ref.logits.argmax(dim=1)
        mismatches = int((full.logits.argmax(dim=1) != top1).sum()) + int(single.logits.argmax(dim=1)[0] != top1[0])
        return GateReport(candidate.name, n, self.tolerance, logit_diff, feature_diff, mismatches)

    def require(self, candidate: ForwardBackend) -> GateReport:
        report = self.check(candidate)
        if not report.passed:
            raise EquivalenceError(
                f"backend {candidate.name} failed the equivalence gate against torch eager {report.summary()}"
            )
        return report


def _cpu(out: ForwardOutput) -> ForwardOutput:
    return ForwardOutput(None if out.features is None else out.features.float().cpu(), out.logits.float().cpu())
