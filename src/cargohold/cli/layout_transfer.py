"""Air-gapped transfer: ``cargohold export REF... --to DIR`` and ``cargohold import oci-layout:DIR --image T``.

Both run on the client, over the registry's ``/v2`` API with the CLI's credentials
(Basic, or Bearer for a bare robot token). Blobs are streamed between the socket
and files in 1 MiB chunks, never held whole in memory; every blob and manifest is
verified against its digest; manifests are copied byte-exact, so digests stay equal.
The on-disk format is ``transfer/layout.py``.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..transfer.layout import CHUNK, REF_NAME, Layout, LayoutError, split_digest
from .client import (
    ApiError,
    CliError,
    Credentials,
    ServerUnreachable,
    _NoRedirect,
    _reason,
    quote,
)

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
TIMEOUT = 300.0
MAX_MANIFEST = 4 * 1024 * 1024


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


def _path_name(name: str) -> str:
    return "/".join(quote(part) for part in name.split("/"))


class V2:
    """The few /v2 calls a transfer needs, on urllib."""

    def __init__(self, registry: str, credentials: Credentials) -> None:
        self.registry = registry
        self.credentials = credentials
        self._opener = urllib.request.build_opener(_NoRedirect())

    def _open(self, method: str, url: str, headers: dict[str, str] | None = None, data: Any = None, auth: bool = True) -> Any:
        hdrs = {"User-Agent": "cargohold-cli", **(headers or {})}
        if auth:
            hdrs["Authorization"] = self.credentials.authorization()
        req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
        try:
            return self._opener.open(req, timeout=TIMEOUT)
        except urllib.error.HTTPError as exc:
            if exc.code in (301, 302, 303, 307, 308) and method in ("GET", "HEAD") and exc.headers.get("Location"):
                exc.close()
                target = urllib.parse.urljoin(url, exc.headers["Location"])
                same = urllib.parse.urlsplit(target)[:2] == urllib.parse.urlsplit(self.registry)[:2]
                return self._open(method, target, headers, data, auth=same)
            return exc
        except urllib.error.URLError as exc:
            raise ServerUnreachable(self.registry, _reason(exc.reason)) from None
        except OSError as exc:
            raise ServerUnreachable(self.registry, _reason(exc)) from None

    @staticmethod
    def _fail(response: Any, what: str) -> ApiError:
        body = b""
        try:
            body = response.read(16 * 1024)
        except OSError:
            pass
        detail = f"HTTP {response.status if hasattr(response, 'status') else response.code}"
        try:
            errors = json.loads(body).get("errors")
            if errors:
                detail += f" {errors[0].get('code', '')}: {errors[0].get('message', '')}"
        except (ValueError, AttributeError):
            pass
        code = getattr(response, "code", None) or getattr(response, "status", 0)
        return ApiError(code, "Registry error", f"{what}: {detail}")

    def manifest(self, name: str, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest), verified."""
        url = f"{self.registry}/v2/{_path_name(name)}/manifests/{quote(reference)}"
        with self._open("GET", url, {"Accept": ", ".join(MANIFEST_TYPES)}) as response:
            if response.status != 200:
                raise self._fail(response, f"GET manifest {name}:{reference}")
            body = response.read(MAX_MANIFEST + 1)
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            header_digest = response.headers.get("Docker-Content-Digest")
        if len(body) > MAX_MANIFEST:
            raise CliError(f"manifest {name}:{reference} is larger than {MAX_MANIFEST} bytes")
        digest = reference if reference.startswith(("sha256:", "sha512:")) else (header_digest or "sha256:")
        alg, hexpart = split_digest(digest)
        if hashlib.new(alg, body).hexdigest() != hexpart:
            raise CliError(f"manifest {name}:{reference} does not match its digest {digest}")
        try:
            media_type = json.loads(body).get("mediaType") or media_type
        except (ValueError, AttributeError):
            raise CliError(f"manifest {name}:{reference} is not JSON") from None
        return body, media_type, digest

    def blob_chunks(self, name: str, digest: str) -> Iterator[bytes]:
        url = f"{self.registry}/v2/{_path_name(name)}/blobs/{quote(digest)}"
        with self._open("GET", url) as response:
            if response.status != 200:
                raise self._fail(response, f"GET blob {name}@{digest}")
            while chunk := response.read(CHUNK):
                yield chunk

    def referrers(self, name: str, digest: str) -> list[dict[str, Any]]:
        url = f"{self.registry}/v2/{_path_name(name)}/referrers/{quote(digest)}"
        with self._open("GET", url, {"Accept": INDEX_TYPES[0]}) as response:
            if response.status == 404:
                return []
            if response.status != 200:
                raise self._fail(response, f"GET referrers {name}@{digest}")
            body = response.read(MAX_MANIFEST)
        try:
            manifests = json.loads(body).get("manifests") or []
        except (ValueError, AttributeError):
            return []
        return [m for m in manifests if isinstance(m, dict) and "digest" in m]

    def has_blob(self, name: str, digest: str) -> bool:
        url = f"{self.registry}/v2/{_path_name(name)}/blobs/{quote(digest)}"
        with self._open("HEAD", url) as response:
            return response.status == 200

    def push_blob(self, name: str, digest: str, stream: BinaryIO, size: int) -> None:
        """Monolithic POST ?digest= with the file streamed as the body; falls back to POST + PUT."""
        base = f"{self.registry}/v2/{_path_name(name)}/blobs/uploads/"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        with self._open("POST", f"{base}?digest={quote(digest)}", headers, data=stream) as response:
            if response.status == 201:
                return
            if response.status != 202:
                raise self._fail(response, f"push blob {digest} to {name}")
            location = response.headers.get("Location")
        if not location:
            raise CliError(f"push blob {digest} to {name}: no upload Location")
        stream.seek(0)
        url = urllib.parse.urljoin(base, location)
        url += ("&" if "?" in url else "?") + "digest=" + quote(digest)
        with self._open("PUT", url, headers, data=stream) as response:
            if response.status != 201:
                raise self._fail(response, f"push blob {digest} to {name}")

    def push_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> str:
        url = f"{self.registry}/v2/{_path_name(name)}/manifests/{quote(reference)}"
        with self._open("PUT", url, {"Content-Type": media_type}, data=body) as response:
            if response.status != 201:
                raise self._fail(response, f"push manifest {name}:{reference}")
            return response.headers.get("Docker-Content-Digest", "")


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
    def __init__(self, v2: V2, layout: Layout, progress: Any = None) -> None:
        self.v2 = v2
        self.layout = layout
        self.progress = progress or (lambda message: None)
        self.done: set[str] = set()
        self.referrers: dict[str, dict[str, Any]] = {}
        self.blobs = 0
        self.bytes = 0

    def _blob(self, name: str, desc: dict[str, Any]) -> None:
        digest = desc["digest"]
        if digest in self.done or self.layout.has_blob(digest):
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


