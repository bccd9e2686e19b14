"""Hostile URLs and image hosts: embedded IPv4, IDNA, gzip bombs, lying or trickling servers, DNS floods.

Address checks are pure functions or go through an injected lookup; the only servers are local
(127.0.0.1), reached through ``url_fetch_allowed_networks`` as a stand-in for a public host.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import ipaddress
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from service.app import create_app
from service.dns import IPAddress, Resolver
from service.errors import ImageFetchFailed, ImageTooLarge, UrlNotAllowed
from service.fetch import ImageFetcher, a_label_host, address_allowed
from tests.conftest import make_settings, running_app
from tests.imagehost import image_host

pytestmark = pytest.mark.anyio

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]
ip = ipaddress.ip_address


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(out, format="PNG")
    return out.getvalue()


class RecordingLookup:
    """A name -> addresses table standing in for DNS; records every name it is asked for."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = table or {}
        self.queried: list[str] = []

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.queried.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ip(a) for a in self.table[host]]


def fetcher_with(lookup: Callable[[str, int], list[IPAddress]], **settings: object) -> ImageFetcher:
    return ImageFetcher(make_settings(**settings), resolver=Resolver(threads=2, timeout_s=5, lookup=lookup))


# --- the address policy: a pure function -------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("64:ff9b::7f00:1", "NAT64 of 127.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "NAT64 of 169.254.169.254"),
        ("64:ff9b::a00:1", "NAT64 of 10.0.0.1"),
        ("64:ff9b::c0a8:101", "NAT64 of 192.168.1.1"),
        ("64:ff9b::6440:1", "NAT64 of 100.64.0.1 (CGNAT)"),
        ("64:ff9b:1::a00:1", "local-use NAT64"),
        ("64:ff9b:1::808:808", "local-use NAT64, even of a global IPv4"),
        ("::7f00:1", "IPv4-compatible 127.0.0.1"),
        ("::a9fe:a9fe", "IPv4-compatible 169.254.169.254"),
        ("::808:808", "IPv4-compatible, deprecated even for a global IPv4"),
        ("::ffff:0:7f00:1", "IPv4-translated 127.0.0.1"),
        ("::ffff:0:808:808", "IPv4-translated 8.8.8.8"),
        ("::ffff:127.0.0.1", "IPv4-mapped 127.0.0.1"),
        ("::ffff:169.254.169.254", "IPv4-mapped metadata"),
        ("2002:7f00:1::1", "6to4 of 127.0.0.1"),
        ("2002:a9fe:a9fe::1", "6to4 of 169.254.169.254"),
        ("2002:808:808::1", "6to4, deprecated even for a global IPv4"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo, client 127.0.0.1 obfuscated"),
        ("2001:0:7f00:1::1", "Teredo, server 127.0.0.1"),
        ("fec0::1", "site-local"),
        ("feff::1", "site-local, top of the block"),
        ("fe80::1", "link-local"),
        ("fd00::1", "unique local"),
        ("ff02::1", "multicast"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("100::1", "discard-only"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation (2024)"),
        ("2001:2::1", "benchmarking"),
        ("4000::1", "outside global unicast 2000::/3"),
        ("192.0.0.8", "IETF protocol assignments (global in Python 3.11.7's table)"),
        ("192.88.99.1", "6to4 relay anycast"),
        ("198.18.0.1", "benchmarking"),
        ("240.0.0.1", "reserved"),
        ("224.0.0.1", "multicast"),
        ("0.1.2.3", "this network"),
    ],
)
def test_every_non_global_destination_is_refused_however_it_is_spelled(address: str, why: str) -> None:
    assert address_allowed(ip(address)) is False, why


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_global_destinations_are_allowed_including_nat64_of_a_global_ipv4(address: str) -> None:
    # NAT64 well-known prefix: in an IPv6-only cluster with DNS64 every IPv4-only host looks like this.
    assert address_allowed(ip(address)) is True


def test_the_allow_list_admits_exactly_its_networks() -> None:
    allowed = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("64:ff9b:1::/48")]
    assert address_allowed(ip("10.1.2.3"), allowed) is True
    assert address_allowed(ip("::ffff:10.1.2.3"), allowed) is True  # the same socket destination
    assert address_allowed(ip("64:ff9b:1::a01:203"), allowed) is True
    assert address_allowed(ip("64:ff9b::a01:203"), allowed) is False  # the well-known prefix is not listed
    assert address_allowed(ip("11.0.0.1"), allowed) is True  # still global
    assert address_allowed(ip("172.16.0.1"), allowed) is False


