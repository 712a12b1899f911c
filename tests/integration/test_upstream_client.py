"""The outbound registry client against real upstreams and an in-process fault injector.

Upstreams: CNCF Distribution anonymous and with htpasswd (Basic), cargohold itself
with auth on (the Docker token flow), and a small aiohttp server that answers
with 5xx, 429, truncated bodies, wrong bytes, redirects and stalls. Every
request goes through ``guarded_session`` (loopback is allowed explicitly).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web

from cargohold.upstream.client import (
    DEFAULT_ACCEPT,
    BlobResponse,
    Credentials,
    Endpoint,
    NullObserver,
    UpstreamClient,
    normalize_registry,
)
from cargohold.upstream.errors import (
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from cargohold.upstream.guard import PrivateTargetRefused
from cargohold.upstream.http import guarded_session
from cargohold.upstream.tokens import TokenCache
from ocihelpers import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, descriptor, digest_of, image_manifest, manifest_bytes
from servers import DockerRegistry, Server, free_port

pytestmark = pytest.mark.integration

USER, PASSWORD = "puller", "pa55-Secr3t-word"
FAST = {"backoff": 0.01}  # keep retrying tests quick


# ---- helpers ----------------------------------------------------------------------------------------


class Observer(NullObserver):
    """Everything the client reported."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, int | None]] = []
        self.bytes_in = 0
        self.ratelimits: list[tuple[int | None, int | None]] = []
        self.logins: list[tuple[bool, str | None]] = []

    def request(self, method: str, status: int | None) -> None:
        self.requests.append((method, status))

    def received(self, nbytes: int) -> None:
        self.bytes_in += nbytes

    def ratelimit(self, limit: int | None, remaining: int | None) -> None:
        self.ratelimits.append((limit, remaining))

    def login(self, ok: bool, error: str | None) -> None:
        self.logins.append((ok, error))

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.requests if m == method)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with guarded_session(allow_private=True) as s:
        yield s


def make_client(session: aiohttp.ClientSession, host: str, credentials: Credentials | None = None, **options: Any) -> tuple[UpstreamClient, Observer]:
    observer = Observer()
    client = UpstreamClient(session, Endpoint(host, insecure=True), credentials, observer=observer, **{**FAST, **options})
    return client, observer


def unique_repo(prefix: str = "up") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


@dataclass
class Pushed:
    digest: str
    body: bytes
    layer: bytes


def push_blob(http: requests.Session, url: str, repo: str, data: bytes) -> str:
    digest = digest_of(data)
    r = http.post(f"{url}/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"}, timeout=30)
    assert r.status_code == 202, (r.status_code, r.text)
    location = requests.compat.urljoin(r.url, r.headers["Location"])
    r = http.put(f"{location}{'&' if '?' in location else '?'}digest={digest}", data=data, headers={"Content-Type": "application/octet-stream"}, timeout=30)
    assert r.status_code == 201, (r.status_code, r.text)
    return digest


def push_image(url: str, repo: str, tags: tuple[str, ...] = ("v1",), auth: tuple[str, str] | None = None, layer_size: int = 4096) -> Pushed:
    """A small random OCI image, pushed with ``requests`` (Basic-authenticated when ``auth`` is given)."""
    http = requests.Session()
    http.auth = auth
    config = json.dumps({"architecture": "amd64", "os": "linux", "salt": uuid.uuid4().hex}).encode()
    layer = os.urandom(layer_size)
    push_blob(http, url, repo, config)
    push_blob(http, url, repo, layer)
    body = manifest_bytes(image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)]))
    digest = digest_of(body)
    for reference in (digest, *tags):
        r = http.put(f"{url}/v2/{repo}/manifests/{reference}", data=body, headers={"Content-Type": OCI_MANIFEST}, timeout=30)
        assert r.status_code == 201, (r.status_code, r.text)
    return Pushed(digest, body, layer)


async def read_all(blob: BlobResponse) -> bytes:
    return b"".join([chunk async for chunk in blob.chunks])


# ---- pure parts -------------------------------------------------------------------------------------


