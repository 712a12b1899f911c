"""Cache eviction against real servers: a docker-registry upstream and a cargohold pull-through cache.

DESIGN.md: cached content is kept under a byte quota, least recently pulled
first; pinned images keep all their blobs; a blob that a pushed repository
also links is never evicted; evicted blobs come back (MISS) on the next pull,
byte-exact; statistics report the evicted bytes. And the ``cargohold cache``
commands that drive all this, as a user runs them.

Quota and eviction are global to a server, so every test starts from an
emptied cache (``cache`` fixture: no pins, everything evictable evicted) and
checks figures relative to what is left; the background-eviction test has a
server of its own. One worker, so that last-pull times (batched in memory,
flushed every few seconds) are recorded by the very process that evicts.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from cachehelpers import (
    cache_server,
    docker_registry,
    push_upstream_manifest,
    random_config,
)
from ocihelpers import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    image_manifest,
    manifest_bytes,
)
from servers import DockerRegistry, Server

TIMEOUT = (5, 30)
KiB = 1024
ACCEPT = f"{OCI_MANIFEST}, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- images in the upstream ---------------------------------------------------------------------


@dataclass
class Image:
    """An image pushed to the upstream as ``library/<name>:<tag>``; cached as ``hub/<name>:<tag>``."""

    name: str
    tag: str
    digest: str
    body: bytes
    blobs: dict[str, bytes]  # digest → bytes: config first, then the layers

    @property
    def local(self) -> str:
        return f"hub/{self.name}"

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.blobs.values())


def push_upstream(upstream: DockerRegistry, name: str, tag: str = "1", layers: tuple[int, ...] = (48 * KiB,),
                  shared: bytes | None = None) -> Image:
    """A random image (plus the ``shared`` layer, if given) in the upstream."""
    config = random_config()
    contents = [config] + [os.urandom(n) for n in layers] + ([shared] if shared is not None else [])
    body = push_upstream_manifest(upstream.url, f"library/{name}", tag, config, contents[1:])
    return Image(name, tag, sha256(body), body, {digest_of(d): d for d in contents})


# ---- the cache ----------------------------------------------------------------------------------


@dataclass
class Cache:
    server: Server
    upstream: DockerRegistry
    http: requests.Session = field(default_factory=requests.Session)
    baseline: dict = field(default_factory=dict)
    kept_shared: int = 0

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, method: str, path: str, expect: int | tuple[int, ...] = 200, **kwargs: object) -> requests.Response:
        r = self.http.request(method, f"{self.url}/api/v1{path}", timeout=TIMEOUT, **kwargs)  # type: ignore[arg-type]
        statuses = expect if isinstance(expect, tuple) else (expect,)
        assert r.status_code in statuses, (method, path, r.status_code, r.text[:500])
        return r

    def stats(self) -> dict:
        return self.api("GET", "/cache/stats").json()

    def evict(self, quota: int | None = None) -> dict:
        return self.api("POST", "/cache/evict", json={} if quota is None else {"quota_bytes": quota}).json()

    def manifest(self, repo: str, reference: str) -> requests.Response:
        r = self.http.get(f"{self.url}/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT}, timeout=TIMEOUT)
        assert r.status_code == 200, (repo, reference, r.status_code, r.text[:500])
        return r

    def blob(self, repo: str, digest: str, expected: bytes) -> str:
        """GET a blob; it must be byte-exact. Its X-Cache."""
        r = self.http.get(f"{self.url}/v2/{repo}/blobs/{digest}", timeout=TIMEOUT)
        assert r.status_code == 200, (repo, digest, r.status_code, r.text[:500])
        assert sha256(r.content) == digest and r.content == expected, f"{repo}@{digest}: wrong bytes ({len(r.content)})"
        return r.headers.get("X-Cache", "")

    def pull(self, image: Image) -> dict[str, str]:
        """Pull like a client: the manifest by tag, then every blob, in order. X-Cache per blob digest."""
        r = self.manifest(image.local, image.tag)
        assert r.headers.get("Docker-Content-Digest") == image.digest and r.content == image.body
        results = {}
        for digest, data in image.blobs.items():
            results[digest] = self.blob(image.local, digest, data)
            time.sleep(0.005)  # distinct last-pull times, whatever the clock's resolution
        return results


def cli_env(server: Server, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_") and k != "XDG_CONFIG_HOME"}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "xdg"),
               CARGOHOLD_USERNAME="admin", CARGOHOLD_PASSWORD=server.admin_password)
    return env


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    with docker_registry(tmp_path_factory.mktemp("upstream")) as registry:
        yield registry


def _start(upstream: DockerRegistry, data_dir: Path, quota: int = 0, interval: int = 3600) -> Cache:
    server = cache_server(
        data_dir,
        CARGOHOLD_CACHE_QUOTA_BYTES=str(quota),
        CARGOHOLD_CACHE_EVICT_INTERVAL_SECONDS=str(interval),
        CARGOHOLD_UPSTREAM_TIMEOUT_SECONDS="10",
    )
    server.start()
    cache = Cache(server, upstream)
    try:
        cache.http.auth = ("admin", server.admin_password)
        cache.api("POST", "/cache-rules", expect=201, json={
            "name": "hub", "source": f"{upstream.host}/library/*", "target": "hub/*", "insecure": True,
            "tag_ttl_seconds": 3600,
        })
    except BaseException:
        server.stop()
        raise
    return cache


@pytest.fixture(scope="module")
def module_cache(upstream: DockerRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    """One server for the module (starting one is slow on a busy machine); see ``cache`` for the isolation."""
    cache = _start(upstream, tmp_path_factory.mktemp("cargohold-eviction") / "data")
    try:
        yield cache
    finally:
        cache.server.stop()


@pytest.fixture
def cache(module_cache: Cache) -> Cache:
    """The module's server, emptied: no pins, everything evictable evicted. ``baseline`` holds the stats
    after that (the evicted-bytes counter is cumulative; blobs a pushed repository shares stay)."""
    server = module_cache.server
    if server.proc is None or server.proc.poll() is not None:
        server.start()
    for pin in module_cache.api("GET", "/cache/pins").json():
        module_cache.api("DELETE", "/cache/pins", expect=204, params={"reference": _pin_reference(pin)})
    module_cache.kept_shared = module_cache.evict(1)["kept_shared"]
    module_cache.baseline = module_cache.stats()
    return module_cache


def _pin_reference(pin: dict) -> str:
    separator = "@" if ":" in pin["reference"] else ":"
    return f"{pin['repository']}{separator}{pin['reference']}"


def _names(n: int) -> list[str]:
    prefix = uuid.uuid4().hex[:8]
    return [f"ev{prefix}-{i}" for i in range(n)]


# ---- eviction -----------------------------------------------------------------------------------


def test_least_recently_pulled_blobs_are_evicted_first(cache: Cache) -> None:
    base = cache.baseline
    images = [push_upstream(cache.upstream, name, layers=(40 * KiB, 24 * KiB)) for name in _names(4)]
    for image in images:
        assert set(cache.pull(image).values()) == {"MISS"}
    for image in images:
        assert set(cache.pull(image).values()) == {"HIT"}
    total = sum(i.size for i in images)
    stats = cache.stats()
    assert stats["cache_bytes"] == base["cache_bytes"] + total, (stats, base)
    assert stats["cached_blobs"] == base["cached_blobs"] + 3 * len(images), (stats, base)
    assert stats["evicted_bytes"] == base["evicted_bytes"]

    # Pull the first image again: the least recently pulled are now the second, the third, the fourth, the first.
    first, second, third, fourth = images
    cache.pull(first)
    quota = base["cache_bytes"] + third.size + fourth.size + first.size
    report = cache.evict(quota)
    assert report == {
        "used_bytes": quota, "quota_bytes": quota, "evicted_blobs": 3, "evicted_bytes": second.size,
        "kept_pinned": 0, "kept_shared": cache.kept_shared,
    }, report
    stats = cache.stats()
    assert stats["cache_bytes"] == quota and stats["cached_blobs"] == base["cached_blobs"] + 9, stats
    assert stats["evicted_bytes"] == base["evicted_bytes"] + second.size, stats

    # Under the quota: nothing more goes.
    assert cache.evict(quota)["evicted_blobs"] == 0

    # A tighter quota takes the next least recently pulled image, and only it (LRU is by blob, in pull order).
    report = cache.evict(quota - third.size)
    assert report["evicted_blobs"] == 3 and report["evicted_bytes"] == third.size, report

    # The evicted images' manifests stay (tags resolve offline); their blobs come back, byte-exact, as MISS.
    for image in (second, third):
        assert set(cache.pull(image).values()) == {"MISS"}, image.name
    for image in (fourth, first):
        assert set(cache.pull(image).values()) == {"HIT"}, image.name
    stats = cache.stats()
    assert stats["cache_bytes"] == base["cache_bytes"] + total and stats["cached_blobs"] == base["cached_blobs"] + 12, stats
    assert stats["evicted_bytes"] == base["evicted_bytes"] + second.size + third.size, stats
    assert stats["rules"]["hub"]["MISS"] - base["rules"].get("hub", {}).get("MISS", 0) == 4 + 4 * 3 + 2 * 3  # manifests + blobs


def test_configured_quota_is_enforced_in_the_background(upstream: DockerRegistry, tmp_path: Path) -> None:
    """CARGOHOLD_CACHE_QUOTA_BYTES with a short interval: no one has to ask for eviction."""
    probe = 40 * KiB
    cache = _start(upstream, tmp_path / "data", quota=3 * probe, interval=1)
    try:
        images = [push_upstream(cache.upstream, name, layers=(probe,)) for name in _names(5)]
        for image in images:
            cache.pull(image)
        deadline = time.monotonic() + 20
        while True:
            stats = cache.stats()
            if stats["cache_bytes"] <= 3 * probe or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert stats["quota_bytes"] == 3 * probe
        assert 0 < stats["cache_bytes"] <= 3 * probe, stats
        assert stats["evicted_bytes"] == sum(i.size for i in images) - stats["cache_bytes"], stats
        # The two most recently pulled images fit and stay; the oldest went first.
        for image in images[-2:]:
            assert set(cache.pull(image).values()) == {"HIT"}, image.name
        assert set(cache.pull(images[0]).values()) == {"MISS"}
        # POST /cache/evict without a quota uses the configured one.
        report = cache.evict()
        assert report["quota_bytes"] == 3 * probe and report["used_bytes"] <= 3 * probe, report
    finally:
        cache.server.stop()


def test_pinned_images_keep_all_their_blobs(cache: Cache) -> None:
    base = cache.baseline
    by_tag, by_digest, loose = (push_upstream(cache.upstream, name, layers=(32 * KiB, 16 * KiB)) for name in _names(3))
    for image in (by_tag, by_digest, loose):
        cache.pull(image)
    pin = cache.api("POST", "/cache/pins", expect=201, json={"reference": f"{by_tag.local}:{by_tag.tag}"}).json()
    assert pin["repository"] == by_tag.local and pin["reference"] == by_tag.tag and pin["created_by"] == "admin"
    cache.api("POST", "/cache/pins", expect=201, json={"reference": f"{by_digest.local}@{by_digest.digest}"})
    pins = cache.api("GET", "/cache/pins").json()
    assert {(p["repository"], p["reference"]) for p in pins} == {
        (by_tag.local, by_tag.tag), (by_digest.local, by_digest.digest)
    }
    # The pinned images are the least recently pulled: still, only the loose one goes.
    report = cache.evict(1)
    assert report["evicted_bytes"] == loose.size and report["evicted_blobs"] == 3, report
    assert report["kept_pinned"] == 6, report
    assert report["used_bytes"] == base["cache_bytes"] + by_tag.size + by_digest.size, report
    assert set(cache.pull(by_tag).values()) == {"HIT"}
    assert set(cache.pull(by_digest).values()) == {"HIT"}
    assert set(cache.pull(loose).values()) == {"MISS"}

    # Not a cache repository: refused. Unknown pin: 404.
    cache.api("POST", "/cache/pins", expect=422, json={"reference": "mine/app:1"})
    cache.api("DELETE", "/cache/pins", expect=404, params={"reference": f"{loose.local}:{loose.tag}"})

    # Unpinned, an image is evictable again.
    cache.api("DELETE", "/cache/pins", expect=204, params={"reference": f"{by_tag.local}:{by_tag.tag}"})
    report = cache.evict(1)
    assert report["kept_pinned"] == 3, report
    assert set(cache.pull(by_tag).values()) == {"MISS"}
    assert set(cache.pull(by_digest).values()) == {"HIT"}


def test_blobs_filled_without_a_complete_download_are_counted_and_evictable(cache: Cache) -> None:
    """A client that hangs up does not stop the fill it started; the blob it publishes must count against
    the quota and be evictable like any other. A HEAD of a cold blob fills nothing (an upstream HEAD)."""
    base = cache.baseline
    (image,) = (push_upstream(cache.upstream, name, layers=(256 * KiB, 192 * KiB)) for name in _names(1))
    cache.manifest(image.local, image.tag)
    _, headed, hung_up = list(image.blobs)
    r = cache.http.head(f"{cache.url}/v2/{image.local}/blobs/{headed}", timeout=TIMEOUT)
    assert r.status_code == 200 and r.headers.get("X-Cache") == "MISS"
    assert r.headers["Content-Length"] == str(len(image.blobs[headed]))
    with cache.http.get(f"{cache.url}/v2/{image.local}/blobs/{hung_up}", stream=True, timeout=TIMEOUT) as r:
        assert r.status_code == 200 and r.headers.get("X-Cache") == "MISS"
        r.raw.read(1024)
    deadline = time.monotonic() + 15
    while cache.stats()["cached_blobs"] < base["cached_blobs"] + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.3)  # had the HEAD started a fill, it would have landed by now too
    stats = cache.stats()
    assert stats["cached_blobs"] == base["cached_blobs"] + 1, stats
    assert stats["cache_bytes"] == base["cache_bytes"] + len(image.blobs[hung_up]), stats
    assert set(cache.pull(image).values()) == {"HIT", "MISS"}  # the config was never asked for
    assert cache.stats()["cache_bytes"] == base["cache_bytes"] + image.size
    assert cache.evict(1)["evicted_bytes"] == image.size
    assert set(cache.pull(image).values()) == {"MISS"}


# ---- the CLI ------------------------------------------------------------------------------------


def test_cache_commands(cache: Cache, tmp_path: Path) -> None:
    server = cache.server
    base = cache.baseline
    env = cli_env(server, tmp_path / "home")

    def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "cargohold", *args, "--registry", server.url],
                                env=env, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
        return result

    def cli_json(*args: str) -> object:
        return json.loads(cli(*args, "--output", "json").stdout)

    warm, pulled = (push_upstream(cache.upstream, name, layers=(20 * KiB, 12 * KiB)) for name in _names(2))
    ref = f"{warm.local}:{warm.tag}"

    # warm: everything fetched now, then nothing the second time.
    result = cli("cache", "warm", ref)
    assert "manifests" in result.stdout and "blobs" in result.stdout and str(warm.size) in result.stdout, result.stdout
    assert cli_json("cache", "warm", ref) == {"reference": ref, "manifests": 1, "blobs": 3, "fetched_bytes": 0}
    assert cli_json("cache", "warm", f"{warm.local}@{warm.digest}")["fetched_bytes"] == 0
    assert set(cache.pull(warm).values()) == {"HIT"}
    cache.pull(pulled)

    # stats: the table names the rule, the upstream and the figures; JSON is the API's answer.
    table = cli("cache", "stats").stdout
    for word in ("hub", "HIT", "MISS", "REVALIDATED", "STALE", "PULLS SAVED", cache.upstream.host, "GET 200",
                 "cache used", "no quota", "evicted"):
        assert word in table, (word, table)
    stats = cli_json("cache", "stats")
    assert stats == cache.stats()
    assert stats["cache_bytes"] == base["cache_bytes"] + warm.size + pulled.size
    assert stats["rules"]["hub"]["HIT"] >= 3

    # pin, pins, unpin
    result = cli("cache", "pin", ref)
    assert "Pinned" in result.stderr and warm.local in result.stdout
    pins = cli_json("cache", "pins")
    assert [(p["repository"], p["reference"]) for p in pins] == [(warm.local, warm.tag)]
    assert warm.local in cli("cache", "pins").stdout

    # evict: the pinned image stays, the other goes; sizes with units are accepted.
    report = cli_json("cache", "evict", "--quota", "1")
    assert report["evicted_bytes"] == pulled.size and report["kept_pinned"] == 3, report
    assert set(cache.pull(warm).values()) == {"HIT"}
    assert set(cache.pull(pulled).values()) == {"MISS"}
    result = cli("cache", "evict", "--quota", "1MiB")
    assert "Nothing to evict" in result.stderr and "cache used" in result.stdout
    result = cli("cache", "evict")
    assert "No quota is configured" in result.stderr
    assert "evicted" in cli("cache", "stats").stdout

    result = cli("cache", "unpin", ref)
    assert "Unpinned" in result.stderr
    assert cli_json("cache", "pins") == []
    assert "No pinned images" in cli("cache", "pins").stderr
    result = cli("cache", "evict", "--quota", "1")
    assert "Evicted 6 blob(s)" in result.stderr, result.stderr

    # Errors: the server's detail and exit 1; bad usage exit 2.
    result = cli("cache", "unpin", ref, code=1)
    assert "no pin" in result.stderr
    result = cli("cache", "pin", "mine/app:1", code=1)
    assert "not covered by any cache rule" in result.stderr
    result = cli("cache", "warm", "not a reference", code=1)
    assert "error" in result.stderr
    cli("cache", "evict", "--quota", "lots", code=2)
    env["CARGOHOLD_PASSWORD"] = "wrong"
    result = cli("cache", "stats", code=1)
    assert "CARGOHOLD_USERNAME" in result.stderr


# Last: it leaves blobs that no eviction may take, and stops the server for fsck.
def test_blob_shared_with_a_pushed_repository_is_never_evicted(cache: Cache) -> None:
    base = cache.baseline
    base_layer = os.urandom(40 * KiB)
    name, other = _names(2)
    base_image = push_upstream(cache.upstream, name, layers=(24 * KiB,), shared=base_layer)
    unrelated = push_upstream(cache.upstream, other, layers=(24 * KiB,))
    cache.pull(base_image)
    cache.pull(unrelated)
    config_digest, own_layer_digest, shared_digest = list(base_image.blobs)
    config = base_image.blobs[config_digest]

    # Our own image on top of the cached base: the shared layer mounted from the cache namespace,
    # the base's config uploaded again (identical bytes), plus a layer of our own.
    mine = f"mine/{name}"
    r = cache.http.post(f"{cache.url}/v2/{mine}/blobs/uploads/", params={"mount": shared_digest, "from": base_image.local},
                        timeout=TIMEOUT)
    assert r.status_code == 201, (r.status_code, r.text)
    own = os.urandom(8 * KiB)
    for data in (config, own):
        r = cache.http.post(f"{cache.url}/v2/{mine}/blobs/uploads/", params={"digest": digest_of(data)}, data=data, timeout=TIMEOUT)
        assert r.status_code == 201, (r.status_code, r.text)
    body = manifest_bytes(image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, base_layer), descriptor(OCI_LAYER, own)]))
    r = cache.http.put(f"{cache.url}/v2/{mine}/manifests/1", data=body, headers={"Content-Type": OCI_MANIFEST}, timeout=TIMEOUT)
    assert r.status_code == 201, (r.status_code, r.text)

    report = cache.evict(1)
    assert report["kept_shared"] == cache.kept_shared + 2, report
    assert report["evicted_bytes"] == unrelated.size + len(base_image.blobs[own_layer_digest]), report
    assert report["used_bytes"] == base["cache_bytes"] + len(base_layer) + len(config), report

    # Our image is whole; the shared blobs are still cached, the other one comes back from upstream.
    for digest, data in ((config_digest, config), (shared_digest, base_layer), (digest_of(own), own)):
        assert cache.blob(mine, digest, data) == ""  # not a cache namespace: no X-Cache
    assert cache.blob(base_image.local, shared_digest, base_layer) == "HIT"
    assert cache.blob(base_image.local, config_digest, config) == "HIT"
    assert cache.blob(base_image.local, own_layer_digest, base_image.blobs[own_layer_digest]) == "MISS"
    assert set(cache.pull(unrelated).values()) == {"MISS"}
    # Again, with everything pulled since: the shared blobs still stay.
    assert cache.evict(1)["kept_shared"] == cache.kept_shared + 2

    # fsck: evicted blobs of cached manifests are not problems (they are fetched again when pulled).
    cache.server.stop()
    fsck = cache.server.run_cli("fsck", "--data-dir", str(cache.server.data_dir))
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
