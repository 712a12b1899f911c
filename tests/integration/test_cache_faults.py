"""The pull-through cache when its upstream misbehaves: no corrupt or partial blob, ever.

A fault-injecting proxy (``upstream_proxy.py``) sits between cargohold and a
docker-registry upstream. DESIGN.md's promises, checked here:

- a cold blob pull whose upstream download breaks — truncated, wrong bytes,
  a 5xx, a 429, a stall past the upstream timeout, a dropped connection —
  never leaves a corrupt or partial blob: the client gets an error, or a body
  that is cut short and does not hash to the digest (never a complete wrong
  body); nothing under ``<data-dir>/blobs`` has the wrong content; and the
  next pull, once the upstream behaves, gets the right bytes;
- manifests: a 429 on an uncached tag is passed on (``TOOMANYREQUESTS`` with
  ``Retry-After``); an upstream failing on a cached tag whose TTL ran out
  serves the cached copy, labelled STALE;
- ``kill -9`` of the server in the middle of a slow fill, restart, pull again:
  the right bytes (resumed or restarted), and ``cargohold fsck`` is clean.

The server runs with a 1-second upstream timeout and one retry, so that each
fault costs a few seconds at most.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web
from cachehelpers import (
    blob_files,
    cache_server,
    docker_registry,
    push_upstream_manifest,
    random_config,
)
from ocihelpers import OCI_MANIFEST, digest_of
from servers import DockerRegistry, Server
from upstream_proxy import Seen, UpstreamProxy, _Dropped, abort, hang_up, oci_error

TIMEOUT = (5, 30)  # connect, read: nothing here may hang
KiB, MiB = 1024, 1024 * 1024
UPSTREAM_TIMEOUT = 1  # CARGOHOLD_UPSTREAM_TIMEOUT_SECONDS
WITHHOLD = 64 * KiB  # what a fill keeps back until the digest checks out (cache/fill.py)
ACCEPT = f"{OCI_MANIFEST}, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- the setting --------------------------------------------------------------------------------


@dataclass
class Image:
    name: str  # upstream library/<name>
    tag: str
    digest: str
    body: bytes
    config: bytes
    layers: list[bytes]

    def local(self, namespace: str = "hub") -> str:
        return f"{namespace}/{self.name}"

    @property
    def upstream_repo(self) -> str:
        return f"library/{self.name}"

    @property
    def blobs(self) -> dict[str, bytes]:
        return {digest_of(b): b for b in [self.config, *self.layers]}


def push_upstream(upstream: DockerRegistry, layers: tuple[int, ...] = (512 * KiB,), tag: str = "1") -> Image:
    """A random image in the upstream (pushed directly, not through the proxy)."""
    name = f"f{uuid.uuid4().hex[:10]}"
    config = random_config()
    contents = [os.urandom(n) for n in layers]
    body = push_upstream_manifest(upstream.url, f"library/{name}", tag, config, contents)
    return Image(name, tag, sha256(body), body, config, contents)


@dataclass
class Pulled:
    """One blob GET as the client saw it."""

    status: int
    cache: str | None
    body: bytes
    error: str | None  # the transport error that cut the body short, if any
    json: Any = None


class Cache:
    def __init__(self, server: Server, proxy: UpstreamProxy) -> None:
        self.server = server
        self.proxy = proxy
        self.http = requests.Session()
        self.http.auth = ("admin", server.admin_password)

    @property
    def url(self) -> str:
        return self.server.url

    def add_rules(self) -> None:
        for name, source, target, ttl in (("hub", "library", "hub", 3600), ("short", "library", "short", 1)):
            r = self.http.post(f"{self.url}/api/v1/cache-rules", timeout=TIMEOUT, json={
                "name": name, "source": f"{self.proxy.host}/{source}/*", "target": f"{target}/*", "insecure": True,
                "tag_ttl_seconds": ttl,
            })
            assert r.status_code == 201, (r.status_code, r.text)

    def manifest(self, repo: str, reference: str) -> requests.Response:
        return self.http.get(f"{self.url}/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT}, timeout=TIMEOUT)

    def blob(self, repo: str, digest: str) -> Pulled:
        """GET a blob and read what comes, until the end or until the connection breaks."""
        body = bytearray()
        error = None
        with self.http.get(f"{self.url}/v2/{repo}/blobs/{digest}", stream=True, timeout=TIMEOUT) as r:
            try:
                for chunk in r.raw.stream(64 * KiB, decode_content=False):
                    body.extend(chunk)
            except Exception as exc:  # noqa: BLE001 - the point: how the body ended
                error = f"{type(exc).__name__}: {exc}"
            doc = None
            if r.status_code != 200:
                try:
                    doc = json.loads(bytes(body))
                except ValueError:
                    pass
            return Pulled(r.status_code, r.headers.get("X-Cache"), bytes(body), error, doc)


def stored_blob(data_dir: Path, digest: str, timeout: float = 10.0) -> Path:
    """The published file of ``digest``. A client gets the last bytes once they are verified, which is
    just before the blob is made durable and renamed into the store: allow that a moment."""
    deadline = time.monotonic() + timeout
    while (path := blob_files(data_dir).get(digest)) is None:
        assert time.monotonic() < deadline, f"{digest} was never published"
        time.sleep(0.02)
    return path


def assert_store_intact(data_dir: Path) -> None:
    """Every file in the blob store hashes to its name."""
    for digest, path in blob_files(data_dir).items():
        algorithm, _, hex_ = digest.partition(":")
        actual = hashlib.new(algorithm, path.read_bytes()).hexdigest()
        assert actual == hex_, f"{path}: content hashes to {algorithm}:{actual}"


def wait_no_partial(data_dir: Path, digest: str, timeout: float = 10) -> None:
    """An aborted fill removes its partial file (and size sidecar)."""
    algorithm, _, hex_ = digest.partition(":")
    deadline = time.monotonic() + timeout
    leftovers: list[Path] = []
    while time.monotonic() < deadline:
        leftovers = [p for p in (data_dir / "fills" / algorithm).glob(f"{hex_}*")]
        if not leftovers:
            return
        time.sleep(0.1)
    raise AssertionError(f"fill leftovers: {leftovers}")


def assert_not_corrupt(pulled: Pulled, digest: str, data: bytes) -> None:
    """The central promise: an error, or a cut-short body that does not verify and stops short of the end.

    (The fill streams bytes before it can verify them, so the prefix may hold wrong bytes; what it
    keeps back until the digest checks out is the last ``WITHHOLD`` bytes, so the response is aborted
    before its Content-Length is reached and no client takes it for a whole blob.)
    """
    if pulled.status == 200:
        assert pulled.body != data or pulled.error is None, "complete body but the transfer reported an error"
        assert pulled.body != data, "a failed fill must not deliver the whole blob"
        assert sha256(pulled.body) != digest
        assert len(pulled.body) < len(data), f"{len(pulled.body)} bytes of a {len(data)}-byte blob"
        assert len(pulled.body) <= max(0, len(data) - WITHHOLD), "the fill must withhold the last bytes until verified"
    else:
        assert 400 <= pulled.status < 600, pulled
        assert pulled.json and pulled.json.get("errors"), pulled


# ---- faults of our own (upstream_proxy.py takes new modes) ---------------------------------------


async def _prepare_relay(proxy: UpstreamProxy, seen: Seen, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    """A response with the upstream's status, headers and length, its headers sent; the body is the caller's."""
    assert seen.request is not None
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=proxy.response_headers(upstream))
    if upstream.content_length is not None:
        response.content_length = upstream.content_length
    seen.status = upstream.status
    await response.prepare(seen.request)
    return response


async def _stall_mid(proxy: UpstreamProxy, seen: Seen, arg: Any) -> web.StreamResponse:
    """The upstream's headers and half its body, then nothing for ``proxy.stall_seconds``, then the connection drops."""
    request = seen.request
    assert request is not None
    if seen.method == "HEAD":
        return await proxy.forward(seen)
    try:
        upstream = await proxy.open_upstream(seen)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return oci_error(502, "UNAVAILABLE", f"proxy: {exc}")
    try:
        response = await _prepare_relay(proxy, seen, upstream)
        half = (upstream.content_length or 0) // 2
        sent = 0
        while sent < half:
            chunk = await upstream.content.read(min(32 * KiB, half - sent))
            if not chunk:
                break
            await response.write(chunk)
            sent += len(chunk)
        await asyncio.sleep(float(arg or proxy.stall_seconds))
        abort(request)
        return _Dropped()
    finally:
        upstream.close()