def test_endpoint_urls() -> None:
    assert Endpoint("docker.io").base_url == "https://registry-1.docker.io"
    assert Endpoint("index.docker.io") == Endpoint("docker.io") == Endpoint("registry-1.docker.io")
    assert Endpoint("ghcr.io").base_url == "https://ghcr.io"
    assert Endpoint("localhost:5001", insecure=True).base_url == "http://localhost:5001"
    assert Endpoint("127.0.0.1:5001").base_url == "https://127.0.0.1:5001"
    assert Endpoint("[::1]:5000", insecure=True).base_url == "http://[::1]:5000"
    assert normalize_registry("Index.Docker.IO") == "docker.io"
    assert normalize_registry("quay.io") == "quay.io"
    for bad in ("evil.com/path", "user@host", "host:port", "", "a b", "https://x"):
        with pytest.raises(ValueError):
            Endpoint(bad)


def test_secrets_stay_out_of_reprs() -> None:
    credentials = Credentials(USER, PASSWORD)
    assert PASSWORD not in repr(credentials) and PASSWORD not in str(credentials)
    assert DEFAULT_ACCEPT[:4] == (OCI_INDEX, OCI_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json")


async def test_docker_hub_official_images_get_library_prefix(session: aiohttp.ClientSession) -> None:
    client = UpstreamClient(session, Endpoint("docker.io"))
    assert client._repository("alpine") == "library/alpine"
    assert client._repository("bitnami/redis") == "bitnami/redis"


# ---- CNCF Distribution, anonymous -------------------------------------------------------------------


async def test_distribution_manifests(session: aiohttp.ClientSession, docker_registry: DockerRegistry) -> None:
    repo = unique_repo()
    pushed = push_image(docker_registry.url, repo)
    client, observer = make_client(session, docker_registry.host)

    head = await client.head_manifest(repo, "v1")
    assert (head.digest, head.media_type, head.size) == (pushed.digest, OCI_MANIFEST, len(pushed.body))
    assert observer.requests == [("HEAD", 200)]

    by_tag = await client.get_manifest(repo, "v1")
    by_digest = await client.get_manifest(repo, pushed.digest)
    for fetched in (by_tag, by_digest):
        assert (fetched.body, fetched.digest, fetched.media_type) == (pushed.body, pushed.digest, OCI_MANIFEST)
    assert observer.bytes_in == 2 * len(pushed.body)
    assert (await client.head_manifest(repo, pushed.digest)).digest == pushed.digest

    with pytest.raises(UpstreamProtocolError):
        await client.get_manifest(repo, "v1", max_bytes=len(pushed.body) - 1)


async def test_distribution_blob_whole_and_from_offset(session: aiohttp.ClientSession, docker_registry: DockerRegistry) -> None:
    repo = unique_repo()
    pushed = push_image(docker_registry.url, repo, layer_size=300_000)
    digest = digest_of(pushed.layer)
    client, observer = make_client(session, docker_registry.host)

    async with client.blob(repo, digest) as blob:
        assert (blob.start, blob.size) == (0, len(pushed.layer))
        assert await read_all(blob) == pushed.layer
    async with client.blob(repo, digest, offset=123_456) as blob:
        assert (blob.start, blob.size) == (123_456, len(pushed.layer))
        assert await read_all(blob) == pushed.layer[123_456:]
    assert observer.bytes_in == len(pushed.layer) * 2 - 123_456

    # Leaving the block early closes the connection rather than returning a half-read one to the pool.
    async with client.blob(repo, digest) as blob:
        first = await blob.chunks.__anext__()
        assert first and pushed.layer.startswith(first)
    async with client.blob(repo, digest) as blob:
        assert await read_all(blob) == pushed.layer


async def test_distribution_not_found(session: aiohttp.ClientSession, docker_registry: DockerRegistry) -> None:
    repo = unique_repo()
    pushed = push_image(docker_registry.url, repo)
    client, observer = make_client(session, docker_registry.host)
    missing = digest_of(os.urandom(16))
    with pytest.raises(UpstreamNotFound):
        await client.head_manifest(repo, "nope")
    with pytest.raises(UpstreamNotFound) as caught:
        await client.get_manifest(repo, missing)
    assert caught.value.status == 404 and "MANIFEST_UNKNOWN" in str(caught.value)
    with pytest.raises(UpstreamNotFound):
        async with client.blob(repo, missing):
            pass
    with pytest.raises(UpstreamNotFound):
        await client.tags(unique_repo("never"))
    with pytest.raises(UpstreamNotFound):
        await client.get_manifest(unique_repo("never"), pushed.digest)
    assert all(status == 404 for _, status in observer.requests)  # 4xx are not retried


async def test_distribution_tags(session: aiohttp.ClientSession, docker_registry: DockerRegistry) -> None:
    repo = unique_repo()
    tags = ("a1", "b2", "c3", "d4", "e5")
    push_image(docker_registry.url, repo, tags=tags)
    client, observer = make_client(session, docker_registry.host)
    assert sorted(await client.tags(repo)) == list(tags)
    # Distribution 2.8 ignores ``n`` and sends no Link: one page (pagination is tested against cargohold).
    assert sorted(await client.tags(repo, page_size=2)) == list(tags)
    assert observer.requests == [("GET", 200), ("GET", 200)]


async def test_distribution_referrers_unsupported(session: aiohttp.ClientSession, docker_registry: DockerRegistry) -> None:
    """Distribution 2.8 predates the referrers API: the client says so with None (the caller falls back to tags)."""
    repo = unique_repo()
    pushed = push_image(docker_registry.url, repo)
    client, _ = make_client(session, docker_registry.host)
    assert await client.referrers(repo, pushed.digest) is None


# ---- CNCF Distribution with htpasswd (Basic) --------------------------------------------------------


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    root = tmp_path_factory.mktemp("basic-registry")
    htpasswd = root / "htpasswd"
    line = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True).stdout
    htpasswd.write_text(line.strip() + "\n")
    registry = DockerRegistry(root, htpasswd=htpasswd).start()
    try:
        yield registry
    finally:
        registry.stop()


