"""Manifest push, pull and delete, byte-exact (distribution-spec "pushing/pulling manifests", conformance §5, §6, §9)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from ocihelpers import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    TIMEOUT,
    absolute,
    assert_error,
    descriptor,
    digest_of,
    image_manifest,
    manifest_bytes,
    push_blob,
    push_empty_config,
    push_image,
    push_manifest,
    random_blob,
    random_digest,
    unique_repo,
)
from servers import Server

MiB = 1024 * 1024
ACCEPT_OCI = {"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"}
ACCEPT_DOCKER = {"Accept": f"{DOCKER_MANIFEST}, {DOCKER_MANIFEST_LIST}"}
ACCEPT_ALL = {"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_MANIFEST}, {DOCKER_MANIFEST_LIST}"}


def manifest_url(server: Server, repo: str, reference: str) -> str:
    return f"{server.url}/v2/{repo}/manifests/{reference}"


def assert_served(
    server: Server, repo: str, reference: str, body: bytes, media_type: str, digest: str, headers: dict[str, str] | None = None
) -> None:
    """GET and HEAD return the exact bytes with the exact Content-Type, Content-Length and digest."""
    url = manifest_url(server, repo, reference)
    get = requests.get(url, headers=headers if headers is not None else ACCEPT_ALL, timeout=TIMEOUT)
    assert get.status_code == 200, (reference, get.status_code, get.text[:300])
    assert get.content == body
    assert get.headers["Content-Type"] == media_type
    assert get.headers["Content-Length"] == str(len(body))
    assert get.headers["Docker-Content-Digest"] == digest
    head = requests.head(url, headers=headers if headers is not None else ACCEPT_ALL, timeout=TIMEOUT)
    assert head.status_code == 200, (reference, head.status_code)
    assert head.content == b""
    assert head.headers["Content-Type"] == media_type
    assert head.headers["Content-Length"] == str(len(body))
    assert head.headers["Docker-Content-Digest"] == digest


def assert_gone(server: Server, repo: str, reference: str) -> None:
    url = manifest_url(server, repo, reference)
    head = requests.head(url, headers=ACCEPT_ALL, timeout=TIMEOUT)
    assert head.status_code == 404, (reference, head.status_code)
    assert head.content == b""
    assert_error(requests.get(url, headers=ACCEPT_ALL, timeout=TIMEOUT), 404, "MANIFEST_UNKNOWN")


def assert_pushed(server: Server, repo: str, r: requests.Response, digest: str) -> None:
    assert r.status_code == 201, (r.status_code, r.text)
    assert urlsplit(absolute(server.url, r)).path == f"/v2/{repo}/manifests/{digest}"
    if "Docker-Content-Digest" in r.headers:
        assert r.headers["Docker-Content-Digest"] == digest


def oci_image(server: Server, repo: str, algorithm: str = "sha256", **extra: Any) -> dict[str, Any]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "salt": uuid.uuid4().hex}).encode()
    layer = random_blob(300)
    push_blob(server.url, repo, config, algorithm)
    push_blob(server.url, repo, layer, algorithm)
    return image_manifest(descriptor(OCI_CONFIG, config, algorithm), [descriptor(OCI_LAYER, layer, algorithm)], **extra)


def tags_of(server: Server, repo: str) -> list[str]:
    r = requests.get(f"{server.url}/v2/{repo}/tags/list", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()["tags"]


# ---- push and pull: the kinds of content ------------------------------------------------------------------


def test_oci_image_manifest_by_digest_then_tag(server: Server) -> None:
    repo = unique_repo("mf")
    body = manifest_bytes(oci_image(server, repo))
    digest, r = push_manifest(server.url, repo, body, media_type=OCI_MANIFEST)
    assert_pushed(server, repo, r, digest)
    # N fetches the Location with Accept index+image.
    got = requests.get(absolute(server.url, r), headers=ACCEPT_OCI, timeout=TIMEOUT)
    assert got.status_code == 200
    assert got.content == body
    assert got.headers["Content-Type"] == OCI_MANIFEST

    _, r = push_manifest(server.url, repo, body, reference="v1", media_type=OCI_MANIFEST)
    assert_pushed(server, repo, r, digest)
    for reference in (digest, "v1"):
        assert_served(server, repo, reference, body, OCI_MANIFEST, digest)
        assert_served(server, repo, reference, body, OCI_MANIFEST, digest, headers=ACCEPT_OCI)
        assert_served(server, repo, reference, body, OCI_MANIFEST, digest, headers={"Accept": OCI_MANIFEST})
        assert_served(server, repo, reference, body, OCI_MANIFEST, digest, headers={})
        assert_served(server, repo, reference, body, OCI_MANIFEST, digest, headers={"Accept": "*/*"})


def test_push_twice_is_idempotent(server: Server) -> None:
    repo = unique_repo("mf")
    body = manifest_bytes(oci_image(server, repo))
    digest, _ = push_manifest(server.url, repo, body, reference="a", media_type=OCI_MANIFEST)
    _, r = push_manifest(server.url, repo, body, reference="a", media_type=OCI_MANIFEST)
    assert_pushed(server, repo, r, digest)
    _, r = push_manifest(server.url, repo, body, media_type=OCI_MANIFEST)
    assert_pushed(server, repo, r, digest)
    assert_served(server, repo, "a", body, OCI_MANIFEST, digest)


def test_whitespace_and_key_order_are_preserved(server: Server) -> None:
    """Bytes are sacred: odd formatting survives and the digest is of the bytes as sent."""
    repo = unique_repo("mf")
    doc = oci_image(server, repo)
    body = ('{"layers":' + json.dumps(doc["layers"]) + ',   "schemaVersion" : 2,\n\t"config":' + json.dumps(doc["config"]) + ',"mediaType":"' + OCI_MANIFEST + '"}\n\n').encode()
    digest, r = push_manifest(server.url, repo, body, reference="fmt", media_type=OCI_MANIFEST)
    assert_pushed(server, repo, r, digest)
    assert_served(server, repo, "fmt", body, OCI_MANIFEST, digest)


def test_oci_index_and_nested_index(server: Server) -> None:
    repo = unique_repo("mf")
    children = []
    for arch in ("amd64", "arm64"):
        body = manifest_bytes(oci_image(server, repo))
        digest, _ = push_manifest(server.url, repo, body, media_type=OCI_MANIFEST)
        children.append(
            {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body), "platform": {"architecture": arch, "os": "linux"}}
        )
    index = manifest_bytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
    index_digest, r = push_manifest(server.url, repo, index)
    assert_pushed(server, repo, r, index_digest)
    push_manifest(server.url, repo, index, reference="multi", media_type=OCI_INDEX)
    assert_served(server, repo, index_digest, index, OCI_INDEX, index_digest)
    assert_served(server, repo, "multi", index, OCI_INDEX, index_digest, headers=ACCEPT_OCI)

    # An index of indexes, no platform.
    nested = manifest_bytes(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_INDEX, "digest": index_digest, "size": len(index)}]}
    )
    nested_digest, r = push_manifest(server.url, repo, nested, reference="index-of-index")
    assert r.status_code == 201
    assert_served(server, repo, "index-of-index", nested, OCI_INDEX, nested_digest)
    assert_served(server, repo, nested_digest, nested, OCI_INDEX, nested_digest)


def test_empty_index(server: Server) -> None:
    repo = unique_repo("mf")
    body = manifest_bytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
    digest, r = push_manifest(server.url, repo, body, reference="empty-index")
    assert_pushed(server, repo, r, digest)
    assert_served(server, repo, "empty-index", body, OCI_INDEX, digest)


def test_docker_schema2_manifest_and_manifest_list(server: Server) -> None:
    repo = unique_repo("mf")
    children = []
    for arch in ("amd64", "arm64"):
        config = json.dumps({"architecture": arch, "os": "linux", "salt": uuid.uuid4().hex}).encode()
        layer = random_blob(200)
        push_blob(server.url, repo, config)
        push_blob(server.url, repo, layer)
        body = manifest_bytes(
            image_manifest(descriptor(DOCKER_CONFIG, config), [descriptor(DOCKER_LAYER, layer)], media_type=DOCKER_MANIFEST)
        )
        digest, r = push_manifest(server.url, repo, body, reference=f"docker-{arch}")
        assert_pushed(server, repo, r, digest)
        assert_served(server, repo, f"docker-{arch}", body, DOCKER_MANIFEST, digest)
        assert_served(server, repo, digest, body, DOCKER_MANIFEST, digest, headers=ACCEPT_DOCKER)
        children.append({"mediaType": DOCKER_MANIFEST, "digest": digest, "size": len(body), "platform": {"architecture": arch, "os": "linux"}})
    listing = manifest_bytes({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": children})
    digest, r = push_manifest(server.url, repo, listing, reference="docker-list")
    assert_pushed(server, repo, r, digest)
    assert_served(server, repo, "docker-list", listing, DOCKER_MANIFEST_LIST, digest)
    assert_served(server, repo, "docker-list", listing, DOCKER_MANIFEST_LIST, digest, headers=ACCEPT_DOCKER)


@pytest.mark.parametrize("content_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_manifest_without_media_type_field_takes_content_type(server: Server, content_type: str) -> None:
    repo = unique_repo("mf")
    doc = oci_image(server, repo, media_type=None)
    assert "mediaType" not in doc
    body = manifest_bytes(doc)
    digest, r = push_manifest(server.url, repo, body, reference="nomt", media_type=content_type)
    assert_pushed(server, repo, r, digest)
    assert_served(server, repo, "nomt", body, content_type, digest)


def test_index_without_media_type_field_takes_content_type(server: Server) -> None:
    repo = unique_repo("mf")
    child = manifest_bytes(oci_image(server, repo))
    child_digest, _ = push_manifest(server.url, repo, child)
    body = manifest_bytes({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": child_digest, "size": len(child)}]})
    digest, r = push_manifest(server.url, repo, body, reference="nomt-index", media_type=OCI_INDEX)
    assert_pushed(server, repo, r, digest)
    assert_served(server, repo, "nomt-index", body, OCI_INDEX, digest)


def test_artifact_manifest_with_empty_config(server: Server) -> None:
    repo = unique_repo("mf")
    empty = push_empty_config(server.url, repo)
    sbom = b'{"spdxVersion": "SPDX-2.3"}'
    push_blob(server.url, repo, sbom)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": empty,
        "layers": [descriptor("application/vnd.example.sbom.v1+json", sbom)],
    }
    body = manifest_bytes(doc)
    digest, r = push_manifest(server.url, repo, body, reference="artifact")
    assert_pushed(server, repo, r, digest)
    assert_served(server, repo, "artifact", body, OCI_MANIFEST, digest)

    # An artifact whose only layer is the empty JSON blob, and one without layers at all.
    only_empty = manifest_bytes({**doc, "layers": [empty]})
    d2, r = push_manifest(server.url, repo, only_empty, reference="artifact-empty-layer")
    assert_pushed(server, repo, r, d2)
    no_layers = manifest_bytes({**doc, "layers": []})
    d3, r = push_manifest(server.url, repo, no_layers, reference="artifact-no-layers")
    assert_pushed(server, repo, r, d3)
    assert_served(server, repo, d3, no_layers, OCI_MANIFEST, d3)

    # An artifact index.
    index = manifest_bytes(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": "application/vnd.example.bundle",
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body), "artifactType": doc["artifactType"]}],
        }
    )
    d4, r = push_manifest(server.url, repo, index, reference="artifact-index")
    assert_pushed(server, repo, r, d4)
    assert_served(server, repo, "artifact-index", index, OCI_INDEX, d4)


def test_descriptors_with_data_and_unknown_fields(server: Server) -> None:
    repo = unique_repo("mf")
    config = json.dumps({"architecture": "amd64", "os": "linux", "org.example.random": uuid.uuid4().hex}).encode()
    layer = random_blob(128)
    push_blob(server.url, repo, config)
    push_blob(server.url, repo, layer)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(
            OCI_CONFIG,
            config,
            data=base64.b64encode(config).decode(),
            newUnspecifiedField=base64.b64encode(b"whatever").decode(),
        ),
        "layers": [descriptor(OCI_LAYER, layer, newUnspecifiedField=None, data=base64.b64encode(layer).decode())],
        "org.example.custom": uuid.uuid4().hex,
        "annotations": {"org.opencontainers.image.title": "custom"},
        "newUnspecifiedField": None,
    }
    body = manifest_bytes(doc)
    digest, r = push_manifest(server.url, repo, body, reference="data-field")
    assert_pushed(server, repo, r, digest)
    assert_served(server, repo, "data-field", body, OCI_MANIFEST, digest)

    index = manifest_bytes(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body), "newUnspecifiedField": None}],
            "org.example.custom": "x",
        }
    )
    d2, r = push_manifest(server.url, repo, index, reference="custom-index")
    assert_pushed(server, repo, r, d2)
    assert_served(server, repo, "custom-index", index, OCI_INDEX, d2)


@pytest.mark.parametrize(
    "layer_type",
    ["application/vnd.oci.image.layer.nondistributable.v1.tar", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"],
)
def test_non_distributable_layers_are_not_required(server: Server, layer_type: str) -> None:
    repo = unique_repo("mf")
    config = json.dumps({"architecture": "amd64", "os": "linux", "salt": uuid.uuid4().hex}).encode()
    push_blob(server.url, repo, config)
    foreign = random_blob(1000)  # never pushed
    layer = descriptor(layer_type, foreign, urls=["https://example.com/layer.tar"])
    body = manifest_bytes(image_manifest(descriptor(OCI_CONFIG, config), [layer]))
    digest, r = push_manifest(server.url, repo, body, reference="nondist")
    assert_pushed(server, repo, r, digest)
    assert_served(server, repo, "nondist", body, OCI_MANIFEST, digest)


def test_manifest_with_no_layers(server: Server) -> None:
    repo = unique_repo("mf")
    config = json.dumps({"architecture": "amd64", "os": "linux", "salt": uuid.uuid4().hex}).encode()
    push_blob(server.url, repo, config)
    body = manifest_bytes(image_manifest(descriptor(OCI_CONFIG, config), []))
    digest, r = push_manifest(server.url, repo, body, reference="emptylayer")
    assert_pushed(server, repo, r, digest)
    assert_served(server, repo, "emptylayer", body, OCI_MANIFEST, digest)


def _padded_manifest(server: Server, repo: str, total: int) -> bytes:
    """An image manifest of exactly ``total`` bytes (padding in one annotation)."""
    doc = oci_image(server, repo, annotations={"pad": ""})
    body = manifest_bytes(doc)
    doc["annotations"]["pad"] = "x" * (total - len(body))
    body = manifest_bytes(doc)
    assert len(body) == total
    return body


def test_large_manifest_is_accepted(server: Server) -> None:
    """The conformance large-manifest: 390 annotations of 10 kB, about 3.9 MB."""
    repo = unique_repo("mf")
    annotations = {f"org.example.a{i:03d}": os.urandom(5000).hex() for i in range(390)}
    body = manifest_bytes(oci_image(server, repo, annotations=annotations))
    assert 3_900_000 < len(body) < 4 * MiB
    digest, r = push_manifest(server.url, repo, body, reference="large")
    assert_pushed(server, repo, r, digest)
    assert_served(server, repo, "large", body, OCI_MANIFEST, digest)


def test_manifest_of_exactly_4_mib_is_accepted(server: Server) -> None:
    repo = unique_repo("mf")
    body = _padded_manifest(server, repo, 4 * MiB)
    digest, r = push_manifest(server.url, repo, body, media_type=OCI_MANIFEST)
    assert_pushed(server, repo, r, digest)
    got = requests.get(manifest_url(server, repo, digest), headers=ACCEPT_OCI, timeout=TIMEOUT)
    assert got.content == body


def test_manifest_over_4_mib_is_413(server: Server) -> None:
    repo = unique_repo("mf")
    body = _padded_manifest(server, repo, 4 * MiB + 1)
    digest, r = push_manifest(server.url, repo, body, reference="too-big", media_type=OCI_MANIFEST, expect=None)
    assert_error(r, 413, "SIZE_INVALID")
    assert_gone(server, repo, digest)
    assert_gone(server, repo, "too-big")


def test_manifest_over_4_mib_without_content_length_is_413(server: Server) -> None:
    """A chunked request body has no Content-Length to reject up front; the limit still holds."""
    repo = unique_repo("mf")
    body = _padded_manifest(server, repo, 4 * MiB + 1000)
    pieces = (body[i : i + 65536] for i in range(0, len(body), 65536))
    r = requests.put(manifest_url(server, repo, "chunked-big"), data=pieces, headers={"Content-Type": OCI_MANIFEST}, timeout=TIMEOUT)
    assert_error(r, 413, "SIZE_INVALID")
    assert_gone(server, repo, "chunked-big")


def test_manifest_with_chunked_request_body_is_accepted(server: Server) -> None:
    repo = unique_repo("mf")
    body = manifest_bytes(oci_image(server, repo))
    pieces = (body[i : i + 100] for i in range(0, len(body), 100))
    r = requests.put(manifest_url(server, repo, "chunked"), data=pieces, headers={"Content-Type": OCI_MANIFEST}, timeout=TIMEOUT)
    assert_pushed(server, repo, r, digest_of(body))
    assert_served(server, repo, "chunked", body, OCI_MANIFEST, digest_of(body))


# ---- sha512 ------------------------------------------------------------------------------------------------


def test_push_by_sha512_digest(server: Server) -> None:
    repo = unique_repo("mf")
    body = manifest_bytes(oci_image(server, repo, algorithm="sha512"))
    digest, r = push_manifest(server.url, repo, body, media_type=OCI_MANIFEST, algorithm="sha512")
    assert digest.startswith("sha512:")
    assert_pushed(server, repo, r, digest)
    assert_served(server, repo, digest, body, OCI_MANIFEST, digest)

    index = manifest_bytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body)}]})
    index_digest, r = push_manifest(server.url, repo, index, algorithm="sha512")
    assert_pushed(server, repo, r, index_digest)
    assert_served(server, repo, index_digest, index, OCI_INDEX, index_digest)
    assert requests.delete(manifest_url(server, repo, index_digest), timeout=TIMEOUT).status_code == 202
    assert requests.delete(manifest_url(server, repo, digest), timeout=TIMEOUT).status_code == 202
    assert_gone(server, repo, digest)
    assert_gone(server, repo, index_digest)


def test_tag_points_at_sha256_of_the_bytes(server: Server) -> None:
    """A push by tag names the content by its canonical (sha256) digest."""
    repo = unique_repo("mf")
    body = manifest_bytes(oci_image(server, repo, algorithm="sha512"))
    digest, r = push_manifest(server.url, repo, body, reference="t", media_type=OCI_MANIFEST)
    assert digest.startswith("sha256:")
    assert_pushed(server, repo, r, digest)
    assert_served(server, repo, "t", body, OCI_MANIFEST, digest)


# ---- bad manifests -----------------------------------------------------------------------------------------


def test_schema1_is_refused(server: Server) -> None:
    repo = unique_repo("mf")
    schema1 = {
        "schemaVersion": 1,
        "name": repo,
        "tag": "old",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": random_digest()}],
        "history": [{"v1Compatibility": "{}"}],
    }
    for content_type in (
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/json",
    ):
        _, r = push_manifest(server.url, repo, schema1, reference="old", media_type=content_type, expect=None)
        assert_error(r, 400, "MANIFEST_INVALID")
    assert_gone(server, repo, "old")


@pytest.mark.parametrize(
    "body",
    [
        b"blablabla",
        b"[]",
        b'{"schemaVersion": 2}',
        b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {}, "layers": []}',
        b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "x", "digest": "sha256:nope", "size": 1}}',
        b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": "no"}',
        b'{"schemaVersion": 3, "mediaType": "application/vnd.oci.image.manifest.v1+json"}',
        b"\xff\xfe not utf-8",
    ],
)
def test_invalid_manifest_is_400_manifest_invalid(server: Server, body: bytes) -> None:
    repo = unique_repo("mf")
    _, r = push_manifest(server.url, repo, body, reference="bad", media_type=OCI_MANIFEST, expect=None)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert_gone(server, repo, "bad")


@pytest.mark.parametrize(
    ("where", "value"),
    [("artifactType", "application/vnd.x\u0000"), ("artifactType", "application/" + "x" * 300),
     ("artifactType", "application/vnd x"), ("config", "application/vnd.\u0000config"), ("index", "a/\u0000")],
)
def test_an_artifact_type_that_is_no_media_type_is_manifest_invalid(server: Server, where: str, value: str) -> None:
    """It is stored and filtered on: a NUL or an overlong one was a 500 on PostgreSQL, so it is refused on both."""
    repo = unique_repo("mf")
    empty = push_empty_config(server.url, repo)
    if where == "index":
        doc: dict[str, object] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": value, "manifests": []}
    elif where == "config":
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {**empty, "mediaType": value}, "layers": []}
    else:
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": value, "config": empty, "layers": []}
    _, r = push_manifest(server.url, repo, manifest_bytes(doc), reference="bad", media_type=str(doc["mediaType"]), expect=None)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert_gone(server, repo, "bad")


def test_missing_blob_is_manifest_blob_unknown(server: Server) -> None:
    repo = unique_repo("mf")
    config = json.dumps({"salt": uuid.uuid4().hex}).encode()
    push_blob(server.url, repo, config)
    missing_layer = random_blob(100)
    body = manifest_bytes(image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, missing_layer)]))
    digest, r = push_manifest(server.url, repo, body, reference="missing", expect=None)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert_gone(server, repo, digest)
    assert_gone(server, repo, "missing")

    # A missing config counts too.
    layer = random_blob(100)
    push_blob(server.url, repo, layer)
    body = manifest_bytes(image_manifest(descriptor(OCI_CONFIG, random_blob(10)), [descriptor(OCI_LAYER, layer)]))
    _, r = push_manifest(server.url, repo, body, expect=None)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


def test_blob_only_in_another_repository_is_manifest_blob_unknown(server: Server) -> None:
    repo, other = unique_repo("mf"), unique_repo("mf")
    doc = oci_image(server, other)
    push_blob(server.url, repo, random_blob(8))
    digest, r = push_manifest(server.url, repo, doc, reference="borrowed", expect=None)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert_gone(server, repo, digest)


def test_index_with_missing_child_is_manifest_blob_unknown(server: Server) -> None:
    repo = unique_repo("mf")
    push_blob(server.url, repo, random_blob(8))
    body = manifest_bytes(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "digest": random_digest(), "size": 500}]}
    )
    digest, r = push_manifest(server.url, repo, body, reference="broken-index", expect=None)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert_gone(server, repo, digest)
    assert_gone(server, repo, "broken-index")

    # A child that exists only in another repository is just as unknown here.
    other = unique_repo("mf")
    child_digest, child = push_image(server.url, other, tag="child")
    body = manifest_bytes(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "digest": child_digest, "size": len(child)}]}
    )
    digest, r = push_manifest(server.url, repo, body, reference="borrowed-index", expect=None)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert_gone(server, repo, digest)


def test_digest_mismatch_is_400_digest_invalid(server: Server) -> None:
    repo = unique_repo("mf")
    body = manifest_bytes(oci_image(server, repo))
    digest = digest_of(body)
    r = requests.put(manifest_url(server, repo, digest), data=body + b"  ", headers={"Content-Type": OCI_MANIFEST}, timeout=TIMEOUT)
    assert_error(r, 400, "DIGEST_INVALID")
    assert_gone(server, repo, digest)
    assert_gone(server, repo, digest_of(body + b"  "))
    # sha512 reference, sha512 mismatch.
    digest512 = digest_of(body, "sha512")
    r = requests.put(manifest_url(server, repo, digest512), data=body + b"  ", headers={"Content-Type": OCI_MANIFEST}, timeout=TIMEOUT)
    assert_error(r, 400, "DIGEST_INVALID")


@pytest.mark.parametrize("reference", ["sha256:baddigeststring", "sha256:totallywrong", "md5:" + "0" * 32, "sha256:" + "0" * 63])
def test_put_with_malformed_digest_reference_is_400(server: Server, reference: str) -> None:
    repo = unique_repo("mf")
    r = requests.put(manifest_url(server, repo, reference), data=b"blablabla", headers={"Content-Type": OCI_MANIFEST}, timeout=TIMEOUT)
    assert_error(r, 400)


@pytest.mark.parametrize("reference", ["sha256:baddigeststring", "sha256:totallywrong"])
def test_get_with_malformed_digest_reference_is_400_or_404(server: Server, reference: str) -> None:
    repo = unique_repo("mf")
    push_image(server.url, repo, tag="x")
    r = requests.get(manifest_url(server, repo, reference), headers=ACCEPT_ALL, timeout=TIMEOUT)
    assert_error(r, (400, 404))


# ---- subject -------------------------------------------------------------------------------------------------


def test_subject_not_yet_pushed_is_accepted_with_oci_subject(server: Server) -> None:
    repo = unique_repo("mf")
    empty = push_empty_config(server.url, repo)
    subject = {"mediaType": OCI_MANIFEST, "digest": digest_of(os.urandom(123)), "size": 123}
    body = manifest_bytes(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig", "config": empty, "layers": [empty], "subject": subject}
    )
    digest, r = push_manifest(server.url, repo, body)
    assert_pushed(server, repo, r, digest)
    assert r.headers.get("OCI-Subject") == subject["digest"]
    assert_served(server, repo, digest, body, OCI_MANIFEST, digest)
    assert_gone(server, repo, subject["digest"])


def test_subject_present_gets_oci_subject_and_none_without(server: Server) -> None:
    repo = unique_repo("mf")
    subject_digest, subject_body = push_image(server.url, repo, tag="base")
    empty = push_empty_config(server.url, repo)
    body = manifest_bytes(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": empty,
            "layers": [empty],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject_body)},
        }
    )
    _, r = push_manifest(server.url, repo, body, reference="sig")
    assert r.headers.get("OCI-Subject") == subject_digest
    _, r = push_manifest(server.url, repo, subject_body, reference="base2", media_type=OCI_MANIFEST)
    assert "OCI-Subject" not in r.headers


# ---- ?tag= ---------------------------------------------------------------------------------------------------


def _oci_tag_values(r: requests.Response) -> list[str]:
    raw = r.raw.headers.getlist("OCI-Tag") if hasattr(r.raw.headers, "getlist") else [r.headers.get("OCI-Tag", "")]
    return [v.strip() for value in raw for v in value.split(",") if v.strip()]


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_tag_query_parameters(server: Server, algorithm: str) -> None:
    repo = unique_repo("mf")
    body = manifest_bytes(oci_image(server, repo, algorithm=algorithm))
    digest = digest_of(body, algorithm)
    r = requests.put(
        manifest_url(server, repo, digest),
        params=[("tag", "alpha"), ("tag", "beta"), ("tag", "gamma")],
        data=body,
        headers={"Content-Type": OCI_MANIFEST},
        timeout=TIMEOUT,
    )
    assert_pushed(server, repo, r, digest)
    assert sorted(_oci_tag_values(r)) == ["alpha", "beta", "gamma"]
    for tag in ("alpha", "beta", "gamma"):
        assert_served(server, repo, tag, body, OCI_MANIFEST, digest)
    assert sorted(tags_of(server, repo)) == ["alpha", "beta", "gamma"]
    # The tags name the pushed digest: deleting it takes them along.
    assert requests.delete(manifest_url(server, repo, digest), timeout=TIMEOUT).status_code == 202
    for tag in ("alpha", "beta", "gamma"):
        assert_gone(server, repo, tag)
    assert tags_of(server, repo) == []


def test_invalid_tag_query_parameter_is_400_and_nothing_stored(server: Server) -> None:
    repo = unique_repo("mf")
    body = manifest_bytes(oci_image(server, repo))
    digest = digest_of(body)
    r = requests.put(
        manifest_url(server, repo, digest),
        params=[("tag", "good"), ("tag", "-bad")],
        data=body,
        headers={"Content-Type": OCI_MANIFEST},
        timeout=TIMEOUT,
    )
    assert_error(r, 400, "TAG_INVALID")
    assert_gone(server, repo, "good")


# ---- tags: invalid, missing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", [".INVALID_MANIFEST_NAME", "-dash", "a" * 129, "with+plus", "%C3%A9t%C3%A9"])
def test_invalid_tag_on_get_is_404(server: Server, tag: str) -> None:
    repo = unique_repo("mf")
    push_image(server.url, repo, tag="latest")
    url = manifest_url(server, repo, tag)
    head = requests.head(url, headers=ACCEPT_ALL, timeout=TIMEOUT)
    assert head.status_code == 404
    assert_error(requests.get(url, headers=ACCEPT_ALL, timeout=TIMEOUT), 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("tag", [".INVALID_MANIFEST_NAME", "-dash", "a" * 129, "with+plus", "%C3%A9t%C3%A9"])
def test_invalid_tag_on_put_is_400(server: Server, tag: str) -> None:
    repo = unique_repo("mf")
    body = manifest_bytes(oci_image(server, repo))
    _, r = push_manifest(server.url, repo, body, reference=tag, media_type=OCI_MANIFEST, expect=None)
    assert_error(r, 400, "TAG_INVALID")
    assert_gone(server, repo, digest_of(body))


def test_longest_valid_tag(server: Server) -> None:
    repo = unique_repo("mf")
    tag = "_" + "a" * 127
    digest, body = push_image(server.url, repo, tag=tag)
    assert_served(server, repo, tag, body, OCI_MANIFEST, digest)


def test_missing_manifest_is_404(server: Server) -> None:
    repo = unique_repo("mf")
    push_image(server.url, repo, tag="present")
    assert_gone(server, repo, random_digest())
    assert_gone(server, repo, random_digest("sha512"))
    assert_gone(server, repo, f"missing-{uuid.uuid4().hex[:8]}")


def test_manifest_in_unknown_repository_is_404(server: Server) -> None:
    url = manifest_url(server, unique_repo("nowhere"), "latest")
    assert requests.head(url, timeout=TIMEOUT).status_code == 404
    assert_error(requests.get(url, timeout=TIMEOUT), 404, ("MANIFEST_UNKNOWN", "NAME_UNKNOWN"))


def test_manifest_of_another_repository_is_not_served(server: Server) -> None:
    repo, other = unique_repo("mf"), unique_repo("mf")
    digest, _ = push_image(server.url, repo, tag="mine")
    push_image(server.url, other, tag="theirs")
    assert_gone(server, other, digest)
    assert_gone(server, other, "mine")


# ---- delete ----------------------------------------------------------------------------------------------------


def _warm(server: Server, repo: str, *references: str) -> None:
    """GET on several connections so that every worker has the manifests in its cache."""
    for _ in range(4):
        for reference in references:
            assert requests.get(manifest_url(server, repo, reference), headers=ACCEPT_ALL, timeout=TIMEOUT).status_code == 200


def test_delete_by_tag_removes_only_the_tag(server: Server) -> None:
    repo = unique_repo("mfdel")
    digest, body = push_image(server.url, repo, tag="keep")
    push_manifest(server.url, repo, body, reference="drop", media_type=OCI_MANIFEST)
    _warm(server, repo, digest, "keep", "drop")
    r = requests.delete(manifest_url(server, repo, "drop"), timeout=TIMEOUT)
    assert r.status_code == 202
    for _ in range(4):
        assert_gone(server, repo, "drop")
        assert_served(server, repo, digest, body, OCI_MANIFEST, digest)
        assert_served(server, repo, "keep", body, OCI_MANIFEST, digest)
    assert tags_of(server, repo) == ["keep"]
    assert_error(requests.delete(manifest_url(server, repo, "drop"), timeout=TIMEOUT), 404, "MANIFEST_UNKNOWN")


def test_delete_by_digest_removes_manifest_and_its_tags(server: Server) -> None:
    repo = unique_repo("mfdel")
    digest, body = push_image(server.url, repo, tag="one")
    push_manifest(server.url, repo, body, reference="two", media_type=OCI_MANIFEST)
    other_digest, other_body = push_image(server.url, repo, tag="other")
    _warm(server, repo, digest, "one", "two", "other")
    before = tags_of(server, repo)
    assert before == ["one", "other", "two"]

    r = requests.delete(manifest_url(server, repo, digest), timeout=TIMEOUT)
    assert r.status_code == 202
    for _ in range(4):
        assert_gone(server, repo, digest)
        assert_gone(server, repo, "one")
        assert_gone(server, repo, "two")
        assert_served(server, repo, "other", other_body, OCI_MANIFEST, other_digest)
    assert tags_of(server, repo) == ["other"]
    assert_error(requests.delete(manifest_url(server, repo, digest), timeout=TIMEOUT), 404, "MANIFEST_UNKNOWN")


def test_delete_manifest_keeps_its_blobs(server: Server) -> None:
    repo = unique_repo("mfdel")
    doc = oci_image(server, repo)
    digest, _ = push_manifest(server.url, repo, doc)
    assert requests.delete(manifest_url(server, repo, digest), timeout=TIMEOUT).status_code == 202
    for d in (doc["config"]["digest"], doc["layers"][0]["digest"]):
        assert requests.head(f"{server.url}/v2/{repo}/blobs/{d}", timeout=TIMEOUT).status_code == 200


def test_delete_index_then_children_in_reverse_push_order(server: Server) -> None:
    repo = unique_repo("mfdel")
    child_digest, child = push_image(server.url, repo)
    index = manifest_bytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "digest": child_digest, "size": len(child)}]})
    index_digest, _ = push_manifest(server.url, repo, index, reference="idx")
    for d in (index_digest, child_digest):
        assert requests.delete(manifest_url(server, repo, d), timeout=TIMEOUT).status_code == 202
        assert_gone(server, repo, d)
    assert_gone(server, repo, "idx")
    assert tags_of(server, repo) == []


def test_delete_unknown_manifest_is_404(server: Server) -> None:
    repo = unique_repo("mfdel")
    push_image(server.url, repo, tag="x")
    assert_error(requests.delete(manifest_url(server, repo, random_digest()), timeout=TIMEOUT), 404, "MANIFEST_UNKNOWN")
    assert_error(requests.delete(manifest_url(server, repo, "nosuchtag"), timeout=TIMEOUT), 404, "MANIFEST_UNKNOWN")


def test_retag_is_seen_by_every_worker(server: Server) -> None:
    repo = unique_repo("mf")
    first_digest, first = push_image(server.url, repo, tag="moving")
    _warm(server, repo, "moving")
    second_digest, second = push_image(server.url, repo)
    push_manifest(server.url, repo, second, reference="moving", media_type=OCI_MANIFEST)
    for _ in range(4):
        assert_served(server, repo, "moving", second, OCI_MANIFEST, second_digest)
    assert_served(server, repo, first_digest, first, OCI_MANIFEST, first_digest)


# ---- Accept ------------------------------------------------------------------------------------------------


def test_docker_only_accept_is_refused_an_oci_manifest_by_tag(server: Server) -> None:
    repo = unique_repo("mf")
    digest, body = push_image(server.url, repo, tag="oci")
    r = requests.get(manifest_url(server, repo, "oci"), headers=ACCEPT_DOCKER, timeout=TIMEOUT)
    assert_error(r, 404, "MANIFEST_UNKNOWN")
    assert requests.head(manifest_url(server, repo, "oci"), headers=ACCEPT_DOCKER, timeout=TIMEOUT).status_code == 404
    # By digest the client asked for exactly these bytes: they are served as they are.
    assert_served(server, repo, digest, body, OCI_MANIFEST, digest, headers=ACCEPT_DOCKER)


def test_accept_with_parameters_and_wildcards(server: Server) -> None:
    repo = unique_repo("mf")
    digest, body = push_image(server.url, repo, tag="q")
    for accept in (
        f"{DOCKER_MANIFEST};q=0.9, {OCI_MANIFEST};q=0.5",
        f"{OCI_MANIFEST}; charset=utf-8",
        "application/json, */*",
        "application/*",
    ):
        assert_served(server, repo, "q", body, OCI_MANIFEST, digest, headers={"Accept": accept})


def test_repush_after_delete(server: Server) -> None:
    repo = unique_repo("mfdel")
    digest, body = push_image(server.url, repo, tag="again")
    _warm(server, repo, digest, "again")
    assert requests.delete(manifest_url(server, repo, digest), timeout=TIMEOUT).status_code == 202
    assert_gone(server, repo, digest)
    _, r = push_manifest(server.url, repo, body, reference="again", media_type=OCI_MANIFEST)
    assert_pushed(server, repo, r, digest)
    for _ in range(4):
        assert_served(server, repo, "again", body, OCI_MANIFEST, digest)
        assert_served(server, repo, digest, body, OCI_MANIFEST, digest)


def test_delete_blobs_first_then_manifest(server: Server) -> None:
    """The legacy teardown order: blobs, then the manifest."""
    repo = unique_repo("mfdel")
    doc = oci_image(server, repo)
    digest, body = push_manifest(server.url, repo, doc, reference="t")
    for d in (doc["config"]["digest"], doc["layers"][0]["digest"]):
        assert requests.delete(f"{server.url}/v2/{repo}/blobs/{d}", timeout=TIMEOUT).status_code == 202
    assert requests.delete(manifest_url(server, repo, digest), timeout=TIMEOUT).status_code == 202
    assert_gone(server, repo, digest)
    assert_gone(server, repo, "t")


@pytest.mark.parametrize("with_field", [True, False])
def test_content_type_parameters_are_not_part_of_the_media_type(server: Server, with_field: bool) -> None:
    repo = unique_repo("mf")
    doc = oci_image(server, repo, media_type=OCI_MANIFEST if with_field else None)
    body = manifest_bytes(doc)
    digest, r = push_manifest(server.url, repo, body, reference="params", media_type=f"{OCI_MANIFEST}; charset=utf-8")
    assert_pushed(server, repo, r, digest)
    assert_served(server, repo, "params", body, OCI_MANIFEST, digest)
