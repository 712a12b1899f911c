"""Real clients through the Docker token flow: skopeo, buildah and oras with users, robots and no credentials.

The server runs with auth on; identities are written straight into its
database (``authhelpers.provision``). Every push is checked afterwards with
admin's credentials over plain HTTP, byte for byte where the client keeps the
bytes (skopeo ``--preserve-digests``, oras); buildah recompresses layers, so
there the image config (what identifies the image) is compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from oras.provider import Registry as OrasClient

from authhelpers import Credentials, provision
from clients import Skopeo
from images import OCI_MANIFEST, Layout, build_image, init_layout, require_tool, sha256_digest
from servers import Server

READ, WRITE = "content/read", "content/write"
TIMEOUT = 30
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
SBOM_FILE_TYPE = "application/vnd.example.sbom.v1+json"
ACCEPT = ", ".join([OCI_MANIFEST, "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.v2+json"])


@dataclass
class Env:
    server: Server
    creds: Credentials

    def creds_arg(self, name: str) -> str:
        user, secret = self.creds.basic(name)
        return f"{user}:{secret}"

    @property
    def admin(self) -> tuple[str, str]:
        return self.creds.basic("admin")

    def manifest(self, repo: str, reference: str) -> requests.Response:
        return requests.get(
            f"{self.server.url}/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT}, auth=self.admin, timeout=TIMEOUT
        )

    def blob(self, repo: str, digest: str) -> bytes:
        r = requests.get(f"{self.server.url}/v2/{repo}/blobs/{digest}", auth=self.admin, timeout=TIMEOUT)
        assert r.status_code == 200, (repo, digest, r.status_code, r.text)
        return r.content

    def tags(self, repo: str) -> requests.Response:
        return requests.get(f"{self.server.url}/v2/{repo}/tags/list", auth=self.admin, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    server = Server(data_dir=tmp_path_factory.mktemp("auth-clients") / "data", auth=True).start()
    try:
        creds = provision(
            server,
            scope_maps={
                "team-read": [("team/*", [READ])],
                "team-write": [("team/*", [READ, WRITE])],
                "ci-push": [("ci/*", [READ, WRITE])],
                "anonymous": [("public/*", [READ])],
            },
            users={"reader": ["team-read"], "writer": ["team-write"]},
            robots={"ci-bot": ["ci-push"]},
        )
        creds.passwords["admin"] = server.admin_password
        yield Env(server, creds)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    built = init_layout(tmp_path_factory.mktemp("auth-umoci") / "layout")
    build_image(built, "single", files={"/etc/cargohold/auth.txt": b"pushed through the token flow\n"})
    return built


@pytest.fixture
def skopeo(tmp_path: Path) -> Skopeo:
    return Skopeo(tmp_path / "skopeo-home")


def unique(namespace: str) -> str:
    return f"{namespace}/{uuid.uuid4().hex[:10]}"


def stderr(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stderr.decode(errors="replace")


def assert_pushed_like_layout(env: Env, repo: str, tag: str, layout: Layout, layout_tag: str = "single") -> None:
    descriptor = layout.descriptor(layout_tag)
    r = env.manifest(repo, tag)
    assert r.status_code == 200, (repo, tag, r.status_code, r.text)
    assert r.content == layout.blob(descriptor["digest"]) and r.headers["Docker-Content-Digest"] == descriptor["digest"]
    doc = json.loads(r.content)
    for blob in [doc["config"], *doc["layers"]]:
        assert env.blob(repo, blob["digest"]) == layout.blob(blob["digest"])


def assert_same_image(a: Layout, a_tag: str, b: Layout, b_tag: str) -> None:
    assert a.manifest_bytes(a_tag) == b.manifest_bytes(b_tag)
    doc = a.manifest(a_tag)
    for blob in [doc["config"], *doc["layers"]]:
        assert b.blob(blob["digest"]) == a.blob(blob["digest"])


def push(skopeo: Skopeo, layout: Layout, ref: str, *creds: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", *creds, f"oci:{layout.path}:single", ref, check=check)


# ---- skopeo -----------------------------------------------------------------------------------------------


def test_skopeo_push_with_dest_creds_and_pull_with_src_creds(env: Env, skopeo: Skopeo, layout: Layout, tmp_path: Path) -> None:
    repo = unique("team")
    ref = f"docker://{env.server.host}/{repo}:v1"
    push(skopeo, layout, ref, "--dest-creds", env.creds_arg("writer"))
    assert_pushed_like_layout(env, repo, "v1", layout)

    pulled = init_layout(tmp_path / "pulled")
    skopeo("copy", "--src-tls-verify=false", "--src-creds", env.creds_arg("reader"), ref, f"oci:{pulled.path}:v1")
    assert_same_image(layout, "single", pulled, "v1")

    # Without credentials team/* is closed: skopeo says so and pulls nothing.
    nothing = init_layout(tmp_path / "nothing")
    proc = skopeo("copy", "--src-tls-verify=false", ref, f"oci:{nothing.path}:v1", check=False)
    assert proc.returncode != 0
    assert "unauthorized" in stderr(proc).lower() or "authentication required" in stderr(proc).lower(), stderr(proc)
    assert not nothing.index().get("manifests")


def test_skopeo_login_then_copy_without_creds(env: Env, skopeo: Skopeo, layout: Layout) -> None:
    host = env.server.host
    proc = skopeo("login", "--tls-verify=false", "-u", "writer", "-p", "not-the-password", host, check=False)
    assert proc.returncode != 0 and "invalid username/password" in stderr(proc), stderr(proc)
    assert host not in json.loads(skopeo.authfile.read_text())["auths"]

    proc = skopeo("login", "--tls-verify=false", "-u", "writer", "-p", env.creds.passwords["writer"], host)
    assert b"Login Succeeded" in proc.stdout
    assert host in json.loads(skopeo.authfile.read_text())["auths"]

    repo = unique("team")
    push(skopeo, layout, f"docker://{host}/{repo}:v1")  # no --dest-creds: the stored login is used
    assert_pushed_like_layout(env, repo, "v1", layout)
    assert skopeo.inspect(f"docker://{host}/{repo}:v1")["Digest"] == layout.descriptor("single")["digest"]
    assert skopeo.list_tags(f"docker://{host}/{repo}")["Tags"] == ["v1"]

    skopeo("logout", host)
    proc = skopeo("inspect", "--tls-verify=false", f"docker://{host}/{repo}:v1", check=False)
    assert proc.returncode != 0, "after logout team/* must be closed again"


def test_skopeo_with_a_robot_token_as_password(env: Env, skopeo: Skopeo, layout: Layout, tmp_path: Path) -> None:
    repo = unique("ci")
    ref = f"docker://{env.server.host}/{repo}:build-1"
    push(skopeo, layout, ref, "--dest-creds", env.creds_arg("ci-bot"))
    assert_pushed_like_layout(env, repo, "build-1", layout)
    pulled = init_layout(tmp_path / "pulled")
    skopeo("copy", "--src-tls-verify=false", "--src-creds", env.creds_arg("ci-bot"), ref, f"oci:{pulled.path}:x")
    assert_same_image(layout, "single", pulled, "x")

    # The robot's scope ends at ci/*.
    denied = unique("team")
    proc = push(skopeo, layout, f"docker://{env.server.host}/{denied}:v1", "--dest-creds", env.creds_arg("ci-bot"), check=False)
    assert proc.returncode != 0
    # skopeo first HEADs the blobs there (pull): that 403 has no body, so skopeo can only quote the status.
    assert f"{denied}: 403 (Forbidden)" in stderr(proc) or f"denied: ci-bot may not write {denied}" in stderr(proc), stderr(proc)
    assert env.tags(denied).status_code == 404


def test_skopeo_push_without_write_access_fails_clearly(env: Env, skopeo: Skopeo, layout: Layout) -> None:
    repo = unique("team")
    proc = push(skopeo, layout, f"docker://{env.server.host}/{repo}:v1", "--dest-creds", env.creds_arg("reader"), check=False)
    assert proc.returncode != 0
    # The registry's own words reach the user: who may not do what where.
    assert f"denied: reader may not write {repo}" in stderr(proc), stderr(proc)
    assert env.tags(repo).status_code == 404

    proc = push(skopeo, layout, f"docker://{env.server.host}/{repo}:v1", "--dest-creds", "writer:wrong-password-123", check=False)
    assert proc.returncode != 0
    assert "unauthorized" in stderr(proc).lower() or "invalid username/password" in stderr(proc).lower(), stderr(proc)
    assert env.tags(repo).status_code == 404


def test_skopeo_anonymous_pull_of_public_namespace(env: Env, skopeo: Skopeo, layout: Layout, tmp_path: Path) -> None:
    repo = unique("public")
    ref = f"docker://{env.server.host}/{repo}:v1"
    push(skopeo, layout, ref, "--dest-creds", env.creds_arg("admin"))
    pulled = init_layout(tmp_path / "pulled")
    skopeo("copy", "--src-tls-verify=false", ref, f"oci:{pulled.path}:v1")  # no credentials at all
    assert_same_image(layout, "single", pulled, "v1")
    # ... and anonymous push there is refused, whatever the anonymous scope map says.
    proc = push(skopeo, layout, f"docker://{env.server.host}/{unique('public')}:v1", check=False)
    assert proc.returncode != 0


# ---- buildah ----------------------------------------------------------------------------------------------


@dataclass
class Buildah:
    home: Path

    def __post_init__(self) -> None:
        self.binary = require_tool("buildah")
        self.home.mkdir(parents=True, exist_ok=True)
        self.registries_conf = self.home / "registries.conf"
        self.registries_conf.write_text("unqualified-search-registries = []\n")
        self.policy = self.home / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.authfile = self.home / "auth.json"

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [
            self.binary, "--storage-driver", "vfs", "--root", str(self.home / "root"), "--runroot", str(self.home / "runroot"),
            "--registries-conf", str(self.registries_conf), *args,
        ]
        env = dict(os.environ)
        env.update(
            HOME=str(self.home), REGISTRY_AUTH_FILE=str(self.authfile), XDG_RUNTIME_DIR=str(self.home / "run"),
            CONTAINERS_REGISTRIES_CONF=str(self.registries_conf),
        )
        env.pop("DOCKER_CONFIG", None)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
        if check and proc.returncode != 0:
            raise AssertionError(f"buildah failed ({proc.returncode}): {' '.join(argv)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc


def test_buildah_login_pull_and_push(env: Env, skopeo: Skopeo, layout: Layout, tmp_path: Path) -> None:
    host = env.server.host
    source = unique("team")
    push(skopeo, layout, f"docker://{host}/{source}:v1", "--dest-creds", env.creds_arg("admin"))
    buildah = Buildah(tmp_path / "buildah")

    proc = buildah("login", "--tls-verify=false", "-u", "writer", "-p", "not-the-password", host, check=False)
    assert proc.returncode != 0, proc.stdout
    proc = buildah("login", "--tls-verify=false", "-u", "writer", "-p", env.creds.passwords["writer"], host)
    assert "Login Succeeded" in proc.stdout
    assert host in json.loads(buildah.authfile.read_text())["auths"]

    image_id = buildah("pull", "--tls-verify=false", "--signature-policy", str(buildah.policy), f"docker://{host}/{source}:v1").stdout.strip().splitlines()[-1]
    config_digest = layout.manifest("single")["config"]["digest"]
    assert config_digest == f"sha256:{image_id}", "buildah's image id is the pulled config's digest"

    target = unique("team")
    buildah("push", "--tls-verify=false", "--signature-policy", str(buildah.policy), f"{host}/{source}:v1", f"docker://{host}/{target}:v2")
    r = env.manifest(target, "v2")
    assert r.status_code == 200, r.text
    pushed = json.loads(r.content)
    assert pushed["config"]["digest"] == config_digest
    assert env.blob(target, config_digest) == layout.blob(config_digest)
    assert len(pushed["layers"]) == 1

    # Logged out, buildah is anonymous: team/* is closed to it.
    buildah("logout", host)
    proc = buildah("push", "--tls-verify=false", "--signature-policy", str(buildah.policy), f"{host}/{source}:v1", f"docker://{host}/{unique('team')}:v1", check=False)
    assert proc.returncode != 0, proc.stdout


# ---- oras -------------------------------------------------------------------------------------------------


def write(directory: Path, name: str, content: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(content)
    return directory / name


def artifact(tmp_path: Path) -> tuple[Path, bytes, str]:
    content = json.dumps({"sbom": str(uuid.uuid4())}).encode()
    sbom = write(tmp_path / "in", "sbom.json", content)
    config = write(tmp_path, "config.json", b"{}")
    return sbom, content, f"{config}:{OCI_EMPTY}"


def check_pushed_artifact(env: Env, repo: str, tag: str, content: bytes) -> dict[str, Any]:
    r = env.manifest(repo, tag)
    assert r.status_code == 200, r.text
    doc = json.loads(r.content)
    assert [layer["digest"] for layer in doc["layers"]] == [sha256_digest(content)]
    assert env.blob(repo, sha256_digest(content)) == content
    return doc


def oras_client(host: str, backend: str) -> OrasClient:
    return OrasClient(hostname=host, insecure=True, tls_verify=False, auth_backend=backend)


def oras_push(client: OrasClient, target: str, sbom: Path, config: str) -> requests.Response:
    return client.push(target, files=[f"{sbom}:{SBOM_FILE_TYPE}"], manifest_config=config, disable_path_validation=True, quiet=True)


def test_oras_login_push_and_pull(env: Env, tmp_path: Path) -> None:
    """``login`` with each oras auth backend: ``basic`` (Basic on /v2) pushes, ``token`` (the token flow) pulls.

    oras-py's ``token`` backend cannot push to any registry that follows the Docker token spec: it
    fetches a pull-only token for its first request (a blob HEAD) and, on the 401
    ``insufficient_scope`` of the upload that follows, re-sends that same token instead of asking
    for a wider one (``TokenAuth.authenticate_request``, oras 0.2.x). skopeo and buildah cover
    pushes through the token flow.
    """
    host = env.server.host
    repo = unique("team")
    sbom, content, config = artifact(tmp_path)
    writer = oras_client(host, "basic")
    result = writer.login("writer", env.creds.passwords["writer"], tls_verify=False, hostname=host, config_path=str(tmp_path / "w.json"))
    assert result.get("Status") == "Login Succeeded", result
    response = oras_push(writer, f"{host}/{repo}:v1", sbom, config)
    assert response.status_code == 201, response.text
    check_pushed_artifact(env, repo, "v1", content)

    reader = oras_client(host, "token")
    reader.login("reader", env.creds.passwords["reader"], tls_verify=False, hostname=host, config_path=str(tmp_path / "r.json"))
    files = reader.pull(target=f"{host}/{repo}:v1", outdir=str(tmp_path / "out"))
    assert files == [str(tmp_path / "out" / "sbom.json")]
    assert (tmp_path / "out" / "sbom.json").read_bytes() == content
    assert reader.auth.token is not None and reader.auth.token.count(".") == 2, "the pull went through /token"

    # The reader may not push, and oras shows the registry's reason.
    denied = unique("team")
    basic_reader = oras_client(host, "basic")
    basic_reader.login("reader", env.creds.passwords["reader"], tls_verify=False, hostname=host, config_path=str(tmp_path / "r2.json"))
    with pytest.raises(ValueError, match=f"reader may not write {denied}"):
        oras_push(basic_reader, f"{host}/{denied}:v1", sbom, config)
    assert env.tags(denied).status_code == 404


def test_oras_robot_basic_auth_and_anonymous_pull(env: Env, tmp_path: Path) -> None:
    host = env.server.host
    sbom, content, config = artifact(tmp_path)
    robot = oras_client(host, "basic")
    robot.auth.set_basic_auth("ci-bot", env.creds.tokens["ci-bot"])
    repo = unique("ci")
    assert oras_push(robot, f"{host}/{repo}:v1", sbom, config).status_code == 201
    check_pushed_artifact(env, repo, "v1", content)
    files = robot.pull(target=f"{host}/{repo}:v1", outdir=str(tmp_path / "out"))
    assert [Path(f).read_bytes() for f in files] == [content]

    # No credentials: ci/* stays closed (the anonymous token oras fetches opens nothing); public/* is open.
    with pytest.raises(ValueError):
        oras_client(host, "token").pull(target=f"{host}/{repo}:v1", outdir=str(tmp_path / "anon"))
    assert not (tmp_path / "anon" / "sbom.json").exists()
    admin = oras_client(host, "basic")
    admin.auth.set_basic_auth(*env.admin)
    public = unique("public")
    assert oras_push(admin, f"{host}/{public}:v1", sbom, config).status_code == 201
    anonymous = oras_client(host, "token")
    files = anonymous.pull(target=f"{host}/{public}:v1", outdir=str(tmp_path / "public"))
    assert [Path(f).read_bytes() for f in files] == [content]
