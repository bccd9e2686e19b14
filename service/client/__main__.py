"""``python -m service.client``: the ``ml-api`` command without the console script."""

from service.client.cli import entry_point

entry_point()
