"""Clients that misbehave mid-request: disconnecting mid-body or mid-fill, or stalling mid-body.

The server cuts off a body that stops arriving after ``BODY_IDLE`` seconds (the
setting ``body_idle_timeout_seconds``, 60 by default) and answers 408.

Raw sockets play the client (no HTTP library would let a request stop half-way
on purpose); a fault mode in the upstream proxy keeps a cache fill in progress
long enough for a client to give up in the middle of it. The server runs at
INFO with its log captured: a client going away is an INFO line, never an
ERROR with a traceback.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web
from cachehelpers import cache_server, docker_registry, push_upstream_blob
from ocihelpers import digest_of
from servers import DockerRegistry, Server
from upstream_proxy import Seen, UpstreamProxy, oci_error

TIMEOUT = (5, 30)
KiB = 1024
SLOW_PAUSE = 3.0  # how long the slow upstream pauses half-way through a blob
BODY_IDLE = 2  # body_idle_timeout_seconds of the server under test


# ---- a slow upstream: half the blob, a pause, the rest ------------------------------------------


async def _slow(proxy: UpstreamProxy, seen: Seen, arg: Any) -> web.StreamResponse:
    request = seen.request
    assert request is not None
    if seen.method == "HEAD":
        return await proxy.forward(seen)
    try:
        upstream = await proxy.open_upstream(seen)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return oci_error(502, "UNAVAILABLE", f"proxy: {exc}")
    try:
        response = web.StreamResponse(status=upstream.status, headers=proxy.response_headers(upstream))
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        seen.status = upstream.status
        await response.prepare(request)
        body = await upstream.content.read()
        half = len(body) // 2
        await response.write(body[:half])
        await asyncio.sleep(SLOW_PAUSE)
        await response.write(body[half:])
        await response.write_eof()
        return response
    finally:
        upstream.close()


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    with docker_registry(tmp_path_factory.mktemp("upstream")) as registry:
        yield registry


@pytest.fixture(scope="module")
def proxy(upstream: DockerRegistry) -> Iterator[UpstreamProxy]:
    with UpstreamProxy(upstream.url) as running:
        running.faults["slow"] = _slow
        yield running


@pytest.fixture(scope="module")
def server(proxy: UpstreamProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Auth off: the raw-socket clients need no credentials, and cache rules are managed without them.
    running = cache_server(
        tmp_path_factory.mktemp("client-faults") / "data",
        workers=1,
        CARGOHOLD_AUTH="false",
        CARGOHOLD_LOG_LEVEL="INFO",
        CARGOHOLD_BODY_IDLE_TIMEOUT_SECONDS=str(BODY_IDLE),
    ).start()
    try:
        r = requests.post(f"{running.url}/api/v1/cache-rules", timeout=TIMEOUT, json={
            "name": "hub", "source": f"{proxy.host}/library/*", "target": "hub/*", "insecure": True,
        })
        assert r.status_code == 201, r.text
        yield running
    finally:
        running.stop()


class LogWindow:
    """The server log written since this window opened."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.start = len(server.log())

    def text(self) -> str:
        return self.server.log()[self.start:]

    def wait_for(self, needle: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while needle not in (text := self.text()):
            assert time.monotonic() < deadline, f"{needle!r} never logged; the log:\n{text}"
            time.sleep(0.1)
        return text

    def assert_quiet(self) -> None:
        text = self.text()
        assert " ERROR " not in text and "Traceback" not in text, text


def partial_request(server: Server, method: str, path: str, head: dict[str, str], body: bytes) -> socket.socket:
    """A connection that has sent the request line, ``head`` and ``body`` (less than ``Content-Length`` says)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {server.host}", *(f"{k}: {v}" for k, v in head.items()), "", ""]
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall("\r\n".join(lines).encode() + body)
    return sock


def session_path(server: Server, repo: str) -> str:
    r = requests.post(f"{server.url}/v2/{repo}/blobs/uploads/", timeout=TIMEOUT)
    assert r.status_code == 202, r.text
    return r.headers["Location"]


# ---- disconnects ----------------------------------------------------------------------------------


def test_client_gone_mid_body_is_an_info_line(server: Server) -> None:
    repo = f"gone/{uuid.uuid4().hex[:8]}"
    blob_head = {"Content-Type": "application/octet-stream", "Content-Length": str(4 * 1024 * KiB)}
    patch_path = session_path(server, repo)
    cases = [
        ("PATCH", patch_path, blob_head),
        ("PUT", f"{session_path(server, repo)}?digest=sha256:{'0' * 64}", blob_head),
        ("POST", f"/v2/{repo}/blobs/uploads/?digest=sha256:{'1' * 64}", blob_head),
        ("POST", "/api/v1/cache-rules", {"Content-Type": "application/json", "Content-Length": "4000"}),
    ]
    for method, path, head in cases:
        window = LogWindow(server)
        body = b'{"name": "half' if path.startswith("/api") else os.urandom(256 * KiB)
        sock = partial_request(server, method, path, head, body)
        time.sleep(0.3)  # the handler is reading the body now
        sock.close()
        window.wait_for(f"went away during {method} {path.split('?')[0]}")
        window.assert_quiet()
    # The interrupted chunk was cut back off: the session is still usable from where it was.
    r = requests.get(f"{server.url}{patch_path}", timeout=TIMEOUT)
    assert r.status_code == 204 and r.headers["Range"] == "0-0", (r.status_code, r.headers)


def test_a_request_aiohttp_cannot_parse_is_a_400_and_an_info_line(server: Server) -> None:
    """A request line or header over aiohttp's 8190 bytes: aiohttp answers 400 and logged an ERROR traceback."""
    for head in (f"GET /v2/_catalog?last={'a' * 9000} HTTP/1.1\r\n", f"GET /v2/ HTTP/1.1\r\nX-Big: {'b' * 9000}\r\n"):
        window = LogWindow(server)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"{head}Host: {server.host}\r\nConnection: close\r\n\r\n".encode())
            answer = sock.recv(65536)
        assert answer.split(b" ", 2)[1] == b"400", answer[:200]
        window.wait_for("INFO [")
        window.wait_for("LineTooLong")
        window.assert_quiet()


