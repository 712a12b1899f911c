"""Credential checks under concurrency: parallel guesses against the login throttle, bogus bearer floods, robots.

Every guess below is sent in parallel (a barrier releases them together) from
distinct loopback addresses where the test needs distinct clients. The throttle
must count an attempt before it is checked, so however many arrive at once, at
most ``LIMIT`` of them are ever checked (answered 401 or 200); the rest get 429.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from authhelpers import Credentials, client_from, describe, provision, with_identities
from servers import Server, drop_postgres_schema

LIMIT = 10
TIMEOUT = 120
READ = "content/read"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def throttled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Credentials]]:
    tmp: Path = tmp_path_factory.mktemp(f"auth-concurrency-{request.param}")
    server = Server(
        data_dir=tmp / "data", backend=request.param, auth=True, extra_env={"CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": str(LIMIT)}
    ).start()
    try:
        creds = provision(
            server,
            users={name: ["team-read"] for name in ("alice", "victim", "bystander")},
            robots={"ci-bot": ["team-read"]},
            scope_maps={"team-read": [("team/*", [READ])]},
        )
        yield server, creds
    finally:
        server.stop()
        if server.schema:
            drop_postgres_schema(server.schema)


def in_parallel(calls: list[Callable[[], requests.Response]]) -> list[requests.Response]:
    """Run every call at once (released together by a barrier); their responses, in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], requests.Response]) -> requests.Response:
        barrier.wait(timeout=TIMEOUT)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def get_token(session: requests.Session, server: Server, auth: tuple[str, str] | None = None, **headers: str) -> requests.Response:
    return session.get(f"{server.url}/token", params={"service": "cargohold"}, auth=auth, headers=headers, timeout=TIMEOUT)


def statuses(responses: list[requests.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def denied_logins(server: Server, client: str) -> int:
    events = with_identities(server, lambda store: store.audit_events(10000, action="login"))
    return sum(1 for e in events if e.client == client and e.outcome == "denied")


def test_parallel_guesses_from_one_client_never_exceed_the_limit(throttled: tuple[Server, Credentials]) -> None:
    server, creds = throttled
    address = "127.0.4.1"
    guesses = [("alice", f"wrong-guess-{i}") for i in range(39)]
    guesses.insert(20, creds.basic("alice"))
    sessions = [client_from(address) for _ in guesses]
    responses = in_parallel([lambda s=s, g=g: get_token(s, server, g) for s, g in zip(sessions, guesses)])
    counts = statuses(responses)
    assert set(counts) <= {200, 401, 429}, [describe(r) for r in responses if r.status_code not in (200, 401, 429)]
    # At most LIMIT wrong guesses were checked (a success takes its attempt back, so it costs no slot).
    assert 1 <= counts[401] <= LIMIT and counts[200] <= 1, counts
    assert counts[429] >= len(guesses) - LIMIT - 1, counts
    assert denied_logins(server, address) <= LIMIT
    # The client has used up its window: another guess is refused unchecked, and so is the right password
    # (unless it was among the checked ones: a verified password is then remembered for a minute).
    assert get_token(client_from(address), server, ("alice", "one-more-guess")).status_code == 429
    if counts[200] == 0:
        assert get_token(client_from(address), server, creds.basic("alice")).status_code == 429


def test_parallel_guesses_against_one_user_from_many_clients_never_exceed_the_limit(throttled: tuple[Server, Credentials]) -> None:
    server, creds = throttled
    sessions = [client_from(f"127.0.5.{i + 1}") for i in range(40)]
    responses = in_parallel([lambda s=s, i=i: get_token(s, server, ("victim", f"guess-{i}")) for i, s in enumerate(sessions)])
    counts = statuses(responses)
    assert set(counts) <= {401, 429}, counts
    assert 1 <= counts[401] <= LIMIT, counts
    assert get_token(client_from("127.0.5.99"), server, creds.basic("victim")).status_code == 429


@pytest.mark.parametrize("kind", ["garbage", "robot-shaped"])
def test_a_flood_of_bogus_bearer_tokens_is_throttled_before_it_is_checked(throttled: tuple[Server, Credentials], kind: str) -> None:
    server, creds = throttled
    address = "127.0.6.1" if kind == "garbage" else "127.0.6.2"
    prefix = "not-a-jwt-nor-a-robot-token-" if kind == "garbage" else "chr_"
    tokens = [f"{prefix}{i:043d}" for i in range(150)]  # all different: none shares another's check
    sessions = [client_from(address) for _ in tokens]
    responses = in_parallel(
        [lambda s=s, t=t: s.get(f"{server.url}/v2/", headers={"Authorization": f"Bearer {t}"}, timeout=TIMEOUT) for s, t in zip(sessions, tokens)]
    )
    counts = statuses(responses)
    assert set(counts) <= {401, 429}, counts
    assert 1 <= counts[401] <= LIMIT, counts
    assert denied_logins(server, address) <= LIMIT
    # Other clients are not affected.
    assert get_token(client_from("127.0.6.9"), server, creds.basic("bystander")).status_code == 200


def test_wrong_passwords_for_a_robots_name_do_not_lock_the_robot_out(throttled: tuple[Server, Credentials]) -> None:
    server, creds = throttled
    for i in range(LIMIT + 2):  # from many clients, so only a per-name count could reach the limit
        r = get_token(client_from(f"127.0.7.{i + 1}"), server, ("ci-bot", f"typed-password-{i}"))
        assert r.status_code == (401 if i < LIMIT else 429), describe(r)  # guessing at the name is throttled
    fresh = client_from("127.0.7.99")
    r = get_token(fresh, server, creds.basic("ci-bot"))
    assert r.status_code == 200, describe(r)
    r = fresh.get(f"{server.url}/v2/", auth=creds.basic("ci-bot"), timeout=TIMEOUT)
    assert r.status_code == 200, describe(r)
    # A human's name is still throttled per name.
    for i in range(LIMIT):
        assert get_token(client_from(f"127.0.8.{i + 1}"), server, ("victim2", f"typed-password-{i}")).status_code == 401
    assert get_token(client_from("127.0.8.99"), server, ("victim2", "another-one")).status_code == 429
