"""What an access token names and limits: its subject as created (id + generation), and its access claim on /api/v1.

A token outlives nothing it was issued to: a deleted user's token is refused
on /v2 and /api/v1, and a user re-created under the same name (SQLite may even
hand it the same row id) does not inherit it. An admin's token issued for
``repository:x:pull`` is a pull credential, not a management one.
"""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest
import requests

from authhelpers import Credentials, bearer, describe, fetch_token, provision
from servers import Server, drop_postgres_schema

TIMEOUT = 30
ADMIN_API = "/api/v1/users"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Credentials]]:
    server = Server(data_dir=tmp_path_factory.mktemp(f"token-subjects-{request.param}") / "data", backend=request.param, auth=True)
    server.start()
    try:
        creds = provision(server, scope_maps={"team-read": [("team/*", ["content/read"])]})
        creds.passwords["admin"] = server.admin_password
        yield server, creds
    finally:
        server.stop()
        if server.schema:
            drop_postgres_schema(server.schema)


def admin(server: Server, creds: Credentials) -> tuple[str, str]:
    return creds.basic("admin")


def api(server: Server, method: str, path: str, auth: object, **kwargs: object) -> requests.Response:
    headers = bearer(auth) if isinstance(auth, str) else None
    basic = auth if isinstance(auth, tuple) else None
    return requests.request(method, f"{server.url}{path}", headers=headers, auth=basic, timeout=TIMEOUT, **kwargs)  # type: ignore[arg-type]


def create_user(server: Server, creds: Credentials, name: str, password: str) -> None:
    body = {"name": name, "password": password, "admin": False, "scope_maps": ["team-read"]}
    r = api(server, "POST", "/api/v1/users", admin(server, creds), json=body)
    assert r.status_code == 201, describe(r)


def v2_tags(server: Server, token: str) -> requests.Response:
    return requests.get(f"{server.url}/v2/team/app/tags/list", headers=bearer(token), timeout=TIMEOUT)


def assert_refused(server: Server, token: str) -> None:
    for _ in range(4):  # both workers
        r = v2_tags(server, token)
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers.get("WWW-Authenticate", ""), describe(r)
        r = api(server, "GET", "/api/v1/me", token)
        assert r.status_code == 401, describe(r)


def test_an_admins_repository_token_is_not_a_management_credential(srv: tuple[Server, Credentials]) -> None:
    server, creds = srv
    pull = fetch_token(server, ["repository:team/app:pull"], admin(server, creds))
    assert jwt.decode(pull, options={"verify_signature": False})["access"] == [
        {"type": "repository", "name": "team/app", "actions": ["pull"]}
    ]
    for method, path in (("GET", ADMIN_API), ("GET", "/api/v1/scope-maps"), ("POST", "/api/v1/keys/rotate"), ("GET", "/api/v1/audit")):
        r = api(server, method, path, pull)
        assert r.status_code == 403, describe(r)
    r = api(server, "GET", "/api/v1/me", pull)
    assert r.status_code == 200 and r.json() == {"name": "admin", "kind": "user", "admin": False}, describe(r)
    # The token still does what it names on /v2 (the repository does not exist: 404, not 401/403).
    assert v2_tags(server, pull).status_code == 404
    # Asking for the management scope makes an admin's token a management credential; nobody else gets it.
    manage = fetch_token(server, ["registry:management:*"], admin(server, creds))
    assert api(server, "GET", ADMIN_API, manage).status_code == 200
    create_user(server, creds, "plain-user", "plain-user-password-1")
    plain = fetch_token(server, ["registry:management:*"], ("plain-user", "plain-user-password-1"))
    assert jwt.decode(plain, options={"verify_signature": False})["access"] == []
    assert api(server, "GET", ADMIN_API, plain).status_code == 403


def test_a_deleted_or_recreated_users_token_is_refused(srv: tuple[Server, Credentials]) -> None:
    server, creds = srv
    create_user(server, creds, "ghost", "first-password-123")
    old = fetch_token(server, ["repository:team/app:pull"], ("ghost", "first-password-123"))
    assert v2_tags(server, old).status_code == 404
    assert api(server, "GET", "/api/v1/me", old).status_code == 200

    r = api(server, "DELETE", "/api/v1/users/ghost", admin(server, creds))
    assert r.status_code == 204, describe(r)
    assert_refused(server, old)

    # Re-created under the same name (the same row id, on SQLite): the old token is still someone else's.
    create_user(server, creds, "ghost", "second-password-456")
    assert_refused(server, old)
    new = fetch_token(server, ["repository:team/app:pull"], ("ghost", "second-password-456"))
    assert v2_tags(server, new).status_code == 404

    # A password change retires the tokens issued before it.
    r = api(server, "PATCH", "/api/v1/users/ghost", admin(server, creds), json={"password": "third-password-789"})
    assert r.status_code == 200, describe(r)
    assert_refused(server, new)
