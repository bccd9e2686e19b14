"""Host name lookups for the image fetcher, on a small thread pool of their own, with a timeout.

``loop.getaddrinfo`` runs in the event loop's default executor, which ``asyncio.to_thread`` (model
loads) also uses: a slow load would delay every fetch, and a flood of slow lookups would take
every thread. The system resolver (glibc ``getaddrinfo``: /etc/hosts, nsswitch, the cluster's
search domains) is kept rather than an async DNS library, which would resolve differently from
everything else in the pod; it just runs on its own bounded pool. A lookup still queued when its
timeout fires is cancelled before it starts, so the queue cannot grow past the requests waiting.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from service.errors import ImageFetchFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (A-label host, port) -> addresses; blocking, run on the resolver's threads.
Lookup = Callable[[str, int], list[IPAddress]]


def system_lookup(host: str, port: int) -> list[IPAddress]:
    """``getaddrinfo`` on the ASCII name as bytes, so no codec (Python's IDNA 2003) rewrites it."""
    infos = socket.getaddrinfo(host.encode("ascii"), port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    # A link-local result carries "%scope"; such addresses are refused by the policy anyway.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


class Resolver:
    def __init__(self, *, threads: int, timeout_s: float, lookup: Lookup = system_lookup) -> None:
        self.timeout_s = timeout_s
        self._lookup = lookup
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ml-api-dns")

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_s):
                addresses = await loop.run_in_executor(self._pool, self._lookup, host, port)
        except TimeoutError:
            raise ImageFetchFailed(f"resolving {host} timed out after {self.timeout_s:g}s") from None
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            raise ImageFetchFailed(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise ImageFetchFailed(f"{host} has no address")
        return addresses

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
