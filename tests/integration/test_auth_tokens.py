"""The token service and what /v2 makes of tokens: grants, OAuth2 grants, forgeries, rotation, brute force, secrets.

Tokens are decoded without verification (PyJWT) to check their claims, and
forged with the server's own key (``<data-dir>/keys/*.pem``) to check that
/v2 refuses expired, wrong-audience and otherwise bad ones — after first
checking that a correctly forged token *is* accepted, so every refusal is
about the one thing that was changed. Brute-force tests connect from several
loopback source addresses (127.0.0.x) to tell per-client from per-user throttling.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authhelpers import (
    Credentials,
    assert_challenge,
    bearer,
    client_from,
    describe,
    fetch_token,
    oci_error_code,
    parse_challenge,
    provision,
    subject_id,
    with_identities,
)
from cargohold.auth import secrets as auth_secrets
from cargohold.auth.keys import KeyRing, SigningKey
from cargohold.store.identities import IdentityStore
from ocihelpers import digest_of, random_blob
from servers import Server, drop_postgres_schema

READ, WRITE, DELETE, METADATA = "content/read", "content/write", "content/delete", "metadata/read"
TIMEOUT = 30
TTL = 30

SCOPE_MAPS = {
    "team-read": [("team/*", [READ])],
    "team-list": [("team/*", [METADATA])],
    "team-write": [("team/*", [READ, WRITE])],
    "ci-push": [("ci/*", [READ, WRITE])],
    "anonymous": [("public/*", [READ])],
}
USERS = {"reader": ["team-read"], "lister": ["team-list"], "writer": ["team-write"]}
ROBOTS = {"ci-bot": ["ci-push"]}


def _start(tmp: Path, backend: str, env: dict[str, str]) -> Server:
    return Server(data_dir=tmp / "data", backend=backend, auth=True, extra_env=env).start()


def _stop(server: Server) -> None:
    server.stop()
    if server.schema:
        drop_postgres_schema(server.schema)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class TokensEnv:
    server: Server
    creds: Credentials
    early_token: str  # issued at start-up, used once; the expiry test uses it again after its exp
    early_exp: float


@pytest.fixture(scope="module")
def tokens_env(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokensEnv]:
    """Short-lived tokens, everything logged (to catch leaks), a throttle nothing here reaches by accident."""
    env = {
        "CARGOHOLD_AUTH_TOKEN_TTL_SECONDS": str(TTL),
        "CARGOHOLD_LOG_LEVEL": "DEBUG",
        "CARGOHOLD_ACCESS_LOG": "true",
        "CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": "1000",
    }
    server = _start(tmp_path_factory.mktemp(f"auth-tokens-{backend}"), backend, env)
    try:
        creds = provision(server, users=USERS, robots=ROBOTS, scope_maps=SCOPE_MAPS)
        creds.passwords["admin"] = server.admin_password
        early = fetch_token(server, ["repository:team/early:pull"], creds.basic("reader"))
        for _ in range(4):  # accepted — and now in both workers' verified-token caches (the repository does not exist)
            r = requests.get(f"{server.url}/v2/team/early/tags/list", headers=bearer(early), timeout=TIMEOUT)
            assert r.status_code == 404, describe(r)
        yield TokensEnv(server, creds, early, float(claims_of(early)["exp"]))
    finally:
        _stop(server)


@pytest.fixture(scope="module")
def server(tokens_env: TokensEnv) -> Server:
    return tokens_env.server


@pytest.fixture(scope="module")
def creds(tokens_env: TokensEnv) -> Credentials:
    return tokens_env.creds


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def header_of(token: str) -> dict[str, Any]:
    return jwt.get_unverified_header(token)


def token_response(server: Server, scopes: list[str], auth: tuple[str, str] | None = None, **params: str) -> requests.Response:
    query = [("service", "cargohold"), *(("scope", s) for s in scopes), *params.items()]
    return requests.get(f"{server.url}/token", params=query, auth=auth, timeout=TIMEOUT)


def post_token(server: Server, **form: str | list[str]) -> requests.Response:
    return requests.post(f"{server.url}/token", data=form, timeout=TIMEOUT)


def oauth_error(r: requests.Response, status: int, error: str) -> dict[str, Any]:
    assert r.status_code == status, describe(r)
    assert r.headers["Content-Type"].startswith("application/json"), describe(r)
    body = r.json()
    assert body.get("error") == error and isinstance(body.get("error_description"), str), describe(r)
    assert "token" not in body and "access_token" not in body, describe(r)
    return body


# ---- GET /token: what is granted ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "scopes", "expected"),
    [
        (
            "reader",
            ["repository:team/app:pull,push,delete", "repository:other/app:pull", "registry:catalog:*"],
            [
                {"type": "repository", "name": "team/app", "actions": ["pull"]},
                {"type": "registry", "name": "catalog", "actions": ["*"]},
            ],
        ),
        ("writer", ["repository:team/app:*"], [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]),
        # Several scopes in one parameter, space-separated (docker sends them so).
        (
            "writer",
            ["repository:team/a:push repository:ci/a:pull,push"],
            [{"type": "repository", "name": "team/a", "actions": ["push"]}],
        ),
        ("lister", ["repository:team/app:pull"], [{"type": "repository", "name": "team/app", "actions": ["metadata"]}]),
        ("lister", ["repository:team/app:push"], []),
        (
            "ci-bot",
            ["repository:ci/app:pull,push,delete", "repository:team/app:pull", "repository:public/app:pull"],
            [
                {"type": "repository", "name": "ci/app", "actions": ["pull", "push"]},
                {"type": "repository", "name": "public/app", "actions": ["pull"]},
            ],
        ),
        (
            "admin",
            ["repository:other/app:pull,push,delete", "registry:catalog:*"],
            [
                {"type": "repository", "name": "other/app", "actions": ["delete", "pull", "push"]},
                {"type": "registry", "name": "catalog", "actions": ["*"]},
            ],
        ),
        (
            "anonymous",
            ["repository:public/app:pull,push,delete", "repository:team/app:pull", "registry:catalog:*"],
            [{"type": "repository", "name": "public/app", "actions": ["pull"]}],
        ),
        # Malformed and hostile scopes grant nothing (and break nothing).
        (
            "admin",
            ["repository:team/../../etc:pull", "repository:TEAM/app:pull", "repository:team/app", "garbage", "repository::pull"],
            [],
        ),
    ],
)
def test_get_token_grants_only_the_permitted_subset(
    server: Server, creds: Credentials, principal: str, scopes: list[str], expected: list[dict[str, Any]]
) -> None:
    auth = None if principal == "anonymous" else creds.basic(principal)
    before = int(time.time())
    r = token_response(server, scopes, auth)
    assert r.status_code == 200, describe(r)
    assert r.headers["Cache-Control"] == "no-store"
    body = r.json()
    token = body["token"]
    assert body["access_token"] == token and body["expires_in"] == TTL
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["issued_at"]), body
    claims = claims_of(token)
    assert claims["access"] == expected
    assert body["scope"] == " ".join(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in expected)
    assert claims["iss"] == "cargohold" and claims["aud"] == "cargohold"
    assert claims["sub"] == (auth[0] if auth else "anonymous")
    assert before - 1 <= claims["iat"] <= time.time() + 1 and claims["exp"] - claims["iat"] == TTL
    assert claims["nbf"] <= claims["iat"] and claims["jti"]
    header = header_of(token)
    assert header["alg"] == "ES256" and header["kid"] in {k.kid for k in keyring(server).load()}
    assert "refresh_token" not in body


def test_get_token_offline_token_gives_a_refresh_token_to_identities_only(server: Server, creds: Credentials) -> None:
    r = token_response(server, ["repository:team/app:pull"], creds.basic("reader"), offline_token="true")
    assert r.status_code == 200, describe(r)
    assert r.json()["refresh_token"].startswith(auth_secrets.REFRESH_PREFIX)
    r = token_response(server, ["repository:public/app:pull"], None, offline_token="true")
    assert r.status_code == 200 and "refresh_token" not in r.json(), describe(r)


def test_get_token_with_unknown_service_is_400(server: Server, creds: Credentials) -> None:
    r = requests.get(f"{server.url}/token", params={"service": "registry.docker.io", "scope": "repository:team/a:pull"},
                     auth=creds.basic("reader"), timeout=TIMEOUT)
    oauth_error(r, 400, "invalid_request")
    r = post_token(server, grant_type="password", service="other", username="reader", password=creds.passwords["reader"])
    oauth_error(r, 400, "invalid_request")


def test_get_token_with_wrong_password_unknown_user_or_bad_robot_token_is_401(server: Server, creds: Credentials) -> None:
    for auth in (
        ("reader", creds.passwords["writer"]),
        ("reader", ""),
        ("nobody", "whatever-password"),
        ("ci-bot", auth_secrets.new_token(auth_secrets.ROBOT_PREFIX)),
        ("reader", creds.tokens["ci-bot"]),  # a robot's token under another name
    ):
        r = token_response(server, ["repository:team/app:pull"], auth)
        oauth_error(r, 401, "invalid_grant")
        assert r.headers["WWW-Authenticate"] == 'Basic realm="cargohold"', describe(r)
    r = requests.get(f"{server.url}/token", params={"service": "cargohold"}, headers={"Authorization": "Basic %%%"}, timeout=TIMEOUT)
    oauth_error(r, 401, "invalid_grant")


# ---- POST /token: the OAuth2 grants ------------------------------------------------------------------------


def test_post_password_grant_and_refresh_token_grant(server: Server, creds: Credentials) -> None:
    r = post_token(server, grant_type="password", service="cargohold", client_id="tests", username="writer",
                   password=creds.passwords["writer"], scope="repository:team/app:pull,push")
    assert r.status_code == 200, describe(r)
    body = r.json()
    assert "refresh_token" not in body
    assert claims_of(body["access_token"])["access"] == [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]

    r = post_token(server, grant_type="password", service="cargohold", client_id="tests", access_type="offline",
                   username="writer", password=creds.passwords["writer"], scope="repository:team/app:pull")
    assert r.status_code == 200, describe(r)
    refresh = r.json()["refresh_token"]
    assert refresh.startswith(auth_secrets.REFRESH_PREFIX)

    r = post_token(server, grant_type="refresh_token", service="cargohold", client_id="tests", refresh_token=refresh,
                   scope=["repository:team/app:push", "repository:other/app:pull"])
    assert r.status_code == 200, describe(r)
    body = r.json()
    assert body["refresh_token"] != refresh and body["refresh_token"].startswith(auth_secrets.REFRESH_PREFIX)  # rotated
    claims = claims_of(body["access_token"])
    assert claims["sub"] == "writer"
    assert claims["access"] == [{"type": "repository", "name": "team/app", "actions": ["push"]}]
    # The refreshed token works on /v2.
    r = requests.post(f"{server.url}/v2/team/app/blobs/uploads/", headers=bearer(body["access_token"]), timeout=TIMEOUT)
    assert r.status_code == 202, describe(r)

    # A robot may use the password grant with its token.
    r = post_token(server, grant_type="password", service="cargohold", username="ci-bot", password=creds.tokens["ci-bot"],
                   scope="repository:ci/app:push")
    assert r.status_code == 200 and claims_of(r.json()["access_token"])["access"][0]["actions"] == ["push"], describe(r)


def test_post_token_failures(server: Server, creds: Credentials) -> None:
    oauth_error(post_token(server, grant_type="password", username="writer", password="not-the-password"), 401, "invalid_grant")
    oauth_error(post_token(server, grant_type="password", username="writer"), 400, "invalid_request")
    oauth_error(post_token(server, grant_type="refresh_token"), 400, "invalid_request")
    oauth_error(post_token(server, grant_type="refresh_token", refresh_token="chf_made-up"), 401, "invalid_grant")
    oauth_error(post_token(server, grant_type="client_credentials"), 400, "unsupported_grant_type")
    r = post_token(server, grant_type="password", username="writer", password="not-the-password")
    assert "WWW-Authenticate" not in r.headers, describe(r)


def test_revoked_refresh_token_is_refused(server: Server, creds: Credentials) -> None:
    r = post_token(server, grant_type="password", access_type="offline", username="reader", password=creds.passwords["reader"])
    assert r.status_code == 200, describe(r)
    refresh = r.json()["refresh_token"]
    assert post_token(server, grant_type="refresh_token", refresh_token=refresh).status_code == 200

    async def revoke(store: IdentityStore) -> bool:
        record = await store.refresh_token(auth_secrets.token_hash(refresh))
        assert record is not None and record.principal == "reader" and record.revoked_at is None
        return await store.revoke_refresh_token(record.id)

    assert with_identities(server, revoke)
    for _ in range(4):  # every worker
        oauth_error(post_token(server, grant_type="refresh_token", refresh_token=refresh), 401, "invalid_grant")


# ---- tokens /v2 must refuse --------------------------------------------------------------------------------


def keyring(server: Server) -> KeyRing:
    return KeyRing(server.data_dir / "keys", 86400)


def signing_key(server: Server) -> SigningKey:
    """The key the server signs with now: the newest ``<data-dir>/keys/*.pem``."""
    keys = keyring(server).load()
    assert list((server.data_dir / "keys").glob("*.pem")), "the server keeps no key in <data-dir>/keys"
    return keys[0]


_SIDS: dict[str, str] = {}


def forge(key: Any, kid: str, algorithm: str = "ES256", **overrides: Any) -> str:
    """A token like the server's: ``writer`` may push to ``team/forged``; ``overrides`` change claims (None drops one)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "cargohold",
        "sub": "writer",
        "sid": _SIDS["writer"],
        "aud": "cargohold",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
        "access": [{"type": "repository", "name": "team/forged", "actions": ["pull", "push"]}],
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


def push_with(server: Server, token: str) -> requests.Response:
    return requests.post(f"{server.url}/v2/team/forged/blobs/uploads/", headers=bearer(token), timeout=TIMEOUT)


def assert_invalid_token(server: Server, token: str) -> None:
    for _ in range(4):  # both workers, each with its own verified-token cache
        r = push_with(server, token)
        assert_challenge(r, server, "repository:team/forged:pull,push", "invalid_token")


def flip(segment: str, index: int) -> str:
    c = segment[index]
    return segment[:index] + ("A" if c != "A" else "B") + segment[index + 1 :]


def test_forged_tokens_are_refused(server: Server) -> None:
    _SIDS["writer"] = subject_id(server, "writer")
    key = signing_key(server)
    good = forge(key.private, key.kid)
    # Control: a token made exactly like the server's is accepted, so each refusal below is about its one change.
    r = push_with(server, good)
    assert r.status_code == 202, describe(r)

    now = int(time.time())
    assert_invalid_token(server, forge(key.private, key.kid, iat=now - 600, nbf=now - 600, exp=now - 300))
    assert_invalid_token(server, forge(key.private, key.kid, exp=None))
    assert_invalid_token(server, forge(key.private, key.kid, nbf=now + 300))
    assert_invalid_token(server, forge(key.private, key.kid, aud="other"))
    assert_invalid_token(server, forge(key.private, key.kid, iss="someone-else"))
    assert_invalid_token(server, forge(key.private, key.kid, access="everything"))
    assert_invalid_token(server, forge(key.private, key.kid, sid=None))  # names nobody as created
    assert_invalid_token(server, forge(key.private, key.kid, sid="u1.0"))  # a namesake's identity

    foreign = ec.generate_private_key(ec.SECP256R1())
    assert_invalid_token(server, forge(foreign, key.kid))  # a foreign key claiming the server's kid
    assert_invalid_token(server, forge(foreign, "FOREIGNKID"))
    # Algorithm confusion: HMAC keyed with the server's public key, and no signature at all.
    public_pem = key.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": key.kid, "typ": "JWT"}).encode()).rstrip(b"=")
    payload = good.split(".")[1].encode()
    mac = base64.urlsafe_b64encode(hmac.new(public_pem, header + b"." + payload, hashlib.sha256).digest()).rstrip(b"=")
    assert_invalid_token(server, (header + b"." + payload + b"." + mac).decode())
    none_header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": key.kid}).encode()).rstrip(b"=").decode()
    assert_invalid_token(server, f"{none_header}.{payload.decode()}.")

    # Tampering: one character of the payload or of the signature.
    head, body, signature = good.split(".")
    for i in (5, len(body) // 2, len(body) - 3):
        assert_invalid_token(server, f"{head}.{flip(body, i)}.{signature}")
    assert_invalid_token(server, f"{head}.{body}.{flip(signature, 10)}")
    # Widening the access claim and keeping the signature.
    widened = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    widened["access"][0]["name"] = "other/app"
    forged_body = base64.urlsafe_b64encode(json.dumps(widened).encode()).rstrip(b"=").decode()
    r = requests.post(f"{server.url}/v2/other/app/blobs/uploads/", headers=bearer(f"{head}.{forged_body}.{signature}"), timeout=TIMEOUT)
    assert_challenge(r, server, "repository:other/app:pull,push", "invalid_token")
    # And the good token still works, after all that.
    assert push_with(server, good).status_code == 202


def test_key_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(server: Server, creds: Credentials) -> None:
    old = fetch_token(server, ["repository:team/rotate:pull,push"], creds.basic("writer"))
    old_kid = header_of(old)["kid"]
    new_key = keyring(server).rotate()
    assert new_key.kid != old_kid
    for _ in range(3):  # a new token from whichever worker answers is signed with the new key
        new = fetch_token(server, ["repository:team/rotate:pull,push"], creds.basic("writer"))
        assert header_of(new)["kid"] == new_key.kid
    for token in (old, new):
        for _ in range(4):
            r = requests.post(f"{server.url}/v2/team/rotate/blobs/uploads/", headers=bearer(token), timeout=TIMEOUT)
            assert r.status_code == 202, describe(r)
    assert {k.kid for k in keyring(server).load()} >= {old_kid, new_key.kid}


# ---- brute force ------------------------------------------------------------------------------------------


LIMIT = 5


@pytest.fixture(scope="module")
def throttled(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Credentials]]:
    server = _start(tmp_path_factory.mktemp(f"auth-throttle-{backend}"), backend, {"CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": str(LIMIT)})
    try:
        users = {name: ["team-read"] for name in ("alice", "bob", "victim", "bystander", "carol")}
        yield server, provision(server, users=users, scope_maps={"team-read": [("team/*", [READ])]})
    finally:
        _stop(server)


def get_token_from(session: requests.Session, server: Server, auth: tuple[str, str]) -> requests.Response:
    return session.get(f"{server.url}/token", params={"service": "cargohold"}, auth=auth, timeout=TIMEOUT)


def assert_throttled_token(r: requests.Response, window: int = 300) -> None:
    assert r.status_code == 429, describe(r)
    retry = r.headers.get("Retry-After", "")
    assert retry.isdigit() and 0 < int(retry) <= window, describe(r)
    assert "token" not in r.json(), describe(r)


def assert_throttled_v2(r: requests.Response, window: int = 300) -> None:
    assert r.status_code == 429, describe(r)
    assert oci_error_code(r) == "TOOMANYREQUESTS", describe(r)
    retry = r.headers.get("Retry-After", "")
    assert retry.isdigit() and 0 < int(retry) <= window, describe(r)


def test_brute_force_from_one_client_is_throttled_even_for_the_right_password(throttled: tuple[Server, Credentials]) -> None:
    server, creds = throttled
    attacker = client_from("127.0.0.2")
    for i in range(LIMIT):  # five different usernames: only the per-client count reaches the limit
        r = get_token_from(attacker, server, (f"ghost-{i}", "wrong-password"))
        oauth_error(r, 401, "invalid_grant")
    assert_throttled_token(get_token_from(attacker, server, ("ghost-9", "wrong-password")))
    assert_throttled_token(get_token_from(attacker, server, creds.basic("alice")))
    assert_throttled_v2(attacker.get(f"{server.url}/v2/", auth=creds.basic("alice"), timeout=TIMEOUT))
    r = attacker.post(f"{server.url}/token", data={"grant_type": "password", "username": "alice", "password": creds.passwords["alice"]}, timeout=TIMEOUT)
    assert_throttled_token(r)
    # Another client with the same credentials is not affected.
    other = client_from("127.0.0.3")
    assert get_token_from(other, server, creds.basic("alice")).status_code == 200
    assert other.get(f"{server.url}/v2/", auth=creds.basic("alice"), timeout=TIMEOUT).status_code == 200


def test_brute_force_against_one_user_from_many_clients_is_throttled(throttled: tuple[Server, Credentials]) -> None:
    server, creds = throttled
    for i in range(LIMIT):  # one failure from each of five clients: only the per-user count reaches the limit
        r = get_token_from(client_from(f"127.0.1.{i + 1}"), server, ("victim", f"guess-{i}"))
        oauth_error(r, 401, "invalid_grant")
    fresh = client_from("127.0.1.9")
    assert_throttled_token(get_token_from(fresh, server, creds.basic("victim")))
    assert_throttled_token(get_token_from(fresh, server, ("victim", "guess-9")))
    assert_throttled_v2(fresh.get(f"{server.url}/v2/", auth=creds.basic("victim"), timeout=TIMEOUT))
    # Other users from that same client are not affected.
    assert get_token_from(fresh, server, creds.basic("bystander")).status_code == 200


def test_login_failures_are_audited(throttled: tuple[Server, Credentials]) -> None:
    server, creds = throttled
    client = client_from("127.0.2.1")
    for guess in ("first-guess", "second-guess"):
        oauth_error(get_token_from(client, server, ("carol", guess)), 401, "invalid_grant")
    assert client.get(f"{server.url}/v2/", auth=("carol", "third-guess"), timeout=TIMEOUT).status_code == 401

    events = with_identities(server, lambda store: store.audit_events(1000, action="login"))
    carol = [e for e in events if e.target == "carol"]
    assert len(carol) == 3, carol
    for event in carol:
        assert (event.actor, event.client, event.action, event.outcome) == ("carol", "127.0.2.1", "login", "denied")
        assert "guess" not in json.dumps(event.detail or {})
    assert creds.passwords["carol"] not in json.dumps([e.detail for e in events])


# ---- hostile names ----------------------------------------------------------------------------------------


def raw_request(server: Server, method: str, target: bytes, headers: dict[str, str] | None = None, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request with the exact request target given (no client-side normalisation); status, headers, body."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", f"Host: {server.host}".encode(), b"Connection: close",
             f"Content-Length: {len(body)}".encode()]
    lines += [f"{k}: {v}".encode() for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data, f"{method} {target[:200]!r}: the server closed the connection without answering"
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, rest


MARK = "evil0x"
HOSTILE_NAMES = [
    f"../../../../tmp/{MARK}",
    f"%2e%2e/%2e%2e/{MARK}",
    f"team/%2e%2e/%2e%2e/{MARK}",
    f"team/../../{MARK}",
    f"team/./{MARK}",
    f"%2Ftmp%2F{MARK}",
    f"team%2F..%2F..%2F{MARK}",
    f"team/{MARK}%00",
    f"team/a%00b/{MARK}",
    f"team/{MARK}%0d%0aX-Injected:%20yes",
    f'team/{MARK}%22,error=%22x',
    f"team/{MARK}%5C..%5C..",
    f"t%C3%ABam/{MARK}",
    f"team//{MARK}",
    "team/" + "a" * 300,
    "team/" + "/".join(["a"] * 1500),
]


def _operations(name: str) -> list[tuple[str, str]]:
    digest = digest_of(b"x")
    return [
        ("GET", f"/v2/{name}/tags/list"),
        ("GET", f"/v2/{name}/manifests/latest"),
        ("PUT", f"/v2/{name}/manifests/latest"),
        ("DELETE", f"/v2/{name}/manifests/latest"),
        ("GET", f"/v2/{name}/blobs/{digest}"),
        ("POST", f"/v2/{name}/blobs/uploads/"),
        ("POST", f"/v2/{name}/blobs/uploads/?digest={digest}"),
        ("POST", f"/v2/team/ok/blobs/uploads/?mount={digest}&from={name}"),
        ("PATCH", f"/v2/{name}/blobs/uploads/0123456789abcdef"),
        ("GET", f"/v2/team/ok/blobs/uploads/..%2F..%2F{MARK}"),
        ("PUT", f"/v2/team/ok/blobs/uploads/..%2F..%2F{MARK}?digest={digest}"),
        ("GET", f"/v2/team/ok/blobs/sha256:..%2F..%2F{MARK}"),
        ("GET", f"/v2/{name}/referrers/{digest}"),
    ]


def _tree(root: Path, skip: Path | None = None) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None and Path(dirpath) == skip:
            dirnames[:] = []
            continue
        out.update(os.path.join(dirpath, f) for f in dirnames + filenames)
    return out


def test_hostile_names_never_500_and_never_escape_the_data_dir(server: Server, creds: Credentials) -> None:
    outside = server.data_dir.parent  # this module's tmp dir: the data dir and the server log live here
    before = _tree(outside, skip=server.data_dir)
    admin = "Basic " + base64.b64encode(f"admin:{creds.passwords['admin']}".encode()).decode()
    reader = "Basic " + base64.b64encode(f"reader:{creds.passwords['reader']}".encode()).decode()
    token = fetch_token(server, [f"repository:team/{MARK}:pull,push,delete"], creds.basic("admin"))
    # Admin passes authorization, so validation answers; the reader is refused writes (403) before it; a token
    # for another repository, or no credentials, gets the challenge — without echoing the bad name in it.
    # (A name with a newline matches no route at all: 404 for any identity.)
    expected = {"admin": {400, 404}, "reader": {400, 403, 404}, "admin-token": {401, 404}, "anonymous": {401}}
    statuses: dict[str, set[int]] = {who: set() for who in expected}
    for name in HOSTILE_NAMES:
        for method, target in _operations(name):
            for who, authorization in (("admin", admin), ("reader", reader), ("admin-token", f"Bearer {token}"), ("anonymous", None)):
                headers = {"Content-Type": "application/octet-stream"}
                if authorization:
                    headers["Authorization"] = authorization
                status, got, body = raw_request(server, method, target.encode(), headers, b"x")
                where = f"{who}: {method} {target[:150]} -> {status} {body[:200]!r}"
                assert status in expected[who], where
                assert "x-injected" not in got, where
                assert got.get("content-type", "").startswith("application/json"), where
                code = json.loads(body)["errors"][0]["code"]
                if status == 400:
                    assert code in ("NAME_INVALID", "DIGEST_INVALID"), where
                if status == 401:
                    scheme, params = parse_challenge(got.get("www-authenticate"))
                    assert scheme == "Bearer" and params["realm"] == f"{server.url}/token", where
                    assert MARK not in params.get("scope", ""), where
                statuses[who].add(status)
    assert 400 in statuses["admin"] and 400 in statuses["reader"], statuses
    after = _tree(outside, skip=server.data_dir)
    assert after == before, f"files appeared outside the data dir: {sorted(after - before)}"
    # Every hostile name ends in the marker: no path anywhere under the test session's temp dir may hold it.
    leaked = [p for p in _tree(outside.parent) if MARK in p]
    assert not leaked, leaked
    assert not [p for p in os.listdir("/tmp") if MARK in p]
    assert not Path(f"/{MARK}").exists()


def test_an_issued_token_stops_working_when_it_expires(server: Server, tokens_env: TokensEnv) -> None:
    token, exp = tokens_env.early_token, tokens_env.early_exp
    time.sleep(max(0.0, exp + 1.5 - time.time()))
    for _ in range(4):
        r = requests.get(f"{server.url}/v2/team/early/tags/list", headers=bearer(token), timeout=TIMEOUT)
        assert_challenge(r, server, "repository:team/early:pull", "invalid_token")


# ---- secrets ------------------------------------------------------------------------------------------------


def test_secrets_never_appear_in_responses_or_the_log(server: Server, creds: Credentials) -> None:
    """Last in the module: its log then holds everything the module did, at DEBUG with the access log on."""
    url = server.url
    wrong = ["wrong-" + creds.passwords["reader"], creds.passwords["writer"][:-1] + "!", "hunter2-" + uuid.uuid4().hex]
    robot_token = creds.tokens["ci-bot"]
    wrong_robot = robot_token[:-4] + "AAAA"
    responses: list[requests.Response] = []
    http = requests.Session()

    def keep(r: requests.Response) -> requests.Response:
        responses.append(r)
        return r

    for user in ("reader", "writer", "admin"):
        keep(http.get(f"{url}/token", params={"service": "cargohold", "scope": "repository:team/app:pull"}, auth=creds.basic(user), timeout=TIMEOUT))
        keep(http.get(f"{url}/v2/", auth=creds.basic(user), timeout=TIMEOUT))
        keep(http.post(f"{url}/token", data={"grant_type": "password", "username": user, "password": creds.passwords[user], "access_type": "offline"}, timeout=TIMEOUT))
    for password in wrong:
        keep(http.get(f"{url}/token", params={"service": "cargohold"}, auth=("reader", password), timeout=TIMEOUT))
        keep(http.get(f"{url}/v2/team/app/tags/list", auth=("writer", password), timeout=TIMEOUT))
        keep(http.post(f"{url}/token", data={"grant_type": "password", "username": "reader", "password": password}, timeout=TIMEOUT))
        keep(http.post(f"{url}/token", data={"grant_type": "refresh_token", "refresh_token": password}, timeout=TIMEOUT))
    for token in (robot_token, wrong_robot):
        keep(http.get(f"{url}/token", params={"service": "cargohold", "scope": "repository:ci/app:pull"}, auth=("ci-bot", token), timeout=TIMEOUT))
        keep(http.get(f"{url}/v2/ci/app/tags/list", headers=bearer(token), timeout=TIMEOUT))
        keep(http.get(f"{url}/v2/ci/app/tags/list", auth=("reader", token), timeout=TIMEOUT))
        keep(http.post(f"{url}/token", data={"grant_type": "password", "username": "ci-bot", "password": token}, timeout=TIMEOUT))
    data = random_blob(32)
    keep(http.post(f"{url}/v2/ci/app/blobs/uploads/", params={"digest": digest_of(data)}, data=data, headers=bearer(robot_token), timeout=TIMEOUT))
    statuses = [r.status_code for r in responses]
    assert 200 in statuses and 401 in statuses and 201 in statuses, statuses

    refresh_tokens = [r.json()["refresh_token"] for r in responses if r.request.method == "POST" and r.status_code == 200 and "refresh_token" in r.json()]
    assert len(refresh_tokens) == 3
    secret_values = {
        **{f"password of {u}": p for u, p in creds.passwords.items()},
        **{f"token of {r}": t for r, t in creds.tokens.items()},
        **{f"wrong password {i}": p for i, p in enumerate(wrong)},
        "wrong robot token": wrong_robot,
    }
    for r in responses:
        exposed = r.content.decode(errors="replace") + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items())
        for label, value in secret_values.items():
            assert value not in exposed, f"{label} is in the response to {describe(r)}"

    time.sleep(0.5)  # let the workers flush their log lines
    log = server.log()
    assert "POST /token" in log or "/token" in log, "the access log is on: the run should be in the log"
    # The server's stderr is a log file here, not a terminal: the bootstrap admin password is not printed,
    # the log names the 0600 file that holds it.
    assert "created user 'admin'; its password is in" in log
    secrets_and_admin = {**secret_values, "admin password": creds.passwords["admin"]}
    for label, value in {**secrets_and_admin, **{f"refresh token {i}": t for i, t in enumerate(refresh_tokens)}}.items():
        assert value not in log, f"{label} is in the server log"

    # Stored: argon2 hashes and token hashes only.
    async def stored(store: IdentityStore) -> list[str]:
        out = [(await store.get_user(u)).password_hash for u in ("reader", "writer", "admin")]  # type: ignore[union-attr]
        out += [json.dumps([e.detail, e.actor, e.target]) for e in await store.audit_events(10000)]
        return out

    for value in with_identities(server, stored):
        for label, secret in secret_values.items():
            assert secret not in value, f"{label} is stored in the clear"
    hashes = with_identities(server, lambda store: store.get_user("reader"))
    assert hashes is not None and hashes.password_hash.startswith("$argon2id$")
