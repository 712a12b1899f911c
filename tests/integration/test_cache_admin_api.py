"""Cache rules and credential sets through /api/v1 on a real server with auth on, on SQLite and PostgreSQL.

Every answer is checked for the upstream passwords the tests used (and for
the sealed form the database holds): they must never come back, in any
answer, error or log line. The server runs without
``CARGOHOLD_ALLOW_PRIVATE_UPSTREAMS``, so a rule whose upstream is on this
machine is refused; a second server, with the setting, accepts it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests
from authhelpers import ok, run_async, server_settings
from cachehelpers import record_upstream_status
from servers import Server, drop_postgres_schema
from sqlalchemy import select

from cargohold.cache.secrets import SecretBox, load_key
from cargohold.store.db import create_engine
from cargohold.store.schema import credential_sets

TIMEOUT = 30
PROBLEM = "application/problem+json"
NO_THROTTLE = {"CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": "100000"}
# A talkative server, so that the log check below has something to check.
VERBOSE = {"CARGOHOLD_LOG_LEVEL": "INFO", "CARGOHOLD_ACCESS_LOG": "true"}
SECRETS: set[str] = set()  # never in an answer
UPSTREAM_SECRETS: set[str] = set()  # never in an answer nor in the log (which shows the bootstrap admin password once)
RULE_KEYS = {
    "name", "source", "target", "credential_set", "tag_ttl_seconds", "platforms", "insecure", "dockerhub_mirror",
    "created_at", "updated_at",
}
SET_KEYS = {"name", "login_server", "username", "created_at", "updated_at", "last_login", "ratelimit"}


def _no_secrets(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    body = response.text
    for value in SECRETS:
        assert value not in body, f"a secret in {response.request.method} {response.url}: {body[:300]}"


def secret(value: str | None = None, logged: bool = False) -> str:
    value = value or f"upstream-pw-{uuid.uuid4().hex}"
    SECRETS.add(value)
    if not logged:
        UPSTREAM_SECRETS.add(value)
    return value


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def start(tmp: Any, backend: str, **env: str) -> Server:
    server = Server(data_dir=tmp / "data", backend=backend, auth=True, extra_env={**NO_THROTTLE, **VERBOSE, **env}).start()
    secret(server.admin_password, logged=True)
    return server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start(tmp_path_factory.mktemp(f"cache-admin-{request.param}"), request.param)
    try:
        yield server
    finally:
        server.stop()
        if server.schema:
            drop_postgres_schema(server.schema)
        assert_log_clean(server)


def assert_log_clean(server: Server) -> None:
    log = server.log()
    assert "POST /api/v1/credential-sets" in log  # the log was written, at the level that shows requests
    for value in UPSTREAM_SECRETS:
        at = log.find(value)
        assert at < 0, f"an upstream password in the server log: …{log[max(0, at - 300):at]}"


def api(srv: Server, method: str, path: str, auth: Any = "admin", **kwargs: Any) -> requests.Response:
    """``auth``: "admin" (default), None, a (user, password) pair, or {"bearer": token}."""
    headers = dict(kwargs.pop("headers", {}))
    if auth == "admin":
        auth = ("admin", srv.admin_password)
    if isinstance(auth, dict):
        headers["Authorization"] = f"Bearer {auth['bearer']}"
        auth = None
    return requests.request(
        method, f"{srv.url}/api/v1{path}", auth=auth, headers=headers, timeout=TIMEOUT, hooks={"response": _no_secrets},
        **kwargs,
    )


def problem(response: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    where = f"{response.request.method} {response.url}"
    assert response.status_code == status, f"{where}: {response.status_code} {response.text[:500]}"
    assert response.headers["Content-Type"].startswith(PROBLEM), f"{where}: {response.headers['Content-Type']}"
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"], body
    if code is not None:
        assert body.get("code") == code, body
    if status == 401:
        assert response.headers.get("WWW-Authenticate") == 'Basic realm="cargohold"', response.headers
    return body


def make_set(srv: Server, login_server: str = "docker.io", name: str | None = None) -> tuple[str, str]:
    name, password = name or unique("creds"), secret()
    body = ok(api(srv, "POST", "/credential-sets", json={
        "name": name, "login_server": login_server, "username": "robot-user", "password": password,
    }), 201)
    assert set(body) == SET_KEYS, body
    return name, password


def make_rule(srv: Server, source: str, target: str, **extra: Any) -> dict[str, Any]:
    name = extra.pop("name", None) or unique("rule")
    body = ok(api(srv, "POST", "/cache-rules", json={"name": name, "source": source, "target": target, **extra}), 201)
    assert set(body) == RULE_KEYS, body
    return body


def ns() -> str:
    """A fresh local namespace, so tests on the session's server never collide on targets."""
    return f"ns{uuid.uuid4().hex[:8]}"


