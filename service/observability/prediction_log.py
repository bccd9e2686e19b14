"""Sampled prediction logs: one JSON record per sampled image on the logger ``service.predictions``.

``ML_API_PREDICTION_LOG_RATE`` (0..1, default 0: off) is the share of classified images recorded.
A record identifies the image by its SHA-256 and size, never its bytes, and carries what the client
got back (the top-k, as in the response), which model version produced it, how long it took and
through which front end. It goes through the service's logging like every line (JSON on stderr,
``"logger": "service.predictions"``), so the collector that ships pod logs to Loki ships these too,
and a query on that field separates them from the access log.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence

from service.inference.results import Classification

PREDICTIONS_LOGGER = "service.predictions"
log = logging.getLogger(PREDICTIONS_LOGGER)


class PredictionLog:
    def __init__(self, rate: float, *, rng: random.Random | None = None) -> None:
        self.rate = rate
        self._rng = rng or random.Random()

    def record(
        self,
        images: Sequence[bytes],
        outcomes: Sequence[object],
        *,
        protocol: str,
        latency_ms: float,
        request_id: str | None = None,
    ) -> int:
        """Log the sampled share of the successful ``outcomes`` (one per image); returns how many."""
        if self.rate <= 0:
            return 0
        written = 0
        for image, outcome in zip(images, outcomes, strict=True):
            if not isinstance(outcome, Classification) or self._rng.random() >= self.rate:
                continue
            self._write(image, outcome, protocol=protocol, latency_ms=latency_ms, request_id=request_id)
            written += 1
        return written

    def _write(
        self, image: bytes, result: Classification, *, protocol: str, latency_ms: float, request_id: str | None
    ) -> None:
        width, height = result.image_size or (None, None)
        top = result.predictions[0] if result.predictions else None
        fields: dict[str, object] = {
            "protocol": protocol,
            "model": result.model_name,
            "version": result.model_version,
            "image_sha256": hashlib.sha256(image).hexdigest(),
            "image_bytes": len(image),
            "image_width": width,
            "image_height": height,
            "predictions": [
                {"class_id": p.class_id, "label": p.label, "confidence": p.confidence} for p in result.predictions
            ],
            "latency_ms": round(latency_ms, 3),
            "inference_time_ms": result.inference_time_ms,
        }
        if request_id:  # job workers run outside the request: the job's own request ID
            fields["request_id"] = request_id
        summary = f"{top.label} ({top.confidence:.3f})" if top is not None else "no class"
        log.info("prediction %s:%s %s", result.model_name, result.model_version, summary, extra=fields)
