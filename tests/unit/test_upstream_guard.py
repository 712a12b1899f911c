"""upstream/guard.py and upstream/http.py: which addresses outbound requests may reach, enforced at connect time."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from cargohold.config import Settings
from cargohold.upstream.guard import (
    OutboundGuard,
    PrivateTargetRefused,
    SchemeRefused,
    UpstreamRefused,
    classify,
)
from cargohold.upstream.http import GuardedConnector, GuardedResolver, guarded_session

# ------------------------------------------------------------------ classification

REFUSED = [
    # IPv4
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "reserved"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.170.2", "cloud metadata"),  # ECS task metadata and credentials
    ("169.254.169.123", "link-local"),  # AWS time sync
    ("169.254.169.23", "link-local"),
    ("169.254.255.255", "link-local"),
    ("100.100.100.200", "cloud metadata"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "shared"),
    ("100.127.255.254", "shared"),
    ("192.0.0.8", "reserved"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("192.88.99.1", "reserved"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("fc00::1", "unique-local"),
    ("fd12:3456:789a::1", "unique-local"),
    ("fd00:ec2::254", "cloud metadata"),
    ("fd00:ec2::23", "cloud metadata"),
    ("fd00:ec2:ffff::1", "cloud metadata"),
    ("fec0::1", "private"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001::1", "reserved"),  # Teredo
    ("2001:2::1", "reserved"),  # benchmarking
    ("100::1", "reserved"),  # discard-only
    ("64:ff9b:1::1", "private"),  # local-use NAT64
    ("::8.8.8.8", "reserved"),  # deprecated IPv4-compatible
    ("1::1", "reserved"),  # outside 2000::/3
    ("4000::1", "reserved"),
    # IPv6 forms that carry an IPv4 address
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:7f00:1", "IPv4-mapped loopback"),
    ("::ffff:0.0.0.0", "IPv4-mapped unspecified"),
    ("::ffff:10.1.2.3", "IPv4-mapped private"),
    ("::ffff:192.168.0.1", "IPv4-mapped private"),
    ("::ffff:169.254.1.1", "IPv4-mapped link-local"),
    ("::ffff:169.254.169.254", "IPv4-mapped cloud metadata"),
    ("::ffff:100.64.0.1", "IPv4-mapped shared"),
    ("::ffff:224.0.0.1", "IPv4-mapped multicast"),
    ("64:ff9b::127.0.0.1", "NAT64 loopback"),
    ("64:ff9b::a00:1", "NAT64 private"),
    ("64:ff9b::a9fe:a9fe", "NAT64 cloud metadata"),
    ("2002:7f00:1::1", "6to4 loopback"),
    ("2002:c0a8:101::", "6to4 private"),
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above
    "172.15.255.255",  # just below 172.16/12
    "172.32.0.0",  # just above
    "169.253.255.255",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",  # IPv4-mapped public
    "64:ff9b::808:808",  # NAT64 of a public address
    "2002:808:808::1",  # 6to4 of a public address
]


@pytest.mark.parametrize(("address", "category"), REFUSED)
def test_refused_classes(address: str, category: str) -> None:
    verdict = classify(address)
    assert verdict is not None, f"{address} should be refused"
    assert verdict.category == category


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert classify(address) is None
    OutboundGuard().check("example.com", [address])


@pytest.mark.parametrize(("address", "category"), REFUSED)
def test_guard_refuses_with_a_precise_exception(address: str, category: str) -> None:
    with pytest.raises(PrivateTargetRefused) as caught:
        OutboundGuard().check("registry.example", [address])
    exc = caught.value
    assert (exc.host, exc.address, exc.category) == ("registry.example", address, category)
    assert "refusing to connect to registry.example (resolves to" in str(exc)
    assert isinstance(exc, UpstreamRefused)
    assert not isinstance(exc, aiohttp.ClientError)  # a policy decision: retry logic must not retry it


NEVER_ALLOWED = ("cloud metadata", "link-local")


@pytest.mark.parametrize(("address", "category"), [(a, c) for a, c in REFUSED if not c.endswith(NEVER_ALLOWED)])
def test_allow_flag_lets_private_targets_through(address: str, category: str) -> None:
    OutboundGuard(allow_private=True).check("registry.internal", [address])


@pytest.mark.parametrize("address", [a for a, c in REFUSED if c.endswith(NEVER_ALLOWED)])
def test_metadata_and_link_local_are_refused_even_when_private_targets_are_allowed(address: str) -> None:
    with pytest.raises(PrivateTargetRefused) as caught:
        OutboundGuard(allow_private=True).check("metadata.internal", [address])
    assert not caught.value.allowable
    assert "never allowed" in str(caught.value)


def test_messages_name_the_address_its_class_and_the_way_out() -> None:
    with pytest.raises(PrivateTargetRefused) as caught:
        OutboundGuard().check("10.0.0.7", ["10.0.0.7"])
    assert str(caught.value) == (
        "refusing to connect to 10.0.0.7: 10.0.0.7 is a private address (RFC 1918); "
        "set allow_private_upstreams (CARGOHOLD_ALLOW_PRIVATE_UPSTREAMS=1) to allow private upstreams"
    )
    with pytest.raises(PrivateTargetRefused) as caught:
        OutboundGuard().check("evil.example", ["::ffff:127.0.0.1"])
    assert "the IPv4-mapped form of 127.0.0.1, a loopback address" in str(caught.value)


def test_one_bad_address_refuses_the_whole_answer() -> None:
    with pytest.raises(PrivateTargetRefused) as caught:
        OutboundGuard().check("mixed.example", ["93.184.216.34", "2606:4700::1", "192.168.0.10"])
    assert caught.value.address == "192.168.0.10"


def test_an_empty_answer_is_refused() -> None:
    with pytest.raises(UpstreamRefused):
        OutboundGuard().check("nothing.example", [])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CARGOHOLD_"):
            monkeypatch.delenv(key)


@pytest.mark.usefixtures("clean_env")
def test_policy_follows_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OutboundGuard.from_settings(Settings()).allow_private is False
    monkeypatch.setenv("CARGOHOLD_ALLOW_PRIVATE_UPSTREAMS", "1")
    assert Settings().allow_private_upstreams is True
    assert OutboundGuard.from_settings(Settings()).allow_private is True


# ------------------------------------------------------------------ the resolver wrapper


class FakeResolver(AbstractResolver):
    """Answers from a script: each resolve() of a name pops its next answer (the last one repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.calls.append(host)
        script = self.answers[host]
        addresses = script.pop(0) if len(script) > 1 else script[0]
        return [
            ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET6 if ":" in a else socket.AF_INET, proto=0, flags=0)
            for a in addresses
        ]

    async def close(self) -> None:
        pass