def stored_secret(srv: Server, name: str) -> str:
    """The sealed password in the server's database."""

    async def go() -> str:
        engine = create_engine(server_settings(srv))
        try:
            async with engine.connect() as conn:
                return (await conn.execute(select(credential_sets.c.secret).where(credential_sets.c.name == name))).scalar_one()
        finally:
            await engine.dispose()

    return run_async(go)


# ---- the document -----------------------------------------------------------------------------------


def test_openapi_describes_cache_rules_and_credential_sets(srv: Server) -> None:
    doc = ok(api(srv, "GET", "/openapi.json", auth=None))
    paths = doc["paths"]
    assert set(paths["/api/v1/cache-rules"]) == {"get", "post"}
    assert set(paths["/api/v1/cache-rules/{name}"]) == {"get", "patch", "delete"}
    assert set(paths["/api/v1/credential-sets"]) == {"get", "post"}
    assert set(paths["/api/v1/credential-sets/{name}"]) == {"get", "patch", "delete"}
    schemas = doc["components"]["schemas"]
    assert set(schemas["CacheRule"]["required"]) == RULE_KEYS
    assert schemas["CacheRuleCreate"]["properties"]["platforms"]["enum"] == ["eager", "on-demand"]
    assert schemas["CacheRuleCreate"]["properties"]["tag_ttl_seconds"]["default"] == 60
    assert set(schemas["CredentialSet"]["properties"]) == SET_KEYS  # no password, sealed or not
    assert set(schemas["LastLogin"]["properties"]) == {"at", "ok", "error"}
    assert set(schemas["RateLimit"]["properties"]) == {"limit", "remaining", "at"}
    password = schemas["CredentialSetCreate"]["properties"]["password"]
    assert password["writeOnly"] is True and password["format"] == "password"
    create = paths["/api/v1/cache-rules"]["post"]
    assert {"201", "401", "403", "409", "422"} <= set(create["responses"]) and "Admins only." in create["description"]
    assert "409" in paths["/api/v1/credential-sets/{name}"]["delete"]["responses"]


# ---- cache rules ------------------------------------------------------------------------------------


