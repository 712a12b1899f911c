"""Real clients against a real cargohold: skopeo with umoci-built images, docker-registry as a peer, oras.

Images are built without a daemon by umoci (``tests/images.py``); the
multi-platform index is written by hand so its bytes are known. Every check is
byte-exact: a digest names exactly the bytes served, in both directions and
across registries.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import oras.oci
import pytest
import requests

from clients import ArtifactOrasClient, Skopeo
from images import OCI_INDEX, OCI_MANIFEST, Layout, build_image, build_multiarch, init_layout, sha256_digest
from servers import DockerRegistry, Server

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json"])


def unique(prefix: str) -> str:
    return f"clients/{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """One layout for the module: ``single`` (linux/amd64) and ``multi`` (an index over linux/amd64 + linux/arm64)."""
    built = init_layout(tmp_path_factory.mktemp("umoci") / "layout")
    build_image(built, "single", architecture="amd64", files={"/etc/cargohold/single.txt": b"single-arch image\n"})
    build_multiarch(built, "multi")
    return built


@pytest.fixture
def skopeo(tmp_path: Path) -> Skopeo:
    return Skopeo(tmp_path / "skopeo-home")


@pytest.fixture
def oras_client(sqlite_server: Server) -> ArtifactOrasClient:
    return ArtifactOrasClient(sqlite_server.host)


# --- helpers -----------------------------------------------------------------------------------


def get_manifest(server: Server | DockerRegistry, repo: str, reference: str) -> requests.Response:
    return requests.get(f"{server.url}/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT}, timeout=30)


def assert_served_like_layout(server: Server, repo: str, layout: Layout, digest: str) -> None:
    """Every manifest, config and layer under ``digest`` is served by ``server`` with the layout's exact bytes."""
    body = layout.blob(digest)
    r = get_manifest(server, repo, digest)
    assert r.status_code == 200, (digest, r.status_code, r.text)
    assert r.content == body
    assert r.headers["Docker-Content-Digest"] == digest
    doc = json.loads(body)
    expected_type = doc.get("mediaType") or (OCI_INDEX if "manifests" in doc else OCI_MANIFEST)
    assert r.headers["Content-Type"] == expected_type
    if "manifests" in doc:
        for child in doc["manifests"]:
            assert_served_like_layout(server, repo, layout, child["digest"])
        return
    for blob in [doc["config"], *doc["layers"]]:
        got = requests.get(f"{server.url}/v2/{repo}/blobs/{blob['digest']}", timeout=30)
        assert got.status_code == 200, (blob, got.status_code, got.text)
        assert got.content == layout.blob(blob["digest"])
        assert len(got.content) == blob["size"]
        assert got.headers["Docker-Content-Digest"] == blob["digest"]


def assert_same_tree(a: Layout, b: Layout, digest: str) -> None:
    """Layout ``b`` holds the manifest ``digest`` and everything under it with exactly ``a``'s bytes."""
    body = a.blob(digest)
    assert b.blob(digest) == body, f"{digest} differs between {a.path} and {b.path}"
    doc = json.loads(body)
    if "manifests" in doc:
        for child in doc["manifests"]:
            assert_same_tree(a, b, child["digest"])
        return
    for blob in [doc["config"], *doc["layers"]]:
        assert b.blob(blob["digest"]) == a.blob(blob["digest"])


def push_layout(skopeo: Skopeo, layout: Layout, tag: str, host: str, repo: str, dest_tag: str | None = None) -> str:
    """``skopeo copy --all --preserve-digests oci:layout:tag docker://host/repo:dest_tag``; the reference."""
    ref = f"docker://{host}/{repo}:{dest_tag or tag}"
    skopeo("copy", "--all", "--preserve-digests", "--dest-tls-verify=false", f"oci:{layout.path}:{tag}", ref)
    return ref


def raw_pair(skopeo: Skopeo, a: str, b: str) -> bytes:
    """``skopeo inspect --raw`` of two references, asserted byte-identical; the bytes."""
    raw_a, raw_b = skopeo.inspect_raw(a), skopeo.inspect_raw(b)
    assert raw_a == raw_b, f"{a} and {b} serve different manifest bytes"
    return raw_a


# --- skopeo: OCI layout <-> cargohold ----------------------------------------------------------


