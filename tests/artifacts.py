"""Non-image OCI artifacts with their real media types, built on disk for the oras client to push.

- **Helm chart** (as ``helm push`` writes it): config ``application/vnd.cncf.helm.config.v1+json`` (the
  chart's ``Chart.yaml`` as JSON) and one layer, the packaged chart: a gzipped tar of ``<name>/Chart.yaml``,
  ``values.yaml`` and ``templates/``, exactly what ``helm package`` produces.
- **Open Policy Agent bundle** (as ``opa build``/``policy push`` write it): config
  ``application/vnd.openpolicyagent.config.v1+json``, a Rego policy layer and a JSON data layer.

Each build is salted, so every test gets digests no other test has pushed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
OPA_CONFIG = "application/vnd.openpolicyagent.config.v1+json"
OPA_POLICY = "application/vnd.openpolicyagent.policy.layer.v1+rego"
OPA_DATA = "application/vnd.openpolicyagent.data.layer.v1+json"


@dataclass(frozen=True)
class Artifact:
    """An artifact's files on disk: the config and the layers, each with its media type."""

    kind: str
    config: Path
    config_type: str
    layers: list[tuple[Path, str]]

    def oras_files(self) -> list[str]:
        """The ``PATH:MEDIATYPE`` arguments of an oras push."""
        return [f"{path}:{media_type}" for path, media_type in self.layers]

    def oras_config(self) -> str:
        return f"{self.config}:{self.config_type}"

    def layer_bytes(self) -> dict[str, bytes]:
        """File name → content of every layer (what an oras pull writes into its output directory)."""
        return {path.name: path.read_bytes() for path, _ in self.layers}


def _tar_gz(files: dict[str, bytes]) -> bytes:
    """A gzipped tar of ``files`` (path → content) with fixed owners and times, like ``helm package``'s."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def helm_chart(directory: Path, name: str = "demo", version: str = "1.0.0") -> Artifact:
    """A packaged chart ``<name>-<version>.tgz`` and its config, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    salt = uuid.uuid4().hex
    chart_yaml = (
        "apiVersion: v2\n"
        f"name: {name}\n"
        f"description: A chart for cargohold's tests ({salt})\n"
        "type: application\n"
        f"version: {version}\n"
        'appVersion: "1.16.0"\n'
    )
    values = "replicaCount: 1\nimage:\n  repository: nginx\n  tag: stable\n"
    template = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
        "data:\n  replicas: {{ .Values.replicaCount | quote }}\n"
    )
    chart = directory / f"{name}-{version}.tgz"
    chart.write_bytes(_tar_gz({
        f"{name}/Chart.yaml": chart_yaml.encode(),
        f"{name}/values.yaml": values.encode(),
        f"{name}/templates/configmap.yaml": template.encode(),
    }))
    config = directory / "config.json"
    config.write_bytes(json.dumps({
        "name": name, "version": version, "description": f"A chart for cargohold's tests ({salt})",
        "apiVersion": "v2", "appVersion": "1.16.0", "type": "application",
    }).encode())
    return Artifact("helm", config, HELM_CONFIG, [(chart, HELM_CHART)])


def opa_bundle(directory: Path) -> Artifact:
    """A policy bundle: a Rego policy, a data document and the bundle config, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    salt = uuid.uuid4().hex
    policy = directory / "policy.rego"
    policy.write_text(
        f"# {salt}\npackage httpapi.authz\n\nimport rego.v1\n\ndefault allow := false\n\n"
        'allow if {\n\tinput.method == "GET"\n\tinput.user in data.users\n}\n'
    )
    data = directory / "data.json"
    data.write_bytes(json.dumps({"users": ["alice", "bob"], "salt": salt}).encode())
    config = directory / "config.json"
    config.write_bytes(json.dumps({"revision": salt, "roots": ["httpapi"]}).encode())
    return Artifact("opa", config, OPA_CONFIG, [(policy, OPA_POLICY), (data, OPA_DATA)])


BUILDERS = {"helm": helm_chart, "opa": opa_bundle}


def build(kind: str, directory: Path) -> Artifact:
    """A fresh artifact of ``kind`` (``helm`` or ``opa``) in ``directory``."""
    return BUILDERS[kind](directory)


def legacy_helm_manifest(artifact: Artifact) -> bytes:
    """The manifest helm 3.8–3.12 (oras-go v1) pushed for ``artifact``: no ``mediaType`` field (image-spec
    1.0.1 had none), the media type only in the PUT's Content-Type; compact JSON, as Go marshals it."""
    def desc(path: Path, media_type: str) -> dict[str, object]:
        content = path.read_bytes()
        return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(content).hexdigest(), "size": len(content)}

    manifest = {"schemaVersion": 2, "config": desc(artifact.config, artifact.config_type),
                "layers": [desc(path, media_type) for path, media_type in artifact.layers]}
    return json.dumps(manifest, separators=(",", ":")).encode()