def test_cache_rule_lifecycle(srv: Server) -> None:
    creds, _ = make_set(srv, "index.docker.io")
    local = ns()
    r = api(srv, "POST", "/cache-rules", json={
        "name": f"{local}-hub", "source": "index.docker.io/library/*", "target": f"{local}/*", "credential_set": creds,
    })
    rule = ok(r, 201)
    assert r.headers["Location"] == f"/api/v1/cache-rules/{local}-hub"
    assert rule | {"created_at": None, "updated_at": None} == {
        "name": f"{local}-hub", "source": "docker.io/library/*", "target": f"{local}/*", "credential_set": creds,
        "tag_ttl_seconds": 60, "platforms": "on-demand", "insecure": False, "dockerhub_mirror": False,
        "created_at": None, "updated_at": None,
    }
    assert ok(api(srv, "GET", f"/cache-rules/{local}-hub")) == rule
    assert rule in ok(api(srv, "GET", "/cache-rules"))

    exact = make_rule(srv, "docker.io/alpine", f"{local}-alpine", tag_ttl_seconds=0, platforms="eager", insecure=True)
    assert (exact["source"], exact["target"], exact["tag_ttl_seconds"], exact["platforms"], exact["insecure"]) == (
        "docker.io/library/alpine", f"{local}-alpine", 0, "eager", True,
    )

    changed = ok(api(srv, "PATCH", f"/cache-rules/{local}-hub", json={"tag_ttl_seconds": 3600, "platforms": "eager"}))
    assert (changed["tag_ttl_seconds"], changed["platforms"], changed["credential_set"]) == (3600, "eager", creds)
    assert changed["created_at"] == rule["created_at"]
    assert datetime.fromisoformat(changed["updated_at"]) >= datetime.fromisoformat(rule["updated_at"])
    assert ok(api(srv, "PATCH", f"/cache-rules/{local}-hub", json={})) == changed
    # An explicit null removes the credential set; leaving it out keeps it.
    changed = ok(api(srv, "PATCH", f"/cache-rules/{local}-hub", json={"credential_set": None}))
    assert changed["credential_set"] is None and changed["tag_ttl_seconds"] == 3600
    changed = ok(api(srv, "PATCH", f"/cache-rules/{local}-hub", json={"source": "docker.io/*", "target": f"{local}/hub/*"}))
    assert (changed["source"], changed["target"]) == ("docker.io/*", f"{local}/hub/*")

    for name in (f"{local}-hub", exact["name"]):
        ok(api(srv, "DELETE", f"/cache-rules/{name}"), 204)
        problem(api(srv, "GET", f"/cache-rules/{name}"), 404, "NOT_FOUND")
    problem(api(srv, "DELETE", f"/cache-rules/{local}-hub"), 404, "NOT_FOUND")
    problem(api(srv, "PATCH", f"/cache-rules/{local}-hub", json={"tag_ttl_seconds": 1}), 404, "NOT_FOUND")
    problem(api(srv, "GET", "/cache-rules/Not_A_Name"), 404, "NOT_FOUND")
    ok(api(srv, "DELETE", f"/credential-sets/{creds}"), 204)

    events = ok(api(srv, "GET", "/audit", params={"action": "cache_rule.update"}))["events"]
    assert any(e["target"] == f"{local}-hub" and e["actor"] == "admin" and e["outcome"] == "ok" for e in events)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"source": "alpine", "target": "x/*"}, 422, "INVALID_CACHE_RULE"),
        ({"source": "docker.io", "target": "x"}, 422, "INVALID_CACHE_RULE"),
        ({"source": "docker.io/library/*", "target": "x"}, 422, "INVALID_CACHE_RULE"),
        ({"source": "ghcr.io/*", "target": "Upper/*"}, 422, "INVALID_CACHE_RULE"),
        ({"source": "ghcr.io/*", "target": "x/*", "dockerhub_mirror": True}, 422, "INVALID_CACHE_RULE"),
        # Normalizing adds library/: 263 characters, more than the database keeps.
        ({"source": "docker.io/" + "a" * 245, "target": "x"}, 422, "INVALID_CACHE_RULE"),
        ({"source": "ghcr.io/*", "target": "x/*", "credential_set": "no-such-set"}, 422, "UNKNOWN_CREDENTIAL_SET"),
        ({"source": "ghcr.io/*", "target": "x/*", "tag_ttl_seconds": -1}, 422, "VALIDATION_FAILED"),
        ({"source": "ghcr.io/*", "target": "x/*", "tag_ttl_seconds": 2**31}, 422, "VALIDATION_FAILED"),
        ({"source": "ghcr.io/*", "target": "x/*", "platforms": "sometimes"}, 422, "VALIDATION_FAILED"),
        ({"source": "ghcr.io/*", "target": "x/*", "insecure": "true"}, 422, "VALIDATION_FAILED"),
        ({"source": "ghcr.io/*", "target": "x/*", "mirror": True}, 422, "VALIDATION_FAILED"),
        ({"source": "ghcr.io/*"}, 422, "VALIDATION_FAILED"),
        ({"name": "Upper", "source": "ghcr.io/*", "target": "x/*"}, 422, "VALIDATION_FAILED"),
        ("{not json", 400, "INVALID_JSON"),
        (None, 415, "UNSUPPORTED_MEDIA_TYPE"),
    ],
)
def test_bad_rule_input(srv: Server, body: Any, status: int, code: str) -> None:
    name = unique("bad")
    if isinstance(body, str):
        r = api(srv, "POST", "/cache-rules", data=body.encode(), headers={"Content-Type": "application/json"})
    elif body is None:
        r = api(srv, "POST", "/cache-rules")
    else:
        r = api(srv, "POST", "/cache-rules", json={"name": name, **body})
    problem(r, status, code)
    problem(api(srv, "GET", f"/cache-rules/{name}"), 404)  # nothing was created
    rule = make_rule(srv, "ghcr.io/*", f"{ns()}/*")
    if isinstance(body, dict) and "name" not in body and code != "VALIDATION_FAILED":
        problem(api(srv, "PATCH", f"/cache-rules/{rule['name']}", json=body), status, code)  # the same checks on update
    assert ok(api(srv, "GET", f"/cache-rules/{rule['name']}")) == rule
    ok(api(srv, "DELETE", f"/cache-rules/{rule['name']}"), 204)


