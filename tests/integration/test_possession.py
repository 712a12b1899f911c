"""The possession rule, with the attacker in the test: naming a digest is not reading it.

The blob store is shared by every repository, so a registry that links a blob
because a source *names* it would hand another repository's private layer to
anyone who can point an import (or a cache rule) at a registry they control.
Here a victim pushes a private layer; an attacker with write access to their own
namespace runs a hostile source registry that serves a manifest naming that
layer's digest and answers its GET with wrong bytes, with nothing, or with a
200 and a Content-Length and no body. Nothing may be linked and the attacker
must never receive the private bytes. A legitimate import of a blob the caller
may already read still fetches nothing.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import requests
from aiohttp import web
from cachehelpers import cache_server, push_upstream_manifest, random_config
from importhelpers import api, make_robot, start_import
from ocihelpers import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, descriptor, digest_of, image_manifest, manifest_bytes, random_blob
from servers import Server, free_port

TIMEOUT = 60


class HostileSource:
    """A registry that serves one image whose layer is a digest it does not have.

    ``mode`` says how it answers a GET of that layer: ``wrong`` (200, the right length, other bytes),
    ``missing`` (404), ``empty`` (200 with the right Content-Length, then the connection closes),
    ``right`` (the real bytes: an honest source of the same content). HEADs always claim the blob.
    """

    def __init__(self, layer_digest: str, layer_size: int, real_layer: bytes | None = None) -> None:
        self.port = free_port()
        self.mode = "wrong"
        self.counts: Counter[tuple[str, str]] = Counter()
        self.config = random_config()
        self.layer_digest, self.layer_size, self.real_layer = layer_digest, layer_size, real_layer
        manifest = image_manifest(
            descriptor(OCI_CONFIG, self.config),
            [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_size}],
        )
        self.manifest = manifest_bytes(manifest)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> HostileSource:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/v2/", self._base)
        app.router.add_get("/v2/{name:.+}/manifests/{ref}", self._manifest)
        app.router.add_get("/v2/{name:.+}/blobs/{digest}", self._blob)
        app.router.add_get("/v2/{name:.+}/referrers/{digest}", self._no_referrers)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    async def _base(self, _: web.Request) -> web.Response:
        return web.json_response({})

    async def _no_referrers(self, _: web.Request) -> web.Response:
        return web.Response(status=404)

    async def _manifest(self, request: web.Request) -> web.Response:
        self.counts[(request.method, "manifest")] += 1
        ref = request.match_info["ref"]
        if ref.startswith("sha256-"):  # the referrers tag schema: none
            return web.Response(status=404)
        digest = digest_of(self.manifest)
        if ":" in ref and ref != digest:
            return web.Response(status=404)
        headers = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(self.manifest))})
        return web.Response(body=self.manifest, headers=headers)

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        self.counts[(request.method, "blob")] += 1
        if digest == digest_of(self.config):
            return web.Response(body=self.config)
        if digest != self.layer_digest:
            return web.Response(status=404)
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(self.layer_size)})
        if self.mode == "missing":
            return web.Response(status=404)
        if self.mode == "right":
            assert self.real_layer is not None
            return web.Response(body=self.real_layer)
        if self.mode == "wrong":
            return web.Response(body=random_blob(self.layer_size))
        response = web.StreamResponse(headers={"Content-Length": str(self.layer_size)})
        await response.prepare(request)
        assert request.transport is not None
        request.transport.close()
        return response


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with cache_server(tmp_path_factory.mktemp("possession") / "data", workers=1,
                      CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS="100000") as running:
        yield running


def admin_http(server: Server) -> requests.Session:
    http = requests.Session()
    http.auth = ("admin", server.admin_password)
    return http


def private_layer(server: Server) -> tuple[str, bytes]:
    """A victim's image in ``private/<random>`` whose layer nobody else may read; (repository, layer)."""
    repo = f"private/{uuid.uuid4().hex[:10]}"
    layer = random_blob(64 * 1024)
    push_upstream_manifest(server.url, repo, "1", random_config(), [layer], admin_http(server))
    return repo, layer


def attacker(server: Server) -> tuple[str, str]:
    """A robot that may read and write ``evil/*`` only."""
    return make_robot(server, [{"repository": "evil/*", "actions": ["content/read", "content/write"]}])


def blob_answer(server: Server, auth: tuple[str, str], repo: str, digest: str) -> requests.Response:
    return requests.get(f"{server.url}/v2/{repo}/blobs/{digest}", auth=auth, timeout=TIMEOUT)


