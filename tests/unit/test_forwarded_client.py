"""The client address behind proxies: only a trusted peer's forwarding headers count, rightmost untrusted hop wins."""

from __future__ import annotations

import ipaddress

import pytest

from cargohold.config import Settings
from cargohold.web.clients import resolve_client

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "xff", "expected"),
    [
        ("203.0.113.5", [], ["198.51.100.1"], "203.0.113.5"),  # untrusted peer: headers ignored
        ("10.0.0.2", [], [], "10.0.0.2"),  # a trusted peer that forwards nothing
        ("10.0.0.2", [], ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", [], ["198.51.100.66, 198.51.100.1"], "198.51.100.1"),  # the client's own prefix is ignored
        ("10.0.0.2", [], ["198.51.100.1, 10.0.0.9"], "198.51.100.1"),  # two proxies
        ("10.0.0.2", [], ["198.51.100.66", "198.51.100.1"], "198.51.100.1"),  # several header lines
        ("10.0.0.2", [], ["10.0.0.7, 10.0.0.9"], "10.0.0.7"),  # all trusted: the leftmost
        ("10.0.0.2", [], ["unknown"], "10.0.0.2"),  # garbage: the last proxy is all that is known
        ("10.0.0.2", [], ["198.51.100.1, garbage"], "10.0.0.2"),
        ("10.0.0.2", ['for=198.51.100.1;proto=https'], ["203.0.113.1"], "198.51.100.1"),  # Forwarded wins
        ("10.0.0.2", ['for="[2001:db8::1]:4711", for=10.0.0.3'], [], "2001:db8::1"),
        ("10.0.0.2", ['for="198.51.100.1:80"'], [], "198.51.100.1"),
        ("10.0.0.2", ["for=_hidden"], [], "10.0.0.2"),
        ("fd00::2", [], ["2001:db8::5"], "2001:db8::5"),
    ],
)
def test_resolve_client(peer: str, forwarded: list[str], xff: list[str], expected: str) -> None:
    assert resolve_client(peer, forwarded, xff, TRUSTED) == expected


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert resolve_client("10.0.0.2", [], ["198.51.100.1"], ()) == "10.0.0.2"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("https://registry.example.com", "https://registry.example.com"), ("http://r.example:8080/", "http://r.example:8080")],
)
def test_public_url_is_normalised(value: str, expected: str) -> None:
    assert Settings(public_url=value).public_url == expected


@pytest.mark.parametrize(
    "value",
    ["ftp://r.example", "https://", "https://r.example/path", "https://r.example?q=1", 'https://r"x', "https://u:p@r.example", "https://r.example:99999"],
)
def test_public_url_refuses_anything_but_scheme_host_port(value: str) -> None:
    with pytest.raises(ValueError):
        Settings(public_url=value)