def test_a_pin_reference_with_a_bad_tag_or_digest_is_invalid_reference(srv: Server) -> None:
    """``DELETE /cache/pins?reference=…`` takes its reference from the query: a NUL in it was a 500 on PostgreSQL."""
    for reference in ("hub/app:\x00", "hub/app:a\x00b", "hub/app:" + "x" * 200, "hub/app@sha256:nope", "hub/app:-bad"):
        problem(api(srv, "DELETE", "/cache/pins", params={"reference": reference}), 422, "INVALID_REFERENCE")
        problem(api(srv, "POST", "/cache/pins", json={"reference": reference}), 422)
    problem(api(srv, "DELETE", "/cache/pins", params={"reference": "hub/app:1.0"}), 404, "NOT_FOUND")


def test_rule_conflicts(srv: Server) -> None:
    local = ns()
    hub = make_rule(srv, "docker.io/*", f"{local}/*", dockerhub_mirror=True)
    problem(api(srv, "POST", "/cache-rules", json={"name": hub["name"], "source": "ghcr.io/*", "target": f"{ns()}/*"}), 409, "ALREADY_EXISTS")
    detail = problem(api(srv, "POST", "/cache-rules", json={"name": unique("r"), "source": "ghcr.io/*", "target": f"{local}/*"}), 409, "RULE_CONFLICT")
    assert hub["name"] in detail["detail"]
    detail = problem(api(srv, "POST", "/cache-rules", json={
        "name": unique("r"), "source": "docker.io/library/*", "target": f"{ns()}/*", "dockerhub_mirror": True,
    }), 409, "RULE_CONFLICT")
    assert "mirror" in detail["detail"]
    nested = make_rule(srv, "ghcr.io/bitnami/*", f"{local}/bitnami/*")  # the more specific target wins; no conflict
    problem(api(srv, "PATCH", f"/cache-rules/{nested['name']}", json={"target": f"{local}/*"}), 409, "RULE_CONFLICT")
    problem(api(srv, "PATCH", f"/cache-rules/{nested['name']}", json={"dockerhub_mirror": True}), 422, "INVALID_CACHE_RULE")
    ok(api(srv, "PATCH", f"/cache-rules/{hub['name']}", json={"dockerhub_mirror": True, "target": f"{local}/*"}))  # itself: fine
    for rule in (hub, nested):
        ok(api(srv, "DELETE", f"/cache-rules/{rule['name']}"), 204)
    assert make_rule(srv, "ghcr.io/*", f"{local}/*")["target"] == f"{local}/*"  # the target is free again


