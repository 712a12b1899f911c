"""Pull-through cache, end to end: real clients → cargohold (auth on, 2 workers) → counting proxy → docker-registry.

Every upstream request cargohold makes passes ``upstream_proxy.UpstreamProxy``,
so the tests assert not only what clients get but what the cache spent
upstream: one GET per blob for 20 concurrent cold pulls, one HEAD to
revalidate a tag, nothing at all for a fresh tag, a digest or a denied
caller. The upstream is CNCF Distribution 2.8 (anonymous, and with htpasswd
for the credential-set tests); it has no referrers API, so referrers come
from the ``sha256-<hex>`` tag schema.

One cargohold (SQLite, DEBUG log with access log, so that the credential test
can search the whole log for the password) serves every test; each test uses
its own upstream repositories, and the proxy's counts are filtered by
repository. The tag-TTL test also runs on PostgreSQL.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from authhelpers import provision
from cachehelpers import cache_server, docker_registry
from clients import Skopeo
from images import Layout, build_image, build_multiarch, init_layout, require_tool
from ocihelpers import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    manifest_bytes,
    push_blob,
    push_empty_config,
    push_manifest,
)
from servers import DockerRegistry, Server, drop_postgres_schema
from upstream_proxy import UpstreamProxy

from cargohold.cache.rules import CacheRule, InvalidRule, RuleSet

TIMEOUT = 30
ACCEPT = f"{OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_MANIFEST_LIST}, {DOCKER_MANIFEST}"
SERVER_ENV = {  # with CARGOHOLD_ALLOW_PRIVATE_UPSTREAMS (cache_server)
    "CARGOHOLD_LOG_LEVEL": "DEBUG",
    "CARGOHOLD_ACCESS_LOG": "true",
}
LONG_TTL = 300  # "within the TTL" for the whole module


# ---- the world --------------------------------------------------------------------------------------------


@dataclass
class World:
    root: Path
    upstream: DockerRegistry
    proxy: UpstreamProxy
    server: Server
    admin: requests.Session
    _skopeo: Skopeo | None = None
    api_answers: list[str] = field(default_factory=list)

    @property
    def admin_auth(self) -> tuple[str, str]:
        return "admin", self.server.admin_password

    def api(self, method: str, path: str, expect: int | None = None, **kwargs: Any) -> requests.Response:
        r = self.admin.request(method, f"{self.server.url}/api/v1{path}", timeout=TIMEOUT, **kwargs)
        self.api_answers.append(f"{method} {path} -> {r.status_code} {dict(r.headers)} {r.text}")
        if expect is not None:
            assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r

    def v2(self, method: str, path: str, session: requests.Session | None = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        return (session or self.admin).request(method, f"{self.server.url}/v2/{path}", **kwargs)

    def manifest(self, repo: str, reference: str, session: requests.Session | None = None, **kwargs: Any) -> requests.Response:
        headers = {"Accept": ACCEPT, **kwargs.pop("headers", {})}
        return self.v2("GET", f"{repo}/manifests/{reference}", session, headers=headers, **kwargs)

    def blob(self, repo: str, digest: str, session: requests.Session | None = None, **kwargs: Any) -> requests.Response:
        return self.v2("GET", f"{repo}/blobs/{digest}", session, **kwargs)

    def skopeo(self) -> Skopeo:
        if self._skopeo is None:
            self._skopeo = Skopeo(self.root / "skopeo-home")
            user, password = self.admin_auth
            self._skopeo("login", "--tls-verify=false", "-u", user, "-p", password, self.server.host)
        return self._skopeo

    def add_rule(self, server: Server | None = None, **rule: Any) -> dict[str, Any]:
        rule.setdefault("insecure", True)
        if server is None or server is self.server:
            return self.api("POST", "/cache-rules", expect=201, json=rule).json()
        r = requests.post(f"{server.url}/api/v1/cache-rules", auth=("admin", server.admin_password), json=rule, timeout=TIMEOUT)
        assert r.status_code == 201, r.text
        return r.json()


def start_server(root: Path, backend: str = "sqlite") -> Server:
    return cache_server(root / f"data-{backend}", workers=2, backend=backend, **SERVER_ENV).start()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_tool("docker-registry")
    root = tmp_path_factory.mktemp("cache-pull")
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(docker_registry(root / "upstream"))
        proxy = UpstreamProxy(upstream.url).start()
        stack.callback(proxy.stop)
        server = start_server(root)
        stack.callback(server.stop)
        admin = stack.enter_context(requests.Session())
        admin.auth = ("admin", server.admin_password)
        w = World(root, upstream, proxy, server, admin)
        # hub/* ← <proxy>/library/*: the module's main rule; ttl/* and eager/* for their tests.
        w.add_rule(name="hub", source=f"{proxy.host}/library/*", target="hub/*", tag_ttl_seconds=LONG_TTL)
        w.add_rule(name="ttl", source=f"{proxy.host}/ttl/*", target="ttl/*", tag_ttl_seconds=LONG_TTL)
        w.add_rule(name="eager", source=f"{proxy.host}/eager/*", target="eager/*", tag_ttl_seconds=LONG_TTL, platforms="eager")
        yield w


@pytest.fixture(scope="module")
def postgres_server(world: World) -> Iterator[Server]:
    server = start_server(world.root, "postgres")
    try:
        world.add_rule(server, name="ttl", source=f"{world.proxy.host}/ttl/*", target="ttl/*", tag_ttl_seconds=LONG_TTL)
        yield server
    finally:
        server.stop()
        if server.schema:
            drop_postgres_schema(server.schema)


@pytest.fixture(autouse=True)
def _no_fault(world: World) -> Iterator[None]:
    world.proxy.clear_fault()
    yield
    world.proxy.clear_fault()


# ---- helpers ----------------------------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def name() -> str:
    return uuid.uuid4().hex[:10]


@dataclass
class Image:
    digest: str
    body: bytes
    blobs: dict[str, bytes]  # digest → bytes: config and layers

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.body)


def push_upstream_image(url: str, repo: str, tag: str | None, layers: int = 1, layer_size: int = 256) -> Image:
    """A random OCI image straight into the upstream (the proxy does not see it)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "salt": uuid.uuid4().hex}).encode()
    blobs = {push_blob(url, repo, config): config}
    layer_descs = []
    for _ in range(layers):
        data = os.urandom(layer_size)
        blobs[push_blob(url, repo, data)] = data
        layer_descs.append(descriptor(OCI_LAYER, data))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layer_descs,
    }
    body = manifest_bytes(manifest)
    digest, _ = push_manifest(url, repo, body, media_type=OCI_MANIFEST)
    if tag:
        push_manifest(url, repo, body, reference=tag, media_type=OCI_MANIFEST)
    return Image(digest, body, blobs)


