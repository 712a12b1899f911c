"""A user's shell for CLI tests: ``python -m cargohold …`` subprocesses against a real server, with a private HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from ocihelpers import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, descriptor, digest_of, image_manifest, manifest_bytes, random_blob
from servers import Server


def push_image(server: Server, repo: str, tag: str) -> str:
    """A small image (its digest), pushed with the bootstrap admin's Basic credentials (monolithic blob uploads)."""
    auth = ("admin", server.admin_password)
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = random_blob(128)
    for blob in (config, layer):
        r = requests.post(f"{server.url}/v2/{repo}/blobs/uploads/", params={"digest": digest_of(blob)}, data=blob, auth=auth, timeout=30)
        assert r.status_code == 201, (r.status_code, r.text)
    body = manifest_bytes(image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)]))
    r = requests.put(
        f"{server.url}/v2/{repo}/manifests/{tag}", data=body, headers={"Content-Type": OCI_MANIFEST}, auth=auth, timeout=30
    )
    assert r.status_code == 201, (r.status_code, r.text)
    return r.headers["Docker-Content-Digest"]


@dataclass
class Cli:
    """One user's shell: a private HOME (and XDG_CONFIG_HOME unless ``xdg`` is False), and a transcript."""

    server: Server
    home: Path
    xdg: bool = True
    transcript: list[tuple[tuple[str, ...], subprocess.CompletedProcess[str]]] = field(default_factory=list)

    @property
    def config_dir(self) -> Path:
        return (self.home / "xdg" if self.xdg else self.home / ".config") / "cargohold"

    @property
    def credentials_file(self) -> Path:
        return self.config_dir / "credentials.json"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_") and k != "XDG_CONFIG_HOME"}
        env["HOME"] = str(self.home)
        if self.xdg:
            env["XDG_CONFIG_HOME"] = str(self.home / "xdg")
        env.update(extra or {})
        return env

    def __call__(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None, registry: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "cargohold", *args]
        if args[0] not in ("version",):
            command += ["--registry", registry or self.server.url]
        result = subprocess.run(command, input=input, env=self.env(env), capture_output=True, text=True, timeout=120)
        self.transcript.append((args, result))
        return result

    def ok(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        result = self(*args, **kwargs)  # type: ignore[arg-type]
        assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
        return result

    def json(self, *args: str, **kwargs: object) -> object:
        return json.loads(self.ok(*args, "--output", "json", **kwargs).stdout)

    def login_admin(self) -> None:
        self.ok("login", "--username", "admin", "--password-stdin", input=self.server.admin_password + "\n")

    def output_of(self, keep: Callable[[tuple[str, ...]], bool] = lambda args: True) -> str:
        return "".join(r.stdout + r.stderr for args, r in self.transcript if keep(args))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