def test_private_upstreams_are_refused(srv: Server) -> None:
    for source in ("127.0.0.1:5001/*", "localhost:5001/*", "[::1]:5000/*", "10.0.0.8/team/*", "169.254.169.254/*"):
        detail = problem(api(srv, "POST", "/cache-rules", json={"name": unique("p"), "source": source, "target": f"{ns()}/*"}), 422, "UPSTREAM_NOT_ALLOWED")
        assert "refusing to connect" in detail["detail"], detail
    detail = problem(api(srv, "POST", "/cache-rules", json={"name": unique("p"), "source": "127.0.0.1:5001/*", "target": f"{ns()}/*"}), 422)
    assert "loopback" in detail["detail"] and "allow_private_upstreams" in detail["detail"]
    rule = make_rule(srv, "ghcr.io/*", f"{ns()}/*")
    problem(api(srv, "PATCH", f"/cache-rules/{rule['name']}", json={"source": "127.0.0.1:5001/*"}), 422, "UPSTREAM_NOT_ALLOWED")
    assert ok(api(srv, "GET", f"/cache-rules/{rule['name']}"))["source"] == "ghcr.io/*"
    # A host that does not resolve now is accepted: the guard checks every connection the cache makes.
    assert make_rule(srv, "registry.example.invalid/*", f"{ns()}/*")["source"] == "registry.example.invalid/*"


