"""Pushing, pulling and deleting manifests, byte-exact.

A pushed manifest is validated (``oci/manifest.py``), its bytes made durable
in the blob store, and only then recorded with its references and tag in one
metadata transaction that also checks every required blob and child exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..oci import mediatypes as mt
from ..oci.digest import Digest
from ..oci.errors import DigestInvalid, ManifestTooLarge, ManifestUnknown
from ..oci.manifest import parse_manifest
from ..oci.names import is_valid_tag, validate_name, validate_tag
from ..store.metadata import NewManifest
from .manifest_cache import Manifest, ManifestCache
from .stores import Stores


@dataclass(frozen=True, slots=True)
class PushedManifest:
    digest: str
    subject: str | None


def is_digest_reference(reference: str) -> bool:
    return ":" in reference


class ManifestService:
    def __init__(self, stores: Stores) -> None:
        self._s = stores
        settings = stores.settings
        self._cache = ManifestCache(stores.generation, settings.manifest_cache_entries, settings.manifest_cache_bytes)

    async def get(self, repository: str, reference: str) -> Manifest:
        hit = self._cache.get(repository, reference)
        if hit is not None:
            return hit
        generation = self._cache.snapshot()
        validate_name(repository)
        by_digest = is_digest_reference(reference)
        if by_digest:
            reference = str(Digest.parse(reference))
        elif not is_valid_tag(reference):
            # A pull of a name that cannot be a tag is simply unknown (what clients and the conformance suite expect).
            raise ManifestUnknown(detail={"reference": reference[:140]})
        record = await self._s.metadata.resolve(repository, reference, by_digest)
        if record is None:
            raise ManifestUnknown(detail={"reference": reference})
        try:
            body = await self._s.blobs.read(Digest.parse(record.digest))
        except FileNotFoundError:
            raise ManifestUnknown("manifest content is missing from the blob store", detail={"reference": reference}) from None
        manifest = Manifest(record.digest, record.media_type, body)
        self._cache.put(repository, reference, manifest, generation)
        return manifest

    async def digest_of(self, repository: str, tag: str) -> str | None:
        """The digest ``tag`` names in ``repository``, from metadata alone; None when either does not exist.

        Reads no manifest bytes and leaves the manifest cache alone (for sync's "is this tag current?").
        """
        validate_name(repository)
        if not is_valid_tag(tag):
            return None
        record = await self._s.metadata.resolve(repository, tag, False)
        return record.digest if record else None

    async def put(
        self,
        repository: str,
        reference: str,
        body: bytes,
        content_type: str | None,
        extra_tags: Sequence[str] = (),
        *,
        lazy: bool = False,
    ) -> PushedManifest:
        """Store a manifest under ``reference`` (a tag or its digest) and ``extra_tags`` (``?tag=``), atomically.

        ``lazy`` is for manifests copied from an upstream by the cache: stored byte-exact like any
        other, but their blobs and children need not be present yet (they are fetched on demand).
        """
        validate_name(repository)
        tag_names = [validate_tag(t) for t in extra_tags]
        limit = self._s.settings.manifest_max_bytes
        if len(body) > limit:
            raise ManifestTooLarge(f"manifest is {len(body)} bytes; the limit is {limit}")
        if is_digest_reference(reference):
            wanted = Digest.parse(reference)
            digest = Digest.of(body, wanted.algorithm)
            if digest != wanted:
                raise DigestInvalid(f"manifest digest is {digest}, not {wanted}")
        else:
            tag_names.insert(0, validate_tag(reference))
            digest = Digest.of(body)
        parsed = parse_manifest(body, content_type)
        record = NewManifest(
            digest=str(digest),
            media_type=parsed.media_type,
            size=len(body),
            artifact_type=parsed.artifact_type,
            subject=parsed.subject.digest if parsed.subject else None,
            annotations=parsed.annotations,
            blobs=tuple(d.digest for d in parsed.blobs),
            required_blobs=tuple(d.digest for d in parsed.required_blobs),
            children=tuple(d.digest for d in parsed.manifests),
        )
        await self._s.blobs.write(digest, body)
        await self._s.metadata.put_manifest(repository, record, tag_names, lazy=lazy)
        return PushedManifest(str(digest), record.subject)

    async def delete(self, repository: str, reference: str) -> None:
        """By digest: the manifest and every tag on it. By tag: only that tag (distribution-spec v1.1)."""
        validate_name(repository)
        if is_digest_reference(reference):
            found = await self._s.metadata.delete_manifest(repository, str(Digest.parse(reference)))
        else:
            found = await self._s.metadata.delete_tag(repository, validate_tag(reference))
        if not found:
            raise ManifestUnknown(detail={"reference": reference})


def accepts(accept_header: str | None, media_type: str) -> bool:
    """Whether a client's Accept admits ``media_type``; no Accept, or one naming no manifest type, admits all."""
    if not accept_header:
        return True
    offered = {mt.bare(part) for part in accept_header.split(",")}
    if media_type in offered or "*/*" in offered or "application/*" in offered:
        return True
    return not (offered & mt.MANIFESTS)
