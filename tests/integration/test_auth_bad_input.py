"""Hostile and broken input to the auth edges: Basic headers, /token form bodies, Host headers, mount challenges.

Raw sockets send what ``requests`` would refuse to (non-ASCII header bytes,
bodies cut short, a Host with quotes in it). Nothing here may answer 500, and
nothing a client sends may be written into a challenge unvalidated.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator

import pytest
import requests

from authhelpers import Credentials, bearer, describe, fetch_token, parse_challenge, provision
from ocihelpers import digest_of, random_blob
from servers import Server

TIMEOUT = 30
READ, WRITE = "content/read", "content/write"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Credentials]]:
    server = Server(data_dir=tmp_path_factory.mktemp("auth-bad-input") / "data", auth=True).start()
    try:
        creds = provision(
            server,
            users={"mover": ["team-rw"], "outsider": ["dst-rw"]},
            scope_maps={"team-rw": [("team/*", [READ, WRITE])], "dst-rw": [("team/dst", [READ, WRITE])]},
        )
        creds.passwords["admin"] = server.admin_password
        yield server, creds
    finally:
        server.stop()


def raw(server: Server, head: bytes, body: bytes = b"") -> tuple[int, bytes, bytes]:
    """Send one request as given (``head`` without the blank line); status, header block and body of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    headers, _, payload = data.partition(b"\r\n\r\n")
    return int(headers.split(b" ", 2)[1]), headers, payload


@pytest.mark.parametrize(
    "value",
    [
        "Basic ".encode() + "ééé".encode(),  # non-ASCII bytes where base64 belongs
        "Basic ".encode() + "dXNlcjpwYXNz€".encode(),
        b"Basic \xff\xfe\xfd",
        b"Basic abc",  # bad padding
        b"Basic ====",
        b"Basic @@@@",
        b"Basic " + base64.b64encode(b"\xff\xfe:\xfd"),  # not UTF-8 once decoded
        b"Basic " + base64.b64encode("us\u00e9r:p\u00e4ss".encode()),  # valid, but no such user
    ],
)
@pytest.mark.parametrize("path", [b"/v2/", b"/token?service=cargohold", b"/api/v1/me"])
def test_malformed_basic_credentials_are_401_never_500(srv: tuple[Server, Credentials], value: bytes, path: bytes) -> None:
    server, _ = srv
    status, headers, body = raw(server, b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + value + b"\r\n")
    assert status == 401, (status, headers, body)


FORM_CASES = {
    "no boundary": (
        b"multipart/form-data",
        b'--x\r\nContent-Disposition: form-data; name="grant_type"\r\n\r\npassword\r\n--x--\r\n',
    ),
    "truncated in a part": (
        b"multipart/form-data; boundary=x",
        b'--x\r\nContent-Disposition: form-data; name="grant_type"\r\n\r\npass',
    ),
    "truncated after the part headers": (
        b"multipart/form-data; boundary=x",
        b'--x\r\nContent-Disposition: form-data; name="grant_type"\r\n',
    ),
    "truncated at a boundary": (
        b"multipart/form-data; boundary=x",
        b'--x\r\nContent-Disposition: form-data; name="grant_type"\r\n\r\npassword\r\n--x\r\n',
    ),
    "empty multipart": (b"multipart/form-data; boundary=x", b""),
    "unknown charset (urlencoded)": (b"application/x-www-form-urlencoded; charset=x-no-such-charset", b"grant_type=password"),
    "unknown charset (part)": (
        b"multipart/form-data; boundary=x",
        b'--x\r\nContent-Disposition: form-data; name="grant_type"\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n'
        b"\r\npassword\r\n--x--\r\n",
    ),
    "bytes not in the charset": (
        b"multipart/form-data; boundary=x",
        b'--x\r\nContent-Disposition: form-data; name="grant_type"\r\n\r\n\xff\xfe\r\n--x--\r\n',
    ),
}


@pytest.mark.parametrize("case", sorted(FORM_CASES))
def test_broken_form_bodies_on_post_token_are_400(srv: tuple[Server, Credentials], case: str) -> None:
    server, _ = srv
    content_type, body = FORM_CASES[case]
    head = (
        b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + content_type + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    )
    status, headers, payload = raw(server, head, body)
    assert status == 400, (status, headers, payload)
    assert b'"invalid_request"' in payload, payload