# ---- fixtures -----------------------------------------------------------------------------------


def _server(data_dir: Path, workers: int = 1, **env: str) -> Server:
    return cache_server(
        data_dir,
        workers,
        CARGOHOLD_UPSTREAM_TIMEOUT_SECONDS=str(UPSTREAM_TIMEOUT),
        CARGOHOLD_UPSTREAM_RETRIES="1",
        **env,
    )


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    with docker_registry(tmp_path_factory.mktemp("upstream")) as registry:
        yield registry


@pytest.fixture(scope="module")
def proxy(upstream: DockerRegistry) -> Iterator[UpstreamProxy]:
    # A stall outlasts cargohold's 1-second upstream timeout, but not the tests.
    with UpstreamProxy(upstream.url, stall_seconds=4 * UPSTREAM_TIMEOUT) as running:
        running.faults["stall-mid"] = _stall_mid
        yield running


@pytest.fixture(scope="module")
def module_cache(proxy: UpstreamProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    # Two workers: requesters of one blob meet in different processes, as in production.
    server = _server(tmp_path_factory.mktemp("cargohold-faults") / "data", workers=2).start()
    try:
        running = Cache(server, proxy)
        running.add_rules()
        yield running
    finally:
        server.stop()


@pytest.fixture
def cache(module_cache: Cache) -> Cache:
    """The module's server, running (the kill and fsck tests stop it)."""
    server = module_cache.server
    if server.proc is None or server.proc.poll() is not None:
        server.start()
        module_cache.http.auth = ("admin", server.admin_password)
    return module_cache


@pytest.fixture(autouse=True)
def no_fault(proxy: UpstreamProxy) -> Iterator[None]:
    proxy.clear_fault()
    proxy.faults.pop("slow", None)
    yield
    proxy.clear_fault()


# ---- blob faults --------------------------------------------------------------------------------

# (mode, the status the client may see). 200: the response had started when the fill failed (its body is
# cut short); 502 when the fill failed before (a small blob is all downloaded, and found wrong, at once).
BLOB_FAULTS = [
    pytest.param("truncate", (200, 502), id="truncated-body"),
    pytest.param("wrong-bytes", (200, 502), id="wrong-bytes-same-length"),
    pytest.param("500-mid", (502,), id="500-before-body"),
    pytest.param(("429", 30), (429,), id="429-retry-after"),
    pytest.param("stall", (502, 504), id="stall-past-timeout"),
    pytest.param("stall-mid", (200, 502), id="stall-mid-body"),
    pytest.param("down", (502,), id="connection-dropped"),
]


@pytest.mark.parametrize(("mode", "statuses"), BLOB_FAULTS)
@pytest.mark.parametrize("size", [512 * KiB, 16 * KiB], ids=["large", "small"])
def test_blob_fault_never_leaves_a_corrupt_blob(cache: Cache, upstream: DockerRegistry, mode: Any, statuses: tuple[int, ...],
                                                size: int) -> None:
    image = push_upstream(upstream, layers=(size,))
    repo = image.local()
    assert cache.manifest(repo, image.tag).status_code == 200
    layer = image.layers[0]
    digest = digest_of(layer)

    cache.proxy.fail(mode, kind="blob", repo=image.upstream_repo)  # every attempt, every retry
    started = time.monotonic()
    pulled = cache.blob(repo, digest)
    elapsed = time.monotonic() - started
    assert pulled.status in statuses, (pulled.status, pulled.json, pulled.error)
    assert_not_corrupt(pulled, digest, layer)
    if pulled.status == 200 and mode != "wrong-bytes":
        assert layer.startswith(pulled.body), "only the upstream's own bytes, in order"
    assert elapsed < 20, f"the fault took {elapsed:.1f} s to surface"
    assert cache.proxy.counts("GET", "blob", image.upstream_repo) >= 1
    if mode == ("429", 30):
        assert pulled.json["errors"][0]["code"] == "TOOMANYREQUESTS"
    elif pulled.status != 200:
        assert pulled.json["errors"][0]["code"] == "UPSTREAM_UNAVAILABLE", pulled.json

    data_dir = cache.server.data_dir
    wait_no_partial(data_dir, digest)
    assert digest not in blob_files(data_dir)
    assert_store_intact(data_dir)
    # Nothing of the failed fill is linked: a HEAD does not answer from the store (it is a MISS that asks upstream).

    cache.proxy.clear_fault()
    again = cache.blob(repo, digest)
    assert again.status == 200 and again.error is None and again.cache == "MISS", (again.status, again.error, again.json)
    assert again.body == layer
    hit = cache.blob(repo, digest)
    assert hit.status == 200 and hit.cache == "HIT" and hit.body == layer
    assert stored_blob(data_dir, digest).read_bytes() == layer


def test_truncated_download_resumes_with_a_range_request(cache: Cache, upstream: DockerRegistry) -> None:
    """One broken download is not a failure: the fill asks for the rest (Range) and the client gets it all,
    streamed without a gap."""
    image = push_upstream(upstream, layers=(768 * KiB,))
    repo, layer = image.local(), image.layers[0]
    digest = digest_of(layer)
    assert cache.manifest(repo, image.tag).status_code == 200
    cache.proxy.reset()
    cache.proxy.fail("truncate", kind="blob", repo=image.upstream_repo, times=1)
    pulled = cache.blob(repo, digest)
    assert pulled.status == 200 and pulled.error is None and pulled.body == layer, (pulled.status, pulled.error, len(pulled.body))
    gets = cache.proxy.seen("GET", "blob", image.upstream_repo)
    assert len(gets) == 2, cache.proxy.summary()
    assert "Range" not in gets[0].headers
    # From where the first download broke off: at most the half the proxy sent (aiohttp drops what it had
    # buffered but not handed out when the connection breaks; nothing at all means a plain GET again).
    resumed = gets[1].headers.get("Range")
    if resumed is not None:
        start = int(resumed.removeprefix("bytes=").removesuffix("-"))
        assert 0 < start <= len(layer) // 2, resumed
    assert stored_blob(cache.server.data_dir, digest).read_bytes() == layer


def test_transient_500_is_retried(cache: Cache, upstream: DockerRegistry) -> None:
    image = push_upstream(upstream, layers=(128 * KiB,))
    repo, layer = image.local(), image.layers[0]
    assert cache.manifest(repo, image.tag).status_code == 200
    cache.proxy.fail("500-mid", kind="blob", repo=image.upstream_repo, times=1)
    pulled = cache.blob(repo, digest_of(layer))
    assert pulled.status == 200 and pulled.body == layer and pulled.cache == "MISS"


@pytest.mark.parametrize("size", [1 * MiB, 8 * KiB], ids=["large", "small"])
def test_concurrent_pulls_of_a_failing_blob_all_fail_cleanly(cache: Cache, upstream: DockerRegistry, size: int) -> None:
    """Requesters sharing one fill (in two workers) all see it abort: an error, or a body cut short; never the
    wrong bytes whole, never an internal server error."""
    image = push_upstream(upstream, layers=(size,))
    repo, layer = image.local(), image.layers[0]
    digest = digest_of(layer)
    assert cache.manifest(repo, image.tag).status_code == 200
    cache.proxy.fail("wrong-bytes", kind="blob", repo=image.upstream_repo)
    results: list[Pulled] = []

    def pull() -> None:
        results.append(cache.blob(repo, digest))

    threads = [threading.Thread(target=pull) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 4
    for pulled in results:
        assert pulled.status in (200, 502), (pulled.status, pulled.json)
        assert_not_corrupt(pulled, digest, layer)
    wait_no_partial(cache.server.data_dir, digest)
    assert digest not in blob_files(cache.server.data_dir)
    cache.proxy.clear_fault()
    assert cache.blob(repo, digest).body == layer


# ---- manifest faults ----------------------------------------------------------------------------


def test_429_on_an_uncached_tag_is_passed_on(cache: Cache, upstream: DockerRegistry) -> None:
    image = push_upstream(upstream)
    cache.proxy.fail(("429", 30), kind="manifest", method=None, repo=image.upstream_repo)
    r = cache.manifest(image.local(), image.tag)
    assert r.status_code == 429, (r.status_code, r.text)
    assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert r.headers.get("Retry-After") == "30"
    # A short Retry-After is waited out inline.
    cache.proxy.fail(("429", 1), kind="manifest", method=None, repo=image.upstream_repo, times=1)
    r = cache.manifest(image.local(), image.tag)
    assert r.status_code == 200 and r.content == image.body and r.headers.get("X-Cache") == "MISS"


@pytest.mark.parametrize("mode", ["500-mid", "stall", "down", ("429", 30)])
def test_failing_upstream_on_an_uncached_tag_is_an_error(cache: Cache, upstream: DockerRegistry, mode: Any) -> None:
    image = push_upstream(upstream)
    cache.proxy.fail(mode, kind="manifest", method=None, repo=image.upstream_repo)
    started = time.monotonic()
    r = cache.manifest(image.local(), image.tag)
    assert time.monotonic() - started < 20
    assert r.status_code in (429, 502, 504), (r.status_code, r.text)
    assert r.json()["errors"], r.text
    cache.proxy.clear_fault()
    r = cache.manifest(image.local(), image.tag)
    assert r.status_code == 200 and r.content == image.body


@pytest.mark.parametrize("mode", ["500-mid", "stall", "down", ("429", 30)])
def test_failing_upstream_after_ttl_serves_stale(cache: Cache, upstream: DockerRegistry, mode: Any) -> None:
    image = push_upstream(upstream)
    repo = image.local("short")  # the rule with a 1-second tag TTL
    r = cache.manifest(repo, image.tag)
    assert r.status_code == 200 and r.headers.get("X-Cache") == "MISS"
    time.sleep(1.2)
    cache.proxy.fail(mode, kind="manifest", method=None, repo=image.upstream_repo)
    started = time.monotonic()
    r = cache.manifest(repo, image.tag)
    assert time.monotonic() - started < 20
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers.get("X-Cache") == "STALE"
    assert r.content == image.body and r.headers.get("Docker-Content-Digest") == image.digest
    cache.proxy.clear_fault()
    r = cache.manifest(repo, image.tag)
    assert r.status_code == 200 and r.headers.get("X-Cache") == "REVALIDATED" and r.content == image.body


# ---- kill -9 mid-fill ---------------------------------------------------------------------------


async def _slow(proxy: UpstreamProxy, seen: Seen, arg: Any) -> web.StreamResponse:
    """The upstream's answer, ``arg`` bytes a second (in 32 KiB steps)."""
    request = seen.request
    assert request is not None
    rate = float(arg or 1 * MiB)
    try:
        upstream = await proxy.open_upstream(seen)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return oci_error(502, "UNAVAILABLE", f"proxy: {exc}")
    try:
        response = await _prepare_relay(proxy, seen, upstream)
        if request.method == "HEAD":
            await response.write_eof()
            return response
        step = 32 * KiB
        while True:
            chunk = await upstream.content.read(step)
            if not chunk:
                break
            await response.write(chunk)
            await asyncio.sleep(len(chunk) / rate)
        await response.write_eof()
        return response
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        hang_up(request)
        raise
    finally:
        upstream.close()


def test_kill_9_mid_fill_then_restart(cache: Cache, upstream: DockerRegistry) -> None:
    proxy, server = cache.proxy, cache.server
    proxy.faults["slow"] = _slow
    image = push_upstream(upstream, layers=(3 * MiB,))
    repo, layer = image.local(), image.layers[0]
    digest = digest_of(layer)
    algorithm, _, hex_ = digest.partition(":")
    assert cache.manifest(repo, image.tag).status_code == 200
    proxy.fail(("slow", 1 * MiB), kind="blob", repo=image.upstream_repo)  # about 3 s for the whole layer

    received = bytearray()
    with cache.http.get(f"{cache.url}/v2/{repo}/blobs/{digest}", stream=True, timeout=TIMEOUT) as r:
        assert r.status_code == 200 and r.headers.get("X-Cache") == "MISS"
        try:
            for chunk in r.raw.stream(32 * KiB, decode_content=False):
                received.extend(chunk)
                if len(received) >= 1 * MiB:
                    server.kill()
                    break
        except Exception as exc:  # noqa: BLE001 - whatever the kill did to the transfer
            print(f"the transfer ended with {type(exc).__name__} (expected: the server was killed)")
    assert server.proc is not None and server.proc.poll() is not None, "the server was not killed"
    assert 0 < len(received) < len(layer) and layer.startswith(bytes(received))
    part = server.data_dir / "fills" / algorithm / f"{hex_}.part"
    assert part.exists() and part.stat().st_size > 0, "the partial download should survive the kill"
    kept = part.stat().st_size
    assert layer.startswith(part.read_bytes())
    assert digest not in blob_files(server.data_dir)

    server.start()
    proxy.reset()
    pulled = cache.blob(repo, digest)  # still slow: the rest takes a few seconds
    assert pulled.status == 200 and pulled.error is None, (pulled.status, pulled.error, pulled.json)
    assert pulled.body == layer
    gets = proxy.seen("GET", "blob", image.upstream_repo)
    assert gets, proxy.summary()
    # The fill resumes from what the dead server had written (or starts over): either way, the right bytes.
    assert gets[0].headers.get("Range") in (None, f"bytes={kept}-"), [g.headers.get("Range") for g in gets]
    assert stored_blob(server.data_dir, digest).read_bytes() == layer
    assert not part.exists()
    hit = cache.blob(repo, digest)
    assert hit.status == 200 and hit.cache == "HIT" and hit.body == layer
    assert_store_intact(server.data_dir)


def test_head_of_an_uncached_blob_asks_the_upstream_with_head(cache: Cache, upstream: DockerRegistry) -> None:
    """A HEAD must not cost a download: the upstream sees a HEAD, nothing is stored or linked."""
    image = push_upstream(upstream, layers=(256 * KiB,), tag="head")
    repo, layer = image.local(), image.layers[0]
    digest = digest_of(layer)
    assert cache.manifest(repo, image.tag).status_code == 200
    cache.proxy.reset()
    r = cache.http.head(f"{cache.url}/v2/{repo}/blobs/{digest}", timeout=TIMEOUT)
    assert r.status_code == 200, r.status_code
    assert r.headers["Content-Length"] == str(len(layer)) and r.headers["Docker-Content-Digest"] == digest
    assert cache.proxy.counts("HEAD", "blob", image.upstream_repo) == 1, cache.proxy.summary()
    assert cache.proxy.counts("GET", "blob", image.upstream_repo) == 0, cache.proxy.summary()
    time.sleep(0.3)
    assert digest not in blob_files(cache.server.data_dir)
    missing = cache.http.head(f"{cache.url}/v2/{repo}/blobs/sha256:{'0' * 64}", timeout=TIMEOUT)
    assert missing.status_code == 404


def test_range_of_a_blob_being_filled_is_answered_206_from_the_partial_file(
    cache: Cache, upstream: DockerRegistry
) -> None:
    """A client resuming a layer while the cache still fills it gets its range at once, from the same fill."""
    proxy = cache.proxy
    proxy.faults["slow"] = _slow
    image = push_upstream(upstream, layers=(3 * MiB,), tag="range")
    repo, layer = image.local(), image.layers[0]
    digest = digest_of(layer)
    assert cache.manifest(repo, image.tag).status_code == 200
    proxy.reset()
    proxy.fail(("slow", 1 * MiB), kind="blob", repo=image.upstream_repo)  # about 3 s for the whole layer
    received = bytearray()
    with cache.http.get(f"{cache.url}/v2/{repo}/blobs/{digest}", stream=True, timeout=TIMEOUT) as first:
        assert first.status_code == 200 and first.headers.get("X-Cache") == "MISS"
        chunks = first.raw.stream(32 * KiB, decode_content=False)
        while len(received) < 512 * KiB:
            received.extend(next(chunks))
        # The fill is under way and far from done: ask for a range it already holds.
        partial = cache.http.get(
            f"{cache.url}/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=1024-65535"}, timeout=TIMEOUT
        )
        assert partial.status_code == 206, (partial.status_code, partial.text[:200])
        assert partial.headers["Content-Range"] == f"bytes 1024-65535/{len(layer)}"
        assert partial.content == layer[1024:65536]
        # A range that ends in the withheld tail comes once the digest has checked out.
        tail = cache.http.get(
            f"{cache.url}/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=-100"}, timeout=TIMEOUT
        )
        assert tail.status_code == 206 and tail.content == layer[-100:]
        for chunk in chunks:
            received.extend(chunk)
    assert bytes(received) == layer
    assert proxy.counts("GET", "blob", image.upstream_repo) == 1, proxy.summary()
    proxy.clear_fault()


# Last: it stops the module's server.
def test_fsck_is_clean_after_the_faults(cache: Cache) -> None:
    """Whatever the earlier tests left (aborted fills, a killed fill, stale tags), the stored data checks out."""
    server = cache.server
    server.stop()
    result = server.run_cli("fsck", "--data-dir", str(server.data_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert_store_intact(server.data_dir)
