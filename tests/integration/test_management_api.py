"""The management API (/api/v1) on a real server with auth on, on SQLite and PostgreSQL.

Every request goes through ``call``, which opens a fresh connection (so the
two workers share the load and cross-worker consistency is exercised all the
time) and checks that no /api/v1 answer ever carries a password, a password
hash, a token hash, or a robot token outside the one answer that creates it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from authhelpers import ok
from ocihelpers import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, descriptor, digest_of
from servers import Server, drop_postgres_schema

TIMEOUT = 30
PROBLEM = "application/problem+json"
CONTRACT = {
    "/api/v1/me": {"get"},
    "/api/v1/users": {"get", "post"},
    "/api/v1/users/{name}": {"get", "patch", "delete"},
    "/api/v1/tokens": {"get", "post"},
    "/api/v1/tokens/{name}": {"get", "delete"},
    "/api/v1/scope-maps": {"get", "post"},
    "/api/v1/scope-maps/{name}": {"get", "put", "delete"},
    "/api/v1/audit": {"get"},
    "/api/v1/refresh-tokens": {"get"},
    "/api/v1/refresh-tokens/{id}": {"delete"},
    "/api/v1/keys/rotate": {"post"},
    "/api/v1/cache-rules": {"get", "post"},
    "/api/v1/cache-rules/{name}": {"get", "patch", "delete"},
    "/api/v1/credential-sets": {"get", "post"},
    "/api/v1/credential-sets/{name}": {"get", "patch", "delete"},
    "/api/v1/cache/warm": {"post"},
    "/api/v1/cache/stats": {"get"},
    "/api/v1/cache/pins": {"get", "post", "delete"},
    "/api/v1/cache/evict": {"post"},
    "/api/v1/imports": {"get", "post"},
    "/api/v1/imports/{id}": {"get"},
    "/api/v1/provenance": {"get"},
    "/api/v1/repositories": {"delete"},
    "/api/v1/repositories/tags": {"get"},
    "/api/v1/sync-rules": {"get", "post"},
    "/api/v1/sync-rules/{name}": {"get", "patch", "delete"},
    "/api/v1/sync-rules/{name}/runs": {"get", "post"},
    "/api/v1/sync-rules/{name}/runs/{id}": {"get"},
    "/api/v1/openapi.json": {"get"},
}
# Failed logins would otherwise lock 127.0.0.1 out after 10 (the tests try bad credentials on purpose).
NO_THROTTLE = {"CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": "100000"}

# What must never appear in an /api/v1 answer; robot tokens join once the answer that shows them has been seen.
SECRETS: set[str] = set()


def _no_secrets(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    if "/api/v1/" not in response.url:
        return
    body = response.text
    assert "$argon2" not in body, f"a password hash in {response.request.method} {response.url}"
    for secret in SECRETS:
        assert secret not in body, f"a secret in {response.request.method} {response.url}: {body[:300]}"


def secret(value: str) -> str:
    SECRETS.add(value)
    SECRETS.add(hashlib.sha256(value.encode()).hexdigest())
    return value


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"management-{request.param}")
    server = Server(data_dir=tmp / "data", backend=request.param, auth=True, extra_env=NO_THROTTLE).start()
    secret(server.admin_password)
    try:
        yield server
    finally:
        server.stop()
        if server.schema:
            drop_postgres_schema(server.schema)


def admin(srv: Server) -> tuple[str, str]:
    return ("admin", srv.admin_password)


def call(srv: Server, method: str, path: str, auth: Any = "admin", **kwargs: Any) -> requests.Response:
    """``auth``: "admin" (default), None, a (user, password) pair, or {"bearer": token}."""
    headers = dict(kwargs.pop("headers", {}))
    if auth == "admin":
        auth = admin(srv)
    if isinstance(auth, dict):
        headers["Authorization"] = f"Bearer {auth['bearer']}"
        auth = None
    return requests.request(
        method, srv.url + path, auth=auth, headers=headers, timeout=TIMEOUT, hooks={"response": _no_secrets}, **kwargs
    )


def api(srv: Server, method: str, path: str, auth: Any = "admin", **kwargs: Any) -> requests.Response:
    return call(srv, method, "/api/v1" + path, auth, **kwargs)


def problem(response: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem with this status (and code); 401s carry the Basic challenge."""
    where = f"{response.request.method} {response.url}"
    assert response.status_code == status, f"{where}: {response.status_code} {response.text[:500]}"
    assert response.headers["Content-Type"].startswith(PROBLEM), f"{where}: {response.headers['Content-Type']}"
    body = response.json()
    assert body["status"] == status and isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert body.get("type", "about:blank") == "about:blank", body
    if code is not None:
        assert body.get("code") == code, body
    if status == 401:
        assert response.headers.get("WWW-Authenticate") == 'Basic realm="cargohold"', response.headers
    return body


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_password() -> str:
    return secret("pw-" + uuid.uuid4().hex)


