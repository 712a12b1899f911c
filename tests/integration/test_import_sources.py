"""Server-side import (``POST /api/v1/imports``) from a docker-registry behind htpasswd.

The source is CNCF Distribution 2.8 with ``auth: htpasswd`` (Basic credentials
on every request, anonymous requests refused), on loopback; the cargohold
server runs with auth on and ``CARGOHOLD_ALLOW_PRIVATE_UPSTREAMS``. Source
credentials come inline (``username`` + ``password`` in the body) or from an
admin's credential set. What is checked:

* a single image and a multi-arch index (also from an anonymous docker-registry) arrive with the source's digests —
  index, children and blobs, compared by HTTP HEAD on both registries and the
  index bytes by ``skopeo inspect --raw`` on both;
* the source password never shows in an answer, in the job status
  (``GET /imports/{id}``), nor in the server log (written at INFO with the
  access log on, so that it has something to hide);
* wrong or missing credentials answer 422 ``SOURCE_AUTH_FAILED`` with a reason
  and leave no target tag.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cachehelpers import cache_server, docker_registry, push_upstream_manifest
from images import require_tool
from importhelpers import TIMEOUT, admin, problem, unique
from importhelpers import api as admin_api
from ocihelpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    manifest_bytes,
)
from servers import DockerRegistry, Server

SOURCE_USER = "importer"
SOURCE_PASSWORD = f"src-pw-{uuid.uuid4().hex}"  # the source registry's password: must never leak
WRONG_PASSWORD = f"wrong-pw-{uuid.uuid4().hex}"  # a refused one: must not leak either
ACCEPT = f"{OCI_MANIFEST}, {OCI_INDEX}"


# ---- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    """A docker-registry that takes only ``SOURCE_USER``/``SOURCE_PASSWORD`` (bcrypt, htpasswd -B)."""
    root = tmp_path_factory.mktemp("import-private")
    line = subprocess.run([require_tool("htpasswd"), "-Bbn", SOURCE_USER, SOURCE_PASSWORD], check=True,
                          capture_output=True, text=True, timeout=30).stdout
    htpasswd = root / "htpasswd"
    htpasswd.write_text(line)
    with docker_registry(root / "registry", htpasswd) as registry:
        yield registry


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    """A docker-registry without auth (it ignores the Basic credentials the helpers below send)."""
    with docker_registry(tmp_path_factory.mktemp("import-public")) as registry:
        yield registry


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with cache_server(
        tmp_path_factory.mktemp("import-sources") / "data",
        workers=1,  # GET /imports/{id} answers from the worker that ran the import
        CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS="100000",
        CARGOHOLD_LOG_LEVEL="INFO",  # a talkative log, for the "never in the log" checks
        CARGOHOLD_ACCESS_LOG="true",
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def _log_stays_clean(server: Server) -> Iterator[None]:
    yield
    log = server.log()
    assert "/api/v1/imports" in log  # the log shows requests: there was something to leak into
    for value in (SOURCE_PASSWORD, WRONG_PASSWORD):
        at = log.find(value)
        assert at < 0, f"a source password in the server log: …{log[max(0, at - 300):at + 50]}"


# ---- the source registry, with Basic credentials -------------------------------------------------


def source_session() -> requests.Session:
    http = requests.Session()
    http.auth = (SOURCE_USER, SOURCE_PASSWORD)
    http.trust_env = False
    return http


def push_manifest(registry: DockerRegistry, repo: str, body: bytes, reference: str, media_type: str) -> str:
    with source_session() as http:
        r = http.put(f"{registry.url}/v2/{repo}/manifests/{reference}", data=body, headers={"Content-Type": media_type},
                     timeout=TIMEOUT)
    assert r.status_code == 201, (r.status_code, r.text)
    return digest_of(body)


def push_image(registry: DockerRegistry, repo: str, tag: str | None, arch: str = "amd64", layers: int = 2) -> tuple[str, bytes]:
    """A small random OCI image (config + ``layers`` layers of 64 KiB), by digest and, if given, by ``tag``."""
    config = json.dumps({"architecture": arch, "os": "linux", "salt": uuid.uuid4().hex}).encode()
    with source_session() as http:
        body = push_upstream_manifest(registry.url, repo, None, config, [os.urandom(64 * 1024) for _ in range(layers)], http)
    if tag:
        push_manifest(registry, repo, body, tag, OCI_MANIFEST)
    return digest_of(body), body


def push_index(registry: DockerRegistry, repo: str, tag: str) -> tuple[str, dict[str, bytes]]:
    """An OCI index over a linux/amd64 and a linux/arm64 image; its digest and the children's bytes by digest."""
    children = {arch: push_image(registry, repo, None, arch) for arch in ("amd64", "arm64")}
    body = manifest_bytes({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{**descriptor(OCI_MANIFEST, child), "platform": {"os": "linux", "architecture": arch}}
                      for arch, (_, child) in children.items()],
    })
    return push_manifest(registry, repo, body, tag, OCI_INDEX), dict(children.values())


