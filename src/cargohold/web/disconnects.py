"""Clients that go away mid-request are an everyday event, not a server error.

A push whose client is interrupted stops mid-body; a pull whose client gives up
stops mid-response (often while a cache fill is streaming to it). The handler
then meets ``ConnectionResetError`` (aiohttp's ``ClientConnectionResetError`` is
one), a broken pipe, or a cancellation, and without this middleware aiohttp
logs each as ``ERROR`` with a traceback: noise that buries real failures. Here
such an ending is one ``INFO`` line. The work already done is cleaned up by the
layers below (a half-written chunk is cut back off, a fill carries on for the
other readers); nobody is left to answer, so the response returned is never sent.

Only endings where the connection is really gone count: the same exceptions
with the client still connected (a storage or upstream failure) go on to the
error middleware and are reported as failures.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("cargohold.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CLIENT_CLOSED = 499  # nginx's "client closed request": what the access log shows for these


def client_gone(request: web.Request) -> bool:
    """Whether the request's connection is closed or closing (aiohttp drops the transport when it is lost)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _what(request: web.Request) -> str:
    return f"{request.method} {request.path}"


@web.middleware
async def client_disconnects(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ConnectionError as exc:  # ConnectionResetError, BrokenPipeError, ClientConnectionResetError, ...
        if not client_gone(request):
            raise
        log.info("client %s went away during %s (%s)", request.remote, _what(request), exc or type(exc).__name__)
        return web.Response(status=CLIENT_CLOSED)
    except asyncio.CancelledError:
        if client_gone(request):
            log.info("client %s went away during %s (request cancelled)", request.remote, _what(request))
        raise