def make_user(srv: Server, *, admin_flag: bool = False, maps: list[str] | None = None) -> tuple[str, str]:
    name, password = unique("user"), new_password()
    body = ok(api(srv, "POST", "/users", json={"name": name, "password": password, "admin": admin_flag, "scope_maps": maps or []}), 201)
    assert body == {"name": name, "admin": admin_flag, "scope_maps": maps or [], "created_at": body["created_at"]}
    return name, password


def make_map(srv: Server, rules: list[dict[str, Any]], name: str | None = None) -> str:
    name = name or unique("map")
    ok(api(srv, "POST", "/scope-maps", json={"name": name, "rules": rules}), 201)
    return name


def make_robot(srv: Server, maps: list[str], **extra: Any) -> tuple[str, str]:
    name = unique("robot")
    body = ok(api(srv, "POST", "/tokens", json={"name": name, "scope_maps": maps, **extra}), 201)
    token = body["token"]
    assert re.fullmatch(r"chr_[A-Za-z0-9_-]{40,}", token), token
    secret(token)  # from now on it must never be shown again
    return name, token


def push_image(srv: Server, repo: str, tag: str) -> str:
    """A tiny image pushed as admin (monolithic blob uploads, then the manifest by tag)."""
    auth = admin(srv)
    config = json.dumps({"architecture": "amd64", "os": "linux", "salt": uuid.uuid4().hex}).encode()
    layer = os.urandom(128)
    for blob in (config, layer):
        r = requests.post(
            f"{srv.url}/v2/{repo}/blobs/uploads/", params={"digest": digest_of(blob)}, data=blob, auth=auth, timeout=TIMEOUT,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 201, (r.status_code, r.text)
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(OCI_CONFIG, config), "layers": [descriptor(OCI_LAYER, layer)]}
    ).encode()
    r = requests.put(
        f"{srv.url}/v2/{repo}/manifests/{tag}", data=manifest, headers={"Content-Type": OCI_MANIFEST}, auth=auth, timeout=TIMEOUT
    )
    assert r.status_code == 201, (r.status_code, r.text)
    return digest_of(manifest)


def tags_status(srv: Server, repo: str, auth: Any) -> int:
    return requests.get(f"{srv.url}/v2/{repo}/tags/list", auth=auth, timeout=TIMEOUT).status_code


def access_token(srv: Server, auth: tuple[str, str], scope: str = "") -> str:
    params = {"service": "cargohold"}
    if scope:
        params["scope"] = scope
    r = requests.get(f"{srv.url}/token", params=params, auth=auth, timeout=TIMEOUT)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()["token"]


# ---- the document and the caller ------------------------------------------------------------------


def test_openapi_document_is_public_and_covers_the_contract(srv: Server) -> None:
    r = call(srv, "GET", "/api/v1/openapi.json", auth=None)
    doc = ok(r)
    assert doc["openapi"].startswith("3.1")
    paths = {p: {m for m in ops} for p, ops in doc["paths"].items()}
    assert paths == CONTRACT
    schemas = doc["components"]["schemas"]
    assert set(schemas["User"]["required"]) == {"name", "admin", "scope_maps", "created_at"}
    assert set(schemas["Robot"]["required"]) == {"name", "scope_maps", "expires_at", "created_by", "created_at", "expired"}
    assert "token" in schemas["RobotCreated"]["properties"]
    assert schemas["UserCreate"]["additionalProperties"] is False
    create_user = doc["paths"]["/api/v1/users"]["post"]
    assert {"201", "401", "403", "409", "422"} <= set(create_user["responses"])
    assert PROBLEM in create_user["responses"]["422"]["content"]
    assert doc["paths"]["/api/v1/openapi.json"]["get"]["security"] == []
    assert doc["paths"]["/api/v1/me"]["get"]["responses"].keys() >= {"200", "401"}
    assert "403" not in doc["paths"]["/api/v1/me"]["get"]["responses"]


