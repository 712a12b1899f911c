"""Helm charts and Open Policy Agent bundles, with their real media types, through every way content moves.

Pushed and pulled with the oras client; pulled through a cache rule from a docker-registry
upstream; imported and synced from it; exported to an OCI layout and imported back. In
every case the manifest, the config and each layer must come out byte-exact: nothing in
cargohold may care that these are not container images.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from artifacts import HELM_CHART, Artifact, build, helm_chart, legacy_helm_manifest
from cachehelpers import cache_server, docker_registry, push_upstream_blob
from importhelpers import admin, admin_cli, api, start_import, unique
from ocihelpers import OCI_MANIFEST, digest_of
from oras.provider import Registry as OrasClient
from servers import DockerRegistry, Server

TIMEOUT = 60
KINDS = ["helm", "opa"]


@dataclass
class World:
    upstream: DockerRegistry
    server: Server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("artifacts")
    with docker_registry(root / "upstream") as upstream, cache_server(
        root / "data", CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS="100000"
    ) as server:
        r = api(server, "POST", "/cache-rules", json={
            "name": "artifacts", "source": f"{upstream.host}/up/*", "target": "cached/*", "insecure": True,
        })
        assert r.status_code == 201, r.text
        yield World(upstream, server)


def oras_to(server: Server) -> OrasClient:
    """The oras client for cargohold, as the admin (Basic auth)."""
    client = OrasClient(hostname=server.host, insecure=True, tls_verify=False, auth_backend="basic")
    client.auth.set_basic_auth(*admin(server))
    return client


def oras_push(client: OrasClient, host: str, ref: str, artifact: Artifact) -> str:
    """``artifact`` pushed by oras to ``host/ref``; the manifest's digest."""
    response = client.push(f"{host}/{ref}", files=artifact.oras_files(), manifest_config=artifact.oras_config(),
                           disable_path_validation=True, quiet=True)
    assert response.status_code == 201, response.text
    return str(response.headers["Docker-Content-Digest"])


def push_upstream(world: World, artifact: Artifact) -> tuple[str, bytes]:
    """``artifact`` pushed by oras into the upstream as ``up/<kind>-<random>:1.0``; (repository, manifest bytes)."""
    repo = f"up/{artifact.kind}-{uuid.uuid4().hex[:8]}"
    client = OrasClient(hostname=world.upstream.host, insecure=True, tls_verify=False)
    digest = oras_push(client, world.upstream.host, f"{repo}:1.0", artifact)
    body = requests.get(f"{world.upstream.url}/v2/{repo}/manifests/{digest}", headers={"Accept": OCI_MANIFEST},
                        timeout=TIMEOUT).content
    assert digest_of(body) == digest
    return repo, body


def check_served(server: Server, repo: str, reference: str, artifact: Artifact, outdir: Path,
                 expected: bytes | None = None) -> bytes:
    """cargohold serves ``artifact`` at ``repo:reference`` byte-exact (manifest, config, layers; through /v2 and
    an oras pull), with its media types; the manifest's bytes."""
    r = requests.get(f"{server.url}/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST},
                     auth=admin(server), timeout=TIMEOUT)
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.content
    if expected is not None:
        assert body == expected
    assert r.headers["Docker-Content-Digest"] == digest_of(body)
    manifest = json.loads(body)
    config = artifact.config.read_bytes()
    assert manifest["config"] == {**manifest["config"], "mediaType": artifact.config_type, "digest": digest_of(config)}
    assert [(layer["mediaType"], layer["digest"]) for layer in manifest["layers"]] == [
        (media_type, digest_of(path.read_bytes())) for path, media_type in artifact.layers]
    for digest, content in [(digest_of(config), config), *((digest_of(p.read_bytes()), p.read_bytes()) for p, _ in artifact.layers)]:
        blob = requests.get(f"{server.url}/v2/{repo}/blobs/{digest}", auth=admin(server), timeout=TIMEOUT)
        assert blob.status_code == 200 and blob.content == content, (digest, blob.status_code)

    pulled = oras_to(server).pull(target=f"{server.host}/{repo}:{reference}" if ":" not in reference
                                  else f"{server.host}/{repo}@{reference}", outdir=str(outdir))
    # (oras names a file by the layer's title annotation, or by its digest when there is none)
    got = {Path(f).name: Path(f).read_bytes() for f in pulled}
    titled = all("org.opencontainers.image.title" in (layer.get("annotations") or {}) for layer in manifest["layers"])
    assert (got == artifact.layer_bytes()) if titled else (sorted(got.values()) == sorted(artifact.layer_bytes().values()))
    if artifact.kind == "helm":  # the pulled layer is still a chart helm can install
        [chart] = [p.read_bytes() for p, media_type in artifact.layers if media_type == HELM_CHART]
        assert chart in got.values()
        with tarfile.open(fileobj=io.BytesIO(chart), mode="r:gz") as tar:
            assert {"demo/Chart.yaml", "demo/values.yaml", "demo/templates/configmap.yaml"} <= set(tar.getnames())
    return body


@pytest.mark.parametrize("kind", KINDS)
def test_oras_push_and_pull(world: World, kind: str, tmp_path: Path) -> None:
    artifact = build(kind, tmp_path / "in")
    repo = unique(kind)
    digest = oras_push(oras_to(world.server), world.server.host, f"{repo}:1.0", artifact)
    body = check_served(world.server, repo, "1.0", artifact, tmp_path / "pulled")
    assert digest_of(body) == digest
    check_served(world.server, repo, digest, artifact, tmp_path / "by-digest", expected=body)


