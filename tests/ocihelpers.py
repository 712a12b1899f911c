"""Small helpers for driving the /v2 API with ``requests`` in the integration tests."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Any
from urllib.parse import urljoin

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

EMPTY_JSON = b"{}"
EMPTY_JSON_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
EMPTY_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# Every code the distribution-spec defines, plus PAGINATION_NUMBER_INVALID, which CNCF Distribution
# uses for a bad `n` (the spec defines no code for it); an error body must use one of them.
OCI_ERROR_CODES = frozenset(
    {
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "MANIFEST_UNVERIFIED",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "TAG_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
        "PAGINATION_NUMBER_INVALID",
    }
)

TIMEOUT = 30


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def random_blob(size: int = 1024) -> bytes:
    return os.urandom(size)


def random_digest(algorithm: str = "sha256") -> str:
    """The digest of random bytes nobody pushed."""
    return digest_of(os.urandom(32), algorithm)


def unique_repo(prefix: str = "it") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def absolute(base: str, response: requests.Response) -> str:
    """A response's ``Location`` resolved against the request URL (relative and absolute both allowed)."""
    location = response.headers.get("Location")
    assert location, f"no Location header on {response.request.method} {response.url} ({response.status_code})"
    return urljoin(response.url or base, location)


def with_digest(url: str, digest: str) -> str:
    """Add ``digest=`` to a Location, keeping whatever query it already carries."""
    return f"{url}{'&' if '?' in url else '?'}digest={digest}"


def start_upload(url: str, repo: str, **params: str) -> requests.Response:
    r = requests.post(f"{url}/v2/{repo}/blobs/uploads/", params=params or None, headers={"Content-Length": "0"}, timeout=TIMEOUT)
    return r


def push_blob(url: str, repo: str, data: bytes, algorithm: str = "sha256") -> str:
    """POST + monolithic PUT; the blob's digest."""
    digest = digest_of(data, algorithm)
    r = start_upload(url, repo)
    assert r.status_code == 202, (r.status_code, r.text)
    r = requests.put(
        with_digest(absolute(url, r), digest),
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 201, (r.status_code, r.text)
    return digest


def manifest_bytes(manifest: dict[str, Any] | bytes) -> bytes:
    if isinstance(manifest, bytes):
        return manifest
    return json.dumps(manifest, indent=2).encode()


def push_manifest(
    url: str,
    repo: str,
    manifest: dict[str, Any] | bytes,
    reference: str | None = None,
    media_type: str | None = None,
    algorithm: str = "sha256",
    expect: int | None = 201,
) -> tuple[str, requests.Response]:
    """PUT a manifest by ``reference`` (default: its own digest); the digest and the response."""
    body = manifest_bytes(manifest)
    if media_type is None and isinstance(manifest, dict):
        media_type = manifest.get("mediaType")
    digest = digest_of(body, algorithm)
    headers = {"Content-Type": media_type} if media_type else {}
    r = requests.put(f"{url}/v2/{repo}/manifests/{reference or digest}", data=body, headers=headers, timeout=TIMEOUT)
    if expect is not None:
        assert r.status_code == expect, (r.status_code, r.text)
    return digest, r


def descriptor(media_type: str, content: bytes, algorithm: str = "sha256", /, **extra: Any) -> dict[str, Any]:
    """A descriptor of ``content``; ``extra`` adds fields (``data``, ``urls``, unknown ones)."""
    return {"mediaType": media_type, "digest": digest_of(content, algorithm), "size": len(content), **extra}


def image_manifest(
    config: dict[str, Any],
    layers: list[dict[str, Any]],
    media_type: str | None = OCI_MANIFEST,
    **extra: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {"schemaVersion": 2}
    if media_type:
        doc["mediaType"] = media_type
    doc["config"] = config
    doc["layers"] = layers
    doc.update(extra)
    return doc


def push_image(
    url: str,
    repo: str,
    tag: str | None = None,
    layers: int = 1,
    algorithm: str = "sha256",
    **extra: Any,
) -> tuple[str, bytes]:
    """Push a small random OCI image (blobs, then the manifest by digest, then by ``tag``); its digest and bytes."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "salt": uuid.uuid4().hex}).encode()
    push_blob(url, repo, config, algorithm)
    layer_descs = []
    for _ in range(layers):
        layer = random_blob(256)
        push_blob(url, repo, layer, algorithm)
        layer_descs.append(descriptor(OCI_LAYER, layer, algorithm))
    manifest = image_manifest(descriptor(OCI_CONFIG, config, algorithm), layer_descs, **extra)
    body = manifest_bytes(manifest)
    digest, _ = push_manifest(url, repo, body, media_type=OCI_MANIFEST, algorithm=algorithm)
    if tag:
        push_manifest(url, repo, body, reference=tag, media_type=OCI_MANIFEST)
    return digest, body


def push_empty_config(url: str, repo: str) -> dict[str, Any]:
    """Push the ``{}`` blob and return the empty-config descriptor artifacts use."""
    push_blob(url, repo, EMPTY_JSON)
    return {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2}


def assert_error(response: requests.Response, status: int | tuple[int, ...], code: str | tuple[str, ...] | None = None) -> None:
    """An OCI error: the status, a JSON ``{"errors": [{"code", "message", ...}]}`` body and (if given) the code."""
    statuses = status if isinstance(status, tuple) else (status,)
    request = response.request
    where = f"{request.method} {request.url}"
    assert response.status_code in statuses, f"{where}: {response.status_code} {response.text[:500]}"
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{where}: error body is not JSON: {response.text[:500]!r}") from None
    assert isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"], f"{where}: {body!r}"
    first = body["errors"][0]
    assert isinstance(first, dict) and isinstance(first.get("code"), str), f"{where}: {body!r}"
    assert first["code"] in OCI_ERROR_CODES, f"{where}: {first['code']!r} is not an OCI error code"
    assert isinstance(first.get("message", ""), str), f"{where}: {body!r}"
    if code is not None:
        codes = code if isinstance(code, tuple) else (code,)
        assert first["code"] in codes, f"{where}: code {first['code']!r}, expected {codes}"