def test_me_for_every_kind_of_credential(srv: Server) -> None:
    assert ok(api(srv, "GET", "/me")) == {"name": "admin", "kind": "user", "admin": True}
    user, password = make_user(srv)
    assert ok(api(srv, "GET", "/me", auth=(user, password))) == {"name": user, "kind": "user", "admin": False}
    robot, token = make_robot(srv, [])
    expected = {"name": robot, "kind": "robot", "admin": False}
    assert ok(api(srv, "GET", "/me", auth=(robot, token))) == expected
    assert ok(api(srv, "GET", "/me", auth=("", token))) == expected
    assert ok(api(srv, "GET", "/me", auth={"bearer": token})) == expected
    jwt_token = access_token(srv, (user, password))
    assert ok(api(srv, "GET", "/me", auth={"bearer": jwt_token})) == {"name": user, "kind": "user", "admin": False}

    problem(api(srv, "GET", "/me", auth=None), 401, "UNAUTHORIZED")
    problem(api(srv, "GET", "/me", auth=(user, "wrong-password-123")), 401)
    problem(api(srv, "GET", "/me", auth=("nobody-here", "whatever-password")), 401)
    problem(api(srv, "GET", "/me", auth={"bearer": "not.a.jwt"}), 401)
    problem(api(srv, "GET", "/me", auth={"bearer": "chr_" + "x" * 43}), 401)
    problem(api(srv, "GET", "/me", auth=None, headers={"Authorization": "Basic !!!"}), 401)
    # An anonymous access token names nobody the management API knows.
    r = requests.get(f"{srv.url}/token", params={"service": "cargohold"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    problem(api(srv, "GET", "/me", auth={"bearer": r.json()["token"]}), 401)


ADMIN_OPERATIONS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/users", None),
    ("POST", "/users", {"name": "would-be", "password": "long-enough-password"}),
    ("GET", "/users/admin", None),
    ("PATCH", "/users/admin", {"admin": False}),
    ("DELETE", "/users/admin", None),
    ("GET", "/tokens", None),
    ("POST", "/tokens", {"name": "would-be-robot"}),
    ("GET", "/tokens/whatever", None),
    ("DELETE", "/tokens/whatever", None),
    ("GET", "/scope-maps", None),
    ("POST", "/scope-maps", {"name": "would-be-map", "rules": []}),
    ("GET", "/scope-maps/whatever", None),
    ("PUT", "/scope-maps/whatever", {"rules": []}),
    ("DELETE", "/scope-maps/whatever", None),
    ("GET", "/audit", None),
    ("GET", "/refresh-tokens", None),
    ("DELETE", "/refresh-tokens/0123456789abcdef", None),
    ("POST", "/keys/rotate", None),
]


def test_everything_but_me_needs_an_admin(srv: Server) -> None:
    everything = make_map(srv, [{"repository": "*", "actions": ["content/read", "content/write", "content/delete", "metadata/read"]}])
    user, password = make_user(srv, maps=[everything])
    robot, token = make_robot(srv, [everything])
    user_jwt = access_token(srv, (user, password), "repository:x:pull,push")
    for method, path, body in ADMIN_OPERATIONS:
        kwargs = {"json": body} if body is not None else {}
        problem(api(srv, method, path, auth=None, **kwargs), 401, "UNAUTHORIZED")
        problem(api(srv, method, path, auth=(user, password), **kwargs), 403, "DENIED")
        problem(api(srv, method, path, auth={"bearer": user_jwt}, **kwargs), 403, "DENIED")
        problem(api(srv, method, path, auth=(robot, token), **kwargs), 403, "DENIED")
        problem(api(srv, method, path, auth={"bearer": token}, **kwargs), 403, "DENIED")
    # Nothing happened.
    assert ok(api(srv, "GET", "/users/admin"))["admin"] is True
    problem(api(srv, "GET", "/users/would-be"), 404, "NOT_FOUND")
    problem(api(srv, "GET", "/tokens/would-be-robot"), 404)
    # Refused writes are in the audit log, as denied.
    events = ok(api(srv, "GET", "/audit", params={"actor": user, "action": "user.create"}))["events"]
    assert events and all(e["outcome"] == "denied" for e in events)


# ---- users ----------------------------------------------------------------------------------------


def test_users_lifecycle(srv: Server) -> None:
    reader = make_map(srv, [{"repository": "team/*", "actions": ["content/read"]}])
    name, password = make_user(srv, maps=[reader])
    user = ok(api(srv, "GET", f"/users/{name}"))
    assert user["scope_maps"] == [reader] and user["admin"] is False
    created = datetime.fromisoformat(user["created_at"].replace("Z", "+00:00"))
    assert abs(created - datetime.now(UTC)) < timedelta(minutes=5)
    assert name in [u["name"] for u in ok(api(srv, "GET", "/users"))]

    problem(api(srv, "POST", "/users", json={"name": name, "password": new_password()}), 409, "ALREADY_EXISTS")
    robot, _ = make_robot(srv, [])
    problem(api(srv, "POST", "/users", json={"name": robot, "password": new_password()}), 409, "ALREADY_EXISTS")

    updated = ok(api(srv, "PATCH", f"/users/{name}", json={"scope_maps": []}))
    assert updated["scope_maps"] == [] and updated["name"] == name
    assert ok(api(srv, "PATCH", f"/users/{name}", json={})) == updated

    new = new_password()
    ok(api(srv, "PATCH", f"/users/{name}", json={"password": new}))
    problem(api(srv, "GET", "/me", auth=(name, password)), 401)
    assert ok(api(srv, "GET", "/me", auth=(name, new)))["name"] == name

    ok(api(srv, "DELETE", f"/users/{name}"), 204)
    problem(api(srv, "GET", f"/users/{name}"), 404, "NOT_FOUND")
    problem(api(srv, "DELETE", f"/users/{name}"), 404, "NOT_FOUND")
    problem(api(srv, "PATCH", f"/users/{name}", json={"admin": True}), 404, "NOT_FOUND")
    problem(api(srv, "GET", "/me", auth=(name, new)), 401)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "Upper", "password": "long-enough-password"}, 422, "VALIDATION_FAILED"),
        ({"name": "-dash", "password": "long-enough-password"}, 422, "VALIDATION_FAILED"),
        ({"name": "x" * 65, "password": "long-enough-password"}, 422, "VALIDATION_FAILED"),
        ({"name": "short-pw", "password": "elevenchars"}, 422, "VALIDATION_FAILED"),
        ({"name": "no-password"}, 422, "VALIDATION_FAILED"),
        ({"name": "extra", "password": "long-enough-password", "role": "root"}, 422, "VALIDATION_FAILED"),
        ({"name": "strict", "password": "long-enough-password", "admin": "true"}, 422, "VALIDATION_FAILED"),
        ({"name": "maps", "password": "long-enough-password", "scope_maps": ["no-such-map"]}, 422, "UNKNOWN_SCOPE_MAP"),
        ({"name": "anonymous", "password": "long-enough-password"}, 422, "INVALID_NAME"),
        ([], 422, "VALIDATION_FAILED"),
        ("{not json", 400, "INVALID_JSON"),
        ("", 400, "INVALID_JSON"),
        (None, 415, "UNSUPPORTED_MEDIA_TYPE"),
        (b'{"name": "plain", "password": "long-enough-password"}', 415, "UNSUPPORTED_MEDIA_TYPE"),
    ],
)
def test_bad_user_input(srv: Server, body: Any, status: int, code: str) -> None:
    if isinstance(body, str):
        r = api(srv, "POST", "/users", data=body.encode(), headers={"Content-Type": "application/json"})
    elif isinstance(body, bytes):  # what a cross-site form or fetch() could send without a CORS preflight
        r = api(srv, "POST", "/users", data=body, headers={"Content-Type": "text/plain"})
    elif body is None:
        r = api(srv, "POST", "/users")
    else:
        r = api(srv, "POST", "/users", json=body)
    details = problem(r, status, code)
    if code == "VALIDATION_FAILED":
        assert details["errors"] and all(set(e) == {"loc", "msg", "type"} for e in details["errors"])
    assert "long-enough-password" not in r.text and "elevenchars" not in r.text  # rejected input is not echoed
    if isinstance(body, dict) and "name" in body:
        problem(api(srv, "GET", f"/users/{body['name']}"), 404)  # and nothing was created


