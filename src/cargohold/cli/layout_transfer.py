"""Air-gapped transfer: ``cargohold export REF... --to DIR`` and ``cargohold import oci-layout:DIR --image T``.

Both run on the client, over the registry's ``/v2`` API with the CLI's credentials
(Basic, or Bearer for a bare robot token). Blobs are streamed between the socket
and files in 1 MiB chunks, never held whole in memory; every blob and manifest is
verified against its digest; manifests are copied byte-exact, so digests stay equal.
The on-disk format is ``transfer/layout.py``; the /v2 calls are ``registry_client.RegistryClient``.

Each exported image's index.json entry is named (``org.opencontainers.image.ref.name``)
by its full reference, ``team/a:1.0`` (or ``team/a@sha256:…``), not by the bare tag:
``team/a:1.0`` and ``team/b:1.0`` then both fit in one layout, and skopeo and umoci
address each one as ``oci:DIR:team/a:1.0`` (the image-spec's ref grammar allows
``/`` and ``:``; both tools split ``DIR`` off at the first colon).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..transfer.layout import (
    CHUNK,
    REF_NAME,
    Layout,
    LayoutError,
    StagedLayout,
    entry_name,
    merge_entry,
    split_digest,
    tag_of,
)
from .client import CliError
from .registry_client import MANIFEST_TYPES, RegistryClient


def parse_ref(ref: str) -> tuple[str, str, str | None]:
    """``repo:tag`` / ``repo@digest`` / ``repo:tag@digest`` → (repo, reference to fetch, tag or None)."""
    if "@" in ref:
        name, digest = ref.split("@", 1)
        split_digest(digest)
        tag = None
        if ":" in name.rsplit("/", 1)[-1]:
            name, tag = name.rsplit(":", 1)
        return name, digest, tag
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        raise CliError(f"{ref!r}: give REPOSITORY:TAG or REPOSITORY@DIGEST")
    name, tag = ref.rsplit(":", 1)
    if not name or not tag:
        raise CliError(f"{ref!r}: give REPOSITORY:TAG or REPOSITORY@DIGEST")
    return name, tag, tag


def _children(body: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(child manifests, blobs) a manifest refers to."""
    doc = json.loads(body)
    if not isinstance(doc, dict):
        raise CliError("a manifest is not a JSON object")
    manifests = [m for m in doc.get("manifests") or [] if isinstance(m, dict) and "digest" in m]
    blobs = [b for b in [doc.get("config"), *(doc.get("layers") or []), *(doc.get("blobs") or [])]
             if isinstance(b, dict) and "digest" in b]
    return manifests, blobs


def _subject(body: bytes) -> str | None:
    try:
        subject = json.loads(body).get("subject")
    except (ValueError, AttributeError):
        return None
    return subject.get("digest") if isinstance(subject, dict) else None


# ---- export ------------------------------------------------------------------------------------------


class Exporter:
    """Copies manifests and blobs into ``layout``, skipping blobs ``present`` says are there already."""

    def __init__(self, v2: RegistryClient, layout: Layout, progress: Any = None, present: Any = None) -> None:
        self.v2 = v2
        self.layout = layout
        self.present = present or layout.has_blob
        self.progress = progress or (lambda message: None)
        self.done: set[str] = set()
        self.referrers: dict[str, dict[str, Any]] = {}
        self.blobs = 0
        self.bytes = 0

    def _blob(self, name: str, desc: dict[str, Any]) -> None:
        digest = desc["digest"]
        if digest in self.done or self.present(digest):
            self.done.add(digest)
            return
        self.progress(f"blob {digest[:19]}")
        size = desc.get("size") if isinstance(desc.get("size"), int) else None
        self.bytes += self.layout.write_blob_stream(digest, self.v2.blob_chunks(name, digest), size)
        self.blobs += 1
        self.done.add(digest)

    def manifest(self, name: str, reference: str) -> tuple[str, str, int]:
        """Copy one manifest and everything under it (and its referrers); (digest, media type, size)."""
        body, media_type, digest = self.v2.manifest(name, reference)
        if digest in self.done:
            return digest, media_type, len(body)
        self.done.add(digest)
        manifests, blobs = _children(body)
        for blob in blobs:
            self._blob(name, blob)
        for child in manifests:
            self.manifest(name, child["digest"])
        self.layout.write_blob_bytes(digest, body)
        for ref in self.v2.referrers(name, digest):
            if ref["digest"] not in self.referrers:
                r_digest, r_type, r_size = self.manifest(name, ref["digest"])
                entry = {"mediaType": r_type, "digest": r_digest, "size": r_size}
                if ref.get("artifactType"):
                    entry["artifactType"] = ref["artifactType"]
                self.referrers[r_digest] = entry
        return digest, media_type, len(body)


def export(v2: RegistryClient, refs: list[str], directory: Path, progress: Any = None) -> list[dict[str, Any]]:
    """Write every REF into the layout at ``directory`` (created, or added to); the index.json entries written.

    All or nothing: everything is staged next to ``directory`` and published once the last
    blob is verified, so a missing tag or a corrupt blob leaves ``directory`` as it was.
    """
    parsed = [parse_ref(ref) for ref in refs]
    staged = StagedLayout(directory)
    try:
        exporter = Exporter(v2, staged.stage, progress, staged.has_blob)
        entries = staged.entries()
        written = []
        for name, reference, tag in parsed:
            digest, media_type, size = exporter.manifest(name, reference)
            entry: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size,
                                     "annotations": {REF_NAME: f"{name}:{tag}" if tag else f"{name}@{digest}"}}
            entries = merge_entry(entries, entry)
            written.append(entry)
        # Referrers go into index.json too, without a ref.name, so that an import can find them.
        for referrer in exporter.referrers.values():
            if referrer["digest"] not in {e["digest"] for e in entries}:
                entries = merge_entry(entries, referrer)
        staged.commit(entries)
    except BaseException:
        staged.abort()
        raise
    return written


