"""The failure vocabulary every layer speaks.

``DomainError`` is the base of every failure a client may be told about. Each
class carries a stable, machine-readable ``code`` (for the OCI distribution-spec
errors below, the spec's own code); the HTTP status of each class is registered
once in the web layer (``web/codes.py``), so that no layer below it has to know
about HTTP. Layers define their own subclasses next to the code that raises
them (``auth/errors.py``, ``cache/admin.py``, ``transfer/importer.py``, …);
``tests/unit/test_error_codes.py`` fails when one has no registered status.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every failure a client can be told about: a stable ``code``, a message, an optional detail.

    ``detail`` is machine-readable context (the OCI error's ``detail`` member);
    the message is for people and may change.
    """

    code: str = "UNKNOWN"
    default_message: str = "unknown error"

    def __init__(self, message: str | None = None, detail: Any = None) -> None:
        self.message = message or self.default_message
        self.detail = detail
        super().__init__(self.message)


class NotFound(DomainError):
    """A management object (a sync rule, an import, a pin, …) that does not exist."""

    code = "NOT_FOUND"
    default_message = "not found"


class RegistryError(DomainError):
    """Base of the OCI distribution-spec errors: what a client of the registry API (/v2) can be told."""


class BlobUnknown(RegistryError):
    code = "BLOB_UNKNOWN"
    default_message = "blob unknown to registry"


class BlobUploadInvalid(RegistryError):
    code = "BLOB_UPLOAD_INVALID"
    default_message = "blob upload invalid"


class BlobUploadUnknown(RegistryError):
    code = "BLOB_UPLOAD_UNKNOWN"
    default_message = "blob upload unknown to registry"


class UploadRangeInvalid(BlobUploadInvalid):
    """A chunk that does not start where the upload currently ends (416)."""

    default_message = "requested range not satisfiable: chunk does not continue the upload"


class DigestInvalid(RegistryError):
    code = "DIGEST_INVALID"
    default_message = "provided digest did not match uploaded content"


class ManifestBlobUnknown(RegistryError):
    code = "MANIFEST_BLOB_UNKNOWN"
    default_message = "manifest references a manifest or blob unknown to registry"


class ManifestInvalid(RegistryError):
    code = "MANIFEST_INVALID"
    default_message = "manifest invalid"


class ManifestUnknown(RegistryError):
    code = "MANIFEST_UNKNOWN"
    default_message = "manifest unknown to registry"


class NameInvalid(RegistryError):
    code = "NAME_INVALID"
    default_message = "invalid repository name"


class NameUnknown(RegistryError):
    code = "NAME_UNKNOWN"
    default_message = "repository name not known to registry"


class SizeInvalid(RegistryError):
    code = "SIZE_INVALID"
    default_message = "provided length did not match content length"


class ManifestTooLarge(SizeInvalid):
    """A manifest beyond the configured size limit (413)."""

    default_message = "manifest exceeds the size limit"


class TagInvalid(RegistryError):
    code = "TAG_INVALID"
    default_message = "invalid tag"


class Unauthorized(RegistryError):
    code = "UNAUTHORIZED"
    default_message = "authentication required"


class Denied(RegistryError):
    code = "DENIED"
    default_message = "requested access to the resource is denied"


class Unsupported(RegistryError):
    code = "UNSUPPORTED"
    default_message = "the operation is unsupported"


class RangeNotSatisfiable(RegistryError):
    """A blob read with a Range the blob cannot satisfy (416)."""

    code = "BLOB_UNKNOWN"
    default_message = "requested range not satisfiable"

    def __init__(self, size: int, message: str | None = None) -> None:
        super().__init__(message)
        self.size = size


class PaginationNumberInvalid(RegistryError):
    code = "PAGINATION_NUMBER_INVALID"
    default_message = "invalid number of results requested"


class TooManyRequests(RegistryError):
    code = "TOOMANYREQUESTS"
    default_message = "too many requests"


class BodyStalled(RegistryError):
    """The client stopped sending a request body half-way and stayed silent past the idle timeout (408)."""

    code = "REQUEST_TIMEOUT"
    default_message = "the request body stopped arriving"


class UploadLimitReached(TooManyRequests):
    """Starting one more upload session would pass a configured cap (per repository or per identity) (429)."""

    default_message = "too many open upload sessions"


class StorageFailure(RegistryError):
    """The disk or database failed under a valid request (500): not the client's fault."""

    code = "UNKNOWN"
    default_message = "storage failure"


class UpstreamRateLimited(TooManyRequests):
    """The upstream answered 429 and nothing cached can stand in; ``retry_after`` is passed on."""

    def __init__(self, message: str | None = None, detail: Any = None, retry_after: int | None = None) -> None:
        super().__init__(message, detail)
        self.retry_after = retry_after


class UpstreamFailed(RegistryError):
    """A cache namespace's upstream is unreachable, failing or refusing us, and the content is not cached (502)."""

    code = "UPSTREAM_UNAVAILABLE"
    default_message = "the upstream registry could not be reached and the content is not cached"