@pytest.mark.parametrize("address", ["64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "::7f00:1", "2002:7f00:1::1", "fec0::1"])
async def test_a_name_resolving_to_an_embedded_private_ipv4_is_refused(address: str) -> None:
    lookup = RecordingLookup({"images.example.com": [address]})
    fetcher = fetcher_with(lookup)
    with pytest.raises(UrlNotAllowed, match="non-public address"):
        await fetcher.fetch("http://images.example.com/a.png")
    assert lookup.queried == ["images.example.com"]
    await fetcher.aclose()


@pytest.mark.parametrize(
    "url",
    ["http://[64:ff9b::7f00:1]/a.png", "http://[::7f00:1]/a.png", "http://[2002:a9fe:a9fe::1]/", "http://[fec0::1]/"],
)
async def test_an_ipv6_literal_embedding_a_private_ipv4_is_refused_without_a_lookup(url: str) -> None:
    lookup = RecordingLookup()
    fetcher = fetcher_with(lookup)
    with pytest.raises(UrlNotAllowed):
        await fetcher.fetch(url)
    assert lookup.queried == []
    await fetcher.aclose()


# --- host names: IDNA 2008 + UTS 46, one A-label end to end ------------------------------------


@pytest.mark.parametrize(
    ("host", "a_label"),
    [
        ("faß.de", "xn--fa-hia.de"),  # IDNA 2003 (Python's codec) would say fass.de
        ("FAß.de", "xn--fa-hia.de"),
        ("xn--fa-hia.de", "xn--fa-hia.de"),
        ("\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "example.com"),  # fullwidth, mapped by UTS 46
        ("bücher.example", "xn--bcher-kva.example"),
        ("Example.COM", "example.com"),
    ],
)
def test_hosts_are_encoded_with_idna_2008_and_uts46(host: str, a_label: str) -> None:
    assert a_label_host(host) == a_label


async def test_the_a_label_is_what_is_looked_up_and_sent_as_host() -> None:
    seen: list[str] = []
    lookup = RecordingLookup({"xn--fa-hia.de": ["127.0.0.1"]})
    fetcher = fetcher_with(lookup, url_fetch_allowed_networks=LOOPBACK)
    png = _png()
    with recording_host(png, seen) as port:
        assert await fetcher.fetch(f"http://faß.de:{port}/a.png") == png
    assert lookup.queried == ["xn--fa-hia.de"]
    assert seen == [f"xn--fa-hia.de:{port}"]
    await fetcher.aclose()


async def test_the_a_label_is_the_tls_server_name() -> None:
    hello = bytearray()
    lookup = RecordingLookup({"xn--fa-hia.de": ["127.0.0.1"]})
    fetcher = fetcher_with(lookup, url_fetch_allowed_networks=LOOPBACK, url_fetch_timeout_s=5)
    with raw_server(lambda conn: hello.extend(conn.recv(4096))) as port, pytest.raises(ImageFetchFailed):
        await fetcher.fetch(f"https://faß.de:{port}/a.png")
    assert b"\x00\x0dxn--fa-hia.de" in hello  # the SNI host_name entry: length, then the name
    assert b"fass.de" not in hello
    await fetcher.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "http://xn--zz/a.png",  # invalid punycode: httpx's .host raised IDNAError (a 500)
        "http://my_host.example.com/a.png",
        "http://ex%41mple.com/a.png",
        "http://a..b.com/a.png",
        "http://\u2488.com/a.png",  # disallowed in IDNA 2008
        "http://faß.de\\@127.0.0.1/a.png",
    ],
)
async def test_hosts_that_are_not_valid_idna_2008_are_refused_without_a_lookup(url: str) -> None:
    lookup = RecordingLookup()
    fetcher = fetcher_with(lookup)
    with pytest.raises(UrlNotAllowed):
        await fetcher.fetch(url)
    assert lookup.queried == []
    await fetcher.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://exa mple.com/a.png",
        "http://example.com/a b.png",
        "http://example.com/a\tb.png",
        "http://example.com/a.png\r\nX-Injected: 1",
        "http://example.com/\u00a0.png",
        "http://example.com/\u202egnp.exe",
        "http://example.com/\x85.png",
        "http://example.com/" + "a" * 5000,
        "//example.com/a.png",
        "example.com/a.png",
    ],
)
async def test_empty_long_and_whitespace_or_control_character_urls_are_refused(url: str) -> None:
    lookup = RecordingLookup({"example.com": ["93.184.216.34"]})
    fetcher = fetcher_with(lookup)
    with pytest.raises(UrlNotAllowed):
        await fetcher.fetch(url)
    assert lookup.queried == []
    await fetcher.aclose()


# --- bodies: encodings, lengths, trickles -------------------------------------------------------


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """64 MiB of zeros, gzipped twice: a few hundred bytes."""
    inner = gzip.compress(bytes(64 << 20), compresslevel=9)
    return gzip.compress(inner, compresslevel=9)


