"""SSRF-safe image fetching.

* The host is the IDNA 2008 / UTS #46 A-label of what the client wrote (``idna``), and that one
  name is what is looked up, sent as ``Host`` and as TLS SNI: never Python's IDNA 2003 codec,
  which turns ``faß.de`` into ``fass.de``, a different domain.
* Every address the name resolves to must pass ``address_allowed`` (globally reachable, including
  IPv4 embedded in IPv6, or inside an explicitly allowed network); the connection then goes to the
  checked address (no second lookup a DNS rebinding could change), on a fresh connection.
* Redirects are followed by hand with each hop checked the same way.
* The body is read raw, unencoded (``Accept-Encoding: identity``; an encoded answer is refused), so
  the byte cap bounds what is held in memory: a gzip-in-gzip bomb is never inflated.
* ``url_fetch_timeout_s`` bounds the whole fetch: lookups, every hop, and a body trickled in.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Sequence

import httpx
import idna

from service.dns import IPAddress, Resolver
from service.errors import ImageFetchFailed, ImageTooLarge, UrlNotAllowed
from service.settings import Network, Settings

_REDIRECTS = {301, 302, 303, 307, 308}
_net = ipaddress.ip_network

# The authority of an absolute URL, split the way httpx splits it (httpx/_urlparse.py), so that
# the host mapped here is the host httpx would have taken; a disagreement is refused after parsing.
_AUTHORITY = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://(?P<authority>[^/?#]*)")

# IANA special-purpose IPv4 blocks that are not globally reachable (and multicast, reserved,
# 6to4 relay anycast). Listed rather than left to ``is_global``, whose table differs between
# Python patch releases (3.11.7 calls 192.0.0.8 global).
_V4_DENIED = tuple(
    _net(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_V6_GLOBAL_UNICAST = _net("2000::/3")
# Inside 2000::/3 but not a destination: IETF protocol assignments (Teredo 2001::/32 included:
# its client address is an obfuscated IPv4 a relay would reach), documentation, 6to4 2002::/16
# (deprecated, RFC 7526; it embeds an IPv4 a local 6to4 interface would dereference).
_V6_DENIED = tuple(_net(n) for n in ("2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20"))
# NAT64 well-known prefix (RFC 6052): allowed exactly when its embedded IPv4 is. In an IPv6-only
# cluster with DNS64 this is how every IPv4-only image host resolves, and the gateway delivers to
# that IPv4, so judging the IPv4 is judging the destination. The local-use prefix 64:ff9b:1::/48
# (RFC 8215) can embed IPv4 at any prefix length and leads into the operator's own network: it
# is outside 2000::/3 and so refused unless allow-listed, like IPv4-compatible ``::a.b.c.d`` and
# IPv4-translated ``::ffff:0:a.b.c.d``, site-local fec0::/10, ULA, link-local and multicast.
_NAT64 = _net("64:ff9b::/96")


def _ipv4_allowed(address: ipaddress.IPv4Address) -> bool:
    return address.is_global and not any(address in network for network in _V4_DENIED)


def address_allowed(address: IPAddress, allowed_networks: Sequence[Network] = ()) -> bool:
    """Whether the fetcher may connect to ``address``: a pure function of the address and the allow-list."""
    if any(address in network for network in allowed_networks):
        return True
    if isinstance(address, ipaddress.IPv4Address):
        return _ipv4_allowed(address)
    if address.ipv4_mapped is not None:
        # ::ffff:a.b.c.d is how a dual-stack socket spells a.b.c.d: the same destination.
        mapped = address.ipv4_mapped
        return any(mapped in network for network in allowed_networks) or _ipv4_allowed(mapped)
    if address in _NAT64:
        return _ipv4_allowed(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address not in _V6_GLOBAL_UNICAST or any(address in network for network in _V6_DENIED):
        return False
    return address.is_global


def a_label_host(host: str) -> str:
    """The A-label (ASCII) form of a URL host name, IDNA 2008 with UTS #46 mapping (non-transitional).

    ``faß.de`` -> ``xn--fa-hia.de``; fullwidth ``EXAMPLE.com`` -> ``example.com``. A name that is not
    valid IDNA 2008 (``_``, ``%``, invalid punycode, disallowed code points) is refused.
    """
    try:
        encoded = idna.encode(host, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise UrlNotAllowed(f"the image URL host {host[:100]!r} is not a valid host name ({exc})") from None
    return encoded


def _as_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class ImageFetcher:
    def __init__(
        self, settings: Settings, client: httpx.AsyncClient | None = None, resolver: Resolver | None = None
    ) -> None:
        self.settings = settings
        self._client = client or httpx.AsyncClient(
            # No proxies from the environment: a proxy would do its own DNS lookup past our checks.
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(settings.url_fetch_timeout_s, connect=settings.url_fetch_connect_timeout_s),
            # No reuse: connections are pooled by address, and a second host name on the same
            # address would ride a connection whose TLS name was checked for the first one.
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"User-Agent": "ml-api-image-fetcher"},
        )
        self._resolver = resolver or Resolver(
            threads=settings.url_fetch_dns_threads, timeout_s=settings.url_fetch_dns_timeout_s
        )

    @property
    def client(self) -> httpx.AsyncClient:
        return self._client

    async def aclose(self) -> None:
        await self._client.aclose()
        self._resolver.close()

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
            parsed = self.parse(current)
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
                    try:
                        current = str(parsed.join(location))
                    except (httpx.InvalidURL, UnicodeError, ValueError):
                        raise UrlNotAllowed("a redirect to an invalid URL") from None
                    continue
                return await self._read_image(response)
            finally:
                await response.aclose()
        raise ImageFetchFailed(f"more than {self.settings.url_fetch_max_redirects} redirects")

    def parse(self, url: str) -> httpx.URL:
        """Check ``url`` and return it with its host as the A-label that is looked up and sent."""
        limit = self.settings.url_fetch_max_url_length
        if not url:
            raise UrlNotAllowed("the image URL is empty")
        if len(url) > limit:
            raise UrlNotAllowed(f"the image URL is {len(url)} characters long; the limit is {limit}")
        if any(char.isspace() or not char.isprintable() for char in url):
            raise UrlNotAllowed("the image URL contains whitespace or control characters")
        match = _AUTHORITY.match(url)
        if match is None:
            raise UrlNotAllowed("the image URL is not an absolute http or https URL")
        authority = match["authority"]
        if "@" in authority:
            raise UrlNotAllowed("credentials in image URLs are not allowed")
        host = authority if authority.startswith("[") else authority.partition(":")[0]
        overrides = {} if host.startswith("[") or not host else {"host": a_label_host(host)}
        try:
            parsed = httpx.URL(url, **overrides)
        except (httpx.InvalidURL, TypeError, UnicodeError, ValueError):
            raise UrlNotAllowed("the image URL is not a valid URL") from None
        if parsed.scheme not in ("http", "https"):
            raise UrlNotAllowed(f"URL scheme {parsed.scheme or '(none)'!r} is not allowed; use http or https")
        raw_host = parsed.raw_host.decode("ascii")
        if not raw_host:
            raise UrlNotAllowed("the image URL has no host")
        if parsed.userinfo:
            raise UrlNotAllowed("credentials in image URLs are not allowed")
        if "host" in overrides and raw_host != overrides["host"]:
            raise UrlNotAllowed("the image URL's host is ambiguous")
        return parsed

    async def _checked_address(self, url: httpx.URL) -> IPAddress:
        host = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        literal = _as_ip(host)
        addresses = [literal] if literal is not None else await self._resolver.resolve(host, port)
        allowed = self.settings.url_fetch_allowed_networks
        # Every address must pass: a host with one public and one private address is refused.
        for address in addresses:
            if not address_allowed(address, allowed):
                raise UrlNotAllowed(f"{host} resolves to a non-public address; URL not allowed")
        first = addresses[0]
        if isinstance(first, ipaddress.IPv6Address) and first.ipv4_mapped is not None:
            return first.ipv4_mapped
        return first

    def _pinned_request(self, url: httpx.URL, address: IPAddress) -> httpx.Request:
        pinned = url.copy_with(host=str(address))
        headers = {"Host": url.netloc.decode("ascii"), "Accept": "image/*", "Accept-Encoding": "identity"}
        # The A-label as bytes' text, not url.host (which httpx turns back into Unicode).
        extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
        return self._client.build_request("GET", pinned, headers=headers, extensions=extensions)

    async def _read_image(self, response: httpx.Response) -> bytes:
        if not 200 <= response.status_code < 300:
            raise ImageFetchFailed(f"the image URL answered HTTP {response.status_code}")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not content_type.startswith("image/"):
            raise ImageFetchFailed(f"the URL is not an image (content type {content_type[:100] or 'missing'!r})")
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            # Images are compressed already; an encoding layer would only let a few hundred bytes
            # inflate past the cap (gzip in gzip: 822 bytes -> 400 MiB) before being counted.
            raise ImageFetchFailed(
                f"the image was sent with Content-Encoding {encoding[:100]!r}; only unencoded images are accepted"
            )
        limit = self.settings.url_fetch_max_bytes
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ImageTooLarge(f"the fetched image is over {limit} bytes")
        body, size = bytearray(), 0
        try:
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > limit:
                    raise ImageTooLarge(f"the fetched image is over {limit} bytes")
                body += chunk
        except httpx.HTTPError as exc:
            raise ImageFetchFailed(f"reading the image failed: {type(exc).__name__}") from None
        if not body:
            raise ImageFetchFailed("the image URL answered with an empty body")
        return bytes(body)