def test_skopeo_copy_single_arch_inspect_and_list_tags(
    sqlite_server: Server, skopeo: Skopeo, layout: Layout
) -> None:
    repo = unique("single")
    descriptor = layout.descriptor("single")
    digest = descriptor["digest"]
    manifest = layout.manifest("single")
    ref = push_layout(skopeo, layout, "single", sqlite_server.host, repo, "v1")

    info = skopeo.inspect(ref)
    assert info["Digest"] == digest
    assert info["Architecture"] == "amd64"
    assert info["Os"] == "linux"
    assert info["Layers"] == [layer["digest"] for layer in manifest["layers"]]
    assert info["RepoTags"] == ["v1"]

    raw = skopeo.inspect_raw(ref)
    assert raw == layout.manifest_bytes("single")
    assert sha256_digest(raw) == digest
    config = skopeo("inspect", "--tls-verify=false", "--config", "--raw", ref).stdout
    assert config == layout.blob(manifest["config"]["digest"])

    # By digest, too, and every blob with the layout's bytes.
    assert skopeo.inspect_raw(f"docker://{sqlite_server.host}/{repo}@{digest}") == raw
    assert_served_like_layout(sqlite_server, repo, layout, digest)

    assert skopeo.list_tags(f"docker://{sqlite_server.host}/{repo}") == {
        "Repository": f"{sqlite_server.host}/{repo}",
        "Tags": ["v1"],
    }
    push_layout(skopeo, layout, "single", sqlite_server.host, repo, "v2")
    tags = skopeo.list_tags(f"docker://{sqlite_server.host}/{repo}")["Tags"]
    assert sorted(tags) == ["v1", "v2"]
    assert skopeo.inspect(f"docker://{sqlite_server.host}/{repo}:v2")["Digest"] == digest


def test_skopeo_copy_multiarch_index_and_back_to_layout(
    sqlite_server: Server, skopeo: Skopeo, layout: Layout, tmp_path: Path
) -> None:
    repo = unique("multi")
    index_descriptor = layout.descriptor("multi")
    index_digest = index_descriptor["digest"]
    index = layout.manifest("multi")
    children = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    assert set(children) == {"amd64", "arm64"}
    ref = push_layout(skopeo, layout, "multi", sqlite_server.host, repo)

    raw = skopeo.inspect_raw(ref)
    assert raw == layout.blob(index_digest)
    assert sha256_digest(raw) == index_digest
    r = get_manifest(sqlite_server, repo, "multi")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    assert r.headers["Docker-Content-Digest"] == index_digest
    assert r.content == layout.blob(index_digest)

    # skopeo resolves the index to the platform it is asked for (its "Digest" is the top-level index's).
    for arch, child in children.items():
        info = skopeo.inspect(ref, "--override-os", "linux", "--override-arch", arch)
        assert info["Digest"] == index_digest, arch
        assert info["Layers"] == [layer["digest"] for layer in layout.manifest(child)["layers"]], arch
        assert info["Architecture"] == arch
        assert info["Os"] == "linux"
        assert skopeo.inspect_raw(f"docker://{sqlite_server.host}/{repo}@{child}") == layout.blob(child)
    assert_served_like_layout(sqlite_server, repo, layout, index_digest)

    # And back out to a fresh layout: the same index, manifests, configs and layers, byte for byte.
    out = Layout(tmp_path / "out")
    skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false", ref, f"oci:{out.path}:multi")
    got = out.descriptor("multi")
    assert (got["mediaType"], got["digest"], got["size"]) == (OCI_INDEX, index_digest, index_descriptor["size"])
    assert_same_tree(layout, out, index_digest)

    single_out = Layout(tmp_path / "single-out")
    single_ref = push_layout(skopeo, layout, "single", sqlite_server.host, repo, "single")
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false", single_ref, f"oci:{single_out.path}:single")
    assert single_out.descriptor("single")["digest"] == layout.descriptor("single")["digest"]
    assert single_out.manifest_bytes("single") == layout.manifest_bytes("single")
    assert_same_tree(layout, single_out, layout.descriptor("single")["digest"])


def test_skopeo_copy_between_cargohold_repositories(sqlite_server: Server, skopeo: Skopeo, layout: Layout) -> None:
    """Registry to registry on one host: containers/image tries cross-repository blob mounts here."""
    source, target = unique("copy-src"), unique("copy-dst")
    src = push_layout(skopeo, layout, "multi", sqlite_server.host, source)
    dst = f"docker://{sqlite_server.host}/{target}:multi"
    skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false", src, dst)
    raw = raw_pair(skopeo, src, dst)
    assert sha256_digest(raw) == layout.descriptor("multi")["digest"]
    assert_served_like_layout(sqlite_server, target, layout, layout.descriptor("multi")["digest"])


