"""Manifest validation: what a manifest references, and whether it is well formed.

The registry never rewrites a manifest; this module only reads the bytes to
learn the media type, the blobs and child manifests that must exist, the
``subject`` for the referrers API and the ``artifactType``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from . import mediatypes as mt
from .digest import Digest
from .errors import DigestInvalid, ManifestInvalid

_MEDIA_TYPE = re.compile(r"[\x21-\x7e]{1,255}")  # RFC 6838: printable ASCII, type and subtype 127 each at most


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    urls: tuple[str, ...] = ()

    @property
    def is_non_distributable(self) -> bool:
        """Foreign layers need not be in the registry (image-spec, distribution-spec)."""
        return self.media_type in mt.NON_DISTRIBUTABLE_LAYERS or bool(self.urls)


@dataclass(frozen=True, slots=True)
class ParsedManifest:
    media_type: str
    artifact_type: str | None
    subject: Descriptor | None
    blobs: tuple[Descriptor, ...] = field(default=())
    manifests: tuple[Descriptor, ...] = field(default=())
    annotations: dict[str, str] | None = None

    @property
    def required_blobs(self) -> tuple[Descriptor, ...]:
        return tuple(d for d in self.blobs if not d.is_non_distributable)


def parse_manifest(raw: bytes, content_type: str | None) -> ParsedManifest:
    """Validate ``raw`` as a manifest sent with ``content_type``; raise ``ManifestInvalid`` if it is not one."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestInvalid(f"manifest is not valid JSON: {exc}") from None
    except RecursionError:
        raise ManifestInvalid("manifest JSON is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest must be a JSON object")
    declared = doc.get("mediaType")
    header = mt.bare(content_type)
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalid("mediaType must be a string")
    if declared in mt.SCHEMA1 or header in mt.SCHEMA1 or doc.get("schemaVersion") == 1:
        raise ManifestInvalid("Docker schema 1 manifests are not supported; push schema 2 or OCI")
    if doc.get("schemaVersion") != 2:
        raise ManifestInvalid("schemaVersion must be 2")
    media_type = _media_type(doc, declared, header)
    subject = _descriptor(doc["subject"], "subject") if doc.get("subject") is not None else None
    annotations = _annotations(doc.get("annotations"), "annotations")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid("artifactType must be a string")
    if media_type in mt.INDEXES:
        children = _descriptor_list(doc.get("manifests"), "manifests", required=True)
        _check_artifact_type(artifact_type)
        return ParsedManifest(media_type, artifact_type, subject, (), children, annotations)
    config = _descriptor(doc.get("config"), "config")
    layers = _descriptor_list(doc.get("layers"), "layers", required=media_type == mt.DOCKER_MANIFEST)
    if not artifact_type and media_type == mt.OCI_MANIFEST:
        # Referrers API: with artifactType empty or missing, a manifest's type is its config media type.
        artifact_type = config.media_type
    _check_artifact_type(artifact_type)
    return ParsedManifest(media_type, artifact_type, subject, (config, *layers), (), annotations)


def _check_artifact_type(artifact_type: str | None) -> None:
    """The artifact type is stored and filtered on (referrers): it must be what RFC 6838 allows a media type
    to be, printable ASCII of at most 255 characters; a NUL or an overlong one was a 500 on PostgreSQL."""
    if artifact_type and not _MEDIA_TYPE.fullmatch(artifact_type):
        raise ManifestInvalid(f"artifactType (or the config's mediaType) {artifact_type[:100]!r} is not a media type")


def _media_type(doc: dict[str, Any], declared: str | None, header: str) -> str:
    if declared is not None:
        if declared not in mt.MANIFESTS:
            raise ManifestInvalid(f"unsupported manifest media type: {declared[:200]!r}")
        if header in mt.MANIFESTS and header != declared:
            raise ManifestInvalid(f"Content-Type {header!r} does not match the manifest's mediaType {declared!r}")
        return declared
    if header in mt.MANIFESTS:
        # umoci and other OCI writers omit mediaType; the spec lets Content-Type decide.
        if header in mt.INDEXES and "manifests" not in doc:
            raise ManifestInvalid("an index must have a manifests list")
        if header in mt.IMAGE_MANIFESTS and "config" not in doc:
            raise ManifestInvalid("an image manifest must have a config")
        return header
    if "manifests" in doc:
        return mt.OCI_INDEX
    if "config" in doc:
        return mt.OCI_MANIFEST
    raise ManifestInvalid("cannot tell the manifest's media type: no mediaType field and no manifest Content-Type")


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{where}: a descriptor object is required")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(f"{where}: mediaType is required")
    if not isinstance(digest, str):
        raise ManifestInvalid(f"{where}: digest is required")
    try:
        Digest.parse(digest)
    except DigestInvalid as exc:
        raise ManifestInvalid(f"{where}: {exc.message}") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where}: size must be a non-negative integer")
    artifact_type = value.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid(f"{where}: artifactType must be a string")
    urls = value.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ManifestInvalid(f"{where}: urls must be a list of strings")
    return Descriptor(media_type, digest, size, artifact_type, _annotations(value.get("annotations"), where), tuple(urls))


def _descriptor_list(value: Any, where: str, *, required: bool) -> tuple[Descriptor, ...]:
    if value is None:
        if required:
            raise ManifestInvalid(f"{where} is required")
        return ()
    if not isinstance(value, list):
        raise ManifestInvalid(f"{where} must be a list")
    return tuple(_descriptor(item, f"{where}[{i}]") for i, item in enumerate(value))


def _annotations(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ManifestInvalid(f"{where}: annotations must map strings to strings")
    return value