# ---- the API -------------------------------------------------------------------------------------


def api(server: Server, method: str, path: str, **kwargs: Any) -> requests.Response:
    """``importhelpers.api`` as the admin, and no source password in the answer."""
    r = admin_api(server, method, path, **kwargs)
    for value in (SOURCE_PASSWORD, WRONG_PASSWORD):
        assert value not in r.text, f"a source password in {method} {path}: {r.text[:500]}"
    return r


def start_import(server: Server, source: str, **body: Any) -> requests.Response:
    return api(server, "POST", "/imports", json={"source": source, "insecure": True, **body})


def job_status(server: Server, job_id: str) -> dict[str, Any]:
    r = api(server, "GET", f"/imports/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def head_local(server: Server, repo: str, kind: str, reference: str) -> tuple[int, str | None, int]:
    r = requests.head(f"{server.url}/v2/{repo}/{kind}/{reference}", auth=admin(server), timeout=TIMEOUT,
                      headers={"Accept": ACCEPT})
    return r.status_code, r.headers.get("Docker-Content-Digest"), int(r.headers.get("Content-Length", "-1"))


def head_source(registry: DockerRegistry, repo: str, kind: str, reference: str) -> tuple[int, str | None, int]:
    with source_session() as http:
        r = http.head(f"{registry.url}/v2/{repo}/{kind}/{reference}", timeout=TIMEOUT, headers={"Accept": ACCEPT})
    return r.status_code, r.headers.get("Docker-Content-Digest"), int(r.headers.get("Content-Length", "-1"))


def skopeo_raw(host: str, repo: str, reference: str, creds: str) -> bytes:
    """The manifest bytes as skopeo (a real client) reads them; ``reference`` a tag or ``@digest``."""
    sep = "" if reference.startswith("@") else ":"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    p = subprocess.run(
        [require_tool("skopeo"), "inspect", "--raw", "--tls-verify=false", "--creds", creds,
         f"docker://{host}/{repo}{sep}{reference}"],
        capture_output=True, timeout=60, env=env, check=False,
    )
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout


def assert_same_content(server: Server, target_repo: str, tag: str, private: DockerRegistry, src_repo: str,
                        src_tag: str, digest: str) -> None:
    """The target tag is the source tag: same top digest and bytes (skopeo on both sides), every child manifest
    and every blob present with the source's digest and size (HEAD on both sides)."""
    top = head_local(server, target_repo, "manifests", tag)
    assert top[:2] == (200, digest) and top == head_source(private, src_repo, "manifests", src_tag), top
    ours = skopeo_raw(server.host, target_repo, tag, f"admin:{server.admin_password}")
    theirs = skopeo_raw(private.host, src_repo, src_tag, f"{SOURCE_USER}:{SOURCE_PASSWORD}")
    assert ours == theirs and digest_of(ours) == digest
    document = json.loads(ours)
    manifests = [document]
    for child in document.get("manifests") or []:
        assert head_local(server, target_repo, "manifests", child["digest"]) == (200, child["digest"], child["size"])
        assert head_source(private, src_repo, "manifests", child["digest"]) == (200, child["digest"], child["size"])
        body = skopeo_raw(server.host, target_repo, "@" + child["digest"], f"admin:{server.admin_password}")
        assert digest_of(body) == child["digest"]
        manifests.append(json.loads(body))
    blobs = [d for m in manifests if "config" in m for d in [m["config"], *m["layers"]]]
    assert blobs
    for blob in blobs:
        local = head_local(server, target_repo, "blobs", blob["digest"])
        assert local[0] == 200 and local[2] == blob["size"], (blob, local)
        assert local[1] in (None, blob["digest"]), (blob, local)
        assert head_source(private, src_repo, "blobs", blob["digest"])[2] == blob["size"]
        r = requests.get(f"{server.url}/v2/{target_repo}/blobs/{blob['digest']}", auth=admin(server), timeout=TIMEOUT)
        assert r.status_code == 200 and digest_of(r.content) == blob["digest"]


def make_credential_set(server: Server, login_server: str, password: str) -> str:
    name = f"src{uuid.uuid4().hex[:8]}"
    r = api(server, "POST", "/credential-sets",
            json={"name": name, "login_server": login_server, "username": SOURCE_USER, "password": password})
    assert r.status_code == 201, r.text
    return name


# ---- anonymous source ----------------------------------------------------------------------------


def test_anonymous_source_multi_arch_index(server: Server, public: DockerRegistry) -> None:
    src = unique("anon")
    digest, _ = push_index(public, src, "1")
    target = unique("imp")
    r = start_import(server, f"{public.host}/{src}:1", targets=[f"{target}:1"])
    assert r.status_code == 201, r.text
    assert r.json()["source_digest"] == digest and r.json()["blobs_done"] == 6
    assert_same_content(server, target, "1", public, src, "1", digest)


# ---- good credentials ----------------------------------------------------------------------------


def test_inline_credentials_single_image(server: Server, private: DockerRegistry) -> None:
    src = unique("single")
    digest, _ = push_image(private, src, "1.0", layers=3)
    target = unique("imp")
    r = start_import(server, f"{private.host}/{src}:1.0", targets=[f"{target}:1.0"],
                     username=SOURCE_USER, password=SOURCE_PASSWORD)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "succeeded" and job["source_digest"] == digest and job["error"] is None
    assert job["blobs_done"] == 4 and job["bytes_done"] >= 3 * 64 * 1024
    assert "password" not in job and "username" not in job
    assert job_status(server, job["id"])["state"] == "succeeded"
    assert_same_content(server, target, "1.0", private, src, "1.0", digest)


def test_inline_credentials_multi_arch_index(server: Server, private: DockerRegistry) -> None:
    src = unique("multi")
    digest, children = push_index(private, src, "2")
    target = unique("imp")
    r = start_import(server, f"{private.host}/{src}:2", targets=[f"{target}:2"],
                     username=SOURCE_USER, password=SOURCE_PASSWORD, wait=False)
    assert r.status_code == 202, r.text
    job = r.json()
    deadline = time.monotonic() + TIMEOUT
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        job = job_status(server, job["id"])  # the password is checked in every answer (see ``api``)
    assert job["state"] == "succeeded" and job["source_digest"] == digest, job
    assert_same_content(server, target, "2", private, src, "2", digest)
    assert set(children) == {c["digest"] for c in json.loads(skopeo_raw(
        server.host, target, "2", f"admin:{server.admin_password}"))["manifests"]}


def test_credential_set(server: Server, private: DockerRegistry) -> None:
    src = unique("viaset")
    digest, _ = push_index(private, src, "3")
    name = make_credential_set(server, private.host, SOURCE_PASSWORD)
    target = unique("imp")
    r = start_import(server, f"{private.host}/{src}:3", targets=[f"{target}:3"], credential_set=name)
    assert r.status_code == 201, r.text
    assert r.json()["source_digest"] == digest
    assert_same_content(server, target, "3", private, src, "3", digest)

    # A set for another registry is not sent to this one.
    other = make_credential_set(server, "registry.example.com", SOURCE_PASSWORD)
    problem(start_import(server, f"{private.host}/{src}:3", targets=[f"{unique('imp')}:3"], credential_set=other),
            422, "CREDENTIAL_SET_MISMATCH")
    # Inline credentials and a set at once: which one would win is not guessed.
    problem(start_import(server, f"{private.host}/{src}:3", targets=[f"{unique('imp')}:3"], credential_set=name,
                         username=SOURCE_USER, password=SOURCE_PASSWORD), 422, "INVALID_IMPORT")


# ---- bad credentials -----------------------------------------------------------------------------


def test_bad_credentials_are_refused_and_leave_no_tag(server: Server, private: DockerRegistry) -> None:
    src = unique("refused")
    push_image(private, src, "1")
    source = f"{private.host}/{src}:1"
    target = unique("imp")
    wrong_set = make_credential_set(server, private.host, WRONG_PASSWORD)
    attempts: list[dict[str, Any]] = [
        {"username": SOURCE_USER, "password": WRONG_PASSWORD},
        {"username": "nobody", "password": SOURCE_PASSWORD},
        {},  # anonymous: the registry wants credentials
        {"credential_set": wrong_set},
    ]
    for attempt in attempts:
        body = problem(start_import(server, source, targets=[f"{target}:1"], **attempt), 422, "SOURCE_AUTH_FAILED")
        assert private.host in body["detail"] and "credentials" in body["detail"], body
        job = job_status(server, body["import_id"])
        assert job["state"] == "failed" and job["error"] and job["source_digest"] is None, job
        assert head_local(server, target, "manifests", "1")[0] == 404
    problem(start_import(server, source, targets=[f"{target}:1"], username=SOURCE_USER), 422, "INVALID_IMPORT")
    leftovers = [p.name for p in (server.data_dir / "tmp").iterdir() if p.name.startswith("import-")]
    assert leftovers == []
    # The right password, after all that, works (nothing was cached from the refusals).
    r = start_import(server, source, targets=[f"{target}:1"], username=SOURCE_USER, password=SOURCE_PASSWORD)
    assert r.status_code == 201, r.text


def test_passwords_never_in_the_audit_log(server: Server) -> None:
    r = api(server, "GET", "/audit", params={"action": "import"})
    assert r.status_code == 200, r.text
    assert r.json()["events"], "the imports above were not audited"
