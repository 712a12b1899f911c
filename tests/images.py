"""Build OCI images and indexes on disk with umoci (no daemon), and read OCI layouts back.

An OCI layout is a directory with ``oci-layout``, ``index.json`` and
``blobs/sha256/<hex>``; tags are ``org.opencontainers.image.ref.name``
annotations on the descriptors in ``index.json``. umoci writes single-platform
images; a multi-platform index is written here by hand, as a blob plus an
``index.json`` entry, so its bytes (and digest) are known exactly.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


def require_tool(name: str) -> str:
    """The path of a required command-line tool; a missing tool fails the test (never skips it)."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(f"{name} is not installed; run `make test` (scripts/install-system-deps.sh installs it)")
    return path


def run(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool; a non-zero exit fails with its full command line and output."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(args)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Layout:
    """An OCI image layout directory."""

    path: Path

    def index(self) -> dict[str, Any]:
        return json.loads((self.path / "index.json").read_text())

    def descriptor(self, tag: str) -> dict[str, Any]:
        """The ``index.json`` descriptor tagged ``tag``."""
        found = [m for m in self.index()["manifests"] if (m.get("annotations") or {}).get(REF_NAME) == tag]
        assert len(found) == 1, f"{self.path} has {len(found)} descriptors tagged {tag!r}: {self.index()}"
        return found[0]

    def tags(self) -> list[str]:
        return [m["annotations"][REF_NAME] for m in self.index()["manifests"] if REF_NAME in (m.get("annotations") or {})]

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexpart = digest.partition(":")
        return self.path / "blobs" / algorithm / hexpart

    def blob(self, digest: str) -> bytes:
        data = self.blob_path(digest).read_bytes()
        assert sha256_digest(data) == digest, f"layout blob {digest} does not hash to its name"
        return data

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def manifest_bytes(self, tag: str) -> bytes:
        return self.blob(self.descriptor(tag)["digest"])

    def manifest(self, tag_or_digest: str) -> dict[str, Any]:
        digest = tag_or_digest if tag_or_digest.startswith("sha256:") else self.descriptor(tag_or_digest)["digest"]
        return json.loads(self.blob(digest))

    def write_blob(self, data: bytes) -> str:
        digest = sha256_digest(data)
        path = self.blob_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return digest

    def set_tag(self, tag: str, descriptor: dict[str, Any]) -> None:
        """Point ``tag`` in ``index.json`` at ``descriptor`` (replacing any descriptor already tagged so)."""
        index = self.index()
        index["manifests"] = [
            m for m in index["manifests"] if (m.get("annotations") or {}).get(REF_NAME) != tag
        ]
        entry = dict(descriptor)
        entry["annotations"] = {**(descriptor.get("annotations") or {}), REF_NAME: tag}
        index["manifests"].append(entry)
        (self.path / "index.json").write_text(json.dumps(index))

    def all_blobs(self) -> set[str]:
        root = self.path / "blobs" / "sha256"
        return {f"sha256:{p.name}" for p in root.iterdir()} if root.is_dir() else set()


def init_layout(path: Path) -> Layout:
    run(require_tool("umoci"), "init", "--layout", str(path))
    return Layout(path)


def build_image(
    layout: Layout,
    tag: str,
    *,
    architecture: str = "amd64",
    os: str = "linux",
    files: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    """A new image ``layout:tag`` for ``os/architecture`` with one layer holding ``files``; its descriptor."""
    umoci = require_tool("umoci")
    image = f"{layout.path}:{tag}"
    files = files if files is not None else {f"/etc/{tag}.txt": f"built for {os}/{architecture}\n".encode()}
    run(umoci, "new", "--image", image)
    run(umoci, "config", "--image", image, "--os", os, "--architecture", architecture, "--config.cmd", "/bin/true")
    with tempfile.TemporaryDirectory() as tmp:
        # unpack + repack rather than `umoci insert`: umoci 0.4.7's insert writes a tar stream without
        # its end-of-archive blocks (tar reports "Unexpected EOF"); repack writes a well-formed layer.
        bundle = Path(tmp) / "bundle"
        run(umoci, "unpack", "--rootless", "--image", image, str(bundle))
        for target, content in files.items():
            local = bundle / "rootfs" / target.lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(content)
        run(umoci, "repack", "--image", image, str(bundle))
    run(umoci, "gc", "--layout", str(layout.path))
    descriptor = layout.descriptor(tag)
    config = json.loads(layout.blob(layout.manifest(tag)["config"]["digest"]))
    assert (config["os"], config["architecture"]) == (os, architecture), config
    return descriptor


def write_index(layout: Layout, tag: str, entries: list[tuple[dict[str, Any], dict[str, str]]]) -> dict[str, Any]:
    """Write an OCI index of ``(manifest descriptor, platform)`` entries as a blob, tag it; its descriptor."""
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": d.get("mediaType", OCI_MANIFEST),
                "digest": d["digest"],
                "size": d["size"],
                "platform": platform,
            }
            for d, platform in entries
        ],
    }
    body = json.dumps(index, indent=2).encode()
    descriptor = {"mediaType": OCI_INDEX, "digest": layout.write_blob(body), "size": len(body)}
    layout.set_tag(tag, descriptor)
    return descriptor


def build_multiarch(
    layout: Layout, tag: str, platforms: tuple[tuple[str, str], ...] = (("linux", "amd64"), ("linux", "arm64"))
) -> dict[str, Any]:
    """An OCI index ``layout:tag`` over one umoci-built image per ``(os, architecture)``; its descriptor."""
    entries = []
    for os_name, arch in platforms:
        child = build_image(layout, f"{tag}-{os_name}-{arch}", os=os_name, architecture=arch)
        entries.append((child, {"os": os_name, "architecture": arch}))
    return write_index(layout, tag, entries)
