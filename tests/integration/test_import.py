"""Server-side import (``POST /api/v1/imports``, ``cargohold import``) from a real docker-registry upstream.

The upstream is CNCF Distribution 2.8 (no referrers API: referrers are found
through the ``sha256-<hex>`` tag schema), reached through the counting,
fault-injecting ``UpstreamProxy`` so that tests can tell which requests an
import spent and break a blob download half-way.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import oras.oci
import pytest
import requests
from aiohttp import web
from cachehelpers import cache_server
from clients import ArtifactOrasClient
from importhelpers import (
    admin,
    admin_cli,
    api,
    make_robot,
    problem,
    proxied_upstream,
    push_one_layer_image,
    start_import,
    unique,
    wait_done,
)
from ocihelpers import (
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    image_manifest,
    manifest_bytes,
    push_blob,
    push_image,
    push_manifest,
)
from oras.provider import Registry as OrasClient
from servers import DockerRegistry, Server
from upstream_proxy import Seen, UpstreamProxy, oci_error

TIMEOUT = 60


async def _slow(proxy: UpstreamProxy, seen: Seen, arg: Any) -> web.StreamResponse:
    """The upstream's answer, 16 KiB at a time with ``arg`` seconds between pieces: an import that takes a while."""
    if seen.method == "HEAD":
        return await proxy.forward(seen)
    assert seen.request is not None
    try:
        upstream = await proxy.open_upstream(seen)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return oci_error(502, "UNAVAILABLE", f"proxy: {exc}")
    try:
        response = web.StreamResponse(status=upstream.status, headers=proxy.response_headers(upstream))
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        seen.status = upstream.status
        await response.prepare(seen.request)
        while chunk := await upstream.content.read(16 * 1024):
            await response.write(chunk)
            await asyncio.sleep(float(arg))
        await response.write_eof()
        return response
    finally:
        upstream.close()


upstream, proxy, _clean_proxy = proxied_upstream("import-upstream", faults={"slow": _slow})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with cache_server(
        tmp_path_factory.mktemp("import-server") / "data",
        workers=2,  # import jobs live in the database: any worker answers GET /imports/{id}
        CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS="100000",
    ) as running:
        yield running


def local_manifest(server: Server, repo: str, reference: str) -> requests.Response:
    return requests.get(
        f"{server.url}/v2/{repo}/manifests/{reference}", auth=admin(server), timeout=TIMEOUT,
        headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"},
    )


def local_blob(server: Server, repo: str, digest: str) -> bytes:
    r = requests.get(f"{server.url}/v2/{repo}/blobs/{digest}", auth=admin(server), timeout=TIMEOUT)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.content


def push_platform_image(url: str, repo: str, arch: str) -> tuple[str, bytes]:
    config = json.dumps({"architecture": arch, "os": "linux", "salt": uuid.uuid4().hex}).encode()
    layer = os.urandom(512)
    push_blob(url, repo, config)
    push_blob(url, repo, layer)
    body = manifest_bytes(image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)]))
    digest, _ = push_manifest(url, repo, body, media_type=OCI_MANIFEST)
    return digest, body


def push_index(url: str, repo: str, tag: str) -> tuple[str, bytes, dict[str, str]]:
    children = {arch: push_platform_image(url, repo, arch) for arch in ("amd64", "arm64")}
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {**descriptor(OCI_MANIFEST, body), "platform": {"os": "linux", "architecture": arch}}
            for arch, (_, body) in children.items()
        ],
    }
    body = manifest_bytes(index)
    push_manifest(url, repo, body, reference=tag, media_type=OCI_INDEX)
    return digest_of(body), body, {arch: digest for arch, (digest, _) in children.items()}