@pytest.mark.parametrize("encoding", ["gzip, gzip", "gzip", "deflate", "br"])
async def test_an_encoded_body_is_refused_without_inflating_it(gzip_bomb: bytes, encoding: str) -> None:
    assert len(gzip_bomb) < 100_000
    cap = 1 << 20
    fetcher = ImageFetcher(make_settings(url_fetch_allowed_networks=LOOPBACK, url_fetch_max_bytes=cap))
    routes = {"/bomb.png": (200, {"Content-Type": "image/png", "Content-Encoding": encoding}, gzip_bomb)}
    with image_host(routes) as base:
        tracemalloc.start()
        try:
            with pytest.raises(ImageFetchFailed, match="Content-Encoding"):
                await fetcher.fetch(f"{base}/bomb.png")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4 * cap
    await fetcher.aclose()


async def test_the_image_is_requested_unencoded_and_an_identity_answer_is_read() -> None:
    png = _png()
    fetcher = ImageFetcher(make_settings(url_fetch_allowed_networks=LOOPBACK))
    seen: list[str] = []
    with recording_host(png, seen, header="Accept-Encoding", extra={"Content-Encoding": "identity"}) as port:
        assert await fetcher.fetch(f"http://127.0.0.1:{port}/a.png") == png
    assert seen == ["identity"]
    await fetcher.aclose()


async def test_a_chunked_body_over_the_cap_is_refused_while_streaming() -> None:
    cap = 1 << 20

    def serve(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (64 << 10, bytes(64 << 10))
        with contextlib.suppress(OSError):
            for _ in range(10_000):  # 640 MiB if nobody stopped reading
                conn.sendall(chunk)

    fetcher = ImageFetcher(make_settings(url_fetch_allowed_networks=LOOPBACK, url_fetch_max_bytes=cap))
    with raw_server(serve) as port:
        tracemalloc.start()
        try:
            with pytest.raises(ImageTooLarge, match=f"over {cap} bytes"):
                await fetcher.fetch(f"http://127.0.0.1:{port}/a.png")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4 * cap
    await fetcher.aclose()


@pytest.mark.parametrize(
    ("length", "body", "outcome"),
    [
        ("10", b"x" * 100, b"x" * 10),  # more bytes than declared: only the declared ones are read
        ("1000", b"x" * 10, ImageFetchFailed),  # fewer, then the connection closes
        ("99999999999", b"x" * 10, ImageTooLarge),  # over the cap: refused before reading
        ("abc", b"x" * 10, ImageFetchFailed),
        ("-5", b"x" * 10, ImageFetchFailed),
        ("10, 20", b"x" * 10, ImageFetchFailed),
        ("0", b"", ImageFetchFailed),  # an empty image
    ],
)
async def test_content_length_lies_are_bounded(length: str, body: bytes, outcome: bytes | type[Exception]) -> None:
    def serve(conn: socket.socket) -> None:
        conn.recv(4096)
        head = f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
        with contextlib.suppress(OSError):
            conn.sendall(head.encode() + body)

    fetcher = ImageFetcher(make_settings(url_fetch_allowed_networks=LOOPBACK, url_fetch_timeout_s=5))
    with raw_server(serve) as port:
        url = f"http://127.0.0.1:{port}/a.png"
        if isinstance(outcome, bytes):
            assert await fetcher.fetch(url) == outcome
        else:
            with pytest.raises(outcome):
                await fetcher.fetch(url)
    await fetcher.aclose()


async def test_a_trickled_body_is_cut_off_by_the_total_timeout() -> None:
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
        with contextlib.suppress(OSError):
            for _ in range(600):  # one byte every 0.1 s, each well inside any per-read timeout
                if stop.wait(0.1):
                    return
                conn.sendall(b"x")

    fetcher = ImageFetcher(make_settings(url_fetch_allowed_networks=LOOPBACK, url_fetch_timeout_s=1))
    with raw_server(serve) as port:
        started = time.monotonic()
        with pytest.raises(ImageFetchFailed, match=r"timed out after 1\.0s"):
            await fetcher.fetch(f"http://127.0.0.1:{port}/a.png")
        elapsed = time.monotonic() - started
        stop.set()
    assert elapsed < 30  # loose on purpose: the bound is the timeout, not the 60 s trickle
    await fetcher.aclose()


async def test_a_redirect_to_a_hostile_location_is_checked_like_the_first_url() -> None:
    lookup = RecordingLookup({"xn--fa-hia.de": ["127.0.0.1"]})
    fetcher = fetcher_with(lookup, url_fetch_allowed_networks=LOOPBACK)
    routes = {
        "/nat64": (302, {"Location": "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/"}, b""),
        "/long": (302, {"Location": "/" + "a" * 5000}, b""),
    }
    with image_host(routes) as base:
        for path in routes:
            with pytest.raises(UrlNotAllowed):
                await fetcher.fetch(f"{base}{path}")
    await fetcher.aclose()


async def test_predict_answers_hostile_urls_with_their_contract_errors(gzip_bomb: bytes) -> None:
    settings = make_settings(url_fetch_allowed_networks=LOOPBACK, url_fetch_max_bytes=1 << 20)
    routes = {"/bomb.png": (200, {"Content-Type": "image/png", "Content-Encoding": "gzip, gzip"}, gzip_bomb)}
    async with running_app(create_app(settings)) as client:
        with image_host(routes) as base:
            cases = [
                (f"{base}/bomb.png", 400, "IMAGE_FETCH_FAILED"),
                ("http://[64:ff9b::a9fe:a9fe]/latest/meta-data/", 403, "URL_NOT_ALLOWED"),
                ("http://[::7f00:1]/a.png", 403, "URL_NOT_ALLOWED"),
                ("http://xn--zz/a.png", 403, "URL_NOT_ALLOWED"),  # was a 500 (IDNAError)
                ("http://example.com/a b.png", 403, "URL_NOT_ALLOWED"),
            ]
            for url, status, code in cases:
                response = await client.post("/api/v1/predict", json={"image_url": url})
                assert (response.status_code, response.json()["error"]) == (status, code), url


# --- DNS on its own bounded pool ----------------------------------------------------------------


async def test_lookups_do_not_wait_behind_the_default_executor() -> None:
    # A model load holding the loop's default executor must not delay a fetch (system resolver,
    # /etc/hosts: localhost never leaves the machine).
    first = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)[0][4][0]
    if not ip(first).is_loopback or ip(first).version != 4:
        pytest.skip(f"localhost resolves to {first} first here; the local image host listens on 127.0.0.1")
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    started, release = threading.Event(), threading.Event()

    def load_model() -> None:
        started.set()
        release.wait(60)

    model_load = asyncio.ensure_future(asyncio.to_thread(load_model))
    for _ in range(200):  # until the load holds the executor's only thread
        if started.is_set():
            break
        await asyncio.sleep(0.05)
    assert started.is_set()
    png = _png()
    settings = make_settings(url_fetch_allowed_networks=[*LOOPBACK, ipaddress.ip_network("::1/128")])
    fetcher = ImageFetcher(settings)
    try:
        with image_host({"/a.png": (200, {"Content-Type": "image/png"}, png)}) as base:
            port = base.rsplit(":", 1)[1]
            assert await fetcher.fetch(f"http://localhost:{port}/a.png") == png
        assert not model_load.done()
    finally:
        release.set()
        await model_load
        await fetcher.aclose()