async def test_basic_auth_with_the_right_credentials(session: aiohttp.ClientSession, basic_registry: DockerRegistry) -> None:
    repo = unique_repo()
    pushed = push_image(basic_registry.url, repo, auth=(USER, PASSWORD))
    client, observer = make_client(session, basic_registry.host, Credentials(USER, PASSWORD))

    assert (await client.head_manifest(repo, "v1")).digest == pushed.digest
    assert observer.requests == [("HEAD", 401), ("HEAD", 200)]
    assert observer.logins == [(True, None)]
    # Basic is now sent up front: one request per operation.
    assert (await client.get_manifest(repo, "v1")).body == pushed.body
    async with client.blob(repo, digest_of(pushed.layer)) as blob:
        assert await read_all(blob) == pushed.layer
    assert observer.requests[2:] == [("GET", 200), ("GET", 200)]
    assert observer.logins == [(True, None)]


async def test_basic_auth_with_wrong_or_no_credentials(session: aiohttp.ClientSession, basic_registry: DockerRegistry) -> None:
    repo = unique_repo()
    push_image(basic_registry.url, repo, auth=(USER, PASSWORD))

    wrong = "not-" + PASSWORD
    client, observer = make_client(session, basic_registry.host, Credentials(USER, wrong))
    with pytest.raises(UpstreamAuthFailed) as caught:
        await client.head_manifest(repo, "v1")
    assert observer.requests == [("HEAD", 401), ("HEAD", 401)]
    assert len(observer.logins) == 1 and observer.logins[0][0] is False
    for text in (str(caught.value), repr(caught.value), observer.logins[0][1] or ""):
        assert wrong not in text and PASSWORD not in text

    anonymous, observer = make_client(session, basic_registry.host)
    with pytest.raises(UpstreamAuthFailed) as caught:
        await anonymous.get_manifest(repo, "v1")
    assert "requires credentials" in str(caught.value)
    assert observer.requests == [("GET", 401)] and observer.logins == []


# ---- cargohold with auth on: the Docker token flow --------------------------------------------------


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(data_dir=tmp_path_factory.mktemp("cargohold-upstream") / "data", backend="sqlite", auth=True, workers=1).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def token_image(token_server: Server) -> tuple[str, Pushed]:
    repo = unique_repo()
    return repo, push_image(token_server.url, repo, tags=("v1", "v2", "v3"), auth=("admin", token_server.admin_password))


