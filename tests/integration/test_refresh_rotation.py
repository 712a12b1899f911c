"""Refresh tokens rotate: each works once, and presenting a spent one revokes its whole family.

The concurrent case is two clients presenting the same refresh token at the
same instant (a barrier releases them together), on SQLite and PostgreSQL: at
most one may get a new token.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from authhelpers import Credentials, describe, provision, with_identities
from servers import Server, drop_postgres_schema

TIMEOUT = 30


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Credentials]]:
    server = Server(
        data_dir=tmp_path_factory.mktemp(f"refresh-{request.param}") / "data", backend=request.param, auth=True,
        extra_env={"CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": "1000"},
    ).start()
    try:
        yield server, provision(server, users={"dev": []})
    finally:
        server.stop()
        if server.schema:
            drop_postgres_schema(server.schema)


def login(server: Server, creds: Credentials) -> str:
    r = requests.post(
        f"{server.url}/token",
        data={"grant_type": "password", "username": "dev", "password": creds.passwords["dev"], "access_type": "offline"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, describe(r)
    return str(r.json()["refresh_token"])


def refresh(server: Server, token: str) -> requests.Response:
    return requests.post(f"{server.url}/token", data={"grant_type": "refresh_token", "refresh_token": token}, timeout=TIMEOUT)


def refused(r: requests.Response) -> bool:
    return r.status_code == 401 and r.json().get("error") == "invalid_grant" and "refresh_token" not in r.json()


def test_each_use_rotates_and_a_reuse_revokes_the_family(srv: tuple[Server, Credentials]) -> None:
    server, creds = srv
    first = login(server, creds)
    r = refresh(server, first)
    assert r.status_code == 200, describe(r)
    second = r.json()["refresh_token"]
    assert second != first
    r = refresh(server, second)
    assert r.status_code == 200, describe(r)
    third = r.json()["refresh_token"]

    # The first token is presented again (a stolen copy): refused, and the live one dies with it.
    assert refused(refresh(server, first))
    assert refused(refresh(server, third))
    assert refused(refresh(server, second))
    events = with_identities(server, lambda store: store.audit_events(100, action="refresh_token.reuse"))
    assert events and events[0].actor == "dev" and events[0].outcome == "denied"

    # Another login's family is not touched.
    other = login(server, creds)
    assert refresh(server, other).status_code == 200


def test_two_concurrent_uses_of_one_refresh_token_at_most_one_succeeds(srv: tuple[Server, Credentials]) -> None:
    server, creds = srv
    for _ in range(5):
        token = login(server, creds)
        barrier = threading.Barrier(2)

        def use() -> requests.Response:
            barrier.wait(timeout=TIMEOUT)
            return refresh(server, token)

        with ThreadPoolExecutor(2) as pool:
            results = [f.result() for f in [pool.submit(use), pool.submit(use)]]
        winners = [r for r in results if r.status_code == 200]
        assert len(winners) <= 1, [describe(r) for r in results]
        assert all(refused(r) for r in results if r.status_code != 200), [describe(r) for r in results]
        # The second use was a reuse: the winner's successor is revoked along with the family.
        for r in winners:
            assert refused(refresh(server, r.json()["refresh_token"]))


def test_the_docker_daemons_identity_token_does_not_rotate(srv: tuple[Server, Credentials]) -> None:
    """`docker login` keeps the identity token in config.json and presents it on every pull, ignoring any
    refresh_token in the answer: rotating it would revoke the login on the second pull."""
    server, creds = srv
    r = requests.post(
        f"{server.url}/token",
        data={"grant_type": "password", "username": "dev", "password": creds.passwords["dev"], "access_type": "offline",
              "client_id": "docker", "service": "cargohold"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, describe(r)
    identity = r.json()["refresh_token"]
    for _ in range(3):
        r = requests.post(
            f"{server.url}/token",
            data={"grant_type": "refresh_token", "refresh_token": identity, "client_id": "docker", "service": "cargohold"},
            timeout=TIMEOUT,
        )
        assert r.status_code == 200 and r.json()["refresh_token"] == identity, describe(r)
    # Revoking it still works.
    record = with_identities(server, lambda store: store.list_refresh_tokens("dev"))
    ids = [t.id for t in record]
    for token_id in ids:
        with_identities(server, lambda store, token_id=token_id: store.revoke_refresh_token(token_id))
    assert refused(refresh(server, identity))