@pytest.mark.parametrize("mode", ["wrong", "missing", "empty"])
def test_import_naming_a_private_blob_fails_and_links_nothing(server: Server, mode: str) -> None:
    _, layer = private_layer(server)
    digest = digest_of(layer)
    robot = attacker(server)
    target = f"evil/{uuid.uuid4().hex[:8]}"
    with HostileSource(digest, len(layer)) as source:
        source.mode = mode
        r = start_import(server, f"{source.host}/stolen:1", auth=robot, targets=[f"{target}:1"])
        assert source.counts[("GET", "blob")] >= 1  # the blob was asked for: its bytes are the only proof
    assert r.status_code in (404, 502), (r.status_code, r.text)
    body = r.json()
    assert body["code"] in ("SOURCE_FAILED", "SOURCE_NOT_FOUND"), body
    assert digest in body["detail"], body
    answer = blob_answer(server, robot, target, digest)
    assert answer.status_code == 404, answer.status_code
    assert layer not in answer.content
    assert requests.get(f"{server.url}/v2/{target}/manifests/1", auth=robot, timeout=TIMEOUT).status_code == 404


def test_cache_rule_over_a_hostile_upstream_never_serves_a_private_blob(server: Server) -> None:
    _, layer = private_layer(server)
    digest = digest_of(layer)
    namespace = f"mirror{uuid.uuid4().hex[:6]}"
    reader = make_robot(server, [{"repository": f"{namespace}/*", "actions": ["content/read"]}])
    with HostileSource(digest, len(layer)) as source:
        rule = {"name": namespace, "source": f"{source.host}/evil/*", "target": f"{namespace}/*", "insecure": True}
        created = api(server, "POST", "/cache-rules", json=rule)
        assert created.status_code == 201, created.text
        try:
            manifest = requests.get(f"{server.url}/v2/{namespace}/img/manifests/1", auth=reader, timeout=TIMEOUT)
            assert manifest.status_code == 200, manifest.text
            assert digest in manifest.text  # the hostile manifest names the private digest
            for mode in ("wrong", "missing", "empty"):
                source.mode = mode
                before = source.counts[("GET", "blob")]
                answer = blob_answer(server, reader, f"{namespace}/img", digest)
                assert answer.status_code in (404, 502), (mode, answer.status_code)
                assert layer not in answer.content, mode
                assert source.counts[("GET", "blob")] > before, mode  # asked the upstream for the bytes
                head = requests.head(f"{server.url}/v2/{namespace}/img/blobs/{digest}", auth=reader, timeout=TIMEOUT)
                assert head.headers.get("X-Cache") != "HIT", mode
            # An honest upstream of the same content: its bytes prove it, and the blob is served.
            source.mode = "right"
            source.real_layer = layer
            answer = blob_answer(server, reader, f"{namespace}/img", digest)
            assert answer.status_code == 200 and answer.content == layer
        finally:
            api(server, "DELETE", f"/cache-rules/{namespace}")


def test_import_of_a_blob_the_caller_may_read_fetches_nothing(server: Server) -> None:
    repo = f"team/{uuid.uuid4().hex[:8]}"
    layer = random_blob(32 * 1024)
    config = random_config()
    http = admin_http(server)
    push_upstream_manifest(server.url, repo, "1", config, [layer], http)
    reader = make_robot(server, [{"repository": "team/*", "actions": ["content/read", "content/write"]}])
    with HostileSource(digest_of(layer), len(layer), real_layer=layer) as source:
        source.config = config  # same config too: both blobs are readable in team/*
        source.manifest = manifest_bytes(
            image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)])
        )
        target = f"team/{uuid.uuid4().hex[:8]}"
        r = start_import(server, f"{source.host}/same:1", auth=reader, targets=[f"{target}:1"])
        assert r.status_code == 201, r.text
        assert source.counts[("GET", "blob")] == 0
        assert r.json()["bytes_done"] == 0
    answer = blob_answer(server, reader, target, digest_of(layer))
    assert answer.status_code == 200 and answer.content == layer


def test_cross_repository_mount_needs_read_on_the_source(server: Server) -> None:
    repo, layer = private_layer(server)
    digest = digest_of(layer)
    robot = attacker(server)
    target = f"evil/{uuid.uuid4().hex[:8]}"
    r = requests.post(f"{server.url}/v2/{target}/blobs/uploads/?mount={digest}&from={repo}", auth=robot, timeout=TIMEOUT)
    assert r.status_code == 202, (r.status_code, r.text)  # no mount: an upload session instead
    assert blob_answer(server, robot, target, digest).status_code == 404
    http = admin_http(server)
    r = http.post(f"{server.url}/v2/{target}/blobs/uploads/?mount={digest}&from={repo}", timeout=TIMEOUT)
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers["Docker-Content-Digest"] == digest
