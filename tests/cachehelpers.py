"""Shared pieces of the pull-through cache tests: a docker-registry upstream, images pushed straight
into it, a cargohold server that may reach it, and the blob files in a server's store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from authhelpers import run_async, server_settings
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

from cargohold.store.cache import CacheConfigStore
from cargohold.store.db import create_engine

TIMEOUT = (5, 30)  # connect, read


@contextmanager
def docker_registry(root: Path, htpasswd: Path | None = None) -> Iterator[DockerRegistry]:
    """A running docker-registry in ``root`` (taking only the users in ``htpasswd``, if given), stopped on the way out."""
    registry = DockerRegistry(root, htpasswd=htpasswd).start()
    try:
        yield registry
    finally:
        registry.stop()


def cache_server(data_dir: Path, workers: int = 1, backend: str = "sqlite", **env: str) -> Server:
    """A cargohold with auth that may reach upstreams on private addresses (not started: ``with`` runs it)."""
    return Server(
        data_dir=data_dir,
        backend=backend,
        auth=True,
        workers=workers,
        extra_env={"CARGOHOLD_ALLOW_PRIVATE_UPSTREAMS": "1", **env},
    )


def push_upstream_blob(url: str, repo: str, data: bytes, http: requests.Session | None = None) -> str:
    """``data`` into the upstream at ``url`` (POST, then PUT with the digest; through ``http``, a session with the
    upstream's credentials, if given); its digest."""
    digest = digest_of(data)
    client = http or requests
    r = client.post(f"{url}/v2/{repo}/blobs/uploads/", timeout=TIMEOUT)
    assert r.status_code == 202, (r.status_code, r.text)
    location = r.headers["Location"]
    location = location if location.startswith("http") else url + location
    r = client.put(location + ("&" if "?" in location else "?") + f"digest={digest}", data=data,
                   headers={"Content-Type": "application/octet-stream"}, timeout=TIMEOUT)
    assert r.status_code == 201, (r.status_code, r.text)
    return digest


def random_config() -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "salt": uuid.uuid4().hex}).encode()


def push_upstream_manifest(url: str, repo: str, tag: str | None, config: bytes, layers: list[bytes],
                           http: requests.Session | None = None) -> bytes:
    """The config and layers, then an OCI image manifest over them tagged ``tag`` (by its digest if None; through
    ``http`` if given); the manifest's bytes."""
    for data in [config, *layers]:
        push_upstream_blob(url, repo, data, http)
    body = manifest_bytes(image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, d) for d in layers]))
    r = (http or requests).put(f"{url}/v2/{repo}/manifests/{tag or digest_of(body)}", data=body,
                               headers={"Content-Type": OCI_MANIFEST}, timeout=TIMEOUT)
    assert r.status_code == 201, (r.status_code, r.text)
    return body


def blob_files(data_dir: Path) -> dict[str, Path]:
    """The published blob files under ``<data-dir>/blobs``, by digest."""
    root = data_dir / "blobs"
    return {f"{p.parent.parent.name}:{p.name}": p for p in root.glob("*/*/*") if p.is_file()}


def record_upstream_status(server: Server, name: str, login_error: str) -> None:
    """What the cache service records for credential set ``name`` after a failed upstream login and a
    rate-limited answer."""

    async def go() -> None:
        engine = create_engine(server_settings(server))
        try:
            store = CacheConfigStore(engine)
            await store.record_login(name, False, login_error)
            await store.record_ratelimit(name, 100, 7)
        finally:
            await engine.dispose()

    run_async(go)
