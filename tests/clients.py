"""Real registry clients for the integration tests: skopeo (hermetic config) and the oras Python client.

Every skopeo invocation gets its own policy, registries.conf and auth file, so
nothing on the machine (``/etc/containers``, ``~/.docker``) changes what a test
does. The servers are plain HTTP on loopback: each ``docker://`` side needs
``--tls-verify=false`` (or ``--src-``/``--dest-tls-verify=false``), which the
callers pass explicitly so the command lines in failure messages are complete.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oras.provider import Registry as OrasClient

from images import require_tool


@dataclass
class Skopeo:
    home: Path

    def __post_init__(self) -> None:
        self.binary = require_tool("skopeo")
        self.home.mkdir(parents=True, exist_ok=True)
        self.policy = self.home / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.registries_conf = self.home / "registries.conf"
        self.registries_conf.write_text("unqualified-search-registries = []\n")
        self.authfile = self.home / "auth.json"
        self.authfile.write_text(json.dumps({"auths": {}}))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["REGISTRY_AUTH_FILE"] = str(self.authfile)
        env["HOME"] = str(self.home)
        env.pop("DOCKER_CONFIG", None)
        env.pop("CONTAINERS_REGISTRIES_CONF", None)
        return env

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
        """Run ``skopeo <args>``; stdout is bytes (``inspect --raw`` must be compared byte for byte)."""
        argv = [self.binary, "--policy", str(self.policy), "--registries-conf", str(self.registries_conf), *args]
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, env=self.env())
        if check and proc.returncode != 0:
            raise AssertionError(
                f"skopeo failed ({proc.returncode}): {' '.join(argv)}\n"
                f"stdout:\n{proc.stdout.decode(errors='replace')}\nstderr:\n{proc.stderr.decode(errors='replace')}"
            )
        return proc

    def inspect_raw(self, ref: str) -> bytes:
        return self("inspect", "--tls-verify=false", "--raw", ref).stdout

    def inspect(self, ref: str, *extra: str) -> dict[str, Any]:
        return json.loads(self(*extra, "inspect", "--tls-verify=false", ref).stdout)

    def list_tags(self, ref: str) -> dict[str, Any]:
        return json.loads(self("list-tags", "--tls-verify=false", ref).stdout)


class ArtifactOrasClient(OrasClient):
    """The oras client, plus ``artifactType`` on the manifest it pushes (its ``push`` has no parameter for it).

    Everything else — blob uploads, the config, the ``subject``, the manifest
    PUT and every pull — is the oras client's own code.
    """

    def __init__(self, host: str) -> None:
        super().__init__(hostname=host, insecure=True, tls_verify=False)
        self._artifact_type: str | None = None

    def upload_manifest(self, manifest: dict[str, Any], container: Any) -> Any:
        if self._artifact_type is not None:
            manifest = {**manifest, "artifactType": self._artifact_type}
        return super().upload_manifest(manifest, container)

    def push_artifact(self, target: str, *, artifact_type: str | None, **kwargs: Any) -> Any:
        self._artifact_type = artifact_type
        try:
            return self.push(target, disable_path_validation=True, quiet=True, **kwargs)
        finally:
            self._artifact_type = None
