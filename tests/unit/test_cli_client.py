"""The CLI's management-API client (what needs no server), credential store, and /v2 client (against docker-registry).

The management-API client against the real server: tests/integration/test_cli_client_api.py.
"""

from __future__ import annotations

import io
import json
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from ocihelpers import (
    OCI_MANIFEST,
    digest_of,
    push_image,
    random_blob,
    random_digest,
    unique_repo,
)
from servers import DockerRegistry, free_port

from cargohold.cli.client import (
    ApiClient,
    ApiError,
    CliError,
    Credentials,
    InvalidRegistryUrl,
    NotLoggedIn,
    ServerUnreachable,
    normalize_registry,
)
from cargohold.cli.credentials import (
    CredentialStore,
    CredentialStoreError,
    IncompleteEnvironment,
    config_dir,
    environment_credentials,
    resolve_credentials,
)
from cargohold.cli.registry_client import RegistryClient

ADMIN = Credentials("admin", "admin-password-123")


# ---- registry URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("HTTP://Registry.Example.COM:5000/", "http://registry.example.com:5000"),
        ("https://registry.example.com", "https://registry.example.com"),
        (" http://[::1]:5000 ", "http://[::1]:5000"),
    ],
)
def test_registry_urls_are_normalized(given: str, expected: str) -> None:
    assert normalize_registry(given) == expected


@pytest.mark.parametrize(
    "bad", ["127.0.0.1:5000", "ftp://host", "http://", "http://u:p@host", "http://host/path", "http://host:99999", "http://h?q=1"]
)
def test_bad_registry_urls_are_refused(bad: str) -> None:
    with pytest.raises(InvalidRegistryUrl):
        normalize_registry(bad)


# ---- the client ----------------------------------------------------------------------------------------


def test_secrets_stay_out_of_repr() -> None:
    creds = Credentials("alice", "s3cret-password!")
    assert "s3cret" not in repr(creds)
    assert "s3cret" not in repr(ApiClient("http://127.0.0.1:1", creds).__dict__)


def test_no_credentials_is_not_logged_in() -> None:
    with pytest.raises(NotLoggedIn) as caught:
        ApiClient("http://127.0.0.1:1", None).me()  # refused before any connection: nothing listens there
    assert "cargohold login --registry" in str(caught.value)


def test_list_answers_may_be_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    client = ApiClient("http://127.0.0.1:1", ADMIN)
    monkeypatch.setattr(client, "get", lambda path, query=None: {"users": [{"name": "x"}]})
    assert client.list_users() == [{"name": "x"}]
    monkeypatch.setattr(client, "get", lambda path, query=None: {"oops": 1})
    with pytest.raises(ApiError):
        client.list_users()


def test_unreachable_server() -> None:
    with pytest.raises(ServerUnreachable) as caught:
        ApiClient(f"http://127.0.0.1:{free_port()}", ADMIN).me()
    assert "connection refused" in str(caught.value)


def test_silent_server_times_out() -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        port = listener.getsockname()[1]
        with pytest.raises(ServerUnreachable) as caught:
            ApiClient(f"http://127.0.0.1:{port}", ADMIN, timeout=0.3).me()
        assert "127.0.0.1" in str(caught.value)
    finally:
        listener.close()


def test_garbage_answer_is_unreachable() -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def answer() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"SSH-2.0-OpenSSH\r\n")
        conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        with pytest.raises(ServerUnreachable):
            ApiClient(f"http://127.0.0.1:{listener.getsockname()[1]}", ADMIN, timeout=5).me()
    finally:
        thread.join(5)
        listener.close()


# ---- the credential store --------------------------------------------------------------------------


def test_config_dir_follows_xdg(tmp_path: Path) -> None:
    assert config_dir({"XDG_CONFIG_HOME": str(tmp_path / "x"), "HOME": "/h"}) == tmp_path / "x" / "cargohold"
    assert config_dir({"HOME": str(tmp_path)}) == tmp_path / ".config" / "cargohold"
    assert config_dir({"XDG_CONFIG_HOME": "relative", "HOME": str(tmp_path)}) == tmp_path / ".config" / "cargohold"