def push_upstream_index(url: str, repo: str, tag: str, platforms: int = 2) -> tuple[str, bytes, list[Image]]:
    """A multi-platform OCI index over ``platforms`` random images; (digest, bytes, children)."""
    children = [push_upstream_image(url, repo, None) for _ in range(platforms)]
    arches = ["amd64", "arm64", "s390x", "ppc64le"]
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {**descriptor(OCI_MANIFEST, c.body), "platform": {"os": "linux", "architecture": arches[i]}}
            for i, c in enumerate(children)
        ],
    }
    body = manifest_bytes(index)
    digest, _ = push_manifest(url, repo, body, reference=tag, media_type=OCI_INDEX)
    return digest, body, children


def skopeo_push_layout(skopeo: Skopeo, layout: Layout, tag: str, dest: str) -> None:
    skopeo("copy", "--all", "--preserve-digests", "--dest-tls-verify=false", f"oci:{layout.path}:{tag}", f"docker://{dest}")


def error_of(r: requests.Response) -> dict[str, Any]:
    """The first OCI error of an error answer (fails on anything else)."""
    assert r.headers.get("Content-Type", "").startswith("application/json"), (r.status_code, r.headers, r.text[:300])
    body = r.json()
    assert isinstance(body.get("errors"), list) and body["errors"], body
    first = body["errors"][0]
    assert isinstance(first.get("code"), str) and isinstance(first.get("message"), str), body
    return first


