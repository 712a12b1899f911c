"""A counting, fault-injecting reverse proxy in front of an upstream registry (docker-registry), for the cache tests.

``UpstreamProxy(upstream_url).start()`` serves on ``127.0.0.1:<free port>`` from a
background thread with its own event loop, forwards every request to the
upstream and streams bodies both ways (a 100 MiB layer is never held in
memory). ``Range``, ``Authorization``, ``WWW-Authenticate`` and every other
end-to-end header pass through untouched; the ``Host`` header is the proxy's,
so URLs the upstream builds from it (upload ``Location``\\ s) lead back here.

Counting: every request is recorded on arrival as a ``Seen`` (method, kind —
``manifest``, ``blob``, ``tags``, ``referrers``, ``token`` or ``other`` —, path,
repository, reference) and gets its status when answered::

    proxy.counts(method="GET", kind="blob", repo="library/x")   # an int
    proxy.seen(kind="manifest")                                 # the records
    proxy.reset()

Faults: ``proxy.fault`` is ``None`` or a callable ``(Seen) -> mode | None``,
asked once per request (``Seen.request`` is the aiohttp request). Modes:

- ``"truncate"``: the upstream's status and headers (its full ``Content-Length``),
  then half the body, then the connection is closed.
- ``"wrong-bytes"``: the upstream's headers and a body of the same length with one
  byte flipped (in the middle).
- ``"500-mid"``: the request goes upstream, but the client gets 500 (an OCI error
  body) instead of the upstream's answer.
- ``("429", seconds)``: 429 ``TOOMANYREQUESTS`` with ``Retry-After: seconds``;
  the upstream is not asked.
- ``"stall"`` / ``("stall", seconds)``: nothing is sent for ``seconds``
  (default ``proxy.stall_seconds``) — longer than the client's timeout —, then the
  connection is closed.
- ``"down"``: the connection is closed at once, without an answer.

``truncate`` and ``wrong-bytes`` apply to bodies only; a HEAD (or an empty body)
passes through unchanged. New modes: register ``async def mode(proxy, seen,
arg) -> web.StreamResponse`` in ``FAULTS`` (or ``proxy.faults`` for one proxy)
under a name; a mode given as ``(name, arg)`` gets ``arg``.

Helpers: ``proxy.fail(mode, kind=..., method=..., repo=..., times=...)`` sets a
fault that hits matching requests (``times`` of them, or all), and
``proxy.upstream_url`` may be changed while running.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from servers import free_port

# Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business on each side.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "host"}
)
CHUNK = 64 << 10

_NAME = r"(?P<repo>[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*)"
_ROUTES = [
    (re.compile(rf"^/v2/{_NAME}/manifests/(?P<ref>[^/]+)$"), "manifest"),
    (re.compile(rf"^/v2/{_NAME}/blobs/uploads(?:/.*)?$"), "other"),
    (re.compile(rf"^/v2/{_NAME}/blobs/(?P<ref>[^/]+)$"), "blob"),
    (re.compile(rf"^/v2/{_NAME}/tags/list$"), "tags"),
    (re.compile(rf"^/v2/{_NAME}/referrers/(?P<ref>[^/]+)$"), "referrers"),
    (re.compile(r"^/(?:v2/)?(?:token|auth|oauth2/token|service/token)$"), "token"),
]

Mode = Any  # str | tuple[str, Any] | None
FaultHandler = Callable[["UpstreamProxy", "Seen", Any], Awaitable[web.StreamResponse]]


def classify(path: str) -> tuple[str, str | None, str | None]:
    """``(kind, repository, reference)`` of a request path."""
    for pattern, kind in _ROUTES:
        m = pattern.match(path)
        if m:
            groups = m.groupdict()
            return kind, groups.get("repo"), groups.get("ref")
    return "other", None, None


@dataclass
class Seen:
    """One request the proxy received."""

    method: str
    kind: str
    path: str
    query: str
    repo: str | None
    reference: str | None
    headers: CIMultiDict[str]
    at: float = field(default_factory=time.monotonic)
    status: int | None = None  # None until answered (or when the connection was dropped)
    fault: Mode = None
    request: web.Request | None = field(default=None, repr=False, compare=False)

    def key(self) -> tuple[str, str, str]:
        return self.method, self.kind, self.path


class UpstreamProxy:
    def __init__(self, upstream_url: str, port: int | None = None, stall_seconds: float = 60.0) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.port = port or free_port()
        self.stall_seconds = stall_seconds
        self.fault: Callable[[Seen], Mode] | None = None
        self.faults: dict[str, FaultHandler] = dict(FAULTS)
        self._records: list[Seen] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Task[Any]] = set()

    # ---- lifecycle -----------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self, timeout: float = 10.0) -> Self:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._setup())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"upstream-proxy-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"proxy on {self.host} did not start in {timeout}s")
        if failure:
            raise failure[0]
        return self

    async def _setup(self) -> None:
        # Per read, not in total: a big blob may take a while; the client's own timeouts are what is under test.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)
        self._session = aiohttp.ClientSession(
            timeout=timeout, auto_decompress=False, connector=aiohttp.TCPConnector(limit=200, force_close=False)
        )
        app = web.Application(client_max_size=1 << 40)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    def stop(self, timeout: float = 15.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return

        async def shutdown() -> None:
            for task in list(self._pending):
                task.cancel()
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- counting ------------------------------------------------------------------------------

    def seen(
        self,
        method: str | None = None,
        kind: str | None = None,
        repo: str | None = None,
        path: str | None = None,
        reference: str | None = None,
    ) -> list[Seen]:
        """The recorded requests that match every filter given (``repo`` and ``reference`` exactly)."""
        with self._lock:
            records = list(self._records)
        return [
            r
            for r in records
            if (method is None or r.method == method.upper())
            and (kind is None or r.kind == kind)
            and (repo is None or r.repo == repo)
            and (path is None or r.path == path)
            and (reference is None or r.reference == reference)
        ]

    def counts(
        self,
        method: str | None = None,
        kind: str | None = None,
        repo: str | None = None,
        path: str | None = None,
        reference: str | None = None,
    ) -> int:
        """How many requests matched (see ``seen``)."""
        return len(self.seen(method, kind, repo, path, reference))

    def by_key(self, repo: str | None = None) -> Counter[tuple[str, str, str]]:
        """``(method, kind, path) → count``, for exact assertions and readable failure messages."""
        return Counter(r.key() for r in self.seen(repo=repo))

    def reset(self) -> None:
        with self._lock:
            self._records.clear()

    def summary(self, repo: str | None = None) -> str:
        return "\n".join(f"{n}x {m} {k} {p}" for (m, k, p), n in sorted(self.by_key(repo).items())) or "(no requests)"

    # ---- faults --------------------------------------------------------------------------------

    def fail(
        self,
        mode: Mode,
        *,
        kind: str | None = None,
        method: str | None = "GET",
        repo: str | None = None,
        reference: str | None = None,
        times: int | None = None,
    ) -> Callable[[Seen], Mode]:
        """Set (and return) a fault that answers matching requests with ``mode``: the first ``times`` of them, or all."""
        left = [times]
        lock = threading.Lock()

        def choose(seen: Seen) -> Mode:
            if kind is not None and seen.kind != kind:
                return None
            if method is not None and seen.method != method.upper():
                return None
            if repo is not None and seen.repo != repo:
                return None
            if reference is not None and seen.reference != reference:
                return None
            with lock:
                if left[0] is not None:
                    if left[0] <= 0:
                        return None
                    left[0] -= 1
            return mode

        self.fault = choose
        return choose

    def clear_fault(self) -> None:
        self.fault = None

    # ---- the proxy -----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._pending.add(task)
        try:
            return await self._serve(request)
        finally:
            if task is not None:
                self._pending.discard(task)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        kind, repo, reference = classify(request.path)
        seen = Seen(request.method, kind, request.path, request.query_string, repo, reference, CIMultiDict(request.headers), request=request)
        with self._lock:
            self._records.append(seen)
        chooser = self.fault
        mode = chooser(seen) if chooser is not None else None
        seen.fault = mode
        if mode is None:
            response = await self.forward(seen)
        else:
            name, arg = (mode[0], mode[1]) if isinstance(mode, tuple) else (mode, None)
            handler = self.faults.get(str(name))
            if handler is None:
                raise ValueError(f"unknown fault mode {name!r}; known: {sorted(self.faults)}")
            response = await handler(self, seen, arg)
        if seen.status is None and response.prepared:
            seen.status = response.status
        return response

    async def open_upstream(self, seen: Seen) -> aiohttp.ClientResponse:
        """Send ``seen``'s request to the upstream (body streamed); the open response. Raises on connection failure."""
        request = seen.request
        assert request is not None and self._session is not None
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
        headers["Host"] = self.host  # so the upstream's absolute URLs (upload Locations) lead back through the proxy
        url = f"{self.upstream_url}{request.path_qs}"
        data = request.content if request.body_exists else None
        return await self._session.request(
            request.method, url, headers=headers, data=data, allow_redirects=False, skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type")
        )

    def response_headers(self, upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
        headers = CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP)
        location = headers.get("Location")
        if location:
            upstream_host = self.upstream_url.split("://", 1)[-1]
            headers["Location"] = location.replace(upstream_host, self.host)
        return headers

    async def forward(self, seen: Seen, transform: Callable[[int, int, bytes], bytes] | None = None) -> web.StreamResponse:
        """Pass the upstream's answer through as it arrives; ``transform(offset, total, chunk)`` may change a chunk (same length)."""
        request = seen.request
        assert request is not None
        try:
            upstream = await self.open_upstream(seen)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return oci_error(502, "UNAVAILABLE", f"proxy: upstream unreachable: {type(exc).__name__}: {exc}")
        try:
            headers = self.response_headers(upstream)
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            else:
                headers.popall("Content-Length", None)
            seen.status = upstream.status
            await response.prepare(request)
            if request.method == "HEAD":
                await response.write_eof()
                return response
            total = upstream.content_length or 0
            sent = 0
            while True:
                chunk = await upstream.content.read(CHUNK)
                if not chunk:
                    break
                if transform is not None:
                    chunk = transform(sent, total, chunk)
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
            return response
        finally:
            upstream.close()