async def test_token_flow_and_token_cache(session: aiohttp.ClientSession, token_server: Server, token_image: tuple[str, Pushed]) -> None:
    repo, pushed = token_image
    client, observer = make_client(session, token_server.host, Credentials("admin", token_server.admin_password))

    assert (await client.head_manifest(repo, "v1")).digest == pushed.digest
    assert observer.requests == [("HEAD", 401), ("TOKEN", 200), ("HEAD", 200)]
    assert observer.logins == [(True, None)]

    # The token is cached: the next operations on the repository go straight to the registry.
    assert (await client.get_manifest(repo, pushed.digest)).body == pushed.body
    async with client.blob(repo, digest_of(pushed.layer)) as blob:
        assert await read_all(blob) == pushed.layer
    assert observer.requests[3:] == [("GET", 200), ("GET", 200)]
    assert await client.tags(repo) == ["v1", "v2", "v3"]
    before = observer.count("GET")
    assert await client.tags(repo, page_size=1) == ["v1", "v2", "v3"]  # Link pagination
    assert observer.count("GET") - before == 3
    assert observer.count("TOKEN") == 1 and observer.logins == [(True, None)]


async def test_token_fetch_is_single_flight(session: aiohttp.ClientSession, token_server: Server, token_image: tuple[str, Pushed]) -> None:
    repo, pushed = token_image
    client, observer = make_client(session, token_server.host, Credentials("admin", token_server.admin_password))
    heads = await asyncio.gather(*(client.head_manifest(repo, "v1") for _ in range(6)))
    assert {h.digest for h in heads} == {pushed.digest}
    assert observer.count("TOKEN") == 1
    assert observer.logins == [(True, None)]


async def test_token_flow_denies_anonymous_and_wrong_password(session: aiohttp.ClientSession, token_server: Server, token_image: tuple[str, Pushed]) -> None:
    repo, _ = token_image
    anonymous, observer = make_client(session, token_server.host)
    with pytest.raises(UpstreamAuthFailed):
        await anonymous.head_manifest(repo, "v1")
    # An anonymous token is issued, and it opens nothing: one challenge answered, then the refusal.
    assert observer.requests == [("HEAD", 401), ("TOKEN", 200), ("HEAD", 401)]
    assert observer.logins == []

    shared = TokenCache()
    good, _ = make_client(session, token_server.host, Credentials("admin", token_server.admin_password), tokens=shared)
    await good.head_manifest(repo, "v1")
    wrong_password = token_server.admin_password + "-wrong"
    bad, observer = make_client(session, token_server.host, Credentials("admin", wrong_password), tokens=shared)
    with pytest.raises(UpstreamAuthFailed) as caught:
        await bad.head_manifest(repo, "v1")  # the shared cache never hands it the good login's token
    assert observer.count("TOKEN") == 1 and observer.logins[0][0] is False
    for text in (str(caught.value), repr(caught.value), observer.logins[0][1] or ""):
        assert wrong_password not in text and token_server.admin_password not in text


# ---- the fault injector -----------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MANIFEST = manifest_bytes(image_manifest(descriptor(OCI_CONFIG, b"{}"), []))
MANIFEST_DIGEST = digest_of(MANIFEST)


@dataclass
class Fault:
    """A running fault server: ``hits`` counts requests per path, ``seen`` keeps their headers."""

    runner: web.AppRunner
    port: int
    hits: dict[str, int] = field(default_factory=dict)
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"


@pytest.fixture
async def fault() -> AsyncIterator[Callable[[dict[str, Handler]], Awaitable[Fault]]]:
    started: list[Fault] = []

    async def start(routes: dict[str, Handler]) -> Fault:
        """Serve ``routes`` ({path: handler}, any method); every request is counted first."""
        state: dict[str, Any] = {}

        @web.middleware
        async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
            server: Fault = state["server"]
            server.hits[request.path] = server.hits.get(request.path, 0) + 1
            server.seen.append((request.path, dict(request.headers)))
            return await handler(request)

        app = web.Application(middlewares=[count])
        for path, handler in routes.items():
            app.router.add_route("*", path, handler)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        server = Fault(runner, port)
        state["server"] = server
        started.append(server)
        return server

    yield start
    for server in started:
        await server.runner.cleanup()


