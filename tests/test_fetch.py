"""SSRF-safe URL fetching: refused before any connection for every non-public spelling of an address."""

from __future__ import annotations

import io
import ipaddress

import pytest
from PIL import Image

from service.errors import ImageFetchFailed, UrlNotAllowed
from service.fetch import ImageFetcher, address_allowed
from tests.conftest import make_settings
from tests.imagehost import image_host

pytestmark = pytest.mark.anyio

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png",
        "http://localhost/x.png",
        "http://[::1]/x.png",
        "http://10.0.0.8/x.png",
        "http://172.16.5.4/x.png",
        "http://192.168.1.1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://[::ffff:169.254.169.254]/x.png",
        "http://2130706433/x.png",  # decimal 127.0.0.1
        "http://0x7f000001/x.png",  # hex 127.0.0.1
        "http://0177.0.0.1/x.png",  # octal 127.0.0.1
        "http://100.64.0.1/x.png",  # CGNAT
        "http://[fd00::1]/x.png",  # unique local
        "http://192.0.2.10/x.png",  # documentation
        "http://0.0.0.0/x.png",
        "http://224.0.0.1/x.png",
        "ftp://example.com/x.png",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://user:pass@example.com/x.png",
    ],
)
async def test_non_public_or_non_http_urls_are_refused(url: str) -> None:
    fetcher = ImageFetcher(make_settings())
    with pytest.raises(UrlNotAllowed):
        await fetcher.fetch(url)
    await fetcher.aclose()


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),
        ("::ffff:10.0.0.1", False),
        ("100.100.100.100", False),
        ("fe80::1", False),
        ("255.255.255.255", False),
    ],
)
def test_address_policy_uses_is_global_after_unwrapping_mapped_ipv6(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address)) is allowed


async def test_an_image_url_on_an_allowed_private_network_is_fetched() -> None:
    png = _png()
    fetcher = ImageFetcher(make_settings(url_fetch_allowed_networks=LOOPBACK))
    with image_host({"/a.png": (200, {"Content-Type": "image/png"}, png)}) as base:
        assert await fetcher.fetch(f"{base}/a.png") == png
    await fetcher.aclose()


async def test_a_redirect_to_a_refused_address_is_refused_at_that_hop() -> None:
    # The first host is allowed (standing in for a public host); its redirect target is not.
    allowed_only_first = [ipaddress.ip_network("127.0.0.2/32")]
    fetcher = ImageFetcher(make_settings(url_fetch_allowed_networks=allowed_only_first))
    with image_host({"/a.png": (200, {"Content-Type": "image/png"}, _png())}) as target:
        redirect = {"/r": (302, {"Location": f"{target}/a.png"}, b"")}
        with image_host(redirect, host="127.0.0.2") as first, pytest.raises(UrlNotAllowed):
            await fetcher.fetch(f"{first}/r")
    await fetcher.aclose()


async def test_redirects_within_the_policy_are_followed_up_to_the_limit() -> None:
    png = _png()
    fetcher = ImageFetcher(make_settings(url_fetch_allowed_networks=LOOPBACK, url_fetch_max_redirects=2))
    routes = {
        "/a.png": (200, {"Content-Type": "image/png"}, png),
        "/r1": (302, {"Location": "/a.png"}, b""),
        "/r2": (301, {"Location": "/r1"}, b""),
        "/r3": (307, {"Location": "/r2"}, b""),
    }
    with image_host(routes) as base:
        assert await fetcher.fetch(f"{base}/r2") == png
        with pytest.raises(ImageFetchFailed, match="redirects"):
            await fetcher.fetch(f"{base}/r3")
    await fetcher.aclose()


async def test_an_unresolvable_host_is_a_fetch_failure() -> None:
    fetcher = ImageFetcher(make_settings())
    with pytest.raises(ImageFetchFailed):
        await fetcher.fetch("http://no-such-host.invalid/x.png")
    await fetcher.aclose()


async def test_url_fetching_can_be_disabled() -> None:
    fetcher = ImageFetcher(make_settings(url_fetch_enabled=False))
    with pytest.raises(UrlNotAllowed, match="disabled"):
        await fetcher.fetch("https://example.com/x.png")
    await fetcher.aclose()