def push_referrer(url: str, repo: str, subject_digest: str, subject_body: bytes) -> tuple[str, bytes]:
    """An artifact manifest with ``subject``, and the fallback tag index Distribution 2.8 clients maintain."""
    push_blob(url, repo, b"{}")
    payload = os.urandom(300)
    push_blob(url, repo, payload)
    artifact = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": OCI_EMPTY, "digest": digest_of(b"{}"), "size": 2},
        "layers": [descriptor("application/vnd.example.sig.v1", payload)],
        "subject": descriptor(OCI_MANIFEST, subject_body),
    }
    body = manifest_bytes(artifact)
    digest, _ = push_manifest(url, repo, body, media_type=OCI_MANIFEST)
    fallback = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{**descriptor(OCI_MANIFEST, body), "artifactType": "application/vnd.example.signature"}],
    }
    push_manifest(url, repo, manifest_bytes(fallback), reference=subject_digest.replace(":", "-"), media_type=OCI_INDEX)
    return digest, body


# ---- happy paths ---------------------------------------------------------------------------------


def test_single_image_byte_exact_then_nothing_fetched_again(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src = unique("src")
    digest, body = push_image(upstream.url, src, "v1", layers=2)
    target = unique("imp") + ":v1"
    r = start_import(server, f"{proxy.host}/{src}:v1", targets=[target])
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "succeeded" and job["source_digest"] == digest and job["error"] is None
    assert job["targets"] == [target] and job["requested_by"] == "admin" and job["finished_at"]
    assert job["blobs_done"] == 3 and job["bytes_done"] > 0
    assert job["blobs_total"] == 3 and job["bytes_total"] == job["bytes_done"] and job["error_code"] is None
    assert r.headers["Location"] == f"/api/v1/imports/{job['id']}"
    repo = target.split(":")[0]
    got = local_manifest(server, repo, "v1")
    assert got.status_code == 200 and got.content == body and got.headers["Docker-Content-Digest"] == digest
    for layer in json.loads(body)["layers"]:
        assert digest_of(local_blob(server, repo, layer["digest"])) == layer["digest"]
    assert proxy.counts(method="GET", kind="blob") == 3

    proxy.reset()
    again = start_import(server, f"{proxy.host}/{src}:v1", targets=[target])
    assert again.status_code == 201, again.text
    assert proxy.counts(kind="blob") == 0, proxy.summary()

    events = api(server, "GET", "/audit", params={"action": "import"}).json()
    items = events["events"]
    mine = [e for e in items if e["target"] == target and e["outcome"] == "ok"]
    assert mine and mine[0]["detail"]["source_digest"] == digest


def test_default_target_is_the_source_path_and_tag_and_wait_false(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src = unique("deflt")
    _, body = push_image(upstream.url, src, "2.0")
    r = start_import(server, f"{proxy.host}/{src}:2.0", wait=False)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "running" and job["targets"] == [f"{src}:2.0"]
    deadline = time.monotonic() + 30
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        job = api(server, "GET", f"/imports/{job['id']}").json()
    assert job["state"] == "succeeded", job
    assert local_manifest(server, src, "2.0").content == body
    assert api(server, "GET", f"/imports/{'0' * 32}").status_code == 404


def test_multi_arch_index_all_platforms_or_some(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src = unique("multi")
    index_digest, index_body, children = push_index(upstream.url, src, "1")
    everything = unique("imp")
    assert start_import(server, f"{proxy.host}/{src}:1", targets=[f"{everything}:1"]).status_code == 201
    got = local_manifest(server, everything, "1")
    assert got.content == index_body and got.headers["Docker-Content-Digest"] == index_digest
    for digest in children.values():
        assert local_manifest(server, everything, digest).status_code == 200

    some = unique("imp")
    r = start_import(server, f"{proxy.host}/{src}@{index_digest}", targets=[f"{some}:arm"], platforms=["linux/arm64"])
    assert r.status_code == 201, r.text
    assert local_manifest(server, some, "arm").content == index_body  # the index stays byte-exact
    arm = local_manifest(server, some, children["arm64"])
    assert arm.status_code == 200
    for layer in json.loads(arm.content)["layers"]:
        local_blob(server, some, layer["digest"])
    assert local_manifest(server, some, children["amd64"]).status_code == 404

    problem(start_import(server, f"{proxy.host}/{src}:1", targets=[unique("imp")], platforms=["windows/amd64"]), 422, "INVALID_IMPORT")


def test_referrers_come_along(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src = unique("signed")
    digest, body = push_image(upstream.url, src, "1")
    referrer, referrer_body = push_referrer(upstream.url, src, digest, body)
    target = unique("imp")
    assert start_import(server, f"{proxy.host}/{src}:1", targets=[f"{target}:1"]).status_code == 201
    assert local_manifest(server, target, referrer).content == referrer_body
    listed = requests.get(f"{server.url}/v2/{target}/referrers/{digest}", auth=admin(server), timeout=TIMEOUT)
    assert listed.status_code == 200, listed.text
    assert [m["digest"] for m in listed.json()["manifests"]] == [referrer]
    assert listed.json()["manifests"][0]["artifactType"] == "application/vnd.example.signature"


def test_oras_artifact_and_referrer_keep_their_digests(
    server: Server, upstream: DockerRegistry, proxy: UpstreamProxy, tmp_path: Path
) -> None:
    """An artifact and a signature-like referrer pushed by the oras client arrive with the digests the source has."""
    src = unique("oras")
    oras_client = ArtifactOrasClient(upstream.host)
    empty = tmp_path / "config.json"
    empty.write_bytes(b"{}")
    sbom = tmp_path / "sbom.spdx.json"
    sbom.write_bytes(json.dumps({"spdxVersion": "SPDX-2.3", "salt": uuid.uuid4().hex}).encode())
    pushed = oras_client.push_artifact(
        f"{upstream.host}/{src}:sbom", artifact_type="application/spdx+json",
        files=[f"{sbom}:application/spdx+json"], manifest_config=f"{empty}:{OCI_EMPTY}",
    )
    assert pushed.status_code == 201, pushed.text
    subject_digest = pushed.headers["Docker-Content-Digest"]
    subject_body = requests.get(f"{upstream.url}/v2/{src}/manifests/{subject_digest}", headers={"Accept": OCI_MANIFEST},
                                timeout=TIMEOUT).content
    signature = tmp_path / "artifact.sig"
    signature.write_bytes(os.urandom(256))
    signed = oras_client.push_artifact(
        f"{upstream.host}/{src}:signature", artifact_type="application/vnd.example.signature",
        files=[f"{signature}:application/vnd.example.sig.v1"], manifest_config=f"{empty}:{OCI_EMPTY}",
        subject=oras.oci.Subject(mediaType=OCI_MANIFEST, digest=subject_digest, size=len(subject_body)),
    )
    assert signed.status_code == 201, signed.text
    referrer = signed.headers["Docker-Content-Digest"]
    referrer_body = requests.get(f"{upstream.url}/v2/{src}/manifests/{referrer}", headers={"Accept": OCI_MANIFEST},
                                 timeout=TIMEOUT).content
    assert json.loads(referrer_body)["subject"]["digest"] == subject_digest
    # Distribution 2.8 has no referrers API: OCI clients keep the referrers tag schema's index (oras-go does;
    # the Python client does not, so the test writes the index oras-go would).
    fallback = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**descriptor(OCI_MANIFEST, referrer_body), "artifactType": "application/vnd.example.signature"}]}
    push_manifest(upstream.url, src, manifest_bytes(fallback), reference=subject_digest.replace(":", "-"), media_type=OCI_INDEX)

    target = unique("imp")
    r = start_import(server, f"{proxy.host}/{src}:sbom", targets=[f"{target}:sbom"])
    assert r.status_code == 201, r.text
    assert r.json()["source_digest"] == subject_digest
    got = local_manifest(server, target, "sbom")
    assert got.content == subject_body and got.headers["Docker-Content-Digest"] == subject_digest
    copied = local_manifest(server, target, referrer)
    assert copied.content == referrer_body and copied.headers["Docker-Content-Digest"] == referrer
    for layer in json.loads(referrer_body)["layers"] + json.loads(subject_body)["layers"]:
        assert digest_of(local_blob(server, target, layer["digest"])) == layer["digest"]
    listed = requests.get(f"{server.url}/v2/{target}/referrers/{subject_digest}", auth=admin(server), timeout=TIMEOUT)
    assert [(m["digest"], m["artifactType"]) for m in listed.json()["manifests"]] == [
        (referrer, "application/vnd.example.signature")]
    # The oras client pulls the referrer back from cargohold, by digest.
    puller = OrasClient(hostname=server.host, insecure=True, tls_verify=False, auth_backend="token")
    puller.login("admin", server.admin_password, tls_verify=False, hostname=server.host, config_path=str(tmp_path / "oras.json"))
    outdir = tmp_path / "pulled"
    puller.pull(target=f"{server.host}/{target}@{referrer}", outdir=str(outdir))
    assert (outdir / "artifact.sig").read_bytes() == signature.read_bytes()


# ---- progress, and jobs any worker can tell about ------------------------------------------------


def test_running_job_shows_totals_and_progress(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src = unique("slow")
    config = json.dumps({"os": "linux", "architecture": "amd64", "salt": uuid.uuid4().hex}).encode()
    layer = os.urandom(400_000)
    push_blob(upstream.url, src, config)
    push_blob(upstream.url, src, layer)
    push_manifest(upstream.url, src, image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)]), reference="1")
    proxy.fail(("slow", 0.15), kind="blob")  # about 25 pieces: some 4 s
    r = start_import(server, f"{proxy.host}/{src}:1", targets=[f"{unique('imp')}:1"], wait=False)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["bytes_total"] is None and job["updated_at"]
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        job = api(server, "GET", f"/imports/{job['id']}").json()
        seen.append(job)
    assert job["state"] == "succeeded", job
    running = [j for j in seen if j["state"] == "running" and j["bytes_total"] is not None]
    assert running, seen
    assert all(j["bytes_total"] == len(config) + len(layer) and j["blobs_total"] == 2 for j in running)
    assert any(0 < j["bytes_done"] < j["bytes_total"] for j in running), running  # written while the bytes flow
    assert job["bytes_done"] == len(config) + len(layer) and job["blobs_done"] == 2

    listed = api(server, "GET", "/imports", params={"limit": 5})
    assert listed.status_code == 200 and job["id"] in [j["id"] for j in listed.json()]
    # Somebody else's job is nobody else's business: a robot neither reads nor lists it.
    robot = make_robot(server, [{"repository": "robots/*", "actions": ["content/read", "content/write"]}])
    problem(api(server, "GET", f"/imports/{job['id']}", robot), 404, "NOT_FOUND")
    theirs = api(server, "GET", "/imports", robot)
    assert theirs.status_code == 200 and job["id"] not in [j["id"] for j in theirs.json()]
    problem(api(server, "GET", "/imports", params={"limit": 0}), 422, "VALIDATION_FAILED")


