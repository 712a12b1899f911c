"""The referrers API (distribution-spec v1.1 "listing referrers", conformance §7)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import requests

from ocihelpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    TIMEOUT,
    assert_error,
    descriptor,
    digest_of,
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

BAGEL = "application/vnd.nhl.peanut.butter.bagel"
SANDWICH = "application/vnd.oci.sandwich"
FOOD_STAND = "application/vnd.food.stand"


def referrers(server: Server, repo: str, subject: str, artifact_type: str | None = None) -> requests.Response:
    params = {"artifactType": artifact_type} if artifact_type else None
    return requests.get(f"{server.url}/v2/{repo}/referrers/{subject}", params=params, timeout=TIMEOUT)


def assert_index(r: requests.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Content-Type"] == OCI_INDEX
    assert r.headers["Content-Length"] == str(len(r.content))
    body = r.json()
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == OCI_INDEX
    assert isinstance(body["manifests"], list)
    return body["manifests"]


def subject_of(digest: str, body: bytes, media_type: str = OCI_MANIFEST) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": len(body)}


def push_referrer(
    server: Server,
    repo: str,
    subject: dict[str, Any],
    artifact_type: str | None,
    config_type: str | None = None,
    annotations: dict[str, str] | None = None,
    tag: str | None = None,
) -> tuple[str, bytes]:
    """An artifact manifest pointing at ``subject``; typed by ``artifactType`` or (if None) by its config."""
    if config_type is None:
        config = push_empty_config(server.url, repo)
    else:
        content = json.dumps({"salt": os.urandom(8).hex()}).encode()
        push_blob(server.url, repo, content)
        config = descriptor(config_type, content)
    layer = random_blob(64)
    push_blob(server.url, repo, layer)
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type:
        doc["artifactType"] = artifact_type
    doc["config"] = config
    doc["layers"] = [descriptor("application/vnd.example.layer", layer)]
    doc["subject"] = subject
    if annotations is not None:
        doc["annotations"] = annotations
    body = manifest_bytes(doc)
    digest, r = push_manifest(server.url, repo, body, reference=tag)
    assert r.headers.get("OCI-Subject") == subject["digest"]
    return digest, body


@pytest.fixture(scope="module")
def food(server: Server) -> dict[str, Any]:
    """Shared by the read-only tests. The legacy suite's shape: 5 referrers of one image, 2 of them bagels, one an index."""
    repo = unique_repo("refs")
    subject_digest, subject_body = push_image(server.url, repo, tag="subject")
    subject = subject_of(subject_digest, subject_body)
    pushed: dict[str, tuple[str, bytes, str, dict[str, str]]] = {}

    for name, artifact_type, config_type in (
        ("config-a", None, BAGEL),
        ("config-b", None, SANDWICH),
        ("artifact-a", BAGEL, None),
        ("artifact-b", SANDWICH, None),
    ):
        annotations = {"org.opencontainers.image.ref.name": name}
        digest, body = push_referrer(server, repo, subject, artifact_type, config_type, annotations)
        pushed[name] = (digest, body, OCI_MANIFEST, annotations)

    # An index referrer.
    child_digest, child_body = push_image(server.url, repo)
    annotations = {"org.opencontainers.image.ref.name": "index"}
    index = manifest_bytes(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": FOOD_STAND,
            "manifests": [subject_of(child_digest, child_body)],
            "subject": subject,
            "annotations": annotations,
        }
    )
    index_digest, r = push_manifest(server.url, repo, index)
    assert r.headers.get("OCI-Subject") == subject_digest
    pushed["index"] = (index_digest, index, OCI_INDEX, annotations)

    # Noise: a referrer of something else, and a manifest with no subject.
    push_referrer(server, repo, subject_of(child_digest, child_body), BAGEL)
    return {"repo": repo, "subject": subject_digest, "pushed": pushed}


def test_referrers_list_every_referrer(server: Server, food: dict[str, Any]) -> None:
    entries = assert_index(referrers(server, food["repo"], food["subject"]))
    assert len(entries) == 5
    by_digest = {e["digest"]: e for e in entries}
    assert len(by_digest) == 5
    expected_types = {
        "config-a": BAGEL,  # no artifactType: falls back to config.mediaType
        "config-b": SANDWICH,
        "artifact-a": BAGEL,
        "artifact-b": SANDWICH,
        "index": FOOD_STAND,
    }
    for name, (digest, body, media_type, expected_annotations) in food["pushed"].items():
        entry = by_digest[digest]
        assert entry["mediaType"] == media_type
        assert entry["size"] == len(body)
        assert entry["artifactType"] == expected_types[name], name
        assert entry["annotations"] == expected_annotations, name


def test_artifact_type_filter(server: Server, food: dict[str, Any]) -> None:
    r = referrers(server, food["repo"], food["subject"], BAGEL)
    entries = assert_index(r)
    assert "artifactType" in [v.strip() for v in r.headers.get("OCI-Filters-Applied", "").split(",")]
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert len(entries) == 2
    assert {e["artifactType"] for e in entries} == {BAGEL}
    assert {e["digest"] for e in entries} == {food["pushed"]["config-a"][0], food["pushed"]["artifact-a"][0]}

    r = referrers(server, food["repo"], food["subject"], FOOD_STAND)
    entries = assert_index(r)
    assert [e["digest"] for e in entries] == [food["pushed"]["index"][0]]
    assert r.headers["OCI-Filters-Applied"] == "artifactType"

    r = referrers(server, food["repo"], food["subject"], "application/vnd.nothing")
    assert assert_index(r) == []
    assert r.headers["OCI-Filters-Applied"] == "artifactType"


