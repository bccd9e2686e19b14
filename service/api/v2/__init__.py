"""The Open Inference Protocol v2 over REST, under ``/v2`` on the HTTP port."""