def describe(r: requests.Response) -> str:
    return f"{r.request.method} {r.url} -> {r.status_code} X-Cache={r.headers.get('X-Cache')} {r.text[:300]!r}"


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metrics(server: Server) -> list[tuple[str, dict[str, str], float]]:
    r = requests.get(f"{server.url}/metrics", timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    samples = []
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"unparsable metrics line {line!r}"
        samples.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return samples


def metric_sum(samples: list[tuple[str, dict[str, str], float]], metric: str, **labels: str) -> float:
    return sum(v for n, l, v in samples if n == metric and all(l.get(k) == want for k, want in labels.items()))


# ---- 1. real clients: skopeo through a rule ---------------------------------------------------------------


def test_skopeo_copies_single_and_multiarch_images_byte_exact(world: World) -> None:
    skopeo = world.skopeo()
    layout = init_layout(world.root / f"layout-{name()}")
    single = build_image(layout, "single")
    multi = build_multiarch(layout, "multi")
    repo = f"skopeo{name()}"
    for tag in ("single", "multi"):
        skopeo_push_layout(skopeo, layout, tag, f"{world.upstream.host}/library/{repo}:{tag}")
    for tag, desc in (("single", single), ("multi", multi)):
        upstream_raw = skopeo.inspect_raw(f"docker://{world.upstream.host}/library/{repo}:{tag}")
        assert sha256(upstream_raw) == desc["digest"], f"the upstream's {tag} is not the layout's"
        cached_raw = skopeo.inspect_raw(f"docker://{world.server.host}/hub/{repo}:{tag}")
        assert cached_raw == upstream_raw, f"{tag}: the cache serves other manifest bytes than the upstream"

    # Single-arch to dir: (keeps the manifest bytes as pulled).
    out_dir = world.root / f"out-{name()}"
    skopeo("copy", "--src-tls-verify=false", f"docker://{world.server.host}/hub/{repo}:single", f"dir:{out_dir}")
    assert sha256((out_dir / "manifest.json").read_bytes()) == single["digest"]
    pulled = json.loads((out_dir / "manifest.json").read_bytes())
    for d in [pulled["config"], *pulled["layers"]]:
        assert sha256((out_dir / d["digest"].split(":", 1)[1]).read_bytes()) == d["digest"]

    # Multi-arch with --all to an OCI layout: the index and every platform, byte-exact.
    out = Layout(world.root / f"oci-{name()}")
    skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{world.server.host}/hub/{repo}:multi", f"oci:{out.path}:multi")
    assert out.descriptor("multi")["digest"] == multi["digest"]
    index = out.manifest("multi")
    assert len(index["manifests"]) == 2
    for child in index["manifests"]:
        assert out.blob(child["digest"]) == layout.blob(child["digest"])
        image = json.loads(out.blob(child["digest"]))
        for d in [image["config"], *image["layers"]]:
            assert out.blob(d["digest"]) == layout.blob(d["digest"])

    # Everything is cached now: a second copy costs the upstream nothing.
    world.proxy.reset()
    again = world.root / f"oci-{name()}"
    skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{world.server.host}/hub/{repo}:multi", f"oci:{again}:multi")
    assert world.proxy.counts(repo=f"library/{repo}") == 0, world.proxy.summary()


# ---- 2. concurrent cold pulls: one upstream request each ------------------------------------------------


def test_concurrent_cold_pulls_share_one_upstream_request(world: World) -> None:
    repo = f"conc{name()}"
    image = push_upstream_image(world.upstream.url, f"library/{repo}", "v1", layers=3, layer_size=1 << 20)
    world.proxy.reset()
    pullers = 20
    barrier = threading.Barrier(pullers, timeout=TIMEOUT)
    results: list[Any] = [None] * pullers

    def pull(i: int) -> None:
        try:
            with requests.Session() as http:
                http.auth = world.admin_auth
                barrier.wait()
                r = world.manifest(f"hub/{repo}", "v1", http)
                assert r.status_code == 200, describe(r)
                assert r.content == image.body and r.headers["Docker-Content-Digest"] == image.digest
                got = {}
                for d in [image.manifest["config"], *image.manifest["layers"]]:
                    b = world.blob(f"hub/{repo}", d["digest"], http)
                    assert b.status_code == 200, describe(b)
                    got[d["digest"]] = sha256(b.content)
                results[i] = got
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    threads = [threading.Thread(target=pull, args=(i,)) for i in range(pullers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a puller hung"
    failures = [r for r in results if not isinstance(r, dict)]
    assert not failures, failures[:3]
    for got in results:
        assert got == {d: d for d in image.blobs}, "a puller got wrong bytes"

    upstream_repo = f"library/{repo}"
    assert world.proxy.counts("GET", "manifest", repo=upstream_repo) == 1, world.proxy.summary(upstream_repo)
    for digest in image.blobs:
        assert world.proxy.counts("GET", "blob", repo=upstream_repo, reference=digest) == 1, world.proxy.summary(upstream_repo)
    assert world.proxy.counts("GET", repo=upstream_repo) == 1 + len(image.blobs), world.proxy.summary(upstream_repo)


# ---- 3. tag TTL: HIT, MISS after a move, REVALIDATED, digests never ---------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_tag_ttl_and_revalidation(world: World, backend: str, request: pytest.FixtureRequest) -> None:
    server = world.server if backend == "sqlite" else request.getfixturevalue("postgres_server")
    http = world.admin if backend == "sqlite" else requests.Session()
    if http is not world.admin:
        request.addfinalizer(http.close)
    http.auth = ("admin", server.admin_password)
    proxy = world.proxy
    repo = f"app{name()}"
    upstream_repo = f"ttl/{repo}"
    url = f"{server.url}/v2/ttl/{repo}/manifests"

    def get(reference: str) -> requests.Response:
        r = http.get(f"{url}/{reference}", headers={"Accept": ACCEPT}, timeout=TIMEOUT)
        assert r.status_code == 200, describe(r)
        return r

    first = push_upstream_image(world.upstream.url, upstream_repo, "v1")
    r = get("v1")
    assert (r.headers["X-Cache"], r.headers["Docker-Content-Digest"]) == ("MISS", first.digest)

    # The tag moves upstream; within the TTL the cache neither asks nor notices.
    second = push_upstream_image(world.upstream.url, upstream_repo, "v1")
    proxy.reset()
    r = get("v1")
    assert (r.headers["X-Cache"], r.headers["Docker-Content-Digest"], r.content) == ("HIT", first.digest, first.body)
    assert proxy.counts(repo=upstream_repo) == 0, proxy.summary(upstream_repo)

    # A 1 s TTL (changed on the live rule): past it, one HEAD finds the move and one GET fetches it.
    r = http.patch(f"{server.url}/api/v1/cache-rules/ttl", json={"tag_ttl_seconds": 1}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["tag_ttl_seconds"] == 1, r.text
    try:
        time.sleep(1.2)
        proxy.reset()
        r = get("v1")
        assert (r.headers["X-Cache"], r.headers["Docker-Content-Digest"], r.content) == ("MISS", second.digest, second.body)
        assert proxy.by_key(upstream_repo) == {
            ("HEAD", "manifest", f"/v2/{upstream_repo}/manifests/v1"): 1,
            ("GET", "manifest", f"/v2/{upstream_repo}/manifests/{second.digest}"): 1,
        }, proxy.summary(upstream_repo)

        # Unchanged after the TTL: one HEAD, nothing fetched.
        time.sleep(1.2)
        proxy.reset()
        r = get("v1")
        assert (r.headers["X-Cache"], r.headers["Docker-Content-Digest"]) == ("REVALIDATED", second.digest)
        assert proxy.by_key(upstream_repo) == {("HEAD", "manifest", f"/v2/{upstream_repo}/manifests/v1"): 1}, proxy.summary(
            upstream_repo
        )
        # Digest references are immutable: never revalidated, however old.
        time.sleep(1.2)
        proxy.reset()
        for image in (first, second):
            r = get(image.digest)
            assert (r.headers["X-Cache"], r.content) == ("HIT", image.body), describe(r)
        assert proxy.counts(repo=upstream_repo) == 0, proxy.summary(upstream_repo)
    finally:
        r = http.patch(f"{server.url}/api/v1/cache-rules/ttl", json={"tag_ttl_seconds": LONG_TTL}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    # Back on a long TTL, the revalidated tag is fresh (its HEAD counted as a check): no request at all.
    proxy.reset()
    r = get("v1")
    assert (r.headers["X-Cache"], r.headers["Docker-Content-Digest"]) == ("HIT", second.digest), describe(r)
    assert proxy.counts(repo=upstream_repo) == 0, proxy.summary(upstream_repo)


# ---- 4. a failing upstream: stale copies, precise errors --------------------------------------------------


def test_upstream_down_serves_stale_and_fails_precisely(world: World) -> None:
    upstream = DockerRegistry(world.root / f"down-{name()}").start()
    proxy = UpstreamProxy(upstream.url).start()
    try:
        world.add_rule(name="down", source=f"{proxy.host}/library/*", target="down/*", tag_ttl_seconds=1)
        image = push_upstream_image(upstream.url, "library/app", "v1", layers=2)
        r = world.manifest("down/app", "v1")
        assert (r.status_code, r.headers.get("X-Cache")) == (200, "MISS"), describe(r)
        for digest, data in image.blobs.items():
            r = world.blob("down/app", digest)
            assert r.status_code == 200 and r.content == data, describe(r)

        proxy.stop()
        upstream.stop()
        time.sleep(1.2)  # past the tag's TTL: the cache must ask, cannot, and serves what it has
        r = world.manifest("down/app", "v1")
        assert r.status_code == 200, describe(r)
        assert (r.headers.get("X-Cache"), r.headers["Docker-Content-Digest"], r.content) == ("STALE", image.digest, image.body)
        r = world.manifest("down/app", image.digest)
        assert (r.status_code, r.headers.get("X-Cache")) == (200, "HIT"), describe(r)
        for digest, data in image.blobs.items():
            r = world.blob("down/app", digest)
            assert (r.status_code, r.headers.get("X-Cache"), r.content) == (200, "HIT", data), describe(r)

        # Nothing cached to stand in: 502 UPSTREAM_UNAVAILABLE naming the upstream — not "manifest unknown".
        r = world.manifest("down/app", "never-pulled")
        assert r.status_code == 502, describe(r)
        error = error_of(r)
        assert error["code"] == "UPSTREAM_UNAVAILABLE", error
        assert proxy.host in error["message"] and "down/app" in error["message"], error
        r = world.blob("down/app", digest_of(os.urandom(8)))
        assert r.status_code == 502 and error_of(r)["code"] == "UPSTREAM_UNAVAILABLE", describe(r)
    finally:
        proxy.stop()
        upstream.stop()
        world.api("DELETE", "/cache-rules/down")


def test_upstream_rate_limit_is_passed_on(world: World) -> None:
    repo = f"limited{name()}"
    push_upstream_image(world.upstream.url, f"library/{repo}", "v1")
    world.proxy.fail(("429", 30), kind="manifest", method=None, repo=f"library/{repo}")
    world.proxy.reset()
    r = world.manifest(f"hub/{repo}", "v1")
    assert r.status_code == 429, describe(r)
    assert error_of(r)["code"] == "TOOMANYREQUESTS", r.text
    assert r.headers.get("Retry-After") == "30", r.headers
    # A long Retry-After is not waited out (nor retried): one request, and the next pull asks again.
    assert world.proxy.counts(repo=f"library/{repo}") == 1, world.proxy.summary()
    world.proxy.clear_fault()
    r = world.manifest(f"hub/{repo}", "v1")
    assert (r.status_code, r.headers.get("X-Cache")) == (200, "MISS"), describe(r)


# ---- 5. upstream credentials: wrong, right, never shown ---------------------------------------------------


def test_credential_set_login_and_secrecy(world: World) -> None:
    require_tool("htpasswd")
    user, password, wrong = "cacheuser", f"right-{uuid.uuid4().hex}", f"wrong-{uuid.uuid4().hex}"
    root = world.root / f"private-{name()}"
    upstream = DockerRegistry(root)
    proxy: UpstreamProxy | None = None
    try:
        upstream.start()
        image = push_upstream_image(upstream.url, "private/app", "v1")
        upstream.stop()
        line = subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True, timeout=30).stdout
        (root / "htpasswd").write_text(line.strip() + "\n")
        upstream.htpasswd = root / "htpasswd"
        upstream.start()
        assert requests.get(f"{upstream.url}/v2/private/app/manifests/v1", timeout=TIMEOUT).status_code == 401
        proxy = UpstreamProxy(upstream.url).start()

        created = world.api(
            "POST", "/credential-sets", expect=201,
            json={"name": "private", "login_server": proxy.host, "username": user, "password": wrong},
        ).json()
        assert created["last_login"]["ok"] is None and "password" not in created
        world.add_rule(name="private", source=f"{proxy.host}/private/*", target="priv/*", credential_set="private")

        r = world.manifest("priv/app", "v1")
        assert r.status_code == 502, describe(r)
        error = error_of(r)
        assert error["code"] == "UPSTREAM_UNAVAILABLE" and "credentials" in error["message"], error
        assert proxy.counts(repo="private/app") >= 1
        assert any(s.headers.get("Authorization", "").startswith("Basic ") for s in proxy.seen()), "no Basic login was tried"
        failed = wait_for(
            "the failed login on the credential set",
            lambda: (c := world.api("GET", "/credential-sets/private", expect=200).json())["last_login"]["ok"] is False and c,
        )
        assert failed["last_login"]["error"] and failed["last_login"]["at"], failed

        world.api("PATCH", "/credential-sets/private", expect=200, json={"password": password})
        r = world.manifest("priv/app", "v1")
        assert (r.status_code, r.headers.get("X-Cache"), r.headers.get("Docker-Content-Digest")) == (200, "MISS", image.digest), describe(r)
        for digest, data in image.blobs.items():
            b = world.blob("priv/app", digest)
            assert b.status_code == 200 and b.content == data, describe(b)
        ok = wait_for(
            "the successful login on the credential set",
            lambda: (c := world.api("GET", "/credential-sets/private", expect=200).json())["last_login"]["ok"] is True and c,
        )
        assert ok["last_login"]["error"] is None, ok
        world.api("GET", "/credential-sets", expect=200)
        world.api("GET", "/cache-rules/private", expect=200)

        secrets = [password, wrong]
        secrets += [base64.b64encode(f"{user}:{s}".encode()).decode() for s in (password, wrong)]
        for answer in world.api_answers:
            for secret in secrets:
                assert secret not in answer, f"an API answer carries the upstream password: {answer[:300]}"
        log = world.server.log()
        assert "/api/v1/credential-sets" in log, "no access log in the server log (the check would be vacuous)"
        for secret in secrets:
            assert secret not in log, "the server log carries the upstream password"
    finally:
        if proxy is not None:
            proxy.stop()
        upstream.stop()
        world.api("DELETE", "/cache-rules/private")
        world.api("DELETE", "/credential-sets/private")


# ---- 6. cached namespaces are read-only ------------------------------------------------------------------


def test_cache_namespace_refuses_writes_even_for_admin(world: World) -> None:
    repo = f"ro{name()}"
    image = push_upstream_image(world.upstream.url, f"library/{repo}", "v1")
    config_digest = image.manifest["config"]["digest"]
    r = world.manifest(f"hub/{repo}", "v1")
    assert r.status_code == 200, describe(r)
    assert world.blob(f"hub/{repo}", config_digest).status_code == 200
    world.proxy.reset()
    session = uuid.uuid4().hex
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("PUT", f"hub/{repo}/manifests/v2", {"data": image.body, "headers": {"Content-Type": OCI_MANIFEST}}),
        ("PUT", f"hub/{repo}/manifests/{image.digest}", {"data": image.body, "headers": {"Content-Type": OCI_MANIFEST}}),
        ("POST", f"hub/{repo}/blobs/uploads/", {"headers": {"Content-Length": "0"}}),
        ("POST", f"hub/{repo}/blobs/uploads/?mount={config_digest}&from=hub/{repo}", {"headers": {"Content-Length": "0"}}),
        ("DELETE", f"hub/{repo}/manifests/{image.digest}", {}),
        ("DELETE", f"hub/{repo}/manifests/v1", {}),
        ("DELETE", f"hub/{repo}/blobs/{config_digest}", {}),
        # Every step of an upload session is refused too, whether or not the session exists.
        ("PATCH", f"hub/{repo}/blobs/uploads/{session}", {"data": b"x", "headers": {"Content-Range": "0-0"}}),
        ("PUT", f"hub/{repo}/blobs/uploads/{session}?digest={config_digest}", {"data": b""}),
        ("DELETE", f"hub/{repo}/blobs/uploads/{session}", {}),
        # The mirror spelling names the same repository.
        ("PUT", f"library/{repo}/manifests/v3?ns={world.proxy.host}", {"data": image.body, "headers": {"Content-Type": OCI_MANIFEST}}),
    ]
    for method, path, kwargs in attempts:
        r = world.v2(method, path, **kwargs)
        assert r.status_code == 403, describe(r)
        error = error_of(r)
        assert error["code"] == "DENIED", error
        assert "read-only cache" in error["message"] and f"hub/{repo}" in error["message"], error
        assert "hub" in error["message"] and world.proxy.host in error["message"], error
    # Nothing changed and nothing went upstream.
    r = world.manifest(f"hub/{repo}", "v1")
    assert (r.status_code, r.headers.get("X-Cache"), r.content) == (200, "HIT", image.body), describe(r)
    r = world.blob(f"hub/{repo}", config_digest)
    assert (r.status_code, r.headers.get("X-Cache")) == (200, "HIT"), describe(r)
    assert world.proxy.counts(repo=f"library/{repo}") == 0, world.proxy.summary()


# ---- 7. rights are checked before anything goes upstream -----------------------------------------------


def test_pull_needs_read_on_the_cache_namespace_and_denied_pulls_cost_nothing(world: World) -> None:
    creds = provision(
        world.server,
        robots={"cache-outsider": ["cache-other-read"], "cache-reader": ["cache-hub-read"]},
        scope_maps={"cache-other-read": [("team/*", ["content/read"])], "cache-hub-read": [("hub/*", ["content/read"])]},
    )
    repo = f"perm{name()}"
    upstream_repo = f"library/{repo}"
    image = push_upstream_image(world.upstream.url, upstream_repo, "v1")
    config_digest = image.manifest["config"]["digest"]
    world.proxy.reset()
    with requests.Session() as outsider:
        outsider.auth = creds.basic("cache-outsider")
        attempts = [
            world.manifest(f"hub/{repo}", "v1", outsider),
            world.manifest(f"hub/{repo}", image.digest, outsider),
            world.blob(f"hub/{repo}", config_digest, outsider),
            world.v2("GET", f"hub/{repo}/tags/list", outsider),
            world.v2("GET", f"hub/{repo}/referrers/{image.digest}", outsider),
            world.manifest(f"library/{repo}", "v1", outsider, params={"ns": world.proxy.host}),
        ]
        for r in attempts:
            assert r.status_code in (401, 403), describe(r)
        r = outsider.post(f"{world.server.url}/api/v1/cache/warm", json={"reference": f"hub/{repo}:v1"}, timeout=TIMEOUT)
        assert r.status_code == 403, r.text
    with requests.Session() as anonymous:
        r = world.manifest(f"hub/{repo}", "v1", anonymous)
        assert r.status_code == 401, describe(r)
    assert world.proxy.counts(repo=upstream_repo) == 0, world.proxy.summary()

    with requests.Session() as reader:
        reader.auth = creds.basic("cache-reader")
        r = world.manifest(f"hub/{repo}", "v1", reader)
        assert (r.status_code, r.headers.get("X-Cache"), r.content) == (200, "MISS", image.body), describe(r)
        b = world.blob(f"hub/{repo}", config_digest, reader)
        assert b.status_code == 200 and b.content == image.blobs[config_digest], describe(b)
        # Reading does not make it writable.
        r = world.v2("POST", f"hub/{repo}/blobs/uploads/", reader, headers={"Content-Length": "0"})
        assert r.status_code in (401, 403), describe(r)
    assert world.proxy.counts("GET", repo=upstream_repo) == 2, world.proxy.summary()


# ---- 8. mirror mode: ?ns= and the Docker Hub mirror rule -------------------------------------------------


def test_ns_query_routes_to_the_cache_namespace(world: World) -> None:
    repo = f"ns{name()}"
    image = push_upstream_image(world.upstream.url, f"library/{repo}", "v1")
    ns = {"ns": world.proxy.host}
    r = world.manifest(f"library/{repo}", "v1", params=ns)
    assert (r.status_code, r.headers.get("X-Cache"), r.headers.get("Docker-Content-Digest")) == (200, "MISS", image.digest), describe(r)
    for digest, data in image.blobs.items():
        b = world.blob(f"library/{repo}", digest, params=ns)
        assert b.status_code == 200 and b.content == data, describe(b)
    # Stored under the cache namespace: the plain name serves it from there.
    world.proxy.reset()
    r = world.manifest(f"hub/{repo}", "v1")
    assert (r.status_code, r.headers.get("X-Cache"), r.content) == (200, "HIT", image.body), describe(r)
    for digest in image.blobs:
        assert world.blob(f"hub/{repo}", digest).headers.get("X-Cache") == "HIT"
    assert world.proxy.counts(repo=f"library/{repo}") == 0, world.proxy.summary()

    # A registry or repository no rule serves: NAME_UNKNOWN, not a local lookup or an upstream request.
    for params, path in (
        ({"ns": "unknown.example.com:5000"}, f"library/{repo}"),
        ({"ns": world.proxy.host}, f"elsewhere/{repo}"),
    ):
        r = world.manifest(path, "v1", params=params)
        assert r.status_code == 404, describe(r)
        assert error_of(r)["code"] == "NAME_UNKNOWN", r.text
    assert world.proxy.counts(repo=f"elsewhere/{repo}") == 0


def test_dockerhub_mirror_rule_routing(world: World) -> None:
    # Unit level: the name mapping both ways, including Docker Hub's library/ prefix.
    rules = RuleSet([CacheRule.build("dh", "docker.io/*", "dh/*", dockerhub_mirror=True), CacheRule.build("ghcr", "ghcr.io/*", "gh/*")])
    mirrored = rules.route_upstream("docker.io", "alpine")
    assert mirrored is not None and (mirrored.local, mirrored.upstream_repository, mirrored.rule.name) == ("dh/alpine", "library/alpine", "dh")
    for registry in ("index.docker.io", "registry-1.docker.io"):
        route = rules.route_upstream(registry, "library/alpine")
        assert route is not None and route.local == "dh/alpine", route
    route = rules.route_upstream("docker.io", "grafana/grafana")
    assert route is not None and (route.local, route.upstream_repository) == ("dh/grafana/grafana", "grafana/grafana")
    forward = rules.route("dh/alpine")
    assert forward is not None and forward.upstream_repository == "library/alpine"
    assert rules.dockerhub_mirror is not None and rules.dockerhub_mirror.name == "dh"
    assert rules.route_upstream("quay.io", "alpine") is None
    with pytest.raises(InvalidRule):
        CacheRule.build("bad", "ghcr.io/*", "bad/*", dockerhub_mirror=True)

    # Through the server, without reaching Docker Hub: a write in the mirror spelling is refused as a
    # write into dh/<name> — proof that the plain name was routed — and routes only while the rule is the mirror.
    world.add_rule(name="dh", source="docker.io/*", target="dh/*", dockerhub_mirror=True, insecure=False)
    try:
        listed = world.api("GET", "/cache-rules/dh", expect=200).json()
        assert listed["dockerhub_mirror"] is True and listed["source"] == "docker.io/*"
        for path, params in (("busybox", None), ("library/busybox", None), ("busybox", {"ns": "docker.io"})):
            r = world.v2("POST", f"{path}/blobs/uploads/", params=params, headers={"Content-Length": "0"})
            assert r.status_code == 403, describe(r)
            message = error_of(r)["message"]
            assert "dh/busybox" in message and "docker.io/library/busybox" in message, message
        # A name another rule's target owns is that rule's, not the mirror's.
        r = world.v2("POST", "hub/whatever/blobs/uploads/", headers={"Content-Length": "0"})
        assert r.status_code == 403 and "hub/whatever" in error_of(r)["message"], describe(r)

        world.api("PATCH", "/cache-rules/dh", expect=200, json={"dockerhub_mirror": False})
        r = world.v2("POST", "busybox/blobs/uploads/", headers={"Content-Length": "0"})
        assert r.status_code == 202, describe(r)  # an ordinary local repository again
        r = world.v2("POST", "busybox/blobs/uploads/", params={"ns": "docker.io"}, headers={"Content-Length": "0"})
        assert r.status_code == 403 and "dh/busybox" in error_of(r)["message"], describe(r)  # ?ns= still maps it
    finally:
        world.api("DELETE", "/cache-rules/dh")


# ---- 9. referrers through the tag-schema fallback ---------------------------------------------------------


def test_referrers_from_tag_schema_fallback(world: World) -> None:
    repo = f"refs{name()}"
    upstream_repo = f"library/{repo}"
    url = world.upstream.url
    subject = push_upstream_image(url, upstream_repo, "v1")
    config = push_empty_config(url, upstream_repo)
    payload = f"signature of {subject.digest}".encode()
    push_blob(url, upstream_repo, payload)
    artifact_type = "application/vnd.example.signature.v1"
    artifact: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config,
        "layers": [descriptor("application/vnd.example.signature.v1+bin", payload)],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": len(subject.body)},
    }
    artifact_body = manifest_bytes(artifact)
    artifact_digest, _ = push_manifest(url, upstream_repo, artifact_body, media_type=OCI_MANIFEST)
    # What oras does on a registry without the referrers API: an index of referrers under sha256-<hex>.
    fallback = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{**descriptor(OCI_MANIFEST, artifact_body), "artifactType": artifact_type}],
    }
    fallback_tag = "sha256-" + subject.digest.split(":", 1)[1]
    push_manifest(url, upstream_repo, fallback, reference=fallback_tag, media_type=OCI_INDEX)
    assert requests.get(f"{url}/v2/{upstream_repo}/referrers/{subject.digest}", timeout=TIMEOUT).status_code == 404

    world.proxy.reset()
    r = world.v2("GET", f"hub/{repo}/referrers/{subject.digest}")
    assert r.status_code == 200, describe(r)
    assert r.headers.get("X-Cache") == "MISS", describe(r)
    index = r.json()
    assert index["mediaType"] == OCI_INDEX
    assert [(m["digest"], m.get("artifactType")) for m in index["manifests"]] == [(artifact_digest, artifact_type)], index
    assert world.proxy.counts("GET", "referrers", repo=upstream_repo) >= 1, world.proxy.summary()
    assert world.proxy.counts("GET", "manifest", repo=upstream_repo, reference=fallback_tag) == 1, world.proxy.summary()

    r = world.manifest(f"hub/{repo}", artifact_digest)
    assert (r.status_code, r.content, r.headers.get("X-Cache")) == (200, artifact_body, "HIT"), describe(r)
    b = world.blob(f"hub/{repo}", artifact["layers"][0]["digest"])
    assert b.status_code == 200 and b.content == payload, describe(b)
    r = world.v2("GET", f"hub/{repo}/referrers/{subject.digest}", params={"artifactType": artifact_type})
    assert r.status_code == 200 and [m["digest"] for m in r.json()["manifests"]] == [artifact_digest], describe(r)
    r = world.v2("GET", f"hub/{repo}/referrers/{subject.digest}", params={"artifactType": "application/other"})
    assert r.status_code == 200 and r.json()["manifests"] == [], describe(r)

    # Within the TTL the referrers list is not asked for again.
    world.proxy.reset()
    r = world.v2("GET", f"hub/{repo}/referrers/{subject.digest}")
    assert (r.status_code, r.headers.get("X-Cache")) == (200, "HIT"), describe(r)
    assert world.proxy.counts(repo=upstream_repo) == 0, world.proxy.summary()