# --- skopeo: docker-registry <-> cargohold -------------------------------------------------------


def test_skopeo_copy_all_from_docker_registry(
    sqlite_server: Server, docker_registry: DockerRegistry, skopeo: Skopeo, layout: Layout
) -> None:
    repo = unique("from-distribution")
    index_digest = layout.descriptor("multi")["digest"]
    upstream = push_layout(skopeo, layout, "multi", docker_registry.host, repo)
    # A Docker schema 2 image as well: skopeo converts the OCI image on the way into docker-registry.
    upstream_docker = f"docker://{docker_registry.host}/{repo}:docker"
    skopeo("copy", "--format", "v2s2", "--dest-tls-verify=false", f"oci:{layout.path}:single", upstream_docker)
    docker_raw = skopeo.inspect_raw(upstream_docker)
    assert json.loads(docker_raw)["mediaType"] == DOCKER_MANIFEST

    local = f"docker://{sqlite_server.host}/{repo}:multi"
    local_docker = f"docker://{sqlite_server.host}/{repo}:docker"
    for src, dst in [(upstream, local), (upstream_docker, local_docker)]:
        skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false", src, dst)

    raw = raw_pair(skopeo, upstream, local)
    assert sha256_digest(raw) == index_digest
    assert raw == layout.blob(index_digest)
    for child in json.loads(raw)["manifests"]:
        child_raw = raw_pair(
            skopeo,
            f"docker://{docker_registry.host}/{repo}@{child['digest']}",
            f"docker://{sqlite_server.host}/{repo}@{child['digest']}",
        )
        assert sha256_digest(child_raw) == child["digest"]
    assert_served_like_layout(sqlite_server, repo, layout, index_digest)

    assert raw_pair(skopeo, upstream_docker, local_docker) == docker_raw
    docker_digest = sha256_digest(docker_raw)
    assert skopeo.inspect(upstream_docker)["Digest"] == docker_digest
    assert skopeo.inspect(local_docker)["Digest"] == docker_digest
    r = get_manifest(sqlite_server, repo, "docker")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == DOCKER_MANIFEST
    assert r.headers["Docker-Content-Digest"] == docker_digest
    assert r.content == docker_raw
    docker_manifest = json.loads(docker_raw)
    for blob in [docker_manifest["config"], *docker_manifest["layers"]]:
        mine = requests.get(f"{sqlite_server.url}/v2/{repo}/blobs/{blob['digest']}", timeout=30)
        theirs = requests.get(f"{docker_registry.url}/v2/{repo}/blobs/{blob['digest']}", timeout=30)
        assert mine.status_code == theirs.status_code == 200
        assert mine.content == theirs.content
        assert sha256_digest(mine.content) == blob["digest"]


def test_skopeo_copy_all_to_docker_registry(
    sqlite_server: Server, docker_registry: DockerRegistry, skopeo: Skopeo, layout: Layout
) -> None:
    repo = unique("to-distribution")
    for tag in ("multi", "single"):
        local = push_layout(skopeo, layout, tag, sqlite_server.host, repo)
        peer = f"docker://{docker_registry.host}/{repo}:{tag}"
        skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false", local, peer)
        digest = layout.descriptor(tag)["digest"]
        raw = raw_pair(skopeo, local, peer)
        assert raw == layout.blob(digest)
        assert sha256_digest(raw) == digest
        r = get_manifest(docker_registry, repo, tag)
        assert r.status_code == 200
        assert r.headers["Docker-Content-Digest"] == digest
        assert r.content == raw
        doc = json.loads(raw)
        for child in doc.get("manifests", []):
            child_raw = raw_pair(
                skopeo,
                f"docker://{sqlite_server.host}/{repo}@{child['digest']}",
                f"docker://{docker_registry.host}/{repo}@{child['digest']}",
            )
            assert sha256_digest(child_raw) == child["digest"]
    assert sorted(skopeo.list_tags(f"docker://{docker_registry.host}/{repo}")["Tags"]) == ["multi", "single"]


