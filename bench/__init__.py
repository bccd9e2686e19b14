"""Benchmarks: served throughput against the model's in-process limit (`make bench`)."""