def test_store_is_private_and_keyed_by_registry(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "cfg" / "cargohold")
    assert store.get("http://127.0.0.1:5000") is None
    store.put("http://127.0.0.1:5000/", "alice", "alice-password")
    store.put("https://registry.example.com", "bob", "bob-password")
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.get("HTTP://127.0.0.1:5000") == Credentials("alice", "alice-password", "stored")
    assert store.get("https://registry.example.com") == Credentials("bob", "bob-password", "stored")
    assert store.registries() == ["http://127.0.0.1:5000", "https://registry.example.com"]
    assert sorted(p.name for p in store.directory.iterdir()) == [".credentials.json.lock", "credentials.json"]
    assert store.remove("http://127.0.0.1:5000") is True
    assert store.remove("http://127.0.0.1:5000") is False
    assert store.get("http://127.0.0.1:5000") is None
    assert store.get("https://registry.example.com") is not None
    assert not store.insecure_permissions()


def test_store_tightens_an_existing_directory(tmp_path: Path) -> None:
    directory = tmp_path / "cargohold"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    CredentialStore(directory).put("http://127.0.0.1:5000", "a", "b")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_store_rewrites_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CredentialStore(tmp_path)
    store.put("http://127.0.0.1:5000", "alice", "first-password")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(CredentialStoreError) as caught:
        store.put("http://127.0.0.1:5000", "alice", "second-password")
    assert "second-password" not in str(caught.value)
    monkeypatch.undo()
    assert store.get("http://127.0.0.1:5000") == Credentials("alice", "first-password", "stored")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_concurrent_logins_keep_every_entry(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path)
    threads = [
        threading.Thread(target=store.put, args=(f"http://127.0.0.1:{5000 + i}", f"user{i}", f"password{i}")) for i in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.registries()) == 16


def test_corrupt_store_is_a_clear_error(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path)
    store.path.write_text("{not json")
    with pytest.raises(CredentialStoreError) as caught:
        store.get("http://127.0.0.1:5000")
    assert str(store.path) in str(caught.value)
    store.path.write_text(json.dumps(["a list"]))
    with pytest.raises(CredentialStoreError):
        store.get("http://127.0.0.1:5000")


def test_environment_beats_the_store(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path)
    store.put("http://127.0.0.1:5000", "alice", "stored-password")
    registry = "http://127.0.0.1:5000"
    assert resolve_credentials(registry, store, {}) == Credentials("alice", "stored-password", "stored")
    env = {"CARGOHOLD_USERNAME": "ci", "CARGOHOLD_PASSWORD": "env-password"}
    assert resolve_credentials(registry, store, env) == Credentials("ci", "env-password", "env")
    env["CARGOHOLD_TOKEN"] = "chr_token"
    token = resolve_credentials(registry, store, env)
    assert token == Credentials(None, "chr_token", "env") and token.bearer
    assert token.authorization() == "Bearer chr_token"
    assert resolve_credentials("http://127.0.0.1:6000", store, {}) is None


def test_half_an_environment_login_is_an_error() -> None:
    with pytest.raises(IncompleteEnvironment) as caught:
        environment_credentials({"CARGOHOLD_USERNAME": "ci"})
    assert "CARGOHOLD_PASSWORD" in str(caught.value)
    with pytest.raises(IncompleteEnvironment):
        environment_credentials({"CARGOHOLD_PASSWORD": "pw"})
    assert environment_credentials({}) is None


# ---- the /v2 client (registry_client.RegistryClient) ------------------------------------------------


def test_registry_client_reads_and_writes_a_real_registry(docker_registry: DockerRegistry) -> None:
    repo = unique_repo("v2client")
    digest, body = push_image(docker_registry.url, repo, "1.0")
    v2 = RegistryClient(docker_registry.url, None)  # anonymous: no Authorization header at all

    assert v2.manifest_digest(repo, "1.0") == digest
    assert v2.manifest(repo, "1.0") == (body, OCI_MANIFEST, digest)
    assert v2.manifest(repo, digest) == (body, OCI_MANIFEST, digest)
    config = json.loads(body)["config"]["digest"]
    assert digest_of(b"".join(v2.blob_chunks(repo, config))) == config
    assert v2.has_blob(repo, config) and not v2.has_blob(repo, random_digest())
    assert v2.referrers(repo, digest) == []  # Distribution 2.8 has no referrers API: none, not an error

    data = random_blob(3000)
    v2.push_blob(repo, digest_of(data), io.BytesIO(data), len(data))
    assert v2.has_blob(repo, digest_of(data))
    assert v2.push_manifest(repo, "copy", body, OCI_MANIFEST) == digest
    assert v2.manifest_digest(repo, "copy") == digest

    with pytest.raises(ApiError) as caught:
        v2.manifest_digest(repo, "no-such-tag")
    assert caught.value.status == 404  # a HEAD answers without a body: the status is all there is
    with pytest.raises(ApiError) as caught:
        v2.manifest(repo, "no-such-tag")
    assert caught.value.status == 404 and "MANIFEST_UNKNOWN" in caught.value.detail


