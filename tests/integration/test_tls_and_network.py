"""Serving on the network: HTTPS with --tls-cert/--tls-key, --no-auth only on loopback, the plain-HTTP
warning, and the client allow-list."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clients import Skopeo
from images import Layout, build_image, init_layout
from servers import Server, free_port

NO_AUTH_REFUSAL = "auth can only be turned off on a loopback address"
PLAIN_HTTP_WARNING = "serving plain HTTP on"


# ------------------------------------------------------------------ helpers


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 and localhost (CA:TRUE, so Go and OpenSSL both
    accept it as its own trust anchor); (certificate, key) PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cargohold test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=False, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class NetServer(Server):
    """``Server`` started with extra ``serve`` flags, on any listen address, ready when /v2/ answers at all."""

    listen_host: str = "127.0.0.1"
    extra_args: tuple[str, ...] = ()
    scheme: str = "http"
    verify: Path | bool = True
    workers: int = 1
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> "NetServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(
                "serve", "--listen", f"{self.listen_host}:{self.port}", "--data-dir", str(self.data_dir),
                "--workers", str(self.workers), *self.extra_args,
            ),
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                requests.get(f"{self.url}/v2/", timeout=1, verify=str(self.verify) if isinstance(self.verify, Path) else self.verify)
                return self
            except requests.RequestException:
                time.sleep(0.1)
        raise TimeoutError(f"{self.url} did not answer in 30 s:\n{self.log()}")


@pytest.fixture
def running() -> Iterator[list[Server]]:
    """Servers a test starts; all stopped at its end, whatever happens."""
    servers: list[Server] = []
    yield servers
    for s in servers:
        s.stop()


# ------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[Path, Path]) -> Iterator[NetServer]:
    cert, key = tls_files
    server = NetServer(
        data_dir=tmp_path_factory.mktemp("cargohold-tls") / "data", auth=True,
        extra_args=("--tls-cert", str(cert), "--tls-key", str(key)), scheme="https", verify=cert,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_https_with_the_given_certificate(tls_server: NetServer, tls_files: tuple[Path, Path]) -> None:
    cert, _ = tls_files
    admin = ("admin", tls_server.admin_password)
    r = requests.get(f"{tls_server.url}/v2/", verify=str(cert), timeout=10)
    assert r.status_code == 401
    # The token realm a client is sent to follows the scheme the request came in on.
    assert f'realm="https://127.0.0.1:{tls_server.port}/token"' in r.headers["WWW-Authenticate"]
    r = requests.get(f"{tls_server.url}/v2/", verify=str(cert), auth=admin, timeout=10)
    assert r.status_code == 200, r.text
    # The certificate is really checked: without it as a trust anchor, verification fails.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{tls_server.url}/v2/", timeout=10)
    assert PLAIN_HTTP_WARNING not in tls_server.log()


def test_plain_http_to_the_tls_port_fails(tls_server: NetServer) -> None:
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{tls_server.port}/v2/", timeout=10)


def test_tls_1_2_or_newer_only(tls_server: NetServer, tls_files: tuple[Path, Path]) -> None:
    cert, _ = tls_files
    modern = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as raw:
        with modern.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.selected_alpn_protocol() in (None, "http/1.1")
    # A client that offers only TLS 1.0/1.1 (this OpenSSL can, at security level 0) is turned away: asyncio's
    # TLS layer closes the connection on the failed handshake, mostly before its protocol-version alert is sent.
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|UNEXPECTED_EOF"):
            with old.wrap_socket(raw, server_hostname="127.0.0.1"):
                pass


def test_skopeo_copies_to_the_tls_server(tls_server: NetServer, tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    cert, _ = tls_files
    certs = tmp_path / "certs.d"
    certs.mkdir()
    (certs / "cargohold-ca.crt").write_bytes(cert.read_bytes())  # skopeo reads *.crt as trust anchors
    layout: Layout = init_layout(tmp_path / "layout")
    build_image(layout, "tls", files={"/etc/tls.txt": b"pushed over https\n"})
    skopeo = Skopeo(tmp_path / "skopeo-home")
    creds = f"admin:{tls_server.admin_password}"
    ref = f"docker://127.0.0.1:{tls_server.port}/tls/app:1"
    skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(certs), "--dest-creds", creds, f"oci:{layout.path}:tls", ref)
    raw = skopeo("inspect", "--raw", "--cert-dir", str(certs), "--creds", creds, ref).stdout
    assert raw == layout.manifest_bytes("tls")
    # Without the certificate skopeo refuses the server (TLS verification is on by default).
    refused = skopeo("inspect", "--raw", "--creds", creds, ref, check=False)
    assert refused.returncode != 0
    assert b"certificate" in refused.stderr


def test_a_bad_key_is_one_clear_error(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    cert, _ = tls_files
    other_cert, other_key = self_signed(tmp_path / "other")
    result = subprocess.run(
        [sys.executable, "-m", "cargohold", "serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d"),
         "--tls-cert", str(cert), "--tls-key", str(other_key)],
        capture_output=True, text=True, timeout=60, env=NetServer(data_dir=tmp_path / "d").env(),
    )
    assert result.returncode == 1
    assert "cannot serve TLS with certificate" in result.stderr


def test_a_certificate_without_its_key_is_refused(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    cert, _ = tls_files
    result = subprocess.run(
        [sys.executable, "-m", "cargohold", "serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d"),
         "--tls-cert", str(cert)],
        capture_output=True, text=True, timeout=60, env=NetServer(data_dir=tmp_path / "d").env(),
    )
    assert result.returncode == 2
    assert "error: tls_cert and tls_key go together" in result.stderr


# ------------------------------------------------------------------ --no-auth and the plain-HTTP warning


def test_no_auth_is_refused_on_a_non_loopback_address(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "cargohold", "serve", "--no-auth", "--listen", f"0.0.0.0:{port}", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60, env=NetServer(data_dir=tmp_path / "d", auth=True).env(),
    )
    assert result.returncode == 2, result.stderr
    assert f"error: {NO_AUTH_REFUSAL} (--no-auth is for throwaway local use)" in result.stderr
    assert "Traceback" not in result.stderr and "pydantic" not in result.stderr
    assert not (tmp_path / "d").exists()  # refused before touching anything


def test_no_auth_on_loopback_serves_without_credentials(tmp_path: Path, running: list[Server]) -> None:
    # CARGOHOLD_AUTH=true in the environment; the flag wins.
    server = NetServer(data_dir=tmp_path / "d", auth=True, extra_args=("--no-auth",))
    running.append(server.start())
    assert requests.get(f"{server.url}/v2/", timeout=10).status_code == 200
    assert PLAIN_HTTP_WARNING not in server.log()


def test_plain_http_on_a_non_loopback_address_is_logged(tmp_path: Path, running: list[Server]) -> None:
    server = NetServer(data_dir=tmp_path / "d", auth=True, listen_host="0.0.0.0")
    running.append(server.start())
    try:
        log = server.log()
        assert "WARNING" in log and f"{PLAIN_HTTP_WARNING} 0.0.0.0:{server.port}, a non-loopback address" in log, log
        assert "--tls-cert" in log
    finally:
        server.stop()  # listening on every interface: no longer than needed


# ------------------------------------------------------------------ the client allow-list


def test_a_client_outside_the_allow_list_is_denied(tmp_path: Path, running: list[Server]) -> None:
    server = NetServer(data_dir=tmp_path / "d", auth=True, extra_env={"CARGOHOLD_ALLOWED_CLIENTS": json.dumps(["10.0.0.0/8"])})
    running.append(server.start())
    for path in ("/v2/", "/v2/team/app/manifests/latest", "/v2/_catalog"):
        r = requests.get(f"{server.url}{path}", auth=("admin", server.admin_password), timeout=10)
        assert r.status_code == 403, (path, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json()["errors"][0]["code"] == "DENIED"
        assert "WWW-Authenticate" not in r.headers  # no point sending this client to the token service
    r = requests.get(
        f"{server.url}/token", params={"service": "cargohold", "scope": "repository:team/app:pull"},
        auth=("admin", server.admin_password), timeout=10,
    )
    assert r.status_code == 403
    assert r.headers["Content-Type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 403 and body["code"] == "DENIED"
    assert "token" not in body


def test_a_client_inside_the_allow_list_is_served(tmp_path: Path, running: list[Server]) -> None:
    server = NetServer(data_dir=tmp_path / "d", auth=False, extra_env={"CARGOHOLD_ALLOWED_CLIENTS": json.dumps(["127.0.0.0/8"])})
    running.append(server.start())
    r = requests.get(f"{server.url}/v2/", timeout=10)
    assert r.status_code == 200
    r = requests.get(f"{server.url}/v2/team/app/manifests/latest", timeout=10)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")