# ---- 10. warm-up ---------------------------------------------------------------------------------------


def test_warm_fetches_every_platform_and_blob(world: World) -> None:
    layout = init_layout(world.root / f"layout-{name()}")
    multi = build_multiarch(layout, "v1")
    repo = f"warm{name()}"
    upstream_repo = f"library/{repo}"
    skopeo_push_layout(world.skopeo(), layout, "v1", f"{world.upstream.host}/{upstream_repo}:v1")
    index = layout.manifest("v1")
    children = [c["digest"] for c in index["manifests"]]
    blobs = {d["digest"] for c in children for d in [layout.manifest(c)["config"], *layout.manifest(c)["layers"]]}

    world.proxy.reset()
    r = world.api("POST", "/cache/warm", expect=200, json={"reference": f"hub/{repo}:v1"})
    report = r.json()
    assert report["manifests"] == 1 + len(children) and report["blobs"] == len(blobs), report
    assert report["fetched_bytes"] == sum(len(layout.blob(b)) for b in blobs), report
    for digest in [multi["digest"], *children]:
        assert world.proxy.counts("GET", "manifest", repo=upstream_repo, reference=digest) + (
            world.proxy.counts("GET", "manifest", repo=upstream_repo, reference="v1") if digest == multi["digest"] else 0
        ) == 1, world.proxy.summary(upstream_repo)
    for digest in blobs:
        assert world.proxy.counts("GET", "blob", repo=upstream_repo, reference=digest) == 1, world.proxy.summary(upstream_repo)

    world.proxy.reset()
    r = world.manifest(f"hub/{repo}", "v1")
    assert (r.status_code, r.headers.get("X-Cache"), r.headers.get("Docker-Content-Digest")) == (200, "HIT", multi["digest"]), describe(r)
    for digest in children:
        r = world.manifest(f"hub/{repo}", digest)
        assert (r.status_code, r.headers.get("X-Cache"), r.content) == (200, "HIT", layout.blob(digest)), describe(r)
    for digest in blobs:
        b = world.blob(f"hub/{repo}", digest)
        assert (b.status_code, b.headers.get("X-Cache"), sha256(b.content)) == (200, "HIT", digest), describe(b)
    assert world.proxy.counts(repo=upstream_repo) == 0, world.proxy.summary(upstream_repo)

    # Warming what is cached fetches nothing.
    r = world.api("POST", "/cache/warm", expect=200, json={"reference": f"hub/{repo}:v1"})
    assert r.json()["fetched_bytes"] == 0, r.json()
    assert world.proxy.counts("GET", "blob", repo=upstream_repo) == 0, world.proxy.summary(upstream_repo)
    r = world.api("POST", "/cache/warm", json={"reference": "nocache/thing:v1"})
    assert r.status_code == 422, r.text


