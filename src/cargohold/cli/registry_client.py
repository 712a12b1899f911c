"""The CLI's one client for a registry's ``/v2`` API (OCI Distribution), on the standard library.

``client.ApiClient`` speaks the management API (JSON, problem+json); this
speaks the registry API the commands that move bytes or resolve digests need:
``export``/``import oci-layout:`` (manifests, blobs, referrers, pushes) and
``rewrite --pin`` (a tag's digest). One place, so that both send the same
headers, verify the same way and fail with the same exception classes
(``client.ApiError`` for an answer that is an error, ``client.ServerUnreachable``
for no answer).

Redirects: GET and HEAD follow them (a registry may send blob reads to a CDN
or object store), to http and https URLs only (a redirect to ``file:``,
``ftp:``, ``data:`` or any other scheme is an error), sending the
``Authorization`` header only when the redirect stays on the registry's own
scheme and host:port; other methods never follow.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any, BinaryIO

from ..transfer.layout import CHUNK, split_digest
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
TIMEOUT = 300.0  # a manifest on a cold cache waits for the upstream; a blob streams for as long as it takes
MAX_MANIFEST = 4 * 1024 * 1024
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_SCHEMES = ("http", "https")  # what a redirect may lead to (urllib's default opener also reads file:, ftp:, data:)


def path_name(name: str) -> str:
    """A repository name in a URL: each segment quoted, the slashes kept."""
    return "/".join(quote(part) for part in name.split("/"))


class RegistryClient:
    """The /v2 calls the CLI makes, on one registry, with the CLI's login (None: anonymous)."""

    def __init__(self, registry: str, credentials: Credentials | None, timeout: float = TIMEOUT) -> None:
        self.registry = registry
        self.credentials = credentials
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect())

    # ---- transport -------------------------------------------------------------------------------

    def _url(self, name: str, kind: str, reference: str = "") -> str:
        return f"{self.registry}/v2/{path_name(name)}/{kind}/" + (quote(reference) if reference else "")

    def open(self, method: str, url: str, headers: dict[str, str] | None = None, data: Any = None,
             auth: bool = True, hops: int = 0) -> Any:
        """The response whatever its status (an error status comes back as the ``HTTPError``, which is a response).

        Raises ``ServerUnreachable`` when there is no HTTP answer at all.
        """
        sent = {"User-Agent": "cargohold-cli", **(headers or {})}
        if auth and self.credentials is not None:
            sent["Authorization"] = self.credentials.authorization()
        request = urllib.request.Request(url, data=data, headers=sent, method=method)
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            location = exc.headers.get("Location")
            if exc.code in _REDIRECTS and method in ("GET", "HEAD") and location and hops < MAX_REDIRECTS:
                exc.close()
                target = urllib.parse.urljoin(url, location)
                scheme = urllib.parse.urlsplit(target).scheme.lower()
                if scheme not in _SCHEMES:
                    raise CliError(f"{method} {url}: the registry redirects to a {scheme or 'relative'}: URL; "
                                   "only http and https redirects are followed")
                same = urllib.parse.urlsplit(target)[:2] == urllib.parse.urlsplit(self.registry)[:2]
                return self.open(method, target, headers, data, auth=auth and same, hops=hops + 1)
            return exc
        except urllib.error.URLError as exc:
            raise ServerUnreachable(self.registry, _reason(exc.reason)) from None
        except OSError as exc:
            raise ServerUnreachable(self.registry, _reason(exc)) from None

    @staticmethod
    def _fail(response: Any, what: str) -> ApiError:
        """An ``ApiError`` for a non-success answer; the OCI error code and message when the body has them."""
        body = b""
        try:
            body = response.read(16 * 1024)
        except OSError:
            pass
        code = getattr(response, "code", None) or getattr(response, "status", 0)
        detail = f"HTTP {code}"
        try:
            errors = json.loads(body).get("errors")
            if errors:
                detail += f" {errors[0].get('code', '')}: {errors[0].get('message', '')}"
        except (ValueError, AttributeError):
            pass
        return ApiError(code, "Registry error", f"{what}: {detail}")

    # ---- reads -----------------------------------------------------------------------------------

    def manifest(self, name: str, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest, verified against its digest."""
        with self.open("GET", self._url(name, "manifests", reference), {"Accept": ", ".join(MANIFEST_TYPES)}) as response:
            if response.status != 200:
                raise self._fail(response, f"GET manifest {name}:{reference}")
            body = response.read(MAX_MANIFEST + 1)
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            header_digest = response.headers.get("Docker-Content-Digest")
        if len(body) > MAX_MANIFEST:
            raise CliError(f"manifest {name}:{reference} is larger than {MAX_MANIFEST} bytes")
        if reference.startswith(("sha256:", "sha512:")):
            digest = reference
        else:  # by tag: the registry's word, or (a registry that names none) the bytes' own sha256
            digest = header_digest or "sha256:" + hashlib.sha256(body).hexdigest()
        alg, hexpart = split_digest(digest)
        if hashlib.new(alg, body).hexdigest() != hexpart:
            raise CliError(f"manifest {name}:{reference} does not match its digest {digest}")
        try:
            media_type = json.loads(body).get("mediaType") or media_type
        except (ValueError, AttributeError):
            raise CliError(f"manifest {name}:{reference} is not JSON") from None
        return body, media_type, digest

    def manifest_digest(self, name: str, reference: str) -> str:
        """The digest ``reference`` (a tag) resolves to: a HEAD, and a verified GET only when the HEAD names none."""
        with self.open("HEAD", self._url(name, "manifests", reference), {"Accept": ", ".join(MANIFEST_TYPES)}) as response:
            if response.status != 200:
                raise self._fail(response, f"HEAD manifest {name}:{reference}")
            digest = response.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        with self.open("GET", self._url(name, "manifests", reference), {"Accept": ", ".join(MANIFEST_TYPES)}) as response:
            if response.status != 200:
                raise self._fail(response, f"GET manifest {name}:{reference}")
            body = response.read(MAX_MANIFEST + 1)
            digest = response.headers.get("Docker-Content-Digest")
        if len(body) > MAX_MANIFEST:
            raise CliError(f"manifest {name}:{reference} is larger than {MAX_MANIFEST} bytes")
        return digest or "sha256:" + hashlib.sha256(body).hexdigest()

    def blob_chunks(self, name: str, digest: str) -> Iterator[bytes]:
        """A blob's bytes in ``CHUNK``-sized pieces, streamed (the caller verifies the digest as it writes)."""
        with self.open("GET", self._url(name, "blobs", digest)) as response:
            if response.status != 200:
                raise self._fail(response, f"GET blob {name}@{digest}")
            while chunk := response.read(CHUNK):
                yield chunk

    def referrers(self, name: str, digest: str) -> list[dict[str, Any]]:
        """The referrers of a manifest (empty when the registry has no referrers API)."""
        with self.open("GET", self._url(name, "referrers", digest), {"Accept": INDEX_TYPES[0]}) as response:
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
        with self.open("HEAD", self._url(name, "blobs", digest)) as response:
            return response.status == 200

    # ---- writes ----------------------------------------------------------------------------------

    def push_blob(self, name: str, digest: str, stream: BinaryIO, size: int) -> None:
        """Monolithic POST ?digest= with the file streamed as the body; falls back to POST + PUT."""
        base = f"{self.registry}/v2/{path_name(name)}/blobs/uploads/"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        with self.open("POST", f"{base}?digest={quote(digest)}", headers, data=stream) as response:
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
        with self.open("PUT", url, headers, data=stream) as response:
            if response.status != 201:
                raise self._fail(response, f"push blob {digest} to {name}")

    def push_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT a manifest under a tag or its digest; the digest the registry answers with."""
        with self.open("PUT", self._url(name, "manifests", reference), {"Content-Type": media_type}, data=body) as response:
            if response.status != 201:
                raise self._fail(response, f"push manifest {name}:{reference}")
            return response.headers.get("Docker-Content-Digest", "")

    # ---- deletes ---------------------------------------------------------------------------------

    def delete_manifest(self, name: str, reference: str) -> None:
        """DELETE a tag (only the tag) or a digest (the manifest and every tag on it); ``ApiError`` if refused."""
        with self.open("DELETE", self._url(name, "manifests", reference)) as response:
            if response.status not in (200, 202, 204):
                raise self._fail(response, f"delete {name}{'@' if ':' in reference else ':'}{reference}")