async def test_a_flood_of_slow_lookups_holds_only_the_resolver_threads_and_times_out() -> None:
    release = threading.Event()
    lock = threading.Lock()
    running, most = [0], [0]

    def slow(host: str, port: int) -> list[IPAddress]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(30)
        with lock:
            running[0] -= 1
        return [ip("127.0.0.1")]

    resolver = Resolver(threads=2, timeout_s=0.5, lookup=slow)
    results = await asyncio.gather(*(resolver.resolve(f"h{i}.example", 80) for i in range(50)), return_exceptions=True)
    assert all(isinstance(r, ImageFetchFailed) and "timed out after 0.5s" in str(r) for r in results)
    assert most[0] == 2
    dns_threads = [t for t in threading.enumerate() if t.name.startswith("ml-api-dns")]
    assert len(dns_threads) == 2
    release.set()
    # Lookups still queued when they timed out were cancelled: the pool is free again at once.
    assert await resolver.resolve("after.example", 80) == [ip("127.0.0.1")]
    assert most[0] == 2
    resolver.close()


# --- local servers ------------------------------------------------------------------------------


@contextlib.contextmanager
def raw_server(serve: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server on 127.0.0.1 running ``serve`` on each connection; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                with contextlib.suppress(OSError):
                    serve(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=15)
        listener.close()


@contextlib.contextmanager
def recording_host(
    png: bytes, seen: list[str], header: str = "Host", extra: dict[str, str] | None = None
) -> Iterator[int]:
    """Serve ``png`` on 127.0.0.1, appending the request's ``header`` to ``seen``."""

    def serve(conn: socket.socket) -> None:
        request = conn.recv(65536).decode("latin-1")
        for line in request.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.lower() == header.lower():
                seen.append(value.strip())
        headers = {"Content-Type": "image/png", "Content-Length": str(len(png)), "Connection": "close", **(extra or {})}
        head = "HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        conn.sendall(head.encode() + png)

    with raw_server(serve) as port:
        yield port