def test_client_gone_mid_fill_is_an_info_line(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    name = f"f{uuid.uuid4().hex[:10]}"
    data = os.urandom(1024 * KiB)
    digest = push_upstream_blob(upstream.url, f"library/{name}", data)
    proxy.fail("slow", kind="blob", repo=f"library/{name}")
    try:
        window = LogWindow(server)
        sock = partial_request(server, "GET", f"/v2/hub/{name}/blobs/{digest}", {}, b"")
        received = b""
        while b"\r\n\r\n" not in received or len(received) < 64 * KiB:
            chunk = sock.recv(64 * KiB)
            assert chunk, received[:200]
            received += chunk
        assert received.startswith(b"HTTP/1.1 200"), received[:200]
        sock.close()  # half-way through a fill that is still running
        window.wait_for(f"went away during GET /v2/hub/{name}/blobs/{digest}")
        # The fill itself carries on for whoever asks next.
        r = requests.get(f"{server.url}/v2/hub/{name}/blobs/{digest}", timeout=TIMEOUT)
        assert r.status_code == 200 and digest_of(r.content) == digest
        window.assert_quiet()
    finally:
        proxy.clear_fault()


# ---- stalls ---------------------------------------------------------------------------------------


def read_answer(sock: socket.socket, timeout: float = 20.0) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection (or ``timeout``); and whether it closed."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except socket.timeout:
        return received, False
    return received, True


@pytest.mark.parametrize("where", ["v2-patch", "v2-monolithic", "api-json"])
def test_a_stalled_body_is_cut_off_with_408(server: Server, where: str) -> None:
    repo = f"stall/{uuid.uuid4().hex[:8]}"
    blob_head = {"Content-Type": "application/octet-stream", "Content-Length": str(1024 * KiB)}
    if where == "v2-patch":
        path, head, body = session_path(server, repo), blob_head, os.urandom(64 * KiB)
    elif where == "v2-monolithic":
        path, head, body = f"/v2/{repo}/blobs/uploads/?digest=sha256:{'2' * 64}", blob_head, os.urandom(64 * KiB)
    else:
        path, head, body = "/api/v1/cache-rules", {"Content-Type": "application/json", "Content-Length": "4000"}, b'{"na'
    window = LogWindow(server)
    started = time.monotonic()
    with partial_request(server, "PATCH" if where == "v2-patch" else "POST", path, head, body) as sock:
        answer, closed = read_answer(sock)
    waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert closed, "the connection must be closed after the 408"
    assert waited >= BODY_IDLE * 0.9, waited  # not before the timeout
    head_part, _, payload = answer.partition(b"\r\n\r\n")
    if where == "api-json":
        assert b"application/problem+json" in head_part and b'"code": "REQUEST_TIMEOUT"' in payload, answer
    else:
        assert b'"code": "REQUEST_TIMEOUT"' in payload, answer
    window.wait_for("sent no body bytes for")
    window.assert_quiet()
    if where == "v2-patch":
        # The stalled chunk was cut back off; the session goes on from where it was.
        r = requests.get(f"{server.url}{path}", timeout=TIMEOUT)
        assert r.status_code == 204 and r.headers["Range"] == "0-0", (r.status_code, r.headers)


def test_a_slow_but_steady_body_is_not_cut_off(server: Server) -> None:
    """Bytes that keep coming, each gap shorter than the timeout, make a whole upload however long it takes."""
    repo = f"steady/{uuid.uuid4().hex[:8]}"
    pieces = [os.urandom(8 * KiB) for _ in range(4)]
    data = b"".join(pieces)
    path = f"{session_path(server, repo)}?digest={digest_of(data)}"
    head = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
    with partial_request(server, "PUT", path, head, pieces[0]) as sock:
        for piece in pieces[1:]:
            time.sleep(BODY_IDLE * 0.6)
            sock.sendall(piece)
        sock.settimeout(20)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