def test_the_last_admin_cannot_be_deleted_or_demoted(srv: Server) -> None:
    admins = [u["name"] for u in ok(api(srv, "GET", "/users")) if u["admin"]]
    assert admins == ["admin"]
    problem(api(srv, "DELETE", "/users/admin"), 409, "LAST_ADMIN")
    problem(api(srv, "PATCH", "/users/admin", json={"admin": False}), 409, "LAST_ADMIN")
    assert ok(api(srv, "GET", "/users/admin"))["admin"] is True

    boss, password = make_user(srv, admin_flag=True)
    assert ok(api(srv, "GET", "/users", auth=(boss, password)))
    # With two admins, one may step down (here: itself), and is then an ordinary user at once.
    assert ok(api(srv, "PATCH", f"/users/{boss}", auth=(boss, password), json={"admin": False}))["admin"] is False
    problem(api(srv, "GET", "/users", auth=(boss, password)), 403, "DENIED")
    problem(api(srv, "PATCH", "/users/admin", json={"admin": False}), 409, "LAST_ADMIN")
    ok(api(srv, "PATCH", f"/users/{boss}", json={"admin": True}))
    ok(api(srv, "DELETE", f"/users/{boss}", auth=(boss, password)), 204)  # an admin may delete itself while another remains
    problem(api(srv, "DELETE", "/users/admin"), 409, "LAST_ADMIN")