# ---- tags and force ------------------------------------------------------------------------------


def test_existing_tag_elsewhere_needs_force(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src = unique("force")
    first, _ = push_image(upstream.url, src, "a")
    second, second_body = push_image(upstream.url, src, "b")
    target = unique("imp") + ":t"
    assert start_import(server, f"{proxy.host}/{src}:a", targets=[target]).status_code == 201
    proxy.reset()
    problem(start_import(server, f"{proxy.host}/{src}:b", targets=[target]), 409, "TARGET_EXISTS")
    assert proxy.counts(kind="blob") == 0, proxy.summary()  # refused before anything was copied
    repo = target.split(":")[0]
    assert local_manifest(server, repo, "t").headers["Docker-Content-Digest"] == first
    assert start_import(server, f"{proxy.host}/{src}:a", targets=[target]).status_code == 201  # same digest: fine
    assert start_import(server, f"{proxy.host}/{src}:b", targets=[target], force=True).status_code == 201
    moved = local_manifest(server, repo, "t")
    assert moved.headers["Docker-Content-Digest"] == second and moved.content == second_body


# ---- failures ------------------------------------------------------------------------------------


def test_failures_leave_no_tag(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    target = unique("imp")
    body = problem(start_import(server, f"{proxy.host}/{unique('nothing')}:1", targets=[f"{target}:1"]), 404, "SOURCE_NOT_FOUND")
    assert body["import_id"]
    job = api(server, "GET", f"/imports/{body['import_id']}").json()
    assert (job["state"], job["error_code"], job["error"]) == ("failed", "SOURCE_NOT_FOUND", body["detail"])
    assert local_manifest(server, target, "1").status_code == 404

    src = unique("broken")
    config = json.dumps({"os": "linux", "architecture": "amd64"}).encode()
    layer = os.urandom(300_000)
    push_blob(upstream.url, src, config)
    push_blob(upstream.url, src, layer)
    push_manifest(upstream.url, src, image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)]), reference="1")
    proxy.fail("truncate", kind="blob", reference=digest_of(layer))
    # The source dies in the middle of the layer (the proxy sends half of it, then closes the connection).
    failed = problem(start_import(server, f"{proxy.host}/{src}:1", targets=[f"{target}:1"]), 502, "SOURCE_FAILED")
    assert local_manifest(server, target, "1").status_code == 404
    assert requests.get(f"{server.url}/v2/{target}/tags/list", auth=admin(server), timeout=TIMEOUT).status_code == 404
    job = api(server, "GET", f"/imports/{failed['import_id']}").json()
    assert job["state"] == "failed" and job["error"] == failed["detail"] and job["error_code"] == "SOURCE_FAILED"
    assert proxy.host in job["error"] and job["finished_at"], job
    proxy.clear_fault()
    assert start_import(server, f"{proxy.host}/{src}:1", targets=[f"{target}:1"]).status_code == 201
    assert digest_of(local_blob(server, target, digest_of(layer))) == digest_of(layer)
    leftovers = [p.name for p in (server.data_dir / "tmp").iterdir() if p.name.startswith("import-")]
    assert leftovers == []


