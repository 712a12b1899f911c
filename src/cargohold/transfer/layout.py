"""OCI image layout on disk (image-spec ``image-layout.md``): pure file handling, no network.

A layout is a directory with an ``oci-layout`` file (``{"imageLayoutVersion": "1.0.0"}``),
an ``index.json`` (an OCI image index whose manifests carry the
``org.opencontainers.image.ref.name`` annotation) and ``blobs/<alg>/<hex>`` holding
every manifest and blob by digest. Every write goes to a temporary file in the
same directory and is renamed into place, so a crash never leaves a half blob
under its final name; blobs are verified against their digest before the rename.

An export is built in a ``StagedLayout`` (a hidden sibling directory) and published
only once every blob is in: a new layout by renaming the whole directory into place,
an existing one by moving the new blobs in and then replacing ``index.json`` (the
commit point: until then readers see the old layout, after it the new one). A failed
export therefore never leaves a half-made layout behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

LAYOUT_VERSION = "1.0.0"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 1024 * 1024

_DIGEST = re.compile(r"^(sha256|sha512):([a-f0-9]{64}|[a-f0-9]{128})$")


class LayoutError(Exception):
    """The directory is not a readable OCI layout, or a blob does not match its digest."""


def split_digest(digest: str) -> tuple[str, str]:
    match = _DIGEST.match(digest)
    if not match or len(match.group(2)) != hashlib.new(match.group(1)).digest_size * 2:
        raise LayoutError(f"unsupported or malformed digest {digest[:150]!r}")
    return match.group(1), match.group(2)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Layout:
    """One layout directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # ---- paths -------------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        alg, hexpart = split_digest(digest)
        return self.root / "blobs" / alg / hexpart

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    # ---- writing -----------------------------------------------------------------------------------

    def init(self) -> None:
        """Create the directory and its ``oci-layout`` file (an existing layout is kept)."""
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / "oci-layout"
        if marker.exists():
            self._check_marker()
        else:
            _atomic_write(marker, json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode())

    def write_blob_bytes(self, digest: str, data: bytes) -> None:
        alg, hexpart = split_digest(digest)
        if hashlib.new(alg, data).hexdigest() != hexpart:
            raise LayoutError(f"content does not match {digest}")
        if not self.has_blob(digest):
            _atomic_write(self.blob_path(digest), data)

    def write_blob_stream(self, digest: str, chunks: Iterable[bytes], size: int | None = None) -> int:
        """Stream ``chunks`` into the blob file, verifying digest (and size) before the rename; bytes written."""
        alg, hexpart = split_digest(digest)
        path = self.blob_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.new(alg)
        written = 0
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    hasher.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if hasher.hexdigest() != hexpart:
                raise LayoutError(f"downloaded content does not match {digest}")
            if size is not None and written != size:
                raise LayoutError(f"{digest}: {written} bytes, the descriptor says {size}")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return written

    def write_index(self, manifests: list[dict[str, Any]]) -> None:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        _atomic_write(self.root / "index.json", json.dumps(index, indent=2).encode())

    def add_to_index(self, descriptor: dict[str, Any]) -> None:
        """Add (or replace, for the same ref.name) one top-level entry of ``index.json``."""
        entries = self.entries() if (self.root / "index.json").exists() else []
        self.write_index(merge_entry(entries, descriptor))

    # ---- reading -----------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the directory already holds a layout; a missing or empty directory does not.

        Anything else there (files, but no ``oci-layout``) is refused rather than written into:
        an export must not scatter blobs over a directory that is something else.
        """
        if (self.root / "oci-layout").exists():
            self._check_marker()
            return True
        if not self.root.exists():
            return False
        if not self.root.is_dir() or any(self.root.iterdir()):
            raise LayoutError(f"{self.root} exists and is not an OCI layout")
        return False

    def _check_marker(self) -> None:
        try:
            marker = json.loads((self.root / "oci-layout").read_bytes())
        except (OSError, ValueError) as exc:
            raise LayoutError(f"{self.root} is not an OCI layout (oci-layout: {exc})") from None
        if not isinstance(marker, dict) or marker.get("imageLayoutVersion") != LAYOUT_VERSION:
            raise LayoutError(f"{self.root}: unsupported imageLayoutVersion {marker!r}")

    def entries(self) -> list[dict[str, Any]]:
        """The descriptors of ``index.json``."""
        self._check_marker()
        try:
            index = json.loads((self.root / "index.json").read_bytes())
        except (OSError, ValueError) as exc:
            raise LayoutError(f"{self.root}: cannot read index.json ({exc})") from None
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list) or not all(isinstance(m, dict) and "digest" in m for m in manifests):
            raise LayoutError(f"{self.root}: index.json has no valid manifests list")
        return manifests

    def find(self, ref_name: str | None) -> dict[str, Any]:
        """The entry whose ref.name (or digest) is ``ref_name``; with None, the only entry.

        A bare tag also finds an entry named ``REPOSITORY:TAG`` when only one image has that
        tag, so ``oci-layout:DIR:1.0`` keeps working for a layout ``cargohold export`` wrote.
        """
        entries = self.entries()
        if ref_name is None:
            if len(entries) != 1:
                raise LayoutError(f"the layout holds {len(entries)} entries ({_names(entries)}); name one with oci-layout:DIR:REF")
            return entries[0]
        for entry in entries:
            if entry_name(entry) == ref_name or entry.get("digest") == ref_name:
                return entry
        tagged = [e for e in entries if entry_name(e) is not None and tag_of(str(entry_name(e))) == ref_name]
        if len({e["digest"] for e in tagged}) == 1:
            return tagged[0]
        if tagged:
            raise LayoutError(f"{ref_name!r} is ambiguous in {self.root}: {_names(tagged)}")
        raise LayoutError(f"no entry named {ref_name!r} in {self.root}/index.json")

    def read_blob(self, digest: str) -> bytes:
        """A whole (small: manifest) blob, verified."""
        alg, hexpart = split_digest(digest)
        try:
            data = self.blob_path(digest).read_bytes()
        except OSError:
            raise LayoutError(f"{self.root}: blob {digest} is missing") from None
        if hashlib.new(alg, data).hexdigest() != hexpart:
            raise LayoutError(f"{self.root}: blob {digest} does not match its digest")
        return data

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return self.blob_path(digest).open("rb")
        except OSError:
            raise LayoutError(f"{self.root}: blob {digest} is missing") from None


# ---- index entries ------------------------------------------------------------------------------------


def entry_name(entry: dict[str, Any]) -> str | None:
    name = (entry.get("annotations") or {}).get(REF_NAME)
    return name if isinstance(name, str) else None


def _names(entries: list[dict[str, Any]]) -> str:
    return ", ".join(entry_name(e) or str(e["digest"]) for e in entries)


def tag_of(ref_name: str) -> str | None:
    """The tag a ref.name carries: ``team/a:1.0`` → ``1.0``; a bare ``1.0`` (as skopeo writes) is a tag too.

    ``team/a`` and ``team/a@sha256:…`` carry none.
    """
    if "@" in ref_name:
        return None
    last = ref_name.rsplit("/", 1)[-1]
    if ":" in last:
        return last.rsplit(":", 1)[1] or None
    return None if "/" in ref_name else ref_name


def merge_entry(entries: list[dict[str, Any]], descriptor: dict[str, Any]) -> list[dict[str, Any]]:
    """``entries`` with ``descriptor`` added: it replaces the entry of the same ref.name, or (unnamed) of the same digest."""
    name = entry_name(descriptor)
    if name is not None:
        kept = [e for e in entries if entry_name(e) != name]
    else:
        kept = [e for e in entries if e.get("digest") != descriptor["digest"] or entry_name(e)]
    return [*kept, descriptor]


# ---- staged writes ------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedLayout:
    """A layout for ``target`` built in a hidden sibling directory, published by ``commit`` or dropped by ``abort``.

    The sibling is on the same filesystem, so publishing is renames only: no blob is
    copied twice. Blobs the existing layout already holds are not staged again.
    """

    def __init__(self, target: Path | str) -> None:
        self.target = Layout(target)
        self.existing: list[dict[str, Any]] | None = self.target.entries() if self.target.exists() else None
        parent = self.target.root.absolute().parent
        parent.mkdir(parents=True, exist_ok=True)
        self.stage = Layout(tempfile.mkdtemp(dir=parent, prefix=f".{self.target.root.name}.export-"))
        self.stage.init()

    def has_blob(self, digest: str) -> bool:
        return self.stage.has_blob(digest) or (self.existing is not None and self.target.has_blob(digest))

    def entries(self) -> list[dict[str, Any]]:
        """The entries the target's ``index.json`` has before this export."""
        return list(self.existing or [])

    def commit(self, entries: list[dict[str, Any]]) -> None:
        """Publish the staged blobs with ``entries`` as the index; the staging directory is gone afterwards."""
        self.stage.write_index(entries)
        if self.existing is None:
            try:
                os.rename(self.stage.root, self.target.root)  # replaces an empty directory, atomically
            except OSError as exc:
                self.abort()
                raise LayoutError(f"cannot create {self.target.root}: {exc.strerror}") from None
            _fsync_dir(self.target.root.absolute().parent)
            return
        for staged in sorted((self.stage.root / "blobs").glob("*/*")):
            final = self.target.root / "blobs" / staged.parent.name / staged.name
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
        for directory in {p for p in (self.target.root / "blobs").glob("*") if p.is_dir()}:
            _fsync_dir(directory)
        _atomic_write(self.target.root / "index.json", (self.stage.root / "index.json").read_bytes())
        self.abort()

    def abort(self) -> None:
        shutil.rmtree(self.stage.root, ignore_errors=True)
