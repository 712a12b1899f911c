"""Identities for the access-control tests, written straight into a running server's database.

``provision`` creates scope maps, users and robots through the auth layer's own
store (``IdentityStore``) and secrets (argon2 password hashes, ``chr_`` robot
tokens), on the same database the server uses — the SQLite file in its data
directory, or the PostgreSQL schema from ``server.env()`` — and then bumps the
shared generation so that every running worker drops its cached identities.
The registry's access-control tests so depend on nothing but the auth layer:
not on the management API, which has its own tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from cargohold.auth import secrets
from cargohold.auth.scopes import Rule
from cargohold.config import Settings
from cargohold.store.db import create_engine
from cargohold.store.generation import Generation
from cargohold.store.identities import IdentityStore

from servers import Server

T = TypeVar("T")

# A rule: {"repository": "team/*", "actions": ["content/read"]} or ("team/*", ["content/read"]).
RuleSpec = Mapping[str, Any] | tuple[str, Sequence[str]]


@dataclass
class Credentials:
    """The secrets ``provision`` created: user passwords and robot tokens, by name."""

    passwords: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def basic(self, name: str) -> tuple[str, str]:
        """``(username, secret)`` for Basic auth: a user's password or a robot's token."""
        if name in self.passwords:
            return name, self.passwords[name]
        if name in self.tokens:
            return name, self.tokens[name]
        raise KeyError(f"no credentials for {name!r}")

    def secrets(self) -> list[str]:
        return [*self.passwords.values(), *self.tokens.values()]

    def update(self, other: "Credentials") -> None:
        self.passwords.update(other.passwords)
        self.tokens.update(other.tokens)


def server_settings(server: Server) -> Settings:
    """The database settings of ``server`` (as its workers see them), for opening the same database."""
    env = server.env()
    return Settings(
        data_dir=server.data_dir,
        database_url=env.get("CARGOHOLD_DATABASE_URL") or None,
        database_schema=env.get("CARGOHOLD_DATABASE_SCHEMA") or None,
        sqlite_synchronous="FULL",
    )


@asynccontextmanager
async def identity_store(server: Server) -> AsyncIterator[IdentityStore]:
    """An ``IdentityStore`` on ``server``'s database; the shared generation is bumped on every write and at exit."""
    engine = create_engine(server_settings(server))
    generation = Generation(server.data_dir / "auth-generation")
    try:
        yield IdentityStore(engine, generation.bump)
    finally:
        generation.bump()
        generation.close()
        await engine.dispose()


def subject_id(server: Server, name: str) -> str:
    """The ``sid`` an access token of user or robot ``name`` carries (its id and generation)."""

    async def go(store: IdentityStore) -> str:
        user = await store.get_user(name)
        if user is not None:
            return user.subject_id
        robot = await store.get_robot(name)
        assert robot is not None, f"no identity {name!r}"
        return robot.subject_id

    return with_identities(server, go)


