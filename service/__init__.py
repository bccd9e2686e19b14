"""ml-api: a Kubernetes-native PyTorch image classification service."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ml-api")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
