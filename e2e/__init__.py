"""Black-box end-to-end tests over HTTP against a container or a kind cluster (docs/devloop.md)."""