def test_a_filter_with_a_control_character_matches_nothing(server: Server, food: dict[str, Any]) -> None:
    """No stored artifact type holds one; PostgreSQL cannot compare a NUL at all (this was a 500)."""
    for artifact_type in (BAGEL + "\x00", "\x00", BAGEL + "\n"):
        r = referrers(server, food["repo"], food["subject"], artifact_type)
        assert assert_index(r) == [], artifact_type
        assert r.headers["OCI-Filters-Applied"] == "artifactType"


def test_no_filter_header_without_filter(server: Server, food: dict[str, Any]) -> None:
    r = referrers(server, food["repo"], food["subject"])
    assert "OCI-Filters-Applied" not in r.headers


def test_unknown_subject_is_an_empty_index(server: Server) -> None:
    repo = unique_repo("refs")
    push_image(server.url, repo, tag="x")
    r = referrers(server, repo, random_digest())
    assert assert_index(r) == []
    # The legacy suite's dummy digest, and a repository that does not exist at all.
    assert assert_index(referrers(server, repo, digest_of(b"hello world"))) == []
    assert assert_index(referrers(server, unique_repo("nowhere"), random_digest())) == []
    assert assert_index(referrers(server, repo, random_digest("sha512"))) == []


def test_subject_never_pushed_lists_its_referrer(server: Server) -> None:
    repo = unique_repo("refs")
    subject = {"mediaType": OCI_MANIFEST, "digest": digest_of(os.urandom(123)), "size": 123}
    digest, body = push_referrer(server, repo, subject, "application/vnd.example.c", annotations={"k": "v"})
    entries = assert_index(referrers(server, repo, subject["digest"]))
    assert entries == [
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body), "artifactType": "application/vnd.example.c", "annotations": {"k": "v"}}
    ]


def test_referrers_appear_at_once_and_go_with_delete(server: Server) -> None:
    repo = unique_repo("refs")
    subject_digest, subject_body = push_image(server.url, repo, tag="s")
    # Several requests first, so every worker has looked (and could have cached) the empty answer.
    for _ in range(4):
        assert assert_index(referrers(server, repo, subject_digest)) == []
    digest, _ = push_referrer(server, repo, subject_of(subject_digest, subject_body), "application/vnd.example.sig")
    for _ in range(4):
        assert [e["digest"] for e in assert_index(referrers(server, repo, subject_digest))] == [digest]
    assert requests.delete(f"{server.url}/v2/{repo}/manifests/{digest}", timeout=TIMEOUT).status_code == 202
    for _ in range(4):
        assert assert_index(referrers(server, repo, subject_digest)) == []


def test_referrers_are_per_repository(server: Server) -> None:
    repo, other = unique_repo("refs"), unique_repo("refs")
    subject_digest, subject_body = push_image(server.url, repo, tag="s")
    push_referrer(server, repo, subject_of(subject_digest, subject_body), "application/vnd.example.sig")
    assert assert_index(referrers(server, other, subject_digest)) == []


def test_referrer_without_annotations_has_none(server: Server) -> None:
    repo = unique_repo("refs")
    subject_digest, subject_body = push_image(server.url, repo, tag="s")
    digest, _ = push_referrer(server, repo, subject_of(subject_digest, subject_body), "application/vnd.example.sig")
    (entry,) = assert_index(referrers(server, repo, subject_digest))
    assert entry["digest"] == digest
    assert not entry.get("annotations")


def test_sha512_subject_and_referrer(server: Server) -> None:
    repo = unique_repo("refs")
    subject_digest, subject_body = push_image(server.url, repo, algorithm="sha512")
    empty = push_empty_config(server.url, repo)
    body = manifest_bytes(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": empty,
            "layers": [empty],
            "subject": subject_of(subject_digest, subject_body),
        }
    )
    digest, r = push_manifest(server.url, repo, body, algorithm="sha512")
    assert r.headers.get("OCI-Subject") == subject_digest
    entries = assert_index(referrers(server, repo, subject_digest))
    assert [e["digest"] for e in entries] == [digest]


@pytest.mark.parametrize("bad", ["sha256:nope", "notadigest", "sha256:" + "A" * 64, "md5:" + "0" * 32])
def test_invalid_digest_is_400(server: Server, food: dict[str, Any], bad: str) -> None:
    assert_error(referrers(server, food["repo"], bad), 400, "DIGEST_INVALID")


def test_invalid_repository_name_is_400(server: Server) -> None:
    assert_error(referrers(server, "Bad/Name", random_digest()), 400, "NAME_INVALID")


def test_referrer_pushed_by_digest_and_by_tag_is_listed_once(server: Server) -> None:
    repo = unique_repo("refs")
    subject_digest, subject_body = push_image(server.url, repo, tag="s")
    digest, body = push_referrer(server, repo, subject_of(subject_digest, subject_body), "application/vnd.example.sig")
    _, r = push_manifest(server.url, repo, body, reference="sig-tag", media_type=OCI_MANIFEST)
    assert r.headers.get("OCI-Subject") == subject_digest
    assert [e["digest"] for e in assert_index(referrers(server, repo, subject_digest))] == [digest]