def export(v2: V2, refs: list[str], directory: Path, progress: Any = None) -> list[dict[str, Any]]:
    """Write every REF into the layout at ``directory``; the index.json entries written."""
    layout = Layout(directory)
    parsed = [parse_ref(ref) for ref in refs]
    layout.init()
    exporter = Exporter(v2, layout, progress)
    written = []
    for name, reference, tag in parsed:
        digest, media_type, size = exporter.manifest(name, reference)
        entry: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
        if tag:
            entry["annotations"] = {REF_NAME: tag}
        layout.add_to_index(entry)
        written.append(entry)
    # Referrers go into index.json too, without a ref.name, so that an import can find them.
    existing = {e["digest"] for e in layout.entries()}
    for entry in exporter.referrers.values():
        if entry["digest"] not in existing:
            layout.add_to_index(entry)
    return written


# ---- import ------------------------------------------------------------------------------------------


def parse_layout_source(source: str) -> tuple[Path, str | None]:
    """``oci-layout:DIR`` or ``oci-layout:DIR:REF`` (a DIR that exists wins over a split at the last colon)."""
    rest = source.removeprefix("oci-layout:")
    if Path(rest).is_dir() or ":" not in rest:
        return Path(rest), None
    directory, ref = rest.rsplit(":", 1)
    return Path(directory), ref or None


class Importer:
    def __init__(self, v2: V2, layout: Layout, name: str, progress: Any = None) -> None:
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
        path = self.layout.blob_path(digest)
        if not path.is_file():
            raise LayoutError(f"{self.layout.root}: blob {digest} is missing")
        alg, hexpart = split_digest(digest)
        hasher = hashlib.new(alg)
        with path.open("rb") as stream:  # verify first: the server would refuse it anyway, with a worse message
            while chunk := stream.read(CHUNK):
                hasher.update(chunk)
        if hasher.hexdigest() != hexpart:
            raise LayoutError(f"{self.layout.root}: blob {digest} does not match its digest")
        size = path.stat().st_size
        self.progress(f"blob {digest[:19]}")
        with path.open("rb") as stream:
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


def import_layout(v2: V2, directory: Path, ref: str | None, targets: list[str], progress: Any = None) -> dict[str, Any]:
    """Push the layout entry ``ref`` (or its only named one) to every target; a summary."""
    layout = Layout(directory)
    entries = layout.entries()
    if ref is None:
        named = [e for e in entries if (e.get("annotations") or {}).get(REF_NAME)]
        entry = named[0] if len(named) == 1 else layout.find(None)
    else:
        entry = layout.find(ref)
    default_tag = (entry.get("annotations") or {}).get(REF_NAME)
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
