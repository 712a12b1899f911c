"""Who may do what on /v2: every principal × every registry operation × both ways of authenticating.

The scope maps below are the specification. ``RIGHTS`` restates them as a
table (principal → namespace → actions) from which every expected outcome is
derived: allowed → the operation's success status and its effect; denied →
``401`` with a Docker challenge naming the exact scope when the caller is not
authenticated (no credentials, or an anonymous token), ``403 DENIED`` when it
is, and no effect either way (checked afterwards as admin).

Each case runs twice: with Basic credentials sent straight to /v2, and with a
bearer token fetched from ``GET /token`` for the scopes the operation needs
(what docker, skopeo and podman do). Identities are created directly in the
database (``authhelpers.provision``), independent of the management API.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from authhelpers import (
    Credentials,
    assert_challenge,
    assert_denied,
    bearer,
    describe,
    fetch_token,
    parse_challenge,
    provision,
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
    random_blob,
)
from servers import Server, drop_postgres_schema

READ, WRITE, DELETE, METADATA = "content/read", "content/write", "content/delete", "metadata/read"
ALL = frozenset({READ, WRITE, DELETE, METADATA})

SCOPE_MAPS: dict[str, list[tuple[str, list[str]]]] = {
    "team-read": [("team/*", [READ])],
    "team-list": [("team/*", [METADATA])],
    "team-write": [("team/*", [READ, WRITE])],
    "team-delete": [("team/*", [READ, DELETE])],
    "ci-push": [("ci/*", [READ, WRITE])],
    # What callers without credentials get. The write is never honoured for anonymous callers.
    "anonymous": [("public/*", [READ, WRITE])],
}
USERS = {"reader": ["team-read"], "lister": ["team-list"], "writer": ["team-write"], "deleter": ["team-delete"]}
ROBOT = "ci-bot"
ROBOTS = {ROBOT: ["ci-push"]}

PRINCIPALS = ("anonymous", "reader", "lister", "writer", "deleter", ROBOT, "admin")
NAMESPACES = ("team", "ci", "public", "other")
MODES = ("basic", "bearer")

# What anonymous callers may do — and, since logging in must never take rights away, everybody else too.
PUBLIC: dict[str, frozenset[str]] = {"public": frozenset({READ})}
RIGHTS: dict[str, dict[str, frozenset[str]]] = {
    "anonymous": PUBLIC,
    "reader": {**PUBLIC, "team": frozenset({READ})},
    "lister": {**PUBLIC, "team": frozenset({METADATA})},
    "writer": {**PUBLIC, "team": frozenset({READ, WRITE})},
    "deleter": {**PUBLIC, "team": frozenset({READ, DELETE})},
    ROBOT: {**PUBLIC, "ci": frozenset({READ, WRITE})},
    "admin": {ns: ALL for ns in NAMESPACES},
}

DOCKER_ACTIONS = {READ: "pull", METADATA: "pull", WRITE: "pull,push", DELETE: "delete"}
TIMEOUT = 30


def may(principal: str, namespace: str, action: str) -> bool:
    rights = RIGHTS[principal].get(namespace, frozenset())
    if action == METADATA:
        return METADATA in rights or READ in rights  # whoever may pull may list tags
    return action in rights


def scope(repo: str, action: str) -> str:
    return f"repository:{repo}:{DOCKER_ACTIONS[action]}"


def unique(namespace: str) -> str:
    return f"{namespace}/{uuid.uuid4().hex[:12]}"


# ---- the world: one server per backend, identities, seeded repositories ---------------------------------------


@dataclass
class Seed:
    """``<ns>/seed``: an image tagged ``v1`` (config + one layer) and one referrer of it."""

    repo: str
    manifest: bytes
    digest: str
    config: bytes
    layer: bytes
    referrer: str

    @property
    def layer_digest(self) -> str:
        return digest_of(self.layer)


@dataclass
class World:
    server: Server
    creds: Credentials
    http: requests.Session
    seeds: dict[str, Seed] = field(default_factory=dict)

    def caller(self, principal: str, mode: str) -> "Caller":
        return Caller(self, principal, mode)

    @property
    def admin(self) -> "Caller":
        return Caller(self, "admin", "basic")


@dataclass
class Caller:
    world: World
    principal: str
    mode: str

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        return None if self.principal == "anonymous" else self.world.creds.basic(self.principal)

    def token(self, scopes: list[str]) -> str:
        return fetch_token(self.world.server, scopes, self.basic_auth, self.world.http)

    def request(self, method: str, path: str, scopes: list[str] | None = None, **kwargs: Any) -> requests.Response:
        """``method path`` as this caller: Basic credentials (none for anonymous), or a token for ``scopes``."""
        headers = dict(kwargs.pop("headers", None) or {})
        auth = None
        if self.mode == "bearer":
            headers.update(bearer(self.token(scopes or [])))
        else:
            auth = self.basic_auth
        return self.world.http.request(
            method, f"{self.world.server.url}{path}", headers=headers, auth=auth, timeout=TIMEOUT, allow_redirects=False, **kwargs
        )

    # -- what admin uses to arrange and inspect state --

    def ok(self, method: str, path: str, status: int, **kwargs: Any) -> requests.Response:
        r = self.request(method, path, **kwargs)
        assert r.status_code == status, describe(r)
        return r

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = digest_of(data)
        self.ok("POST", f"/v2/{repo}/blobs/uploads/", 201, params={"digest": digest}, data=data,
                headers={"Content-Type": "application/octet-stream"})
        return digest

    def push_manifest(self, repo: str, reference: str, body: bytes, media_type: str = OCI_MANIFEST) -> str:
        r = self.ok("PUT", f"/v2/{repo}/manifests/{reference}", 201, data=body, headers={"Content-Type": media_type})
        return r.headers["Docker-Content-Digest"]

    def push_image(self, repo: str, tag: str = "v1") -> tuple[bytes, str, bytes, bytes]:
        config = json.dumps({"architecture": "amd64", "os": "linux", "salt": uuid.uuid4().hex}).encode()
        layer = random_blob(300)
        self.push_blob(repo, config)
        self.push_blob(repo, layer)
        body = manifest_bytes(image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)]))
        digest = self.push_manifest(repo, tag, body)
        assert digest == digest_of(body)
        return body, digest, config, layer

    def start_upload(self, repo: str) -> str:
        r = self.ok("POST", f"/v2/{repo}/blobs/uploads/", 202)
        location = r.headers["Location"]
        assert location.startswith(f"/v2/{repo}/blobs/uploads/"), location
        return location

    def manifest_status(self, repo: str, reference: str) -> int:
        return self.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST}).status_code

    def blob_status(self, repo: str, digest: str) -> int:
        return self.request("HEAD", f"/v2/{repo}/blobs/{digest}").status_code


def seed(admin: Caller, namespace: str) -> Seed:
    repo = f"{namespace}/seed"
    body, digest, config, layer = admin.push_image(repo)
    admin.push_blob(repo, b"{}")
    referrer = manifest_bytes(
        image_manifest(
            {"mediaType": OCI_EMPTY, "digest": digest_of(b"{}"), "size": 2},
            [{"mediaType": OCI_EMPTY, "digest": digest_of(b"{}"), "size": 2}],
            artifactType="application/vnd.example.sbom",
            subject={"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body)},
        )
    )
    referrer_digest = admin.push_manifest(repo, digest_of(referrer), referrer)
    return Seed(repo, body, digest, config, layer, referrer_digest)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp(f"auth-matrix-{request.param}")
    # Generous throttle: all test traffic comes from 127.0.0.1, and a few tests log in wrongly on purpose.
    server = Server(
        data_dir=tmp / "data", backend=request.param, auth=True, extra_env={"CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": "1000"}
    ).start()
    try:
        creds = provision(server, users=USERS, robots=ROBOTS, scope_maps=SCOPE_MAPS)
        creds.passwords["admin"] = server.admin_password
        with requests.Session() as http:
            w = World(server, creds, http)
            for namespace in NAMESPACES:
                w.seeds[namespace] = seed(w.admin, namespace)
            yield w
    finally:
        server.stop()
        if server.schema:
            drop_postgres_schema(server.schema)


# ---- outcomes ---------------------------------------------------------------------------------------------


def expect(c: Caller, r: requests.Response, allowed: bool, status: int, challenge_scope: str | None) -> bool:
    """Assert the response is ``status`` when ``allowed``, else the right refusal; whether it was allowed."""
    if allowed:
        assert r.status_code == status, f"{c.principal} ({c.mode}) should be allowed: {describe(r)}"
        return True
    if c.principal == "anonymous":
        # No credentials → the challenge that starts the token flow; an anonymous token → "get a better one".
        assert_challenge(r, c.world.server, challenge_scope, "insufficient_scope" if c.mode == "bearer" else None)
    else:
        assert_denied(r)
    return False


Op = Callable[[World, Caller, str], None]
OPS: dict[str, Op] = {}


def op(name: str) -> Callable[[Op], Op]:
    def register(fn: Op) -> Op:
        OPS[name] = fn
        return fn

    return register


@op("tags-list")
def _tags_list(w: World, c: Caller, ns: str) -> None:
    s = w.seeds[ns]
    r = c.request("GET", f"/v2/{s.repo}/tags/list", [scope(s.repo, READ)])
    if expect(c, r, may(c.principal, ns, METADATA), 200, scope(s.repo, METADATA)):
        assert r.json() == {"name": s.repo, "tags": ["v1"]}, describe(r)


@op("manifest-get")
def _manifest_get(w: World, c: Caller, ns: str) -> None:
    s = w.seeds[ns]
    r = c.request("GET", f"/v2/{s.repo}/manifests/v1", [scope(s.repo, READ)], headers={"Accept": OCI_MANIFEST})
    if expect(c, r, may(c.principal, ns, READ), 200, scope(s.repo, READ)):
        assert r.content == s.manifest and r.headers["Docker-Content-Digest"] == s.digest, describe(r)


@op("manifest-head")
def _manifest_head(w: World, c: Caller, ns: str) -> None:
    s = w.seeds[ns]
    r = c.request("HEAD", f"/v2/{s.repo}/manifests/{s.digest}", [scope(s.repo, READ)])
    if may(c.principal, ns, READ):
        assert r.status_code == 200, describe(r)
        assert r.headers["Docker-Content-Digest"] == s.digest and r.headers["Content-Length"] == str(len(s.manifest))
    else:
        # A HEAD answer has no body: check status and challenge only.
        if c.principal == "anonymous":
            assert r.status_code == 401, describe(r)
            _, params = parse_challenge(r.headers.get("WWW-Authenticate"))
            assert params.get("scope") == scope(s.repo, READ), describe(r)
        else:
            assert r.status_code == 403 and "WWW-Authenticate" not in r.headers, describe(r)


# Write and delete cases work on fresh content when they are expected to succeed; a refused one
# aims at the shared seed (no set-up needed), which must come out untouched.


def assert_seed_intact(w: World, ns: str) -> None:
    s = w.seeds[ns]
    assert w.admin.manifest_status(s.repo, "v1") == 200, f"{s.repo}:v1 is gone"
    assert w.admin.manifest_status(s.repo, s.digest) == 200, f"{s.repo}@{s.digest} is gone"
    assert w.admin.blob_status(s.repo, s.layer_digest) == 200, f"{s.repo}@{s.layer_digest} is gone"


@op("manifest-put")
def _manifest_put(w: World, c: Caller, ns: str) -> None:
    allowed = may(c.principal, ns, WRITE)
    if allowed:
        repo = unique(ns)
        config, layer = json.dumps({"os": "linux", "architecture": "amd64", "salt": repo}).encode(), random_blob(100)
        w.admin.push_blob(repo, config)
        w.admin.push_blob(repo, layer)
        body = manifest_bytes(image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)]))
    else:
        repo, body = w.seeds[ns].repo, w.seeds[ns].manifest  # every blob is there: only authorization can refuse
    tag = f"t{uuid.uuid4().hex[:8]}"
    r = c.request("PUT", f"/v2/{repo}/manifests/{tag}", [scope(repo, WRITE)], data=body, headers={"Content-Type": OCI_MANIFEST})
    expect(c, r, allowed, 201, scope(repo, WRITE))
    assert w.admin.manifest_status(repo, tag) == (200 if allowed else 404)


@op("manifest-delete")
def _manifest_delete(w: World, c: Caller, ns: str) -> None:
    allowed = may(c.principal, ns, DELETE)
    repo, digest = (unique(ns), "") if allowed else (w.seeds[ns].repo, w.seeds[ns].digest)
    if allowed:
        _, digest, _, _ = w.admin.push_image(repo)
    r = c.request("DELETE", f"/v2/{repo}/manifests/{digest}", [scope(repo, DELETE)])
    expect(c, r, allowed, 202, scope(repo, DELETE))
    if allowed:
        assert w.admin.manifest_status(repo, digest) == 404
        assert w.admin.manifest_status(repo, "v1") == 404
    else:
        assert_seed_intact(w, ns)


@op("tag-delete")
def _tag_delete(w: World, c: Caller, ns: str) -> None:
    allowed = may(c.principal, ns, DELETE)
    repo, digest = (unique(ns), "") if allowed else (w.seeds[ns].repo, w.seeds[ns].digest)
    if allowed:
        _, digest, _, _ = w.admin.push_image(repo)
    r = c.request("DELETE", f"/v2/{repo}/manifests/v1", [scope(repo, DELETE)])
    expect(c, r, allowed, 202, scope(repo, DELETE))
    assert w.admin.manifest_status(repo, "v1") == (404 if allowed else 200)
    assert w.admin.manifest_status(repo, digest) == 200  # deleting a tag keeps the manifest


@op("blob-get")
def _blob_get(w: World, c: Caller, ns: str) -> None:
    s = w.seeds[ns]
    r = c.request("GET", f"/v2/{s.repo}/blobs/{s.layer_digest}", [scope(s.repo, READ)])
    if expect(c, r, may(c.principal, ns, READ), 200, scope(s.repo, READ)):
        assert r.content == s.layer, describe(r)


@op("blob-head")
def _blob_head(w: World, c: Caller, ns: str) -> None:
    s = w.seeds[ns]
    r = c.request("HEAD", f"/v2/{s.repo}/blobs/{s.layer_digest}", [scope(s.repo, READ)])
    if may(c.principal, ns, READ):
        assert r.status_code == 200 and r.headers["Content-Length"] == str(len(s.layer)), describe(r)
    elif c.principal == "anonymous":
        assert r.status_code == 401, describe(r)
        _, params = parse_challenge(r.headers.get("WWW-Authenticate"))
        assert params.get("scope") == scope(s.repo, READ), describe(r)
    else:
        assert r.status_code == 403 and "WWW-Authenticate" not in r.headers, describe(r)


@op("upload-post")
def _upload_post(w: World, c: Caller, ns: str) -> None:
    repo = unique(ns)
    r = c.request("POST", f"/v2/{repo}/blobs/uploads/", [scope(repo, WRITE)], headers={"Content-Length": "0"})
    if expect(c, r, may(c.principal, ns, WRITE), 202, scope(repo, WRITE)):
        assert r.headers["Location"].startswith(f"/v2/{repo}/blobs/uploads/"), describe(r)
    else:
        assert "Location" not in r.headers and "Docker-Upload-UUID" not in r.headers, describe(r)


@op("upload-patch")
def _upload_patch(w: World, c: Caller, ns: str) -> None:
    repo = unique(ns)
    location = w.admin.start_upload(repo)
    data = random_blob(100)
    r = c.request("PATCH", location, [scope(repo, WRITE)], data=data, headers={"Content-Type": "application/octet-stream"})
    allowed = expect(c, r, may(c.principal, ns, WRITE), 202, scope(repo, WRITE))
    status = w.admin.ok("GET", location, 204)
    assert status.headers["Range"] == ("0-99" if allowed else "0-0"), describe(status)


@op("upload-status")
def _upload_status(w: World, c: Caller, ns: str) -> None:
    repo = unique(ns)
    location = w.admin.start_upload(repo)
    r = c.request("GET", location, [scope(repo, WRITE)])
    if expect(c, r, may(c.principal, ns, WRITE), 204, scope(repo, WRITE)):
        assert r.headers["Range"] == "0-0", describe(r)


@op("upload-put")
def _upload_put(w: World, c: Caller, ns: str) -> None:
    repo = unique(ns)
    location = w.admin.start_upload(repo)
    data = random_blob(100)
    digest = digest_of(data)
    r = c.request(
        "PUT", location, [scope(repo, WRITE)], params={"digest": digest}, data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    allowed = expect(c, r, may(c.principal, ns, WRITE), 201, scope(repo, WRITE))
    assert w.admin.blob_status(repo, digest) == (200 if allowed else 404)


@op("upload-cancel")
def _upload_cancel(w: World, c: Caller, ns: str) -> None:
    repo = unique(ns)
    location = w.admin.start_upload(repo)
    r = c.request("DELETE", location, [scope(repo, WRITE)])
    allowed = expect(c, r, may(c.principal, ns, WRITE), 204, scope(repo, WRITE))
    assert w.admin.request("GET", location).status_code == (404 if allowed else 204)


@op("monolithic-post")
def _monolithic(w: World, c: Caller, ns: str) -> None:
    repo = unique(ns)
    data = random_blob(100)
    digest = digest_of(data)
    r = c.request(
        "POST", f"/v2/{repo}/blobs/uploads/", [scope(repo, WRITE)], params={"digest": digest}, data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    allowed = expect(c, r, may(c.principal, ns, WRITE), 201, scope(repo, WRITE))
    assert w.admin.blob_status(repo, digest) == (200 if allowed else 404)


def _mount(w: World, c: Caller, ns: str, source_ns: str) -> None:
    repo, source = unique(ns), w.seeds[source_ns]
    digest = source.layer_digest
    r = c.request(
        "POST", f"/v2/{repo}/blobs/uploads/", [scope(repo, WRITE), scope(source.repo, READ)],
        params={"mount": digest, "from": source.repo}, headers={"Content-Length": "0"},
    )
    mounted = may(c.principal, ns, WRITE) and may(c.principal, source_ns, READ)
    if mounted:
        assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == digest, describe(r)
    elif expect(c, r, may(c.principal, ns, WRITE), 202, scope(repo, WRITE)):
        # May write here but not read the source: an ordinary upload session instead, nothing linked.
        assert r.headers["Location"].startswith(f"/v2/{repo}/blobs/uploads/"), describe(r)
    assert w.admin.blob_status(repo, digest) == (200 if mounted else 404)


@op("mount-from-own-namespace")
def _mount_readable(w: World, c: Caller, ns: str) -> None:
    _mount(w, c, ns, ns)


@op("mount-from-other")
def _mount_unreadable(w: World, c: Caller, ns: str) -> None:
    _mount(w, c, ns, "other")


@op("blob-delete")
def _blob_delete(w: World, c: Caller, ns: str) -> None:
    allowed = may(c.principal, ns, DELETE)
    if allowed:
        repo = unique(ns)
        digest = w.admin.push_blob(repo, random_blob(100))
    else:
        repo, digest = w.seeds[ns].repo, w.seeds[ns].layer_digest
    r = c.request("DELETE", f"/v2/{repo}/blobs/{digest}", [scope(repo, DELETE)])
    expect(c, r, allowed, 202, scope(repo, DELETE))
    if allowed:
        assert w.admin.blob_status(repo, digest) == 404
    else:
        assert_seed_intact(w, ns)


@op("referrers")
def _referrers(w: World, c: Caller, ns: str) -> None:
    s = w.seeds[ns]
    r = c.request("GET", f"/v2/{s.repo}/referrers/{s.digest}", [scope(s.repo, READ)])
    if expect(c, r, may(c.principal, ns, READ), 200, scope(s.repo, READ)):
        assert r.headers["Content-Type"] == OCI_INDEX
        assert [m["digest"] for m in r.json()["manifests"]] == [s.referrer], describe(r)


# ---- the matrix -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("namespace", NAMESPACES)
@pytest.mark.parametrize("operation", list(OPS))
@pytest.mark.parametrize("principal", PRINCIPALS)
def test_repository_operation(world: World, principal: str, operation: str, namespace: str, mode: str) -> None:
    OPS[operation](world, world.caller(principal, mode), namespace)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("principal", PRINCIPALS)
def test_version_check(world: World, principal: str, mode: str) -> None:
    """Any identity — including an anonymous token — passes the version check; no credentials → the challenge."""
    c = world.caller(principal, mode)
    r = c.request("GET", "/v2/", [])
    if principal == "anonymous" and mode == "basic":
        assert_challenge(r, world.server, None)
    else:
        assert r.status_code == 200 and r.json() == {}, describe(r)
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def listable(principal: str, repo: str) -> bool:
    return may(principal, repo.split("/", 1)[0], METADATA)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("principal", PRINCIPALS)
def test_catalog_shows_only_listable_repositories(world: World, principal: str, mode: str) -> None:
    c = world.caller(principal, mode)
    r = c.request("GET", "/v2/_catalog", ["registry:catalog:*"])
    if principal == "anonymous":
        # The catalog needs an identity; anonymous tokens never carry registry:catalog:*.
        assert_challenge(r, world.server, "registry:catalog:*", "insufficient_scope" if mode == "bearer" else None)
        return
    assert r.status_code == 200, describe(r)
    listed = r.json()["repositories"]
    hidden = [repo for repo in listed if not listable(principal, repo)]
    assert not hidden, f"{principal} ({mode}) sees repositories it may not list: {hidden}"
    expected_seeds = sorted(s.repo for ns, s in world.seeds.items() if listable(principal, s.repo))
    assert sorted(repo for repo in listed if repo.endswith("/seed")) == expected_seeds, describe(r)


# ---- tokens narrower than their holder ------------------------------------------------------------------------


def test_token_lacking_an_action_its_holder_has_is_insufficient_scope(world: World) -> None:
    writer, deleter = world.caller("writer", "bearer"), world.caller("deleter", "bearer")
    repo = unique("team")
    pull_only = writer.token([scope(repo, READ)])
    r = world.http.post(f"{world.server.url}/v2/{repo}/blobs/uploads/", headers=bearer(pull_only), timeout=TIMEOUT)
    assert_challenge(r, world.server, scope(repo, WRITE), "insufficient_scope")

    # A token for one repository does not open another the holder may also write.
    other_repo = unique("team")
    r = world.http.post(f"{world.server.url}/v2/{other_repo}/blobs/uploads/", headers=bearer(writer.token([scope(repo, WRITE)])), timeout=TIMEOUT)
    assert_challenge(r, world.server, scope(other_repo, WRITE), "insufficient_scope")

    s = world.seeds["team"]
    r = world.http.delete(
        f"{world.server.url}/v2/{s.repo}/manifests/{s.digest}", headers=bearer(deleter.token([scope(s.repo, READ)])), timeout=TIMEOUT
    )
    assert_challenge(r, world.server, scope(s.repo, DELETE), "insufficient_scope")
    r = world.http.get(f"{world.server.url}/v2/{s.repo}/manifests/v1", headers=bearer(deleter.token([])), timeout=TIMEOUT)
    assert_challenge(r, world.server, scope(s.repo, READ), "insufficient_scope")
    assert world.admin.manifest_status(s.repo, s.digest) == 200

    # With the scope the challenge named, the same holder gets through.
    r = world.http.post(f"{world.server.url}/v2/{repo}/blobs/uploads/", headers=bearer(writer.token([scope(repo, WRITE)])), timeout=TIMEOUT)
    assert r.status_code == 202, describe(r)

    # The catalog likewise: a token without registry:catalog:* is told to fetch one.
    r = world.http.get(f"{world.server.url}/v2/_catalog", headers=bearer(writer.token([scope(repo, READ)])), timeout=TIMEOUT)
    assert_challenge(r, world.server, "registry:catalog:*", "insufficient_scope")
    r = world.http.get(f"{world.server.url}/v2/_catalog", headers=bearer(writer.token(["registry:catalog:*"])), timeout=TIMEOUT)
    assert r.status_code == 200 and "team/seed" in r.json()["repositories"], describe(r)


def test_token_lacking_an_action_its_holder_lacks_is_denied(world: World) -> None:
    reader, lister = world.caller("reader", "bearer"), world.caller("lister", "bearer")
    s = world.seeds["team"]
    repo = unique("team")
    # The reader asked for push and got a pull-only token: more asking would not help → 403.
    token = reader.token([scope(repo, WRITE)])
    r = world.http.post(f"{world.server.url}/v2/{repo}/blobs/uploads/", headers=bearer(token), timeout=TIMEOUT)
    assert_denied(r)
    token = lister.token([scope(s.repo, READ)])
    r = world.http.get(f"{world.server.url}/v2/{s.repo}/tags/list", headers=bearer(token), timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["tags"] == ["v1"], describe(r)
    r = world.http.get(f"{world.server.url}/v2/{s.repo}/manifests/v1", headers=bearer(token), timeout=TIMEOUT)
    assert_denied(r)
    r = world.http.get(f"{world.server.url}/v2/other/seed/manifests/v1", headers=bearer(reader.token([])), timeout=TIMEOUT)
    assert_denied(r)


# ---- anonymous pull through the token flow, robots' raw tokens ------------------------------------------------


def test_anonymous_pull_of_public_namespace_through_the_token_flow(world: World) -> None:
    """What docker does with no credentials: /v2/ → 401 → GET realm anonymously → token → pull."""
    s = world.seeds["public"]
    http = requests.Session()
    r = http.get(f"{world.server.url}/v2/", timeout=TIMEOUT)
    assert_challenge(r, world.server, None)
    _, challenge = parse_challenge(r.headers["WWW-Authenticate"])
    r = http.get(challenge["realm"], params={"service": challenge["service"], "scope": scope(s.repo, READ)}, timeout=TIMEOUT)
    assert r.status_code == 200, describe(r)
    assert "refresh_token" not in r.json()
    token = r.json()["token"]
    auth = bearer(token)
    assert http.get(f"{world.server.url}/v2/", headers=auth, timeout=TIMEOUT).status_code == 200
    r = http.get(f"{world.server.url}/v2/{s.repo}/manifests/v1", headers={**auth, "Accept": OCI_MANIFEST}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == s.manifest, describe(r)
    manifest = json.loads(r.content)
    for blob, expected in ((manifest["config"], s.config), (manifest["layers"][0], s.layer)):
        r = http.get(f"{world.server.url}/v2/{s.repo}/blobs/{blob['digest']}", headers=auth, timeout=TIMEOUT)
        assert r.status_code == 200 and r.content == expected, describe(r)
    # The same token opens nothing else, and no anonymous token lets anyone push to public/*.
    r = http.get(f"{world.server.url}/v2/team/seed/manifests/v1", headers=auth, timeout=TIMEOUT)
    assert_challenge(r, world.server, scope("team/seed", READ), "insufficient_scope")
    repo = unique("public")
    r = http.get(challenge["realm"], params={"service": "cargohold", "scope": scope(repo, WRITE)}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["scope"] == f"repository:{repo}:pull", describe(r)
    r = http.post(f"{world.server.url}/v2/{repo}/blobs/uploads/", headers=bearer(r.json()["token"]), timeout=TIMEOUT)
    assert_challenge(r, world.server, scope(repo, WRITE), "insufficient_scope")


def test_robot_token_as_raw_bearer_and_as_basic(world: World) -> None:
    token = world.creds.tokens[ROBOT]
    ci, team = world.seeds["ci"], world.seeds["team"]
    url = world.server.url
    r = world.http.get(f"{url}/v2/{ci.repo}/manifests/v1", headers={**bearer(token), "Accept": OCI_MANIFEST}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == ci.manifest, describe(r)
    assert_denied(world.http.get(f"{url}/v2/{team.repo}/manifests/v1", headers=bearer(token), timeout=TIMEOUT))
    repo = unique("ci")
    data = random_blob(64)
    r = world.http.post(
        f"{url}/v2/{repo}/blobs/uploads/", params={"digest": digest_of(data)}, data=data, headers=bearer(token), timeout=TIMEOUT
    )
    assert r.status_code == 201, describe(r)
    # Basic with the robot's own name works; with anybody else's name the token proves nothing.
    assert world.http.get(f"{url}/v2/", auth=(ROBOT, token), timeout=TIMEOUT).status_code == 200
    assert_challenge(world.http.get(f"{url}/v2/", auth=("writer", token), timeout=TIMEOUT), world.server, None)
    # A token that is not the robot's: an invalid credential, not anonymous access.
    r = world.http.get(f"{url}/v2/{world.seeds['public'].repo}/manifests/v1", headers=bearer(token[:-2] + "xx"), timeout=TIMEOUT)
    assert r.status_code == 401, describe(r)


def test_wrong_basic_password_is_refused_even_where_anonymous_may_read(world: World) -> None:
    """Bad credentials are never silently downgraded to anonymous access."""
    s = world.seeds["public"]
    r = world.http.get(f"{world.server.url}/v2/{s.repo}/manifests/v1", auth=("reader", "not-the-password"), timeout=TIMEOUT)
    assert_challenge(r, world.server, scope(s.repo, READ))
    r = world.http.get(f"{world.server.url}/v2/{s.repo}/manifests/v1", headers={"Authorization": "Basic !!!"}, timeout=TIMEOUT)
    assert_challenge(r, world.server, scope(s.repo, READ))
