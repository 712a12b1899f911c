"""The HTTP client session every outbound request goes through.

``guarded_session()`` is the only way cargohold code should obtain an
``aiohttp.ClientSession``. Its connector enforces ``guard.py`` where it cannot
be bypassed:

- a host name is resolved by ``GuardedResolver``, which checks every address
  of the answer and raises before the connector sees any of them, so the
  addresses that are checked are exactly the ones connected to: a name that
  answered with a public address for a "validation" step and a private one
  for the connect (DNS rebinding) is refused at the connect;
- a literal IP in the URL (which aiohttp never hands to a resolver) is checked
  by ``GuardedConnector.connect``, as is the scheme (http and https only);
- both run for every new connection, including each hop of a redirect;
- the session ignores proxy environment variables and refuses an explicit
  proxy: through a proxy the target's address is resolved by the proxy and
  cannot be checked here.

Refusals raise ``UpstreamRefused`` subclasses (``PrivateTargetRefused``,
``SchemeRefused``), not ``aiohttp.ClientError``: they are policy decisions,
and code that retries on connection errors must not retry them.
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.resolver import DefaultResolver

from .. import __version__
from .guard import OutboundGuard, SchemeRefused, UpstreamRefused, is_ip_literal

ALLOWED_SCHEMES = frozenset({"http", "https"})
USER_AGENT = f"cargohold/{__version__}"
# Blob fills stream for as long as they take; what must not hang is connecting and a stalled read.
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30, sock_read=300)


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` and refuses the whole answer if any address in it is not allowed."""

    def __init__(self, guard: OutboundGuard, inner: AbstractResolver | None = None) -> None:
        self.guard = guard
        self.inner = inner if inner is not None else DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        self.guard.check(host, (r["host"] for r in results))
        return results

    async def close(self) -> None:
        await self.inner.close()


class _HttpSchemesOnly(frozenset[str]):
    """``ClientSession`` asks ``scheme in connector.allowed_protocol_schema_set`` before it builds a request.

    Answering with ``SchemeRefused`` instead of False gives callers the guard's own exception for
    ``ftp://``, ``file://``, ``ws://``, aiohttp's ``tcp://`` or a relative URL, rather than aiohttp's
    generic ``NonHttpUrlClientError`` (a ``ClientError`` that retry logic would take for a network
    failure). ``GuardedConnector.connect`` checks the scheme again, for redirects.
    """

    def __contains__(self, scheme: object) -> bool:
        if frozenset.__contains__(self, scheme):
            return True
        raise SchemeRefused(str(scheme or ""))


class GuardedConnector(aiohttp.TCPConnector):
    """A TCP connector that checks scheme, literal IPs and (through its resolver) every resolved address."""

    allowed_protocol_schema_set = _HttpSchemesOnly(ALLOWED_SCHEMES)

    def __init__(self, guard: OutboundGuard, *, resolver: AbstractResolver | None = None, **kwargs: Any) -> None:
        self.guard = guard
        super().__init__(resolver=GuardedResolver(guard, resolver), **kwargs)

    async def connect(self, req: ClientRequest, traces: Any, timeout: aiohttp.ClientTimeout) -> Connection:
        url = req.url
        if url.scheme not in ALLOWED_SCHEMES:
            raise SchemeRefused(url.scheme, str(url))
        if req.proxy is not None:
            raise UpstreamRefused(f"refusing {url} through proxy {req.proxy}: the outbound guard cannot check a proxied target")
        host = url.raw_host or ""
        if is_ip_literal(host):
            self.guard.check_address(host, host)
        return await super().connect(req, traces, timeout)


def guarded_session(
    settings: object | None = None,
    *,
    allow_private: bool | None = None,
    resolver: AbstractResolver | None = None,
    limit: int = 100,
    limit_per_host: int = 0,
    ssl: Any = True,
    keepalive_timeout: float = 15.0,
    **session_options: Any,
) -> aiohttp.ClientSession:
    """A new ``ClientSession`` whose every connection passes the outbound guard.

    The policy comes from ``settings.allow_private_upstreams``, or from ``allow_private`` when given.
    ``resolver`` replaces the system resolver under the guard (tests use it to simulate DNS);
    ``ssl`` is the connector's TLS verification (True: the system CA store). Other keyword arguments
    go to ``ClientSession`` (``timeout``, ``headers``, ``raise_for_status``, …), except the ones that
    would route around the guard. Call it inside the event loop that will use the session, and close
    the session (``async with``) when done.
    """
    for forbidden in ("connector", "connector_owner", "trust_env"):
        if forbidden in session_options:
            raise TypeError(f"guarded_session() does not accept {forbidden!r}: it would bypass the outbound guard")
    if allow_private is None:
        allow_private = bool(getattr(settings, "allow_private_upstreams", False))
    guard = OutboundGuard(allow_private=allow_private)
    connector = GuardedConnector(
        guard, resolver=resolver, limit=limit, limit_per_host=limit_per_host, ssl=ssl, keepalive_timeout=keepalive_timeout
    )
    headers = {"User-Agent": USER_AGENT, **(session_options.pop("headers", None) or {})}
    session_options.setdefault("timeout", DEFAULT_TIMEOUT)
    return aiohttp.ClientSession(connector=connector, headers=headers, trust_env=False, **session_options)