@pytest.mark.parametrize(
    "host",
    [b'evil.example"; error="x', b"evil.example, realm=x", b"evil.example/other/path", b"evil example", b"a\\b"],
)
def test_the_realm_never_echoes_an_unvalidated_host(srv: tuple[Server, Credentials], host: bytes) -> None:
    server, _ = srv
    status, headers, _ = raw(server, b"GET /v2/ HTTP/1.1\r\nHost: " + host + b"\r\n")
    assert status == 401, headers
    challenge = next(line for line in headers.split(b"\r\n") if line.lower().startswith(b"www-authenticate:"))
    scheme, params = parse_challenge(challenge.split(b":", 1)[1].strip().decode())
    assert scheme == "Bearer" and params == {"realm": f"http://{server.host}/token", "service": "cargohold"}, challenge


def test_the_realm_follows_a_plain_host_header(srv: tuple[Server, Credentials]) -> None:
    server, _ = srv
    r = requests.get(f"{server.url}/v2/", headers={"Host": "registry.example.com:8443"}, timeout=TIMEOUT)
    assert parse_challenge(r.headers["WWW-Authenticate"])[1]["realm"] == "http://registry.example.com:8443/token"


def test_a_mount_refused_only_for_the_tokens_scope_is_challenged_for_the_source(srv: tuple[Server, Credentials]) -> None:
    server, creds = srv
    blob = random_blob(2048)
    digest = digest_of(blob)
    r = requests.post(
        f"{server.url}/v2/team/src/blobs/uploads/", params={"digest": digest}, data=blob,
        auth=creds.basic("admin"), timeout=TIMEOUT,
    )
    assert r.status_code == 201, describe(r)
    url = f"{server.url}/v2/team/dst/blobs/uploads/"
    mount = {"mount": digest, "from": "team/src"}

    # mover may pull team/src, but this token names only team/dst: the challenge asks for both.
    narrow = fetch_token(server, ["repository:team/dst:pull,push"], creds.basic("mover"))
    r = requests.post(url, params=mount, headers=bearer(narrow), timeout=TIMEOUT)
    assert r.status_code == 401, describe(r)
    _, params = parse_challenge(r.headers["WWW-Authenticate"])
    assert params["scope"] == "repository:team/dst:pull,push repository:team/src:pull", describe(r)
    assert params["error"] == "insufficient_scope", describe(r)
    # A token with the scopes the challenge named mounts the blob.
    wide = fetch_token(server, params["scope"].split(" "), creds.basic("mover"))
    r = requests.post(url, params=mount, headers=bearer(wide), timeout=TIMEOUT)
    assert r.status_code == 201, describe(r)
    assert r.headers["Docker-Content-Digest"] == digest

    # outsider may not pull team/src at all: a wider token would not help, so it gets an upload session.
    own = fetch_token(server, ["repository:team/dst:pull,push"], creds.basic("outsider"))
    r = requests.post(url, params=mount, headers=bearer(own), timeout=TIMEOUT)
    assert r.status_code == 202, describe(r)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_nul_in_a_username_is_401_never_500(tmp_path_factory: pytest.TempPathFactory, backend: str) -> None:
    """No identity's name holds a NUL, and PostgreSQL cannot store one in the throttle or the audit (was a 500)."""
    no_throttle = {"CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": "100000"}  # 12 failures from one address would be 429s
    with Server(tmp_path_factory.mktemp("auth-nul") / "data", backend, 1, auth=True, extra_env=no_throttle) as server:
        for user in ("admin\x00", "\x00", "a\x00b"):
            basic = b"Basic " + base64.b64encode(user.encode() + b":wrong-password\x00")
            for path in (b"/v2/", b"/token?service=cargohold", b"/api/v1/me"):
                status, headers, body = raw(server, b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + basic + b"\r\n")
                assert status == 401, (path, status, body)
            r = requests.post(f"{server.url}/token", data={"grant_type": "password", "username": user, "password": "x"}, timeout=TIMEOUT)
            assert r.status_code == 401, r.text
        # The bootstrap admin still logs in: "admin\0" is not admin.
        r = requests.get(f"{server.url}/v2/", auth=("admin", server.admin_password), timeout=TIMEOUT)
        assert r.status_code == 200, r.text