@pytest.mark.parametrize("kind", KINDS)
def test_pull_through_a_cache_rule(world: World, kind: str, tmp_path: Path) -> None:
    artifact = build(kind, tmp_path / "in")
    repo, body = push_upstream(world, artifact)
    cached = "cached/" + repo.removeprefix("up/")
    check_served(world.server, cached, "1.0", artifact, tmp_path / "cold", expected=body)
    check_served(world.server, cached, "1.0", artifact, tmp_path / "warm", expected=body)


@pytest.mark.parametrize("kind", KINDS)
def test_import_and_sync(world: World, kind: str, tmp_path: Path) -> None:
    artifact = build(kind, tmp_path / "in")
    repo, body = push_upstream(world, artifact)

    imported = unique(f"imported-{kind}")
    r = start_import(world.server, f"{world.upstream.host}/{repo}:1.0", targets=[f"{imported}:1.0"])
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "succeeded", r.json()
    check_served(world.server, imported, "1.0", artifact, tmp_path / "imported", expected=body)

    synced, name = unique(f"synced-{kind}"), f"s{uuid.uuid4().hex[:10]}"
    r = api(world.server, "POST", "/sync-rules", json={
        "name": name, "source": f"{world.upstream.host}/{repo}", "target": synced, "insecure": True})
    assert r.status_code == 201, r.text
    try:
        run = api(world.server, "POST", f"/sync-rules/{name}/runs")
        assert run.status_code == 201 and run.json()["state"] == "succeeded", run.text
        assert [c["tag"] for c in run.json()["copied"]] == ["1.0"]
        check_served(world.server, synced, "1.0", artifact, tmp_path / "synced", expected=body)
    finally:
        assert api(world.server, "DELETE", f"/sync-rules/{name}").status_code == 204


@pytest.mark.parametrize("kind", KINDS)
def test_export_to_a_layout_and_back(world: World, kind: str, tmp_path: Path) -> None:
    artifact = build(kind, tmp_path / "in")
    repo = unique(kind)
    digest = oras_push(oras_to(world.server), world.server.host, f"{repo}:1.0", artifact)
    home, out = tmp_path / "home", tmp_path / "layout"
    home.mkdir()
    exported = admin_cli(world.server, home, "export", f"{repo}:1.0", "--to", str(out))
    assert exported.returncode == 0, exported.stderr

    [entry] = json.loads((out / "index.json").read_text())["manifests"]
    assert entry["digest"] == digest and entry["annotations"]["org.opencontainers.image.ref.name"] == f"{repo}:1.0"
    body = (out / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    for path in [artifact.config, *(p for p, _ in artifact.layers)]:
        content = path.read_bytes()
        assert (out / "blobs" / "sha256" / digest_of(content).split(":")[1]).read_bytes() == content

    back = unique(f"back-{kind}")
    imported = admin_cli(world.server, home, "import", f"oci-layout:{out}", "--image", back)
    assert imported.returncode == 0, imported.stderr
    check_served(world.server, back, "1.0", artifact, tmp_path / "back", expected=body)


def test_helm_chart_without_a_manifest_media_type(world: World, tmp_path: Path) -> None:
    """A chart as helm 3.8–3.12 pushed it (no ``mediaType`` in the manifest body) comes through the cache,
    an import, a sync and a layout round trip byte-exact."""
    chart = helm_chart(tmp_path / "in")
    repo = f"up/legacy-{uuid.uuid4().hex[:8]}"
    for path in [chart.config, *(p for p, _ in chart.layers)]:
        push_upstream_blob(world.upstream.url, repo, path.read_bytes())
    body = legacy_helm_manifest(chart)
    r = requests.put(f"{world.upstream.url}/v2/{repo}/manifests/1.0", data=body, headers={"Content-Type": OCI_MANIFEST},
                     timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    server = world.server

    check_served(server, "cached/" + repo.removeprefix("up/"), "1.0", chart, tmp_path / "cached", expected=body)
    imported = unique("imported-legacy")
    r = start_import(server, f"{world.upstream.host}/{repo}:1.0", targets=[f"{imported}:1.0"])
    assert r.status_code == 201 and r.json()["state"] == "succeeded", r.text
    check_served(server, imported, "1.0", chart, tmp_path / "imported", expected=body)
    synced, name = unique("synced-legacy"), f"s{uuid.uuid4().hex[:10]}"
    assert api(server, "POST", "/sync-rules", json={
        "name": name, "source": f"{world.upstream.host}/{repo}", "target": synced, "insecure": True}).status_code == 201
    try:
        run = api(server, "POST", f"/sync-rules/{name}/runs")
        assert run.status_code == 201 and run.json()["state"] == "succeeded", run.text
        check_served(server, synced, "1.0", chart, tmp_path / "synced", expected=body)
    finally:
        assert api(server, "DELETE", f"/sync-rules/{name}").status_code == 204

    home, out = tmp_path / "home", tmp_path / "layout"
    home.mkdir()
    exported = admin_cli(server, home, "export", f"{imported}:1.0", "--to", str(out))
    assert exported.returncode == 0, exported.stderr
    [entry] = json.loads((out / "index.json").read_text())["manifests"]
    assert entry["mediaType"] == OCI_MANIFEST and entry["digest"] == digest_of(body)
    back = unique("back-legacy")
    imported_back = admin_cli(server, home, "import", f"oci-layout:{out}", "--image", back)
    assert imported_back.returncode == 0, imported_back.stderr
    check_served(server, back, "1.0", chart, tmp_path / "back", expected=body)