def test_bad_credentials(server: Server, tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    line = subprocess.run(["htpasswd", "-Bbn", "user", "pass"], check=True, capture_output=True, text=True).stdout
    htpasswd.write_text(line)
    private = DockerRegistry(tmp_path / "private", htpasswd=htpasswd).start()
    try:
        source = f"{private.host}/some/image:1"
        target = unique("imp")
        problem(start_import(server, source, targets=[f"{target}:1"], username="user", password="wrong"), 422, "SOURCE_AUTH_FAILED")
        problem(start_import(server, source, targets=[f"{target}:1"]), 422, "SOURCE_AUTH_FAILED")
        # The right login gets through to the registry, which has no such image.
        problem(start_import(server, source, targets=[f"{target}:1"], username="user", password="pass"), 404, "SOURCE_NOT_FOUND")
        assert local_manifest(server, target, "1").status_code == 404
    finally:
        private.stop()


def test_content_write_is_needed_on_the_target(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src = unique("robo")
    push_image(upstream.url, src, "1")
    robot = make_robot(server, [
        {"repository": "robots/*", "actions": ["content/read", "content/write"]}, {"repository": "imp/*", "actions": ["content/read"]},
    ])
    read_only = unique("imp")
    problem(start_import(server, f"{proxy.host}/{src}:1", auth=robot, targets=[f"{read_only}:1"]), 403, "DENIED")
    assert local_manifest(server, read_only, "1").status_code == 404
    problem(start_import(server, f"{proxy.host}/{src}:1", auth=robot, targets=[f"robots/{uuid.uuid4().hex[:8]}:1"],
                         credential_set="anything"), 403, "DENIED")
    r = start_import(server, f"{proxy.host}/{src}:1", auth=robot, targets=[f"robots/{uuid.uuid4().hex[:8]}:1"])
    assert r.status_code == 201, r.text
    assert r.json()["requested_by"] == robot[0]


# ---- the CLI -------------------------------------------------------------------------------------


def test_cli_import_and_status(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy, tmp_path: Path) -> None:
    src = unique("cli")
    digest, body = push_image(upstream.url, src, "3")
    target = unique("imp")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return admin_cli(server, tmp_path, *args)

    done = cli("import", f"{proxy.host}/{src}:3", "--image", f"{target}:3", "--insecure", "--output", "json")
    assert done.returncode == 0, (done.stdout, done.stderr)
    job = json.loads(done.stdout)
    assert job["state"] == "succeeded" and job["source_digest"] == digest
    assert local_manifest(server, target, "3").content == body
    assert "Imported" in done.stderr and job["blobs_total"] == job["blobs_done"] == 2
    status = cli("import-status", job["id"])
    assert status.returncode == 0 and digest in status.stdout and "succeeded" in status.stdout, (status.stdout, status.stderr)
    as_json = cli("import-status", job["id"], "--output", "json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["id"] == job["id"], as_json.stderr
    # No second spelling: `import status ID` is not a job query (nor an import of docker.io/library/status).
    overload = cli("import", "status", job["id"])
    assert overload.returncode == 2, (overload.stdout, overload.stderr)
    bare = cli("import", "status")
    assert bare.returncode == 2 and "import-status ID" in " ".join(bare.stderr.split()), bare.stderr
    extra = cli("import-status", job["id"], "--force")
    assert extra.returncode == 2, extra.stderr
    unknown = cli("import-status", "0" * 32)
    assert unknown.returncode == 1 and "no import" in unknown.stderr, unknown.stderr

    refused = cli("import", f"{proxy.host}/{unique('none')}:1", "--image", f"{target}:3", "--insecure")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "error:" in refused.stderr and "MANIFEST_UNKNOWN" in " ".join(refused.stderr.split()), refused.stderr
    assert "SOURCE_NOT_FOUND" in refused.stderr, refused.stderr
    # A failed import prints the job like `import-status ID` does, then exits 1.
    refused = cli("import", f"{proxy.host}/{unique('none')}:1", "--image", f"{target}:3", "--insecure", "--output", "json")
    assert refused.returncode == 1 and "SOURCE_NOT_FOUND" in refused.stderr, (refused.stdout, refused.stderr)
    failed_job = json.loads(refused.stdout)
    assert failed_job["state"] == "failed" and failed_job["error_code"] == "SOURCE_NOT_FOUND", failed_job

    # --no-wait: the job id at once (JSON with --output json); the import goes on, and status follows it.
    started = cli("import", f"{proxy.host}/{src}:3", "--image", f"{unique('imp')}:3", "--insecure", "--no-wait", "--output", "json")
    assert started.returncode == 0, started.stderr
    queued = json.loads(started.stdout)
    assert queued["state"] == "running" and f"cargohold import-status {queued['id']}" in started.stderr
    wait_done(server, queued["id"])
    assert cli("import-status", queued["id"]).returncode == 0


def test_cli_follows_a_slow_import_and_fails_when_the_source_dies(
    server: Server, upstream: DockerRegistry, proxy: UpstreamProxy, tmp_path: Path
) -> None:
    src = unique("clislow")
    layer = os.urandom(200_000)
    config = push_one_layer_image(upstream.url, src, "1", layer)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return admin_cli(server, tmp_path, *args)

    proxy.fail(("slow", 0.1), kind="blob")  # the CLI polls a job that runs for a couple of seconds
    target = unique("imp")
    done = cli("import", f"{proxy.host}/{src}:1", "--image", f"{target}:1", "--insecure", "--output", "json")
    assert done.returncode == 0, (done.stdout, done.stderr)
    job = json.loads(done.stdout)
    assert job["state"] == "succeeded" and job["bytes_done"] == job["bytes_total"] == len(config) + len(layer)
    assert local_manifest(server, target, "1").status_code == 200

    fresh = os.urandom(200_000)  # not in the store yet: it must come from the source
    push_one_layer_image(upstream.url, src, "2", fresh, config)
    proxy.fail("truncate", kind="blob", reference=digest_of(fresh))  # the source dies half-way through the layer
    broken = unique("imp")
    failed = cli("import", f"{proxy.host}/{src}:2", "--image", f"{broken}:1", "--insecure")
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    message = " ".join(failed.stderr.split())
    assert "error: import" in message and "failed (SOURCE_FAILED)" in message and proxy.host in message, message
    assert local_manifest(server, broken, "1").status_code == 404