# --- skopeo delete -------------------------------------------------------------------------------


def test_skopeo_delete_manifest_by_digest(sqlite_server: Server, skopeo: Skopeo, layout: Layout) -> None:
    repo = unique("delete")
    host = sqlite_server.host
    digest = layout.descriptor("single")["digest"]
    ref = push_layout(skopeo, layout, "single", host, repo, "v1")
    by_digest = f"docker://{host}/{repo}@{digest}"
    assert skopeo.inspect_raw(by_digest) == layout.manifest_bytes("single")

    skopeo("delete", "--tls-verify=false", by_digest)

    for gone in (by_digest, ref):
        failed = skopeo("inspect", "--tls-verify=false", "--raw", gone, check=False)
        assert failed.returncode != 0, f"{gone} still resolves after delete: {failed.stdout[:200]!r}"
        assert b"manifest unknown" in failed.stderr.lower(), failed.stderr
    r = get_manifest(sqlite_server, repo, digest)
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    r = get_manifest(sqlite_server, repo, "v1")
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    # Deleting it again is a 404, not a silent success.
    r = requests.delete(f"{sqlite_server.url}/v2/{repo}/manifests/{digest}", timeout=30)
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_skopeo_delete_index_keeps_its_children(sqlite_server: Server, skopeo: Skopeo, layout: Layout) -> None:
    repo = unique("delete-index")
    host = sqlite_server.host
    index_digest = layout.descriptor("multi")["digest"]
    push_layout(skopeo, layout, "multi", host, repo)
    skopeo("delete", "--tls-verify=false", f"docker://{host}/{repo}@{index_digest}")
    failed = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{host}/{repo}@{index_digest}", check=False)
    assert failed.returncode != 0
    assert b"manifest unknown" in failed.stderr.lower(), failed.stderr
    # distribution-spec: deleting an index does not delete the manifests it lists.
    for child in layout.manifest("multi")["manifests"]:
        assert skopeo.inspect_raw(f"docker://{host}/{repo}@{child['digest']}") == layout.blob(child["digest"])


# --- oras: artifacts, subject, referrers ---------------------------------------------------------

SBOM_TYPE = "application/vnd.example.sbom.v1"
SBOM_FILE_TYPE = "application/vnd.example.sbom.v1+json"
SIGNATURE_TYPE = "application/vnd.example.signature.v1"
SIGNATURE_FILE_TYPE = "application/vnd.example.signature.v1+json"
ATTESTATION_CONFIG_TYPE = "application/vnd.example.attestation.config.v1+json"


@pytest.fixture
def empty_config(tmp_path: Path) -> str:
    """The OCI empty config (``{}``) as an oras ``path:mediaType`` config reference."""
    path = tmp_path / "empty-config.json"
    path.write_bytes(b"{}")
    return f"{path}:{OCI_EMPTY}"


