"""Benchmarks for issue 9: served throughput against the model's in-process limit (`make bench`)."""
