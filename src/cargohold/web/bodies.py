"""An idle-read timeout on request bodies.

A client that sends the headers and part of a body and then falls silent would
otherwise hold its connection, a worker's upload session (and its file lock)
and a slot of every limit forever: aiohttp has no read timeout of its own.
Each request with a body gets a watchdog that notices when the handler is
waiting for body bytes and none have arrived for ``body_idle_timeout_seconds``;
it then fails that read with ``BodyStalled``, so whichever code is reading —
an upload streaming to disk, a manifest, a JSON document — unwinds through its
own clean-up (a half-written chunk is cut back off) and the client is answered
408 ``REQUEST_TIMEOUT``, after which the connection is closed.

Only silence while the server is waiting counts: a handler that is slow to read
(the disk is busy) never gets its client cut off, because the client is then
held back by TCP flow control, not idle by choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..oci.errors import BodyStalled

log = logging.getLogger("cargohold.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

_STALLED = "body_stalled"


def _waiting_for_bytes(content: web.StreamReader) -> bool:
    # aiohttp keeps a future in ``_waiter`` while a read waits for the next bytes from the socket;
    # there is no public way to ask.
    waiter = getattr(content, "_waiter", None)
    return waiter is not None and not waiter.done()


async def _watch(request: web.Request, timeout: float) -> None:
    content = request.content
    loop = asyncio.get_running_loop()
    tick = min(1.0, timeout / 4)
    seen = content.total_bytes
    idle_since = loop.time()
    while not content.is_eof() and content.exception() is None:
        await asyncio.sleep(tick)
        now = loop.time()
        if content.total_bytes != seen or not _waiting_for_bytes(content):
            seen, idle_since = content.total_bytes, now
            continue
        if now - idle_since >= timeout:
            request[_STALLED] = True
            log.info(
                "client %s sent no body bytes for %gs during %s %s after %d bytes; cutting it off",
                request.remote, timeout, request.method, request.path, content.total_bytes,
            )
            content.set_exception(BodyStalled(f"no bytes of the request body arrived for {timeout:g} seconds"))
            return


def body_idle_timeout(timeout: float) -> Middleware:
    """The middleware for ``body_idle_timeout_seconds``; it must sit outside the error middleware, whose 408 it sends."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists:
            return await handler(request)
        watchdog = asyncio.create_task(_watch(request, timeout))
        try:
            response = await handler(request)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        if request.get(_STALLED) and not response.prepared:
            # Send the answer now and close: aiohttp would otherwise try to drain the rest of the body
            # (which is not coming) before reusing the connection.
            response.force_close()  # Connection: close
            with contextlib.suppress(ConnectionError):
                await response.prepare(request)
                await response.write_eof()
            request.protocol.force_close()
        return response

    return middleware
