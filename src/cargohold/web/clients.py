"""Who the client is, and what URL it knows this server by, when a reverse proxy stands in between.

Behind a TLS-terminating proxy every TCP peer is the proxy. The client's own
address is then taken from ``Forwarded`` (RFC 7239) or ``X-Forwarded-For``,
but only when the peer is one of ``trusted_proxies``, and only the rightmost
address that is not itself a trusted proxy: everything left of it was written
by the client and proves nothing. That address is what the login throttle,
the client allow-list and the audit log see.

``public_url`` is the URL clients use (scheme, host, port); the token realm
and ``Location`` headers are built from it, never from a request header.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from aiohttp import web

from .keys import SETTINGS

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_CLIENT = "cargohold_client"  # request key: the resolved client address, computed once per request


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _address(value: str) -> Address | None:
    try:
        return ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None


def _forwarded_for(values: list[str]) -> list[str]:
    """The ``for=`` nodes of ``Forwarded`` headers, left to right, without quotes, brackets and ports."""
    hops: list[str] = []
    for value in values:
        for element in value.split(","):
            node = ""
            for pair in element.split(";"):
                key, _, raw = pair.strip().partition("=")
                if key.strip().lower() == "for":
                    node = raw.strip().strip('"')
            if node.startswith("["):
                node = node[1:].partition("]")[0]  # [2001:db8::1]:4711
            elif node.count(":") == 1:
                node = node.partition(":")[0]  # 192.0.2.1:4711
            hops.append(node)
    return hops


def _x_forwarded_for(values: list[str]) -> list[str]:
    return [hop.strip() for value in values for hop in value.split(",")]


def resolve_client(peer: str | None, forwarded: list[str], x_forwarded_for: list[str], trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy, the rightmost untrusted hop."""
    current = _address(peer or "")
    if current is None:
        return peer or "-"
    if not trusted or not any(current in net for net in trusted):
        return str(current)
    hops = _forwarded_for(forwarded) if forwarded else _x_forwarded_for(x_forwarded_for)
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # "unknown", an obfuscated node or garbage: the last proxy is all that is known
        current = address
        if not any(address in net for net in trusted):
            break
    return str(current)


def client_address(request: web.Request) -> str:
    cached = request.get(_CLIENT)
    if cached is None:
        settings = request.app[SETTINGS]
        cached = resolve_client(
            request.remote,
            request.headers.getall("Forwarded", []),
            request.headers.getall("X-Forwarded-For", []),
            _networks(tuple(settings.trusted_proxies)),
        )
        request[_CLIENT] = cached
    return cached


def public_location(request: web.Request, response: web.StreamResponse) -> None:
    """With ``public_url`` set, a ``Location`` this server wrote as a path becomes an absolute URL under it."""
    public_url = request.app[SETTINGS].public_url
    location = response.headers.get("Location")
    if public_url and location and location.startswith("/") and not location.startswith("//"):
        response.headers["Location"] = public_url + location
