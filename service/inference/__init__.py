"""Inference core: model registry, dynamic batching, image decoding. Never imports FastAPI."""