def test_bearer_tokens_carry_live_rights(srv: Server) -> None:
    boss, password = make_user(srv, admin_flag=True)
    token = access_token(srv, (boss, password), "registry:management:*")
    assert ok(api(srv, "GET", "/users", auth={"bearer": token}))
    ok(api(srv, "PATCH", f"/users/{boss}", json={"admin": False}))
    problem(api(srv, "GET", "/users", auth={"bearer": token}), 403, "DENIED")
    assert ok(api(srv, "GET", "/me", auth={"bearer": token}))["admin"] is False
    ok(api(srv, "DELETE", f"/users/{boss}"), 204)
    problem(api(srv, "GET", "/me", auth={"bearer": token}), 401)


# ---- robot tokens ---------------------------------------------------------------------------------


def test_robot_token_is_shown_once_and_works_on_v2(srv: Server) -> None:
    repo = f"team-{uuid.uuid4().hex[:8]}/app"
    push_image(srv, repo, "1.0")
    lister = make_map(srv, [{"repository": repo.split("/")[0] + "/*", "actions": ["metadata/read"]}])
    name, token = make_robot(srv, [lister])

    shown = ok(api(srv, "GET", f"/tokens/{name}"))
    assert "token" not in shown
    assert shown["scope_maps"] == [lister] and shown["created_by"] == "admin" and shown["expired"] is False
    expires = datetime.fromisoformat(shown["expires_at"].replace("Z", "+00:00"))
    assert abs(expires - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=5)
    listed = {r["name"]: r for r in ok(api(srv, "GET", "/tokens"))}
    assert listed[name] == shown

    r = requests.get(f"{srv.url}/v2/{repo}/tags/list", auth=(name, token), timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == ["1.0"]
    assert requests.get(f"{srv.url}/v2/{repo}/tags/list", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT).status_code == 200
    assert tags_status(srv, repo, ("", token)) == 200
    assert tags_status(srv, "elsewhere/app", (name, token)) == 403  # outside its scope map
    r = requests.get(f"{srv.url}/v2/{repo}/manifests/1.0", auth=(name, token), timeout=TIMEOUT)
    assert r.status_code == 403  # metadata/read lists tags; it does not pull

    ok(api(srv, "DELETE", f"/tokens/{name}"), 204)
    problem(api(srv, "GET", f"/tokens/{name}"), 404, "NOT_FOUND")
    problem(api(srv, "DELETE", f"/tokens/{name}"), 404, "NOT_FOUND")
    assert tags_status(srv, repo, (name, token)) == 401


def test_robot_token_options_and_bad_input(srv: Server) -> None:
    name, _ = make_robot(srv, [], expires_in_days=None)
    robot = ok(api(srv, "GET", f"/tokens/{name}"))
    assert robot["expires_at"] is None and robot["expired"] is False
    name, _ = make_robot(srv, [], expires_in_days=1)
    expires = datetime.fromisoformat(ok(api(srv, "GET", f"/tokens/{name}"))["expires_at"].replace("Z", "+00:00"))
    assert abs(expires - (datetime.now(UTC) + timedelta(days=1))) < timedelta(minutes=5)

    problem(api(srv, "POST", "/tokens", json={"name": name}), 409, "ALREADY_EXISTS")
    problem(api(srv, "POST", "/tokens", json={"name": "admin"}), 409, "ALREADY_EXISTS")  # users and robots share names
    problem(api(srv, "POST", "/tokens", json={"name": unique("r"), "scope_maps": ["missing-map"]}), 422, "UNKNOWN_SCOPE_MAP")
    problem(api(srv, "POST", "/tokens", json={"name": unique("r"), "expires_in_days": 0}), 422, "VALIDATION_FAILED")
    problem(api(srv, "POST", "/tokens", json={"name": unique("r"), "expires_in_days": "7"}), 422, "VALIDATION_FAILED")
    problem(api(srv, "POST", "/tokens", json={"name": unique("r"), "token": "chr_mine"}), 422, "VALIDATION_FAILED")
    problem(api(srv, "POST", "/tokens", json={"name": "anonymous"}), 422, "INVALID_NAME")
    problem(api(srv, "GET", "/tokens/NOT_A_NAME"), 404, "NOT_FOUND")


# ---- scope maps -----------------------------------------------------------------------------------


def test_scope_maps_lifecycle(srv: Server) -> None:
    name = unique("map")
    rules = [{"repository": "team/app", "actions": ["content/write", "content/read"]}]
    created = ok(api(srv, "POST", "/scope-maps", json={"name": name, "description": "CI pushes", "rules": rules}), 201)
    assert created["name"] == name and created["description"] == "CI pushes"
    assert created["rules"] == [{"repository": "team/app", "actions": ["content/read", "content/write"]}]
    assert ok(api(srv, "GET", f"/scope-maps/{name}")) == created
    assert created in ok(api(srv, "GET", "/scope-maps"))
    problem(api(srv, "POST", "/scope-maps", json={"name": name, "rules": []}), 409, "ALREADY_EXISTS")

    replaced = ok(api(srv, "PUT", f"/scope-maps/{name}", json={"description": "now read-only", "rules": [{"repository": "*", "actions": ["content/read"]}]}))
    assert replaced["description"] == "now read-only" and replaced["rules"] == [{"repository": "*", "actions": ["content/read"]}]
    assert replaced["created_at"] == created["created_at"]
    problem(api(srv, "PUT", f"/scope-maps/{unique('nope')}", json={"rules": []}), 404, "NOT_FOUND")

    user, _ = make_user(srv, maps=[name])
    problem(api(srv, "DELETE", f"/scope-maps/{name}"), 409, "IN_USE")
    ok(api(srv, "PATCH", f"/users/{user}", json={"scope_maps": []}))
    robot, _ = make_robot(srv, [name])
    problem(api(srv, "DELETE", f"/scope-maps/{name}"), 409, "IN_USE")
    ok(api(srv, "DELETE", f"/tokens/{robot}"), 204)
    ok(api(srv, "DELETE", f"/scope-maps/{name}"), 204)
    problem(api(srv, "GET", f"/scope-maps/{name}"), 404, "NOT_FOUND")
    problem(api(srv, "DELETE", f"/scope-maps/{name}"), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "body",
    [
        {"rules": [{"repository": "team/app", "actions": ["content/fly"]}]},
        {"rules": [{"repository": "team/app", "actions": []}]},
        {"rules": [{"repository": "Team/App", "actions": ["content/read"]}]},
        {"rules": [{"repository": "team/*/x", "actions": ["content/read"]}]},
        {"rules": [{"repository": "team/app", "actions": ["content/read"], "extra": 1}]},
        {"rules": "everything"},
        {"description": "nul \u0000 byte", "rules": []},
        {"description": "x" * 1025, "rules": []},
        {},
    ],
)
def test_bad_scope_map_input(srv: Server, body: dict[str, Any]) -> None:
    name = unique("bad")
    problem(api(srv, "POST", "/scope-maps", json={"name": name, **body}), 422)
    problem(api(srv, "GET", f"/scope-maps/{name}"), 404)


def test_anonymous_scope_map_may_only_read(srv: Server) -> None:
    repo = f"public-{uuid.uuid4().hex[:8]}/app"
    push_image(srv, repo, "latest")
    assert tags_status(srv, repo, None) == 401
    write = [{"repository": "*", "actions": ["content/read", "content/write"]}]
    problem(api(srv, "POST", "/scope-maps", json={"name": "anonymous", "rules": write}), 422, "INVALID_RULE")
    ok(api(srv, "POST", "/scope-maps", json={"name": "anonymous", "rules": [{"repository": repo, "actions": ["metadata/read"]}]}), 201)
    try:
        problem(api(srv, "PUT", "/scope-maps/anonymous", json={"rules": write}), 422, "INVALID_RULE")
        problem(api(srv, "PUT", "/scope-maps/anonymous", json={"rules": [{"repository": "*", "actions": ["content/delete"]}]}), 422)
        assert tags_status(srv, repo, None) == 200  # anonymous callers see it at once
        ok(api(srv, "PUT", "/scope-maps/anonymous", json={"rules": [{"repository": repo, "actions": ["content/read", "metadata/read"]}]}))
        r = requests.get(f"{srv.url}/v2/{repo}/manifests/latest", headers={"Accept": OCI_MANIFEST}, timeout=TIMEOUT)
        assert r.status_code == 200
    finally:
        ok(api(srv, "DELETE", "/scope-maps/anonymous"), 204)
    assert tags_status(srv, repo, None) == 401


def test_scope_map_change_takes_effect_at_once_in_every_worker(srv: Server) -> None:
    repo = f"live-{uuid.uuid4().hex[:8]}/app"
    push_image(srv, repo, "v1")
    name = make_map(srv, [{"repository": repo, "actions": ["metadata/read"]}])
    robot, token = make_robot(srv, [name])
    user, password = make_user(srv, maps=[name])
    rounds = 12  # each request is a fresh connection: the kernel spreads them over both workers

    def statuses() -> set[int]:
        return {tags_status(srv, repo, creds) for creds in [(robot, token), (user, password)] for _ in range(rounds)}

    assert statuses() == {200}
    ok(api(srv, "PUT", f"/scope-maps/{name}", json={"rules": [{"repository": "other/app", "actions": ["metadata/read"]}]}))
    assert statuses() == {403}
    ok(api(srv, "PUT", f"/scope-maps/{name}", json={"rules": [{"repository": repo.split('/')[0] + "/*", "actions": ["metadata/read"]}]}))
    assert statuses() == {200}
    ok(api(srv, "PATCH", f"/users/{user}", json={"scope_maps": []}))
    assert {tags_status(srv, repo, (user, password)) for _ in range(rounds)} == {403}


# ---- refresh tokens, keys -------------------------------------------------------------------------


def _password_grant(srv: Server, user: str, password: str) -> requests.Response:
    return requests.post(
        f"{srv.url}/token",
        data={"grant_type": "password", "username": user, "password": password, "access_type": "offline", "service": "cargohold"},
        timeout=TIMEOUT,
    )


def _refresh_grant(srv: Server, refresh: str) -> requests.Response:
    return requests.post(
        f"{srv.url}/token", data={"grant_type": "refresh_token", "refresh_token": refresh, "service": "cargohold"}, timeout=TIMEOUT
    )


def test_refresh_token_revocation(srv: Server) -> None:
    user, password = make_user(srv)
    r = _password_grant(srv, user, password)
    assert r.status_code == 200, r.text
    refresh = secret(r.json()["refresh_token"])
    assert _refresh_grant(srv, refresh).status_code == 200

    listed = ok(api(srv, "GET", "/refresh-tokens", params={"principal": user}))
    assert len(listed) == 1
    entry = listed[0]
    assert entry["principal"] == user and entry["revoked"] is False and set(entry) == {"id", "principal", "expires_at", "revoked"}
    assert entry in ok(api(srv, "GET", "/refresh-tokens"))
    assert ok(api(srv, "GET", "/refresh-tokens", params={"principal": unique("nobody")})) == []

    ok(api(srv, "DELETE", f"/refresh-tokens/{entry['id']}"), 204)
    r = _refresh_grant(srv, refresh)
    assert r.status_code in (400, 401), r.text
    assert ok(api(srv, "GET", "/refresh-tokens", params={"principal": user}))[0]["revoked"] is True
    ok(api(srv, "DELETE", f"/refresh-tokens/{entry['id']}"), 204)  # again: harmless
    problem(api(srv, "DELETE", "/refresh-tokens/0000000000000000"), 404, "NOT_FOUND")
    problem(api(srv, "DELETE", "/refresh-tokens/not%20an%20id"), 404, "NOT_FOUND")

    # A new password revokes the refresh tokens issued under the old one.
    r = _password_grant(srv, user, password)
    assert r.status_code == 200, r.text
    second = secret(r.json()["refresh_token"])
    ok(api(srv, "PATCH", f"/users/{user}", json={"password": new_password()}))
    assert _refresh_grant(srv, second).status_code in (400, 401)
    assert all(t["revoked"] for t in ok(api(srv, "GET", "/refresh-tokens", params={"principal": user})))


def test_key_rotation_keeps_earlier_access_tokens_valid(srv: Server) -> None:
    repo = f"keys-{uuid.uuid4().hex[:8]}/app"
    push_image(srv, repo, "v1")
    before = access_token(srv, admin(srv), f"repository:{repo}:pull")
    old_kid = jwt.get_unverified_header(before)["kid"]
    kid = ok(api(srv, "POST", "/keys/rotate"))["kid"]
    assert isinstance(kid, str) and kid and kid != old_kid
    for _ in range(6):  # both workers
        r = requests.get(f"{srv.url}/v2/{repo}/tags/list", headers={"Authorization": f"Bearer {before}"}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        assert ok(api(srv, "GET", "/me", auth={"bearer": before}))["name"] == "admin"
    after = access_token(srv, admin(srv), f"repository:{repo}:pull")
    assert jwt.get_unverified_header(after)["kid"] == kid
    r = requests.get(f"{srv.url}/v2/{repo}/tags/list", headers={"Authorization": f"Bearer {after}"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text


# ---- audit ----------------------------------------------------------------------------------------


def test_admin_actions_are_audited(srv: Server) -> None:
    start = ok(api(srv, "GET", "/audit", params={"limit": 1}))["events"][0]["id"]
    name = make_map(srv, [{"repository": "audit/*", "actions": ["content/read"]}])
    ok(api(srv, "PUT", f"/scope-maps/{name}", json={"rules": []}))
    user, password = make_user(srv, maps=[name])
    ok(api(srv, "PATCH", f"/users/{user}", json={"password": new_password(), "admin": False}))
    robot, _ = make_robot(srv, [name])
    ok(api(srv, "DELETE", f"/tokens/{robot}"), 204)
    ok(api(srv, "DELETE", f"/users/{user}"), 204)
    ok(api(srv, "DELETE", f"/scope-maps/{name}"), 204)
    kid = ok(api(srv, "POST", "/keys/rotate"))["kid"]

    page = ok(api(srv, "GET", "/audit", params={"actor": "admin", "limit": 1000}))
    mine = [e for e in page["events"] if e["id"] > start]
    seen = [(e["action"], e["target"]) for e in reversed(mine)]
    assert seen == [
        ("scope_map.create", name),
        ("scope_map.update", name),
        ("user.create", user),
        ("user.update", user),
        ("token.create", robot),
        ("token.delete", robot),
        ("user.delete", user),
        ("scope_map.delete", name),
        ("key.rotate", kid),
    ]
    for e in mine:
        assert e["actor"] == "admin" and e["client"] == "127.0.0.1" and e["outcome"] == "ok"
        assert set(e) == {"id", "at", "actor", "client", "action", "target", "outcome", "detail"}
    update = next(e for e in mine if e["action"] == "user.update")
    assert update["detail"]["password_changed"] is True and update["detail"]["admin"] is False
    assert ok(api(srv, "GET", "/audit", params={"action": "key.rotate"}))["events"][0]["target"] == kid


def test_audit_pages(srv: Server) -> None:
    for _ in range(5):
        make_map(srv, [])
    first = ok(api(srv, "GET", "/audit", params={"limit": 2, "action": "scope_map.create"}))
    assert len(first["events"]) == 2 and first["next"] == first["events"][-1]["id"]
    ids = [e["id"] for e in first["events"]]
    second = ok(api(srv, "GET", "/audit", params={"limit": 2, "action": "scope_map.create", "before": first["next"]}))
    assert len(second["events"]) == 2
    assert all(e["id"] < min(ids) for e in second["events"])
    everything = ok(api(srv, "GET", "/audit", params={"limit": 1000, "action": "scope_map.create"}))
    assert everything["next"] is None
    assert [e["id"] for e in everything["events"]] == sorted((e["id"] for e in everything["events"]), reverse=True)
    assert ok(api(srv, "GET", "/audit", params={"actor": unique("nobody")})) == {"events": [], "next": None}
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"before": 0}, {"before": "x"}, {"actor": "a\x00b"}):
        problem(api(srv, "GET", "/audit", params=params), 422, "VALIDATION_FAILED")


# ---- the error format -----------------------------------------------------------------------------


def test_unknown_paths_and_methods_are_problems(srv: Server) -> None:
    problem(api(srv, "GET", "/nothing-here"), 404)
    problem(api(srv, "PUT", "/users"), 405)
    problem(api(srv, "GET", "/users/%00"), 404, "NOT_FOUND")
    problem(api(srv, "GET", "/scope-maps/" + "x" * 300), 404, "NOT_FOUND")
    problem(api(srv, "PATCH", "/users/admin", data=b"\xff\xfe", headers={"Content-Type": "application/json"}), 400, "INVALID_JSON")
    problem(
        api(srv, "POST", "/scope-maps", data=b'{"name": "sur", "description": "\\ud800", "rules": []}', headers={"Content-Type": "application/json"}),
        400,
    )
    r = api(srv, "POST", "/scope-maps", data=b'{"name": "vendor", "rules": []}', headers={"Content-Type": "application/vnd.x+json; charset=utf-8"})
    assert ok(r, 201)["name"] == "vendor"


def test_management_api_without_auth(tmp_path: Path) -> None:
    server = Server(data_dir=tmp_path / "data", auth=False, workers=1).start()
    try:
        assert ok(call(server, "GET", "/api/v1/openapi.json", auth=None))["openapi"].startswith("3.1")
        for method, path, body in [("GET", "/me", None), *ADMIN_OPERATIONS]:
            kwargs = {"json": body} if body is not None else {}
            problem(call(server, method, "/api/v1" + path, auth=None, **kwargs), 404, "AUTH_DISABLED")
    finally:
        server.stop()


def test_failed_logins_are_throttled_with_a_problem(tmp_path: Path) -> None:
    server = Server(
        data_dir=tmp_path / "data", auth=True, workers=1,
        extra_env={"CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": "3", "CARGOHOLD_LOGIN_THROTTLE_WINDOW_SECONDS": "600"},
    ).start()
    try:
        for _ in range(3):
            problem(call(server, "GET", "/api/v1/users", auth=("admin", "wrong-password-123")), 401)
        r = call(server, "GET", "/api/v1/users", auth=("admin", "wrong-password-123"))
        problem(r, 429, "TOOMANYREQUESTS")
        assert int(r.headers["Retry-After"]) > 0
    finally:
        server.stop()