async def test_resolver_checks_every_answer_so_rebinding_is_caught() -> None:
    # First answer public (what a one-off "validation" lookup would see), second one loopback (what the connect gets).
    inner = FakeResolver({"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
    resolver = GuardedResolver(OutboundGuard(), inner)
    first = await resolver.resolve("rebind.example", 443)
    assert [r["host"] for r in first] == ["93.184.216.34"]
    with pytest.raises(PrivateTargetRefused) as caught:
        await resolver.resolve("rebind.example", 443)
    assert caught.value.host == "rebind.example" and caught.value.address == "127.0.0.1"


# ------------------------------------------------------------------ the session, against a real local server


@pytest.fixture
async def local_server() -> AsyncIterator[str]:
    """An aiohttp server on 127.0.0.1: ``/`` answers, ``/redirect?to=URL`` redirects."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello from the private network")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/redirect", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_guarded_session_refuses_a_loopback_server(local_server: str) -> None:
    async with guarded_session(Settings(allow_private_upstreams=False)) as session:
        with pytest.raises(PrivateTargetRefused) as caught:
            await session.get(f"{local_server}/")
        assert caught.value.category == "loopback"


async def test_guarded_session_fetches_it_when_private_upstreams_are_allowed(local_server: str) -> None:
    async with guarded_session(Settings(allow_private_upstreams=True)) as session:
        async with session.get(f"{local_server}/") as response:
            assert response.status == 200
            assert await response.text() == "hello from the private network"
            assert response.request_info.headers["User-Agent"].startswith("cargohold/")


async def test_ipv6_literal_forms_of_loopback_are_refused(local_server: str) -> None:
    port = local_server.rsplit(":", 1)[1]
    async with guarded_session(allow_private=False) as session:
        for host in ("[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[64:ff9b::7f00:1]", "[::]", "0.0.0.0"):
            with pytest.raises(PrivateTargetRefused):
                await session.get(f"http://{host}:{port}/")


async def test_a_name_resolving_to_loopback_is_refused_at_connect(local_server: str) -> None:
    port = local_server.rsplit(":", 1)[1]
    fake = FakeResolver({"innocent.example": [["127.0.0.1"]]})
    async with guarded_session(allow_private=False, resolver=fake) as session:
        with pytest.raises(PrivateTargetRefused) as caught:
            await session.get(f"http://innocent.example:{port}/")
    assert fake.calls == ["innocent.example"]
    assert "innocent.example (resolves to 127.0.0.1)" in str(caught.value)
    # The same name, allowed: the connection goes to exactly the address the guard saw.
    fake = FakeResolver({"innocent.example": [["127.0.0.1"]]})
    async with guarded_session(allow_private=True, resolver=fake) as session:
        async with session.get(f"http://innocent.example:{port}/") as response:
            assert response.status == 200


async def test_rebinding_between_connections_is_refused(local_server: str) -> None:
    """The second connection (DNS cache off, connection not reused) gets the rebound answer and is refused."""
    port = local_server.rsplit(":", 1)[1]

    class LoopbackIsPublic(OutboundGuard):
        """Treats 127.0.0.1 as the 'public' address so the test can connect somewhere real."""

        def check_address(self, host: str, address: object) -> None:  # type: ignore[override]
            if str(address) != "127.0.0.1":
                super().check_address(host, address)  # type: ignore[arg-type]

    fake = FakeResolver({"rebind.example": [["127.0.0.1"], ["10.0.0.1"]]})
    connector = GuardedConnector(LoopbackIsPublic(), resolver=fake, use_dns_cache=False, force_close=True)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        async with session.get(f"http://rebind.example:{port}/") as response:
            assert response.status == 200
        with pytest.raises(PrivateTargetRefused) as caught:
            await session.get(f"http://rebind.example:{port}/")
    assert caught.value.address == "10.0.0.1"


async def test_each_redirect_hop_is_checked(local_server: str) -> None:
    port = local_server.rsplit(":", 1)[1]

    class OnlyOneLoopback(OutboundGuard):
        def check_address(self, host: str, address: object) -> None:  # type: ignore[override]
            if str(address) != "127.0.0.1":
                super().check_address(host, address)  # type: ignore[arg-type]

    connector = GuardedConnector(OnlyOneLoopback())
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        with pytest.raises(PrivateTargetRefused) as caught:
            await session.get(f"{local_server}/redirect", params={"to": f"http://127.0.0.2:{port}/"})
    assert caught.value.address == "127.0.0.2"


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "ws://example.com/", "tcp://93.184.216.34/", "/relative"])
async def test_non_http_schemes_are_refused(url: str) -> None:
    async with guarded_session(allow_private=True) as session:
        with pytest.raises(SchemeRefused):
            await session.get(url)


async def test_proxies_are_refused_and_ignored_from_the_environment(monkeypatch: pytest.MonkeyPatch, local_server: str) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://10.9.9.9:3128")
    async with guarded_session(allow_private=True) as session:
        async with session.get(f"{local_server}/") as response:  # not through the proxy from the environment
            assert response.status == 200
        with pytest.raises(UpstreamRefused, match="proxy"):
            await session.get(f"{local_server}/", proxy="http://127.0.0.1:3128")


def test_the_guard_cannot_be_swapped_out() -> None:
    for option in ("connector", "connector_owner", "trust_env"):
        with pytest.raises(TypeError, match="bypass"):
            guarded_session(allow_private=False, **{option: None})


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    yield