def run_async(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous test code (in a thread if a loop is already running)."""

    async def main() -> T:
        return await coro_fn()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def with_identities(server: Server, fn: Callable[[IdentityStore], Awaitable[T]]) -> T:
    """``await fn(store)`` on ``server``'s identity store, from synchronous code."""

    async def go() -> T:
        async with identity_store(server) as store:
            return await fn(store)

    return run_async(go)


def _rules(specs: Sequence[RuleSpec]) -> list[dict[str, Any]]:
    rules = []
    for spec in specs:
        if isinstance(spec, tuple):
            repository, actions = spec
        else:
            repository, actions = spec["repository"], spec["actions"]
        # Stored as given, but checked with the server's own rule grammar so a typo fails here, not silently later.
        Rule.create(repository, list(actions))
        rules.append({"repository": repository, "actions": list(actions)})
    return rules


def _spec(value: Any) -> dict[str, Any]:
    """A user or robot spec: a list of scope-map names, or a dict with ``scope_maps`` and extras."""
    if isinstance(value, Mapping):
        return dict(value)
    return {"scope_maps": list(value)}


def provision(
    server: Server,
    users: Mapping[str, Sequence[str] | Mapping[str, Any]] | None = None,
    robots: Mapping[str, Sequence[str] | Mapping[str, Any]] | None = None,
    scope_maps: Mapping[str, Sequence[RuleSpec]] | None = None,
) -> Credentials:
    """Create scope maps, then users, then robots in ``server``'s database; their secrets.

    - ``scope_maps``: ``{name: [rule, ...]}``; a map named ``anonymous`` is what callers without
      credentials get.
    - ``users``: ``{name: [scope map, ...]}`` or ``{name: {"scope_maps": [...], "admin": bool,
      "password": str}}``; a random password (argon2-hashed) unless one is given.
    - ``robots``: ``{name: [scope map, ...]}`` or ``{name: {"scope_maps": [...], "expires_at": datetime,
      "created_by": str}}``; the token is ``chr_…`` and only its sha256 is stored.
    """
    creds = Credentials()

    async def go(store: IdentityStore) -> None:
        for name, rules in (scope_maps or {}).items():
            await store.create_scope_map(name, f"test scope map {name}", _rules(rules))
        for name, value in (users or {}).items():
            spec = _spec(value)
            password = spec.get("password") or secrets.new_password()
            password_hash = await asyncio.to_thread(secrets.hash_password, password)
            await store.create_user(name, password_hash, bool(spec.get("admin", False)), list(spec.get("scope_maps", [])))
            creds.passwords[name] = password
        for name, value in (robots or {}).items():
            spec = _spec(value)
            token = secrets.new_token(secrets.ROBOT_PREFIX)
            expires: datetime | None = spec.get("expires_at")
            await store.create_robot(
                name, secrets.token_hash(token), list(spec.get("scope_maps", [])), expires, spec.get("created_by", "tests")
            )
            creds.tokens[name] = token

    with_identities(server, go)
    return creds


# ---- the Docker token flow, as the tests drive it ------------------------------------------------

_CHALLENGE_PARAM = re.compile(r'\s*([a-z_]+)="([^"]*)"\s*(?:,|$)')


def parse_challenge(header: str | None) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` → ``("Bearer", {"realm": …, "service": …})``; fails on anything malformed."""
    assert header, "no WWW-Authenticate header"
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _CHALLENGE_PARAM.match(rest, pos)
        assert m and m.end() > pos, f"malformed challenge {header!r} at {rest[pos:]!r}"
        assert m.group(1) not in params, f"duplicate {m.group(1)} in {header!r}"
        params[m.group(1)] = m.group(2)
        pos = m.end()
    return scheme, params


def describe(r: requests.Response) -> str:
    return (
        f"{r.request.method} {r.request.url} -> {r.status_code} "
        f"WWW-Authenticate={r.headers.get('WWW-Authenticate')!r} body={r.text[:300]!r}"
    )


def oci_error_code(r: requests.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {describe(r)}") from None
    assert isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"], describe(r)
    code = body["errors"][0].get("code")
    assert isinstance(code, str), describe(r)
    return code


def assert_challenge(r: requests.Response, server: Server, scope: str | None, error: str | None = None) -> None:
    """401 ``UNAUTHORIZED`` (OCI JSON) with exactly ``Bearer realm=<server>/token,service=cargohold[,scope][,error]``."""
    assert r.status_code == 401, describe(r)
    assert oci_error_code(r) == "UNAUTHORIZED", describe(r)
    scheme, params = parse_challenge(r.headers.get("WWW-Authenticate"))
    expected = {"realm": f"{server.url}/token", "service": "cargohold"}
    if scope is not None:
        expected["scope"] = scope
    if error is not None:
        expected["error"] = error
    assert (scheme, params) == ("Bearer", expected), describe(r)


def assert_denied(r: requests.Response) -> None:
    """403 ``DENIED`` (OCI JSON) and no challenge: other credentials would not help this caller."""
    assert r.status_code == 403, describe(r)
    assert oci_error_code(r) == "DENIED", describe(r)
    assert r.headers.get("Content-Type", "").startswith("application/json"), describe(r)
    assert "WWW-Authenticate" not in r.headers, describe(r)


def fetch_token(
    server: Server,
    scopes: Sequence[str] = (),
    auth: tuple[str, str] | None = None,
    session: requests.Session | None = None,
    **params: str,
) -> str:
    """``GET /token?service=cargohold&scope=…`` (Basic ``auth`` or anonymous); the access token."""
    query: list[tuple[str, str]] = [("service", "cargohold"), *(("scope", s) for s in scopes), *params.items()]
    r = (session or requests).get(f"{server.url}/token", params=query, auth=auth, timeout=30)
    assert r.status_code == 200, describe(r)
    body = r.json()
    assert body["token"] == body["access_token"], body
    return str(body["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ok(response: requests.Response, status: int = 200) -> Any:
    """The JSON body of a management-API answer with this status (None for a 204)."""
    where = f"{response.request.method} {response.url}"
    assert response.status_code == status, f"{where}: {response.status_code} {response.text[:500]}"
    if status == 204:
        assert response.content == b""
        return None
    assert response.headers["Content-Type"].startswith("application/json"), where
    return response.json()


# ---- distinct clients on one machine ------------------------------------------------------------------------


class SourceAddress(HTTPAdapter):
    """Connect from a chosen loopback address, so the server sees distinct clients."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def client_from(address: str) -> requests.Session:
    with socket.socket() as probe:  # fail clearly if this machine cannot bind other loopback addresses
        probe.bind((address, 0))
    session = requests.Session()
    session.mount("http://", SourceAddress(address))
    return session
