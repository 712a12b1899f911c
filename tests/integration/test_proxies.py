"""Behind a reverse proxy: the client address from Forwarded / X-Forwarded-For (trusted proxies only), public_url.

The "proxy" is a session bound to 127.0.9.1, the one trusted address; it sends
the forwarding headers a real proxy would append. A session from 127.0.9.2 is
an untrusted peer sending the same headers, which must be ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from authhelpers import Credentials, client_from, describe, parse_challenge, provision, with_identities
from ocihelpers import digest_of, random_blob
from servers import Server

TIMEOUT = 30
LIMIT = 3
PROXY, STRANGER = "127.0.9.1", "127.0.9.2"
PUBLIC = "https://registry.example.com:8443"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Credentials]]:
    env = {
        "CARGOHOLD_TRUSTED_PROXIES": json.dumps([f"{PROXY}/32"]),
        "CARGOHOLD_PUBLIC_URL": PUBLIC,
        "CARGOHOLD_ALLOWED_CLIENTS": json.dumps(["127.0.0.1/32", "198.51.100.0/24", "2001:db8::/32"]),
        "CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": str(LIMIT),
    }
    server = Server(data_dir=tmp_path_factory.mktemp("proxies") / "data", auth=True, extra_env=env).start()
    try:
        creds = provision(server, users={"alice": [], "bob": []})
        creds.passwords["admin"] = server.admin_password
        yield server, creds
    finally:
        server.stop()


def token_via(session: requests.Session, server: Server, auth: tuple[str, str], **headers: str) -> requests.Response:
    return session.get(f"{server.url}/token", params={"service": "cargohold"}, auth=auth, headers=headers, timeout=TIMEOUT)


def test_throttle_allow_list_and_audit_see_the_forwarded_client(srv: tuple[Server, Credentials]) -> None:
    server, creds = srv
    proxy = client_from(PROXY)
    attacker = {"X-Forwarded-For": "198.51.100.10"}
    for i in range(LIMIT):
        assert token_via(proxy, server, (f"ghost-{i}", "wrong-password"), **attacker).status_code == 401
    assert token_via(proxy, server, creds.basic("alice"), **attacker).status_code == 429
    # Prepending a made-up address changes nothing: the rightmost untrusted hop is the client.
    spoofed = {"X-Forwarded-For": "198.51.100.99, 198.51.100.10"}
    assert token_via(proxy, server, creds.basic("alice"), **spoofed).status_code == 429
    forwarded = {"Forwarded": 'for="198.51.100.10:5555";proto=https'}
    assert token_via(proxy, server, creds.basic("alice"), **forwarded).status_code == 429
    # Another client behind the same proxy is not throttled.
    r = token_via(proxy, server, creds.basic("bob"), **{"X-Forwarded-For": "198.51.100.11"})
    assert r.status_code == 200, describe(r)

    events = with_identities(server, lambda store: store.audit_events(100, action="login"))
    assert {e.client for e in events if e.target.startswith("ghost-")} == {"198.51.100.10"}

    # The allow-list checks the forwarded client too.
    assert token_via(proxy, server, creds.basic("bob"), **{"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    assert token_via(proxy, server, creds.basic("bob"), **{"Forwarded": 'for="[2001:db8::7]:4711"'}).status_code == 200
    assert token_via(proxy, server, creds.basic("bob")).status_code == 403  # the proxy itself is not allowed
    # An untrusted peer's forwarding headers are ignored: it is judged by its own address.
    stranger = client_from(STRANGER)
    assert token_via(stranger, server, creds.basic("bob"), **{"X-Forwarded-For": "198.51.100.12"}).status_code == 403


def test_realm_and_location_use_public_url(srv: tuple[Server, Credentials]) -> None:
    server, creds = srv
    for host in (server.host, "attacker.example", "evil\"quote"):
        r = requests.get(f"{server.url}/v2/", headers={"Host": host}, timeout=TIMEOUT)
        assert r.status_code == 401
        assert parse_challenge(r.headers["WWW-Authenticate"])[1]["realm"] == f"{PUBLIC}/token"
    blob = random_blob(512)
    digest = digest_of(blob)
    r = requests.post(f"{server.url}/v2/team/app/blobs/uploads/", auth=creds.basic("admin"), timeout=TIMEOUT)
    assert r.status_code == 202, describe(r)
    assert r.headers["Location"].startswith(f"{PUBLIC}/v2/team/app/blobs/uploads/"), describe(r)
    upload = server.url + r.headers["Location"][len(PUBLIC):]
    r = requests.put(upload, params={"digest": digest}, data=blob, auth=creds.basic("admin"), timeout=TIMEOUT)
    assert r.status_code == 201, describe(r)
    assert r.headers["Location"] == f"{PUBLIC}/v2/team/app/blobs/{digest}"
