"""Air-gapped transfer: ``cargohold export REF... --to DIR`` and ``cargohold import oci-layout:DIR``.

A multi-arch index with a referrer goes out of cargohold into an OCI layout that
skopeo reads; a layout skopeo wrote comes back in with the same digests.
Auth is on: the CLI uses CARGOHOLD_USERNAME / CARGOHOLD_PASSWORD.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from ocihelpers import (
    EMPTY_JSON,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    image_manifest,
)
from servers import Server

TIMEOUT = 30
pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(data_dir=tmp_path_factory.mktemp("layout-transfer") / "data", auth=True, workers=1,
                     extra_env={"CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": "100000"}).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def http(server: Server) -> requests.Session:
    session = requests.Session()
    session.auth = ("admin", server.admin_password)
    return session


def cli(server: Server, home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_") and k != "XDG_CONFIG_HOME"}
    env |= {"HOME": str(home), "CARGOHOLD_USERNAME": "admin", "CARGOHOLD_PASSWORD": server.admin_password}
    result = subprocess.run([sys.executable, "-m", "cargohold", *args, "--registry", server.url], env=env,
                            capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)
    if ok:
        assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
    return result


def skopeo(*args: str) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(["skopeo", *args], capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def push_blob(http: requests.Session, url: str, repo: str, data: bytes) -> str:
    digest = digest_of(data)
    r = http.post(f"{url}/v2/{repo}/blobs/uploads/", params={"digest": digest}, data=data,
                  headers={"Content-Type": "application/octet-stream"}, timeout=TIMEOUT)
    assert r.status_code == 201, (r.status_code, r.text)
    return digest


def push_manifest(http: requests.Session, url: str, repo: str, body: bytes, media_type: str, ref: str | None = None) -> str:
    digest = digest_of(body)
    r = http.put(f"{url}/v2/{repo}/manifests/{ref or digest}", data=body, headers={"Content-Type": media_type}, timeout=TIMEOUT)
    assert r.status_code == 201, (r.status_code, r.text)
    return digest


def push_platform_image(http: requests.Session, url: str, repo: str, arch: str) -> tuple[str, bytes]:
    config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                         "salt": uuid.uuid4().hex}).encode()
    layer = os.urandom(300_000)
    push_blob(http, url, repo, config)
    push_blob(http, url, repo, layer)
    body = json.dumps(image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)]), indent=2).encode()
    return push_manifest(http, url, repo, body, OCI_MANIFEST), body


def manifest(http: requests.Session, url: str, repo: str, ref: str) -> bytes:
    r = http.get(f"{url}/v2/{repo}/manifests/{ref}", headers={"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"}, timeout=TIMEOUT)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.content


def test_export_then_skopeo_reads_and_import_back(server: Server, http: requests.Session, tmp_path: Path) -> None:
    url, repo = server.url, f"src/{uuid.uuid4().hex[:8]}"
    amd, amd_body = push_platform_image(http, url, repo, "amd64")
    arm, arm_body = push_platform_image(http, url, repo, "arm64")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        descriptor(OCI_MANIFEST, amd_body, platform={"os": "linux", "architecture": "amd64"}),
        descriptor(OCI_MANIFEST, arm_body, platform={"os": "linux", "architecture": "arm64"}),
    ]}
    index_body = json.dumps(index, indent=3).encode()  # unusual spacing: byte-exact copies keep it
    index_digest = push_manifest(http, url, repo, index_body, OCI_INDEX)
    push_manifest(http, url, repo, index_body, OCI_INDEX, ref="1")
    # a referrer (an SBOM-like artifact) of the index
    push_blob(http, url, repo, EMPTY_JSON)
    sbom = b'{"sbom": true}'
    push_blob(http, url, repo, sbom)
    referrer = image_manifest({"mediaType": OCI_EMPTY, "digest": digest_of(EMPTY_JSON), "size": 2},
                              [descriptor("application/spdx+json", sbom)], artifactType="application/spdx+json",
                              subject={"mediaType": OCI_INDEX, "digest": index_digest, "size": len(index_body)})
    referrer_body = json.dumps(referrer).encode()
    referrer_digest = push_manifest(http, url, repo, referrer_body, OCI_MANIFEST)

    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "layout"
    cli(server, home, "export", f"{repo}:1", "--to", str(out))

    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    entries = json.loads((out / "index.json").read_text())["manifests"]
    top = [e for e in entries if e.get("annotations", {}).get("org.opencontainers.image.ref.name") == f"{repo}:1"]
    assert [e["digest"] for e in top] == [index_digest]
    assert referrer_digest in {e["digest"] for e in entries}
    for digest in (index_digest, amd, arm, referrer_digest):
        path = out / "blobs" / "sha256" / digest.split(":")[1]
        assert digest_of(path.read_bytes()) == digest
    assert (out / "blobs" / "sha256" / index_digest.split(":")[1]).read_bytes() == index_body
    assert not list(out.rglob(".tmp-*"))

    # skopeo reads the layout: the raw index is byte-exact, and a platform image copies out
    raw = skopeo("inspect", "--raw", f"oci:{out}:{repo}:1").stdout
    assert raw == index_body
    skopeo("copy", "--override-arch", "arm64", "--override-os", "linux", f"oci:{out}:{repo}:1", f"dir:{tmp_path / 'dir-out'}")
    assert digest_of((tmp_path / "dir-out" / "manifest.json").read_bytes()) == arm

    # and the layout comes back in under another name, referrer included
    target = f"back/{uuid.uuid4().hex[:8]}"
    cli(server, home, "import", f"oci-layout:{out}", "--image", f"{target}:2")
    assert manifest(http, url, target, "2") == index_body
    assert manifest(http, url, target, amd) == amd_body
    r = http.get(f"{url}/v2/{target}/referrers/{index_digest}", timeout=TIMEOUT)
    assert r.status_code == 200 and referrer_digest in {m["digest"] for m in r.json()["manifests"]}, r.text

    # exporting again into the same layout is idempotent and --from-layout is the same import
    cli(server, home, "export", f"{repo}@{index_digest}", f"{repo}:1", "--to", str(out))
    cli(server, home, "import", "--from-layout", str(out), "--image", f"{target}:3")
    assert manifest(http, url, target, "3") == index_body


def test_skopeo_layout_imports_with_equal_digests(server: Server, http: requests.Session, tmp_path: Path) -> None:
    url, repo = server.url, f"x/{uuid.uuid4().hex[:8]}"
    _digest, body = push_platform_image(http, url, repo, "amd64")
    push_manifest(http, url, repo, body, OCI_MANIFEST, ref="1")
    layout = tmp_path / "skopeo-layout"
    skopeo("copy", "--src-creds", f"admin:{server.admin_password}", "--src-tls-verify=false",
           f"docker://{server.host}/{repo}:1", f"oci:{layout}:1")
    written = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    # (skopeo re-encodes the manifest, so `written` differs from `digest`; the import must keep skopeo's bytes)

    home = tmp_path / "home"
    home.mkdir()
    target = f"y/{uuid.uuid4().hex[:8]}"
    cli(server, home, "import", f"oci-layout:{layout}", "--image", f"{target}:1")
    assert digest_of(manifest(http, url, target, "1")) == written
    assert manifest(http, url, target, written) == (layout / "blobs" / "sha256" / written.split(":")[1]).read_bytes()

    # a missing blob is a clear error, not a traceback
    config = json.loads(manifest(http, url, target, "1"))["config"]["digest"]
    (layout / "blobs" / "sha256" / config.split(":")[1]).unlink()
    failed = cli(server, home, "import", f"oci-layout:{layout}", "--image", f"z/{uuid.uuid4().hex[:8]}:1", ok=False)
    assert failed.returncode == 1 and "missing" in failed.stderr, failed.stderr


REF_NAME = "org.opencontainers.image.ref.name"


def ref_names(layout: Path) -> dict[str, str]:
    """ref.name → digest of a layout's named index.json entries."""
    entries = json.loads((layout / "index.json").read_text())["manifests"]
    return {e["annotations"][REF_NAME]: e["digest"] for e in entries if REF_NAME in e.get("annotations", {})}


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_export_keeps_every_image_and_adds_to_a_layout(server: Server, http: requests.Session, tmp_path: Path) -> None:
    """Two repositories with the same tag both stay in the layout, each under its full reference; skopeo and umoci
    find each by that name, and a later export adds to the layout instead of replacing it."""
    url, team = server.url, f"team{uuid.uuid4().hex[:8]}"
    a_digest, a_body = push_platform_image(http, url, f"{team}/a", "amd64")
    push_manifest(http, url, f"{team}/a", a_body, OCI_MANIFEST, ref="1.0")
    b_digest, b_body = push_platform_image(http, url, f"{team}/b", "arm64")
    push_manifest(http, url, f"{team}/b", b_body, OCI_MANIFEST, ref="1.0")
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "layout"

    cli(server, home, "export", f"{team}/a:1.0", f"{team}/b:1.0", "--to", str(out))
    assert ref_names(out) == {f"{team}/a:1.0": a_digest, f"{team}/b:1.0": b_digest}
    for repo, digest in ((f"{team}/a", a_digest), (f"{team}/b", b_digest)):
        copied = tmp_path / f"copy-{repo.rsplit('/', 1)[1]}"
        skopeo("copy", f"oci:{out}:{repo}:1.0", f"dir:{copied}")
        assert digest_of((copied / "manifest.json").read_bytes()) == digest
    listed = subprocess.run(["umoci", "ls", "--layout", str(out)], capture_output=True, text=True, timeout=60, check=True)
    assert sorted(listed.stdout.split()) == [f"{team}/a:1.0", f"{team}/b:1.0"]

    # a later export adds to the layout (a digest reference is named REPOSITORY@DIGEST)
    c_digest, c_body = push_platform_image(http, url, f"{team}/c", "amd64")
    cli(server, home, "export", f"{team}/c@{c_digest}", "--to", str(out))
    assert ref_names(out) == {f"{team}/a:1.0": a_digest, f"{team}/b:1.0": b_digest, f"{team}/c@{c_digest}": c_digest}
    assert skopeo("inspect", "--raw", f"oci:{out}:{team}/c@{c_digest}").stdout == c_body
    assert skopeo("inspect", "--raw", f"oci:{out}:{team}/a:1.0").stdout == a_body

    # each image comes back in by its name; the tag defaults to the one in the name
    target = f"back/{uuid.uuid4().hex[:8]}"
    cli(server, home, "import", f"oci-layout:{out}:{team}/b:1.0", "--image", target)
    assert manifest(http, url, target, "1.0") == b_body
    ambiguous = cli(server, home, "import", f"oci-layout:{out}:1.0", "--image", target, ok=False)
    assert ambiguous.returncode == 1 and "ambiguous" in ambiguous.stderr, ambiguous.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_export_leaves_no_half_made_layout(server: Server, http: requests.Session, tmp_path: Path) -> None:
    """A missing tag as the second REF or a blob that fails verification: no new directory, an existing layout
    unchanged, and no staging directory left next to either."""
    url, repo = server.url, f"fail/{uuid.uuid4().hex[:8]}"
    _digest, body = push_platform_image(http, url, repo, "amd64")
    push_manifest(http, url, repo, body, OCI_MANIFEST, ref="1")
    home = tmp_path / "home"
    home.mkdir()

    new = tmp_path / "new"
    failed = cli(server, home, "export", f"{repo}:1", f"{repo}:no-such-tag", "--to", str(new), ok=False)
    assert failed.returncode != 0, failed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]

    existing = tmp_path / "existing"
    cli(server, home, "export", f"{repo}:1", "--to", str(existing))
    before = snapshot(existing)
    bad_repo = f"fail/{uuid.uuid4().hex[:8]}"
    _bad_digest, bad_body = push_platform_image(http, url, bad_repo, "arm64")
    push_manifest(http, url, bad_repo, bad_body, OCI_MANIFEST, ref="1")
    layer = json.loads(bad_body)["layers"][0]["digest"]
    stored = server.data_dir / "blobs" / "sha256" / layer.split(":")[1][:2] / layer.split(":")[1]
    stored.write_bytes(os.urandom(stored.stat().st_size))  # same size, wrong bytes
    failed = cli(server, home, "export", f"{bad_repo}:1", "--to", str(existing), ok=False)
    assert failed.returncode == 1 and "does not match" in failed.stderr, failed.stderr
    assert snapshot(existing) == before
    failed = cli(server, home, "export", f"{bad_repo}:1", "--to", str(new), ok=False)
    assert failed.returncode == 1 and "does not match" in failed.stderr, failed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing", "home"]