def write_file(directory: Path, name: str, content: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(content)
    return path


def pushed_manifest(server: Server, repo: str, response: requests.Response) -> tuple[str, bytes, dict[str, Any]]:
    """The digest, bytes and document of the manifest a push answered with ``response``."""
    assert response.status_code == 201, (response.status_code, response.text)
    digest = response.headers["Docker-Content-Digest"]
    assert response.headers["Location"] == f"/v2/{repo}/manifests/{digest}"
    got = get_manifest(server, repo, digest)
    assert got.status_code == 200
    assert got.headers["Content-Type"] == OCI_MANIFEST
    assert got.headers["Docker-Content-Digest"] == digest
    assert sha256_digest(got.content) == digest
    # oras sends json.dumps(manifest): the registry stored exactly those bytes.
    assert got.content == response.request.body
    return digest, got.content, json.loads(got.content)


def referrers(server: Server, repo: str, digest: str, artifact_type: str | None = None) -> requests.Response:
    params = {"artifactType": artifact_type} if artifact_type is not None else None
    return requests.get(f"{server.url}/v2/{repo}/referrers/{digest}", params=params, timeout=30)


def referrer_descriptor(digest: str, body: bytes, doc: dict[str, Any]) -> dict[str, Any]:
    """What the referrers API must list for a manifest (distribution-spec v1.1, "Listing Referrers")."""
    descriptor: dict[str, Any] = {
        "mediaType": doc["mediaType"],
        "digest": digest,
        "size": len(body),
        "artifactType": doc.get("artifactType") or doc["config"]["mediaType"],
    }
    if doc.get("annotations"):
        descriptor["annotations"] = doc["annotations"]
    return descriptor


def assert_referrers(response: requests.Response, expected: list[dict[str, Any]], filtered: bool) -> None:
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.headers["Content-Type"] == OCI_INDEX
    if filtered:
        assert response.headers.get("OCI-Filters-Applied") == "artifactType"
    else:
        assert "OCI-Filters-Applied" not in response.headers
    body = response.json()
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == OCI_INDEX
    key = lambda d: d["digest"]  # noqa: E731 — the order of referrers is unspecified
    assert sorted(body["manifests"], key=key) == sorted(expected, key=key)


def test_oras_push_and_pull_artifact(
    sqlite_server: Server, oras_client: ArtifactOrasClient, empty_config: str, tmp_path: Path
) -> None:
    repo = unique("oras-artifact")
    content = json.dumps({"sbom": "cargohold", "packages": ["a", "b"]}).encode()
    sbom = write_file(tmp_path / "in", "sbom.json", content)
    target = f"{sqlite_server.host}/{repo}:v1"
    response = oras_client.push_artifact(
        target, artifact_type=SBOM_TYPE, files=[f"{sbom}:{SBOM_FILE_TYPE}"], manifest_config=empty_config
    )
    digest, _, doc = pushed_manifest(sqlite_server, repo, response)
    assert doc["artifactType"] == SBOM_TYPE
    assert doc["config"] == {"mediaType": OCI_EMPTY, "size": 2, "digest": sha256_digest(b"{}")}
    assert doc["layers"] == [
        {
            "mediaType": SBOM_FILE_TYPE,
            "size": len(content),
            "digest": sha256_digest(content),
            "annotations": {"org.opencontainers.image.title": "sbom.json"},
        }
    ]
    empty = requests.get(f"{sqlite_server.url}/v2/{repo}/blobs/{sha256_digest(b'{}')}", timeout=30)
    assert (empty.status_code, empty.content) == (200, b"{}")

    # oras reads it back by tag and by digest.
    assert oras_client.get_manifest(target) == doc
    for ref in (target, f"{sqlite_server.host}/{repo}@{digest}"):
        outdir = tmp_path / f"out-{hashlib.sha256(ref.encode()).hexdigest()[:8]}"
        files = oras_client.pull(target=ref, outdir=str(outdir))
        assert files == [str(outdir / "sbom.json")]
        assert (outdir / "sbom.json").read_bytes() == content
    tags = requests.get(f"{sqlite_server.url}/v2/{repo}/tags/list", timeout=30)
    assert tags.status_code == 200
    assert tags.json() == {"name": repo, "tags": ["v1"]}


def test_oras_subject_and_referrers_api(
    sqlite_server: Server, oras_client: ArtifactOrasClient, empty_config: str, tmp_path: Path
) -> None:
    repo = unique("oras-referrers")
    host = sqlite_server.host

    sbom_content = b'{"spdxVersion": "SPDX-2.3"}'
    sbom = write_file(tmp_path / "sbom", "sbom.spdx.json", sbom_content)
    subject_response = oras_client.push_artifact(
        f"{host}/{repo}:sbom", artifact_type=SBOM_TYPE, files=[f"{sbom}:{SBOM_FILE_TYPE}"], manifest_config=empty_config
    )
    subject_digest, subject_body, _ = pushed_manifest(sqlite_server, repo, subject_response)
    assert "OCI-Subject" not in subject_response.headers
    subject = oras.oci.Subject(mediaType=OCI_MANIFEST, digest=subject_digest, size=len(subject_body))

    # Before anything refers to it: an empty index, not a 404.
    assert_referrers(referrers(sqlite_server, repo, subject_digest), [], filtered=False)

    signature_content = b"signature bytes \x00\x01\x02"
    signature = write_file(tmp_path / "sig", "artifact.sig", signature_content)
    signature_response = oras_client.push_artifact(
        f"{host}/{repo}:signature",
        artifact_type=SIGNATURE_TYPE,
        files=[f"{signature}:{SIGNATURE_FILE_TYPE}"],
        manifest_config=empty_config,
        manifest_annotations={"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "com.example.signer": "ci"},
        subject=subject,
    )
    signature_digest, signature_body, signature_doc = pushed_manifest(sqlite_server, repo, signature_response)
    assert signature_doc["subject"] == {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject_body)}
    assert signature_doc["artifactType"] == SIGNATURE_TYPE
    # distribution-spec v1.1: a registry that processes subject answers the push with OCI-Subject.
    assert signature_response.headers.get("OCI-Subject") == subject_digest

    # A referrer without artifactType: the referrers API reports its config media type instead.
    attestation_config = write_file(tmp_path / "att", "config.json", b'{"predicateType": "https://slsa.dev/provenance/v1"}')
    attestation = write_file(tmp_path / "att", "provenance.json", b'{"builder": "cargohold-ci"}')
    attestation_response = oras_client.push_artifact(
        f"{host}/{repo}:attestation",
        artifact_type=None,
        files=[f"{attestation}:application/vnd.in-toto+json"],
        manifest_config=f"{attestation_config}:{ATTESTATION_CONFIG_TYPE}",
        subject=subject,
    )
    attestation_digest, attestation_body, attestation_doc = pushed_manifest(sqlite_server, repo, attestation_response)
    assert "artifactType" not in attestation_doc
    assert attestation_response.headers.get("OCI-Subject") == subject_digest

    signature_descriptor = referrer_descriptor(signature_digest, signature_body, signature_doc)
    attestation_descriptor = referrer_descriptor(attestation_digest, attestation_body, attestation_doc)
    assert signature_descriptor["annotations"] == {
        "org.opencontainers.image.created": "2024-01-01T00:00:00Z",
        "com.example.signer": "ci",
    }
    assert attestation_descriptor["artifactType"] == ATTESTATION_CONFIG_TYPE

    assert_referrers(
        referrers(sqlite_server, repo, subject_digest), [signature_descriptor, attestation_descriptor], filtered=False
    )
    assert_referrers(referrers(sqlite_server, repo, subject_digest, SIGNATURE_TYPE), [signature_descriptor], filtered=True)
    assert_referrers(
        referrers(sqlite_server, repo, subject_digest, ATTESTATION_CONFIG_TYPE), [attestation_descriptor], filtered=True
    )
    assert_referrers(referrers(sqlite_server, repo, subject_digest, "application/vnd.example.none"), [], filtered=True)
    # The referrers themselves have no referrers; another repository sees none of these.
    assert_referrers(referrers(sqlite_server, repo, signature_digest), [], filtered=False)
    assert_referrers(referrers(sqlite_server, unique("oras-elsewhere"), subject_digest), [], filtered=False)

    # Pull the referrer with oras, by the digest the referrers API listed.
    outdir = tmp_path / "pulled"
    files = oras_client.pull(target=f"{host}/{repo}@{signature_digest}", outdir=str(outdir))
    assert files == [str(outdir / "artifact.sig")]
    assert (outdir / "artifact.sig").read_bytes() == signature_content
    assert oras_client.get_manifest(f"{host}/{repo}@{signature_digest}") == signature_doc


def test_oras_chunked_push_and_pull(
    sqlite_server: Server, oras_client: ArtifactOrasClient, empty_config: str, tmp_path: Path
) -> None:
    """oras's chunked upload: POST, then PATCHes with ``Content-Range``, then ``PUT ?digest=``."""
    repo = unique("oras-chunked")
    content = hashlib.sha256(b"seed").digest() * (40 * 1024 + 7)  # ~1.25 MiB, not a multiple of the chunk size
    data = write_file(tmp_path / "in", "data.bin", content)
    target = f"{sqlite_server.host}/{repo}:v1"
    response = oras_client.push_artifact(
        target,
        artifact_type="application/vnd.example.data.v1",
        files=[f"{data}:application/octet-stream"],
        manifest_config=empty_config,
        do_chunked=True,
        chunk_size=256 * 1024,
    )
    _, _, doc = pushed_manifest(sqlite_server, repo, response)
    assert doc["layers"][0]["digest"] == sha256_digest(content)
    assert doc["layers"][0]["size"] == len(content)
    blob = requests.get(f"{sqlite_server.url}/v2/{repo}/blobs/{sha256_digest(content)}", timeout=30)
    assert blob.status_code == 200
    assert blob.content == content
    outdir = tmp_path / "out"
    assert oras_client.pull(target=target, outdir=str(outdir)) == [str(outdir / "data.bin")]
    assert (outdir / "data.bin").read_bytes() == content