# ---- 11. metrics and statistics --------------------------------------------------------------------------


def test_metrics_and_stats_count_hits_and_upstream_requests(world: World) -> None:
    repo = f"metrics{name()}"
    upstream_repo = f"library/{repo}"
    image = push_upstream_image(world.upstream.url, upstream_repo, "v1", layers=2)
    before = metrics(world.server)
    stats_before = world.api("GET", "/cache/stats", expect=200).json()
    world.proxy.reset()

    assert world.manifest(f"hub/{repo}", "v1").headers.get("X-Cache") == "MISS"
    assert world.manifest(f"hub/{repo}", "v1").headers.get("X-Cache") == "HIT"
    for digest in image.blobs:
        assert world.blob(f"hub/{repo}", digest).headers.get("X-Cache") == "MISS"
        assert world.blob(f"hub/{repo}", digest).headers.get("X-Cache") == "HIT"
    upstream_requests = world.proxy.counts()
    upstream_gets = world.proxy.counts("GET")
    after = metrics(world.server)

    def delta(metric: str, **labels: str) -> float:
        return metric_sum(after, metric, **labels) - metric_sum(before, metric, **labels)

    cache = "cargohold_cache_requests_total"
    assert delta(cache, rule="hub", kind="manifest", result="MISS") == 1
    assert delta(cache, rule="hub", kind="manifest", result="HIT") == 1
    assert delta(cache, rule="hub", kind="blob", result="MISS") == len(image.blobs)
    assert delta(cache, rule="hub", kind="blob", result="HIT") == len(image.blobs)
    upstream = "cargohold_upstream_requests_total"
    assert delta(upstream, upstream=world.proxy.host) == upstream_requests == 1 + len(image.blobs)
    assert delta(upstream, upstream=world.proxy.host, method="GET", status="200") == upstream_gets
    # What earlier tests did shows too: a 429 and HEAD revalidations were counted.
    assert metric_sum(after, upstream, upstream=world.proxy.host, method="HEAD") >= 1
    assert metric_sum(after, cache, rule="hub", result="HIT") >= metric_sum(after, cache, rule="hub", kind="blob", result="HIT") > 0
    assert metric_sum(after, "cargohold_upstream_received_bytes_total", upstream=world.proxy.host) >= sum(map(len, image.blobs.values()))

    stats = world.api("GET", "/cache/stats", expect=200).json()
    assert stats["upstream_pulls_saved"] > 0, stats
    assert stats["upstream_pulls_saved"] - stats_before["upstream_pulls_saved"] == 1 + len(image.blobs), (stats_before, stats)
    hub = stats["rules"]["hub"]
    assert hub["upstream_pulls_saved"] == hub["HIT"] + hub["REVALIDATED"] + hub["STALE"], hub
    assert stats["upstreams"][world.proxy.host]["requests"].get("GET 200", 0) >= upstream_gets, stats
    assert stats["cache_bytes"] >= sum(map(len, image.blobs.values())) and stats["cached_blobs"] >= len(image.blobs), stats


