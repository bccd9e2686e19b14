"""Developer tooling run from a checkout (never imported by the service or its image)."""