def test_private_upstreams_are_accepted_when_allowed(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = start(tmp_path_factory.mktemp("cache-admin-private"), "sqlite", CARGOHOLD_ALLOW_PRIVATE_UPSTREAMS="1")
    try:
        rule = make_rule(server, "127.0.0.1:5001/*", "local/*", insecure=True)
        assert rule["source"] == "127.0.0.1:5001/*"
        make_rule(server, "localhost:5001/team/app", "team-app")
        # The cloud metadata service hands out the machine's credentials: never an upstream.
        detail = problem(api(server, "POST", "/cache-rules", json={"name": "meta", "source": "169.254.169.254/*", "target": "m/*"}), 422, "UPSTREAM_NOT_ALLOWED")
        assert "never allowed" in detail["detail"]
        make_set(server, "localhost:5001")
    finally:
        server.stop()
    assert_log_clean(server)


# ---- credential sets --------------------------------------------------------------------------------


def test_credential_set_lifecycle_and_secrecy(srv: Server) -> None:
    name, password = make_set(srv, "Registry-1.Docker.io")
    shown = ok(api(srv, "GET", f"/credential-sets/{name}"))
    assert shown | {"created_at": None, "updated_at": None} == {
        "name": name, "login_server": "docker.io", "username": "robot-user", "created_at": None, "updated_at": None,
        "last_login": {"at": None, "ok": None, "error": None}, "ratelimit": {"limit": None, "remaining": None, "at": None},
    }
    assert shown in ok(api(srv, "GET", "/credential-sets"))

    # Encrypted at rest, with the key in the data directory; the sealed form is no more shown than the password.
    sealed = stored_secret(srv, name)
    assert password not in sealed
    box = SecretBox(load_key(srv.data_dir, None))
    assert box.open(sealed) == password
    secret(sealed)

    record_upstream_status(srv, name, "401 from auth.docker.io: incorrect username or password")
    shown = ok(api(srv, "GET", f"/credential-sets/{name}"))
    assert shown["last_login"]["ok"] is False and "incorrect username or password" in shown["last_login"]["error"]
    assert shown["last_login"]["at"] and (shown["ratelimit"]["limit"], shown["ratelimit"]["remaining"]) == (100, 7)

    new = secret()
    updated = ok(api(srv, "PATCH", f"/credential-sets/{name}", json={"password": new}))
    assert updated["last_login"] == {"at": None, "ok": None, "error": None}  # it described the old password
    assert updated["username"] == "robot-user" and updated["login_server"] == "docker.io"
    assert box.open(secret(stored_secret(srv, name))) == new
    updated = ok(api(srv, "PATCH", f"/credential-sets/{name}", json={"username": "someone-else", "login_server": "ghcr.io"}))
    assert (updated["username"], updated["login_server"]) == ("someone-else", "ghcr.io")
    assert box.open(stored_secret(srv, name)) == new  # the password stays
    assert ok(api(srv, "PATCH", f"/credential-sets/{name}", json={})) == updated

    problem(api(srv, "POST", "/credential-sets", json={
        "name": name, "login_server": "docker.io", "username": "u", "password": secret(),
    }), 409, "ALREADY_EXISTS")
    ok(api(srv, "DELETE", f"/credential-sets/{name}"), 204)
    problem(api(srv, "GET", f"/credential-sets/{name}"), 404, "NOT_FOUND")
    problem(api(srv, "DELETE", f"/credential-sets/{name}"), 404, "NOT_FOUND")
    problem(api(srv, "PATCH", f"/credential-sets/{name}", json={"password": secret()}), 404, "NOT_FOUND")

    events = ok(api(srv, "GET", "/audit", params={"action": "credential_set.update"}))["events"]
    mine = [e for e in events if e["target"] == name]
    assert mine and {e["detail"]["password_changed"] for e in mine} == {True, False}


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"login_server": "https://ghcr.io"}, "INVALID_CREDENTIAL_SET"),
        ({"login_server": "ghcr.io/org"}, "INVALID_CREDENTIAL_SET"),
        ({"login_server": "ghcr"}, "INVALID_CREDENTIAL_SET"),
        ({"username": "user:name"}, "VALIDATION_FAILED"),
        ({"username": ""}, "VALIDATION_FAILED"),
        ({"password": ""}, "VALIDATION_FAILED"),
        ({"password": "x" * 8193}, "VALIDATION_FAILED"),
        ({"password": 12345}, "VALIDATION_FAILED"),
        ({"secret": "x"}, "VALIDATION_FAILED"),
        ({"name": "Upper"}, "VALIDATION_FAILED"),
    ],
)
def test_bad_credential_set_input(srv: Server, changes: dict[str, Any], code: str) -> None:
    password = secret()
    body = {"name": unique("bad"), "login_server": "docker.io", "username": "u", "password": password, **changes}
    r = api(srv, "POST", "/credential-sets", json=body)
    problem(r, 422, code)
    if isinstance(changes.get("password"), str) and changes["password"]:
        assert changes["password"] not in r.text  # rejected input is not echoed
    problem(api(srv, "GET", f"/credential-sets/{body['name']}"), 404)
    if "name" not in changes and "secret" not in changes:
        name, _ = make_set(srv)
        problem(api(srv, "PATCH", f"/credential-sets/{name}", json=changes), 422, code)
        ok(api(srv, "DELETE", f"/credential-sets/{name}"), 204)


def test_credential_sets_in_use_and_for_their_own_registry_only(srv: Server) -> None:
    hub_creds, _ = make_set(srv, "docker.io")
    gh_creds, _ = make_set(srv, "ghcr.io")
    local = ns()
    detail = problem(api(srv, "POST", "/cache-rules", json={
        "name": unique("r"), "source": "docker.io/*", "target": f"{local}/*", "credential_set": gh_creds,
    }), 422, "CREDENTIAL_SET_MISMATCH")
    assert "ghcr.io" in detail["detail"] and "docker.io" in detail["detail"]
    rule = make_rule(srv, "docker.io/*", f"{local}/*", credential_set=hub_creds)
    problem(api(srv, "PATCH", f"/cache-rules/{rule['name']}", json={"credential_set": gh_creds}), 422, "CREDENTIAL_SET_MISMATCH")
    problem(api(srv, "PATCH", f"/cache-rules/{rule['name']}", json={"source": "ghcr.io/*"}), 422, "CREDENTIAL_SET_MISMATCH")
    moved = ok(api(srv, "PATCH", f"/cache-rules/{rule['name']}", json={"source": "ghcr.io/*", "credential_set": gh_creds}))
    assert (moved["source"], moved["credential_set"]) == ("ghcr.io/*", gh_creds)

    detail = problem(api(srv, "DELETE", f"/credential-sets/{gh_creds}"), 409, "IN_USE")
    assert rule["name"] in detail["detail"]
    problem(api(srv, "PATCH", f"/credential-sets/{gh_creds}", json={"login_server": "quay.io"}), 409, "IN_USE")
    ok(api(srv, "PATCH", f"/credential-sets/{gh_creds}", json={"login_server": "GHCR.IO", "username": "other"}))  # same registry
    ok(api(srv, "DELETE", f"/credential-sets/{hub_creds}"), 204)  # no longer used
    ok(api(srv, "DELETE", f"/cache-rules/{rule['name']}"), 204)
    ok(api(srv, "DELETE", f"/credential-sets/{gh_creds}"), 204)