def oci_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"errors": [{"code": code, "message": message, "detail": None}]}, status=status, headers=headers)


def hang_up(request: web.Request) -> None:
    """Close the client's connection once what was written so far has gone out."""
    transport = request.transport
    if transport is not None:
        transport.close()


def abort(request: web.Request) -> None:
    """Drop the client's connection without another byte."""
    transport = request.transport
    if transport is not None:
        transport.abort()


class _Dropped(web.StreamResponse):
    """What a handler returns after it dropped the connection: nothing more is written."""

    def __init__(self) -> None:
        super().__init__(status=599)

    async def prepare(self, request: web.BaseRequest) -> Any:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


async def _truncate(proxy: UpstreamProxy, seen: Seen, arg: Any) -> web.StreamResponse:
    if seen.method == "HEAD":
        return await proxy.forward(seen)
    # Half of the announced Content-Length (an unknown length: half of the first chunk).
    request = seen.request
    assert request is not None
    try:
        upstream = await proxy.open_upstream(seen)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return oci_error(502, "UNAVAILABLE", f"proxy: upstream unreachable: {exc}")
    try:
        total = upstream.content_length
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=proxy.response_headers(upstream))
        if total is not None:
            response.content_length = total
        seen.status = upstream.status
        await response.prepare(request)
        half = (total // 2) if total else None
        sent = 0
        while half is None or sent < half:
            chunk = await upstream.content.read(CHUNK)
            if not chunk:
                break
            if half is None:
                half = max(1, len(chunk) // 2)
            chunk = chunk[: half - sent]
            await response.write(chunk)  # write() waits until the transport has taken the bytes
            sent += len(chunk)
        hang_up(request)
        return _Dropped()
    finally:
        upstream.close()


async def _wrong_bytes(proxy: UpstreamProxy, seen: Seen, arg: Any) -> web.StreamResponse:
    if seen.method == "HEAD":
        return await proxy.forward(seen)

    def flip(offset: int, total: int, chunk: bytes) -> bytes:
        target = total // 2 if total else 0
        if offset <= target < offset + len(chunk):
            i = target - offset
            return chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
        return chunk

    return await proxy.forward(seen, transform=flip)


async def _error_500(proxy: UpstreamProxy, seen: Seen, arg: Any) -> web.StreamResponse:
    try:
        upstream = await proxy.open_upstream(seen)
        upstream.close()
    except (TimeoutError, aiohttp.ClientError):
        pass
    seen.status = 500
    return oci_error(500, "UNKNOWN", "proxy: injected internal server error")


async def _too_many(proxy: UpstreamProxy, seen: Seen, arg: Any) -> web.StreamResponse:
    seconds = 30 if arg is None else arg
    seen.status = 429
    return oci_error(429, "TOOMANYREQUESTS", "proxy: injected rate limit", {"Retry-After": str(int(seconds))})


async def _stall(proxy: UpstreamProxy, seen: Seen, arg: Any) -> web.StreamResponse:
    seconds = proxy.stall_seconds if arg is None else float(arg)
    await asyncio.sleep(seconds)
    assert seen.request is not None
    abort(seen.request)
    return _Dropped()


async def _down(proxy: UpstreamProxy, seen: Seen, arg: Any) -> web.StreamResponse:
    assert seen.request is not None
    abort(seen.request)
    return _Dropped()


FAULTS: dict[str, FaultHandler] = {
    "truncate": _truncate,
    "wrong-bytes": _wrong_bytes,
    "500-mid": _error_500,
    "429": _too_many,
    "stall": _stall,
    "down": _down,
}