def manifest_response(body: bytes = MANIFEST, digest: str | None = MANIFEST_DIGEST, headers: dict[str, str] | None = None) -> web.Response:
    all_headers = {"Content-Type": OCI_MANIFEST, **({"Docker-Content-Digest": digest} if digest else {}), **(headers or {})}
    return web.Response(body=body, headers=all_headers)


def sequence(*responses: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Handler:
    """A handler that answers the n-th request with the n-th handler (the last one repeats)."""
    calls = {"n": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        index = min(calls["n"], len(responses) - 1)
        calls["n"] += 1
        return await responses[index](request)

    return handler


def status(code: int, **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, text=f"status {code}", headers=headers)

    return handler


async def ok_manifest(request: web.Request) -> web.StreamResponse:
    return manifest_response()


async def test_503_twice_then_success(session: aiohttp.ClientSession, fault: Any) -> None:
    server = await fault({"/v2/r/manifests/v1": sequence(status(503), status(503), ok_manifest)})
    client, observer = make_client(session, server.host)
    assert (await client.get_manifest("r", "v1")).digest == MANIFEST_DIGEST
    assert observer.requests == [("GET", 503), ("GET", 503), ("GET", 200)]


async def test_always_500_gives_up_after_the_retries(session: aiohttp.ClientSession, fault: Any) -> None:
    server = await fault({"/v2/r/manifests/v1": status(500)})
    client, observer = make_client(session, server.host, retries=3)
    with pytest.raises(UpstreamUnavailable) as caught:
        await client.head_manifest("r", "v1")
    assert observer.requests == [("HEAD", 500)] * 4
    assert caught.value.status == 500


async def test_connection_refused_is_unavailable(session: aiohttp.ClientSession) -> None:
    client, observer = make_client(session, f"127.0.0.1:{free_port()}", retries=2)
    with pytest.raises(UpstreamUnavailable):
        await client.head_manifest("r", "v1")
    assert observer.requests == [("HEAD", None)] * 3


async def test_short_retry_after_is_waited_out(session: aiohttp.ClientSession, fault: Any) -> None:
    server = await fault({"/v2/r/manifests/v1": sequence(status(429, **{"Retry-After": "1"}), ok_manifest)})
    client, observer = make_client(session, server.host)
    started = time.monotonic()
    assert (await client.head_manifest("r", "v1")).digest == MANIFEST_DIGEST
    assert time.monotonic() - started >= 0.9
    assert observer.requests == [("HEAD", 429), ("HEAD", 200)]


async def test_long_retry_after_raises_rate_limited_at_once(session: aiohttp.ClientSession, fault: Any) -> None:
    server = await fault({"/v2/r/manifests/v1": status(429, **{"Retry-After": "120"})})
    client, observer = make_client(session, server.host)
    with pytest.raises(UpstreamRateLimited) as caught:
        await client.get_manifest("r", "v1")
    assert caught.value.retry_after == 120.0
    assert observer.requests == [("GET", 429)]


async def test_toomanyrequests_code_without_retry_after(session: aiohttp.ClientSession, fault: Any) -> None:
    async def denied(request: web.Request) -> web.StreamResponse:
        body = {"errors": [{"code": "TOOMANYREQUESTS", "message": "pull rate limit"}]}
        return web.json_response(body, status=403)

    server = await fault({"/v2/r/manifests/v1": denied})
    client, _ = make_client(session, server.host)
    with pytest.raises(UpstreamRateLimited) as caught:
        await client.get_manifest("r", "v1")
    assert caught.value.retry_after is None and "pull rate limit" in str(caught.value)


async def test_ratelimit_headers_are_recorded(session: aiohttp.ClientSession, fault: Any) -> None:
    async def limited(request: web.Request) -> web.StreamResponse:
        return manifest_response(headers={"RateLimit-Limit": "100;w=21600", "RateLimit-Remaining": "76;w=21600"})

    server = await fault({"/v2/r/manifests/v1": limited, "/v2/r/manifests/v2": ok_manifest})
    client, observer = make_client(session, server.host)
    await client.head_manifest("r", "v1")
    await client.head_manifest("r", "v2")
    assert observer.ratelimits == [(100, 76)]


async def test_connection_dropped_mid_blob(session: aiohttp.ClientSession, fault: Any) -> None:
    async def truncated(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100000", "Content-Type": "application/octet-stream"})
        await response.prepare(request)
        await response.write(b"x" * 1000)
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return response

    digest = digest_of(b"x" * 100000)
    server = await fault({f"/v2/r/blobs/{digest}": truncated})
    client, observer = make_client(session, server.host)
    received = b""
    with pytest.raises(UpstreamUnavailable) as caught:
        async with client.blob("r", digest) as blob:
            assert blob.size == 100000
            async for chunk in blob.chunks:
                received += chunk
    assert received == b"x" * 1000
    assert "broke off" in str(caught.value)
    assert observer.requests == [("GET", 200)]  # a broken body is the caller's to resume, with a Range request


async def test_manifest_body_dropped_is_retried(session: aiohttp.ClientSession, fault: Any) -> None:
    async def truncated(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(MANIFEST)), "Content-Type": OCI_MANIFEST})
        await response.prepare(request)
        await response.write(MANIFEST[:10])
        assert request.transport is not None
        request.transport.close()
        return response

    server = await fault({"/v2/r/manifests/v1": sequence(truncated, ok_manifest)})
    client, observer = make_client(session, server.host)
    assert (await client.get_manifest("r", "v1")).body == MANIFEST
    assert observer.requests == [("GET", 200), ("GET", 200)]


async def test_5xx_before_a_blob_body_is_retried_and_range_ignored_gives_start_0(session: aiohttp.ClientSession, fault: Any) -> None:
    data = os.urandom(5000)
    digest = digest_of(data)

    async def whole(request: web.Request) -> web.StreamResponse:
        return web.Response(body=data)  # ignores Range

    server = await fault({f"/v2/r/blobs/{digest}": sequence(status(502), whole)})
    client, observer = make_client(session, server.host)
    async with client.blob("r", digest, offset=1000) as blob:
        assert (blob.start, blob.size) == (0, len(data))
        assert await read_all(blob) == data
    assert observer.requests == [("GET", 502), ("GET", 200)]
    assert [headers.get("Range") for _, headers in server.seen] == ["bytes=1000-", "bytes=1000-"]


async def test_manifest_that_does_not_match_its_digest(session: aiohttp.ClientSession, fault: Any) -> None:
    other = MANIFEST + b" "

    async def wrong_bytes(request: web.Request) -> web.StreamResponse:
        return manifest_response(body=other, digest=None)

    async def lying_header(request: web.Request) -> web.StreamResponse:
        return manifest_response(body=other, digest=MANIFEST_DIGEST)

    async def no_digest(request: web.Request) -> web.StreamResponse:
        return manifest_response(digest=None)

    server = await fault(
        {f"/v2/r/manifests/{MANIFEST_DIGEST}": wrong_bytes, "/v2/r/manifests/v1": lying_header, "/v2/r/manifests/v2": no_digest}
    )
    client, observer = make_client(session, server.host)
    with pytest.raises(UpstreamProtocolError, match="hashes to"):
        await client.get_manifest("r", MANIFEST_DIGEST)
    with pytest.raises(UpstreamProtocolError, match="Docker-Content-Digest"):
        await client.get_manifest("r", "v1")
    with pytest.raises(UpstreamProtocolError, match="no Docker-Content-Digest"):
        await client.head_manifest("r", "v2")
    # A GET without the header is fine: the digest is computed from the bytes.
    assert (await client.get_manifest("r", "v2")).digest == MANIFEST_DIGEST
    assert observer.count("GET") == 3  # protocol errors are not retried


async def test_oversize_manifest(session: aiohttp.ClientSession, fault: Any) -> None:
    big = b"{" + b" " * 5000 + b"}"

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": OCI_MANIFEST})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(10):
            await response.write(big[:1000])
        return response

    async def declared(request: web.Request) -> web.StreamResponse:
        return manifest_response(body=big, digest=None)

    server = await fault({"/v2/r/manifests/v1": chunked, "/v2/r/manifests/v2": declared})
    client, _ = make_client(session, server.host)
    for tag in ("v1", "v2"):
        with pytest.raises(UpstreamProtocolError, match="limit"):
            await client.get_manifest("r", tag, max_bytes=4096)


async def test_stalled_read_times_out(session: aiohttp.ClientSession, fault: Any) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return manifest_response()

    server = await fault({"/v2/r/manifests/v1": stall})
    client, observer = make_client(session, server.host, timeout=0.2, retries=1)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        await client.head_manifest("r", "v1")
    assert time.monotonic() - started < 3
    assert observer.requests == [("HEAD", None), ("HEAD", None)]


async def test_guard_refusal_is_neither_wrapped_nor_retried(fault: Any) -> None:
    server = await fault({"/v2/r/manifests/v1": ok_manifest})
    async with guarded_session(allow_private=False) as strict:
        client, observer = make_client(strict, server.host)
        with pytest.raises(PrivateTargetRefused):
            await client.head_manifest("r", "v1")
    assert server.hits == {} and observer.requests == []


def bearer_registry(realm: str, token: str = "tok-1", *, on_token: Handler | None = None) -> dict[str, Handler]:
    """A registry that wants ``Bearer <token>``, whose token service wants Basic USER:PASSWORD."""
    good_basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    async def manifest(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") == f"Bearer {token}":
            return manifest_response()
        challenge = f'Bearer realm="{realm}",service="fault",scope="repository:r:pull"'
        return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}, status=401, headers={"WWW-Authenticate": challenge})

    async def token_service(request: web.Request) -> web.StreamResponse:
        if on_token is not None:
            return await on_token(request)
        assert request.query.get("service") == "fault" and request.query.get("scope") == "repository:r:pull"
        if request.headers.get("Authorization") != good_basic:
            return web.json_response({"error": "invalid_grant", "error_description": f"bad login {request.headers.get('Authorization')}"}, status=401)
        return web.json_response({"token": token, "expires_in": 300})

    return {"/v2/r/manifests/v1": manifest, "/token": token_service}