# ---- import ------------------------------------------------------------------------------------------


def parse_layout_source(source: str) -> tuple[Path, str | None]:
    """``oci-layout:DIR`` or ``oci-layout:DIR:REF``; REF may hold colons (``team/a:1.0``).

    The shortest prefix that is an existing directory is DIR; failing that, DIR ends at the
    first colon, as skopeo splits ``oci:DIR:REF``.
    """
    rest = source.removeprefix("oci-layout:")
    if Path(rest).is_dir() or ":" not in rest:
        return Path(rest), None
    colons = [i for i, char in enumerate(rest) if char == ":"]
    cut = next((i for i in colons if Path(rest[:i]).is_dir()), colons[0])
    return Path(rest[:cut]), rest[cut + 1:] or None


class Importer:
    def __init__(self, v2: RegistryClient, layout: Layout, name: str, progress: Any = None) -> None:
        self.v2 = v2
        self.layout = layout
        self.name = name
        self.progress = progress or (lambda message: None)
        self.pushed: set[str] = set()
        self.blobs = 0
        self.bytes = 0

    def _blob(self, desc: dict[str, Any]) -> None:
        digest = desc["digest"]
        if digest in self.pushed:
            return
        self.pushed.add(digest)
        if self.v2.has_blob(self.name, digest):
            return
        alg, hexpart = split_digest(digest)
        hasher = hashlib.new(alg)
        size = 0
        with self.layout.open_blob(digest) as stream:  # verify first: the server would refuse it anyway, worse worded
            while chunk := stream.read(CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        if hasher.hexdigest() != hexpart:
            raise LayoutError(f"{self.layout.root}: blob {digest} does not match its digest")
        self.progress(f"blob {digest[:19]}")
        with self.layout.open_blob(digest) as stream:
            self.v2.push_blob(self.name, digest, stream, size)
        self.blobs += 1
        self.bytes += size

    def manifest(self, desc: dict[str, Any]) -> tuple[bytes, str]:
        """Push one manifest (children first) by digest; its bytes and media type."""
        digest = desc["digest"]
        body = self.layout.read_blob(digest)
        try:
            media_type = json.loads(body).get("mediaType") or desc.get("mediaType") or MANIFEST_TYPES[0]
        except (ValueError, AttributeError):
            raise LayoutError(f"{self.layout.root}: manifest {digest} is not JSON") from None
        if digest in self.pushed:
            return body, media_type
        manifests, blobs = _children(body)
        for blob in blobs:
            self._blob(blob)
        for child in manifests:
            self.manifest(child)
        self.v2.push_manifest(self.name, digest, body, media_type)
        self.pushed.add(digest)
        return body, media_type

    def referrers(self) -> int:
        """Push the layout's other entries whose subject was pushed (until none is left); how many."""
        count = 0
        changed = True
        while changed:
            changed = False
            for entry in self.layout.entries():
                if entry["digest"] in self.pushed or not self.layout.has_blob(entry["digest"]):
                    continue
                subject = _subject(self.layout.read_blob(entry["digest"]))
                if subject and subject in self.pushed:
                    self.manifest(entry)
                    count += 1
                    changed = True
        return count


def import_layout(v2: RegistryClient, directory: Path, ref: str | None, targets: list[str], progress: Any = None) -> dict[str, Any]:
    """Push the layout entry ``ref`` (or its only named one) to every target; a summary."""
    layout = Layout(directory)
    entries = layout.entries()
    if ref is None:
        named = [e for e in entries if entry_name(e)]
        entry = named[0] if len({e["digest"] for e in named}) == 1 else layout.find(None)
        tags = [tag_of(str(entry_name(e))) for e in named if e["digest"] == entry["digest"]]
        default_tag = next((t for t in tags if t), None)
    else:
        entry = layout.find(ref)
        default_tag = tag_of(entry_name(entry) or "")
    summary: dict[str, Any] = {"source": str(directory), "digest": entry["digest"], "targets": [], "blobs": 0, "bytes": 0, "referrers": 0}
    for target in targets:
        if "@" in target:
            raise CliError(f"--image {target!r}: give REPOSITORY or REPOSITORY:TAG")
        last = target.rsplit("/", 1)[-1]
        name, tag = (target.rsplit(":", 1) if ":" in last else (target, default_tag))
        if not tag:
            raise CliError(f"--image {target!r}: the layout entry has no tag name; give REPOSITORY:TAG")
        importer = Importer(v2, layout, name, progress)
        body, media_type = importer.manifest(entry)
        summary["referrers"] += importer.referrers()
        v2.push_manifest(name, tag, body, media_type)  # the tag last, once everything under it is in
        summary["targets"].append(f"{name}:{tag}")
        summary["blobs"] += importer.blobs
        summary["bytes"] += importer.bytes
    return summary