# ---- who may -----------------------------------------------------------------------------------------


def test_only_admins_manage_the_cache(srv: Server) -> None:
    everything = unique("map")
    ok(api(srv, "POST", "/scope-maps", json={"name": everything, "rules": [
        {"repository": "*", "actions": ["content/read", "content/write", "content/delete", "metadata/read"]},
    ]}), 201)
    user, password = unique("user"), secret()
    ok(api(srv, "POST", "/users", json={"name": user, "password": password, "scope_maps": [everything]}), 201)
    robot = ok(api(srv, "POST", "/tokens", json={"name": unique("robot"), "scope_maps": [everything]}), 201)
    token = secret(robot["token"])
    creds, _ = make_set(srv)
    rule = make_rule(srv, "ghcr.io/*", f"{ns()}/*")
    operations: list[tuple[str, str, Any]] = [
        ("GET", "/cache-rules", None),
        ("POST", "/cache-rules", {"name": "would-be", "source": "ghcr.io/*", "target": f"{ns()}/*"}),
        ("GET", f"/cache-rules/{rule['name']}", None),
        ("PATCH", f"/cache-rules/{rule['name']}", {"tag_ttl_seconds": 1}),
        ("DELETE", f"/cache-rules/{rule['name']}", None),
        ("GET", "/credential-sets", None),
        ("POST", "/credential-sets", {"name": "would-be", "login_server": "docker.io", "username": "u", "password": secret()}),
        ("GET", f"/credential-sets/{creds}", None),
        ("PATCH", f"/credential-sets/{creds}", {"password": secret()}),
        ("DELETE", f"/credential-sets/{creds}", None),
    ]
    for method, path, body in operations:
        kwargs = {"json": body} if body is not None else {}
        problem(api(srv, method, path, auth=None, **kwargs), 401, "UNAUTHORIZED")
        problem(api(srv, method, path, auth=(user, password), **kwargs), 403, "DENIED")
        problem(api(srv, method, path, auth=(robot["name"], token), **kwargs), 403, "DENIED")
        problem(api(srv, method, path, auth={"bearer": token}, **kwargs), 403, "DENIED")
        problem(api(srv, method, path, auth=("admin", "wrong-password-123"), **kwargs), 401)
    # Nothing happened, and the refused changes are in the audit log.
    assert ok(api(srv, "GET", f"/cache-rules/{rule['name']}")) == rule
    assert ok(api(srv, "GET", f"/credential-sets/{creds}"))["name"] == creds
    problem(api(srv, "GET", "/cache-rules/would-be"), 404)
    problem(api(srv, "GET", "/credential-sets/would-be"), 404)
    events = ok(api(srv, "GET", "/audit", params={"actor": user}))["events"]
    assert {e["action"] for e in events} >= {
        "cache_rule.create", "cache_rule.update", "cache_rule.delete",
        "credential_set.create", "credential_set.update", "credential_set.delete",
    }
    assert all(e["outcome"] == "denied" for e in events)
    ok(api(srv, "DELETE", f"/cache-rules/{rule['name']}"), 204)
    ok(api(srv, "DELETE", f"/credential-sets/{creds}"), 204)