async def test_bearer_token_service_on_another_host_and_errors_scrubbed(session: aiohttp.ClientSession, fault: Any) -> None:
    tokens = await fault({"/token": bearer_registry("unused")["/token"]})
    registry = await fault({"/v2/r/manifests/v1": bearer_registry(f"{tokens.url}/token")["/v2/r/manifests/v1"]})

    client, observer = make_client(session, registry.host, Credentials(USER, PASSWORD))
    assert (await client.head_manifest("r", "v1")).digest == MANIFEST_DIGEST
    assert observer.requests == [("HEAD", 401), ("TOKEN", 200), ("HEAD", 200)]
    assert observer.logins == [(True, None)]
    assert (await client.head_manifest("r", "v1")).digest == MANIFEST_DIGEST
    assert observer.count("TOKEN") == 1

    # The token service echoes the Authorization header it got: the message must not carry it.
    wrong = "not-" + PASSWORD
    client, observer = make_client(session, registry.host, Credentials(USER, wrong))
    with pytest.raises(UpstreamAuthFailed) as caught:
        await client.head_manifest("r", "v1")
    encoded = base64.b64encode(f"{USER}:{wrong}".encode()).decode()
    texts = [str(caught.value), repr(caught.value), observer.logins[0][1] or "", repr(client)]
    assert "invalid_grant" in texts[0]
    for text in texts:
        assert wrong not in text and encoded not in text


