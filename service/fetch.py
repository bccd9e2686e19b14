"""SSRF-safe image fetching.

Every address a host resolves to must be globally routable (``ipaddress.is_global`` after
unwrapping IPv4-mapped IPv6) or inside an explicitly allowed network; the connection then goes to
the checked address (no second lookup a DNS rebinding could change), redirects are followed by
hand with each hop checked the same way, and the size cap is enforced while streaming.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

import httpx

from service.errors import ImageFetchFailed, ImageTooLarge, UrlNotAllowed
from service.settings import Network, Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_REDIRECTS = {301, 302, 303, 307, 308}


def _unwrap(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_allowed(address: IPAddress, allowed_networks: Sequence[Network] = ()) -> bool:
    address = _unwrap(address)
    if any(address in network for network in allowed_networks):
        return True
    return address.is_global and not address.is_multicast


class ImageFetcher:
    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._client = client or httpx.AsyncClient(
            # No proxies from the environment: a proxy would do its own DNS lookup past our checks.
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(settings.url_fetch_timeout_s, connect=settings.url_fetch_connect_timeout_s),
            headers={"User-Agent": "ml-api-image-fetcher"},
        )

    @property
    def client(self) -> httpx.AsyncClient:
        return self._client

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str) -> bytes:
        if not self.settings.url_fetch_enabled:
            raise UrlNotAllowed("fetching images by URL is disabled on this server")
        try:
            async with asyncio.timeout(self.settings.url_fetch_timeout_s):
                return await self._fetch(url)
        except TimeoutError:
            raise ImageFetchFailed(f"fetching the image timed out after {self.settings.url_fetch_timeout_s}s") from None

    async def _fetch(self, url: str) -> bytes:
        current = url
        for _hop in range(self.settings.url_fetch_max_redirects + 1):
            parsed = self._parse(current)
            address = await self._checked_address(parsed)
            request = self._pinned_request(parsed, address)
            try:
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise ImageFetchFailed(f"fetching the image failed: {type(exc).__name__}") from None
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise ImageFetchFailed("a redirect without a Location header")
                    current = str(parsed.join(location))
                    continue
                return await self._read_image(response)
            finally:
                await response.aclose()
        raise ImageFetchFailed(f"more than {self.settings.url_fetch_max_redirects} redirects")

    @staticmethod
    def _parse(url: str) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise UrlNotAllowed("the image URL is not a valid URL") from None
        if parsed.scheme not in ("http", "https"):
            raise UrlNotAllowed(f"URL scheme {parsed.scheme or '(none)'!r} is not allowed; use http or https")
        if not parsed.host:
            raise UrlNotAllowed("the image URL has no host")
        if parsed.userinfo:
            raise UrlNotAllowed("credentials in image URLs are not allowed")
        return parsed

    async def _checked_address(self, url: httpx.URL) -> IPAddress:
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ImageFetchFailed(f"cannot resolve {url.host}: {exc}") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
        if not addresses:
            raise ImageFetchFailed(f"{url.host} has no address")
        allowed = self.settings.url_fetch_allowed_networks
        # Every address must pass: a host with one public and one private address is refused.
        for address in addresses:
            if not address_allowed(address, allowed):
                raise UrlNotAllowed(f"{url.host} resolves to a non-public address; URL not allowed")
        return _unwrap(addresses[0])

    def _pinned_request(self, url: httpx.URL, address: IPAddress) -> httpx.Request:
        pinned = url.copy_with(host=str(address))
        headers = {"Host": url.netloc.decode("ascii"), "Accept": "image/*"}
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        return self._client.build_request("GET", pinned, headers=headers, extensions=extensions)

    async def _read_image(self, response: httpx.Response) -> bytes:
        if not 200 <= response.status_code < 300:
            raise ImageFetchFailed(f"the image URL answered HTTP {response.status_code}")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not content_type.startswith("image/"):
            raise ImageFetchFailed(f"the URL is not an image (content type {content_type or 'missing'!r})")
        limit = self.settings.url_fetch_max_bytes
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ImageTooLarge(f"the fetched image is over {limit} bytes")
        chunks, size = [], 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ImageTooLarge(f"the fetched image is over {limit} bytes")
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise ImageFetchFailed(f"reading the image failed: {type(exc).__name__}") from None
        return b"".join(chunks)