# ---- 12. eager platforms -------------------------------------------------------------------------------


def test_eager_rule_fetches_platforms_in_the_background(world: World) -> None:
    proxy = world.proxy
    eager_repo, lazy_repo = f"eager/e{name()}", f"library/l{name()}"
    eager_digest, eager_body, eager_children = push_upstream_index(world.upstream.url, eager_repo, "v1")
    lazy_digest, _, lazy_children = push_upstream_index(world.upstream.url, lazy_repo, "v1")
    proxy.reset()

    r = world.manifest(eager_repo, "v1")  # target eager/* ← <proxy>/eager/*: same names on both sides
    assert (r.status_code, r.headers.get("Docker-Content-Digest"), r.content) == (200, eager_digest, eager_body), describe(r)
    r = world.manifest(f"hub/{lazy_repo.split('/', 1)[1]}", "v1")
    assert (r.status_code, r.headers.get("Docker-Content-Digest")) == (200, lazy_digest), describe(r)

    def children_fetched() -> bool:
        return all(proxy.counts("GET", "manifest", repo=eager_repo, reference=c.digest) == 1 for c in eager_children)

    wait_for("the eager rule to fetch every platform manifest", children_fetched, timeout=20)
    # The blobs follow; a pull while one is still streaming in joins that download (MISS) rather than starting another.
    def cached(digest: str) -> bool:
        return world.blob(eager_repo, digest).headers.get("X-Cache") == "HIT"

    for child in eager_children:
        for digest in child.blobs:
            wait_for(f"{digest} to be cached", functools.partial(cached, digest))
    for child in eager_children:
        assert proxy.counts("GET", "manifest", repo=eager_repo, reference=child.digest) == 1, proxy.summary(eager_repo)
        for digest in child.blobs:
            assert proxy.counts("GET", "blob", repo=eager_repo, reference=digest) == 1, proxy.summary(eager_repo)
    # On demand (the hub rule): the platforms of the index pulled at the same time were not fetched.
    for child in lazy_children:
        assert proxy.counts(repo=lazy_repo, reference=child.digest) == 0, proxy.summary(lazy_repo)
    assert proxy.counts(repo=lazy_repo) == 1, proxy.summary(lazy_repo)
    proxy.reset()
    for child in eager_children:
        r = world.manifest(eager_repo, child.digest)
        assert (r.status_code, r.headers.get("X-Cache"), r.content) == (200, "HIT", child.body), describe(r)
        for digest, data in child.blobs.items():
            b = world.blob(eager_repo, digest)
            assert (b.status_code, b.headers.get("X-Cache"), b.content) == (200, "HIT", data), describe(b)
    assert proxy.counts(repo=eager_repo) == 0, proxy.summary(eager_repo)