async def test_bad_token_answers(session: aiohttp.ClientSession, fault: Any) -> None:
    async def not_json(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>oops</html>", content_type="text/html")

    tokens = await fault({"/token": not_json})
    registry = await fault({"/v2/r/manifests/v1": bearer_registry(f"{tokens.url}/token")["/v2/r/manifests/v1"]})
    client, observer = make_client(session, registry.host)
    with pytest.raises(UpstreamProtocolError, match="JSON"):
        await client.head_manifest("r", "v1")
    assert observer.requests == [("HEAD", 401), ("TOKEN", 200)]

    flaky = await fault({"/token": sequence(status(503), bearer_registry("x")["/token"])})
    registry = await fault({"/v2/r/manifests/v1": bearer_registry(f"{flaky.url}/token")["/v2/r/manifests/v1"]})
    client, observer = make_client(session, registry.host, Credentials(USER, PASSWORD))
    assert (await client.head_manifest("r", "v1")).digest == MANIFEST_DIGEST
    assert observer.requests == [("HEAD", 401), ("TOKEN", 503), ("TOKEN", 200), ("HEAD", 200)]


async def test_redirected_blob_does_not_carry_the_registry_credentials(session: aiohttp.ClientSession, fault: Any) -> None:
    data = os.urandom(20_000)
    digest = digest_of(data)

    async def cdn_blob(request: web.Request) -> web.StreamResponse:
        return web.Response(body=data)

    cdn = await fault({"/blob": cdn_blob})
    good_basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    async def registry_blob(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != good_basic:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="fault"'})
        raise web.HTTPTemporaryRedirect(f"{cdn.url}/blob?X-Amz-Signature=abc")

    registry = await fault({f"/v2/r/blobs/{digest}": registry_blob})
    client, observer = make_client(session, registry.host, Credentials(USER, PASSWORD))
    async with client.blob("r", digest) as blob:
        assert await read_all(blob) == data
    assert observer.requests == [("GET", 401), ("GET", 307), ("GET", 200)]
    assert [h.get("Authorization") for _, h in registry.seen] == [None, good_basic]
    assert [h.get("Authorization") for _, h in cdn.seen] == [None]


async def test_unexpected_statuses_are_plain_upstream_errors(session: aiohttp.ClientSession, fault: Any) -> None:
    server = await fault({"/v2/r/manifests/v1": status(400), "/v2/r/manifests/v2": status(403)})
    client, observer = make_client(session, server.host)
    with pytest.raises(UpstreamError) as caught:
        await client.get_manifest("r", "v1")
    assert type(caught.value) is UpstreamError and caught.value.status == 400
    with pytest.raises(UpstreamAuthFailed):
        await client.get_manifest("r", "v2")
    assert observer.requests == [("GET", 400), ("GET", 403)]


async def test_referrers_api_and_pagination(session: aiohttp.ClientSession, fault: Any) -> None:
    subject = digest_of(b"subject")
    pages = [
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest_of(b"a"), "size": 1}]},
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest_of(b"b"), "size": 1}]},
    ]

    async def referrers(request: web.Request) -> web.StreamResponse:
        page = int(request.query.get("page", "0"))
        headers = {"Link": f'</v2/r/referrers/{subject}?page=1>; rel="next"'} if page == 0 else {}
        return web.Response(body=json.dumps(pages[page]).encode(), content_type=OCI_INDEX, headers=headers)

    async def single(request: web.Request) -> web.StreamResponse:
        return web.Response(body=json.dumps(pages[0]).encode(), content_type=OCI_INDEX)

    server = await fault({f"/v2/r/referrers/{subject}": referrers, f"/v2/s/referrers/{subject}": single})
    client, _ = make_client(session, server.host)
    merged = json.loads(await client.referrers("r", subject) or b"")
    assert [m["digest"] for m in merged["manifests"]] == [digest_of(b"a"), digest_of(b"b")]
    assert await client.referrers("s", subject) == json.dumps(pages[0]).encode()  # one page: the bytes as served
    assert await client.referrers("t", subject) is None  # 404: no referrers API


async def test_a_token_echoed_by_the_registry_is_scrubbed(session: aiohttp.ClientSession, fault: Any) -> None:
    token = "tok-" + uuid.uuid4().hex
    tokens = await fault({"/token": bearer_registry("unused", token)["/token"]})

    async def echo(request: web.Request) -> web.StreamResponse:
        challenge = f'Bearer realm="{tokens.url}/token",service="fault",error="insufficient_scope"'
        message = f"you sent {request.headers.get('Authorization')}"
        return web.json_response({"errors": [{"code": "DENIED", "message": message}]}, status=401, headers={"WWW-Authenticate": challenge})

    registry = await fault({"/v2/r/manifests/v1": echo})
    client, observer = make_client(session, registry.host, Credentials(USER, PASSWORD))
    with pytest.raises(UpstreamAuthFailed) as caught:
        await client.get_manifest("r", "v1")
    assert observer.requests == [("GET", 401), ("TOKEN", 200), ("GET", 401)]
    assert "you sent Bearer ***" in str(caught.value)
    assert token not in str(caught.value) and token not in repr(caught.value)