class V2Stub:
    """A registry front that answers what a real one rarely does: HEAD without a digest, redirects."""

    def __init__(self, body: bytes, redirect_to: str | None = None) -> None:
        self.body = body
        self.redirect_to = redirect_to
        self.seen: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, method: str) -> None:
                stub.seen.append((method, self.path, self.headers.get("Authorization")))
                if stub.redirect_to and "/hop/" not in self.path:
                    self.send_response(307)
                    self.send_header("Location", stub.redirect_to + "/hop" + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", OCI_MANIFEST)
                self.send_header("Content-Length", str(len(stub.body)))
                self.end_headers()
                if method == "GET":
                    self.wfile.write(stub.body)

            def do_HEAD(self) -> None:
                self._answer("HEAD")

            def do_GET(self) -> None:
                self._answer("GET")

            def do_PUT(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer("PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_manifest_digest_falls_back_to_a_get_when_the_head_names_none() -> None:
    body = b'{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST.encode() + b'"}'
    stub = V2Stub(body)
    try:
        assert RegistryClient(stub.url, ADMIN).manifest_digest("a/b", "1") == digest_of(body)
        assert [(m, p) for m, p, _ in stub.seen] == [("HEAD", "/v2/a/b/manifests/1"), ("GET", "/v2/a/b/manifests/1")]
        assert all(auth == ADMIN.authorization() for _, _, auth in stub.seen)
    finally:
        stub.stop()


def test_reads_follow_redirects_and_keep_the_login_on_the_registry_only() -> None:
    body = b'{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST.encode() + b'"}'
    elsewhere = V2Stub(body)
    here = V2Stub(body, redirect_to=elsewhere.url)
    same = V2Stub(body)
    same.redirect_to = same.url
    try:
        assert RegistryClient(here.url, ADMIN).manifest("r", "1")[2] == digest_of(body)
        assert here.seen[0][2] == ADMIN.authorization()
        assert elsewhere.seen == [("GET", "/hop/v2/r/manifests/1", None)]  # another origin: no login sent
        assert RegistryClient(same.url, ADMIN).manifest("r", "1")[2] == digest_of(body)
        assert [auth for _, _, auth in same.seen] == [ADMIN.authorization()] * 2
        with pytest.raises(ApiError) as caught:  # a write is never redirected
            RegistryClient(here.url, ADMIN).push_manifest("r", "1", body, OCI_MANIFEST)
        assert caught.value.status == 307
    finally:
        for stub in (here, elsewhere, same):
            stub.stop()


@pytest.mark.parametrize("scheme", ["file", "data", "ftp"])
def test_redirects_leave_http_and_https_only_as_an_error(scheme: str, tmp_path: Path) -> None:
    body = b'{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST.encode() + b'"}'
    (tmp_path / "hop/v2/r/manifests").mkdir(parents=True)
    (tmp_path / "hop/v2/r/manifests/1").write_bytes(body)  # what urllib's file: handler would read
    target = {"file": f"file://{tmp_path}", "data": "data:,x", "ftp": "ftp://127.0.0.1:1"}[scheme]
    stub = V2Stub(body, redirect_to=target)
    try:
        for call in (lambda c: c.manifest("r", "1"), lambda c: c.manifest_digest("r", "1"),
                     lambda c: list(c.blob_chunks("r", digest_of(body))), lambda c: c.has_blob("r", digest_of(body))):
            with pytest.raises(CliError) as caught:
                call(RegistryClient(stub.url, ADMIN))
            assert "only http and https redirects are followed" in str(caught.value)
    finally:
        stub.stop()


def test_registry_client_unreachable() -> None:
    with pytest.raises(ServerUnreachable) as caught:
        RegistryClient(f"http://127.0.0.1:{free_port()}", ADMIN).manifest_digest("a", "1")
    assert "connection refused" in str(caught.value)
