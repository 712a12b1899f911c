"""The one registry of error classes: the HTTP status of every ``DomainError`` (like Distribution's ``errcode``).

Each class carries its stable code (``cls.code``, defined next to the code
that raises it); this table adds the one thing only the web layer knows, the
HTTP status. ``web/errors.py`` renders an error from these two facts, once for
``/v2`` (OCI error JSON) and once for everything else (problem+json); the token
service maps the same status to its OAuth2 error.

A class must be registered here if it introduces a code of its own; a subclass
that keeps its parent's code (``InvalidToken`` is an ``UNAUTHORIZED``) keeps its
parent's status unless registered too (``UploadRangeInvalid`` is a
``BLOB_UPLOAD_INVALID`` answered with 416). ``tests/unit/test_error_codes.py``
walks every module and fails when a class's code has no status, and the README's
"API errors" table lists the codes a client can see.

This module also holds the few errors the web layer raises itself while
parsing a request (bad JSON, a failed validation, …): they are failures of the
request's form, not of any service.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from ..auth.errors import InvalidName
from ..auth.scopes import InvalidRule as InvalidScopeRule
from ..auth.secrets import WeakPassword
from ..cache.admin import CacheNamespaceRefused, CredentialSetMismatch, InvalidCredentialSet, TargetIsCached, UpstreamNotAllowed
from ..cache.rules import InvalidRule as InvalidCacheRule
from ..cache.rules import RuleConflict
from ..cache.service import NotCached
from ..oci import errors as e
from ..store.cache import UnknownCredentialSet
from ..store.identities import AlreadyExists, InUse, LastAdmin, UnknownScopeMap
from ..transfer import importer as imp
from ..transfer.schedule import InvalidSchedule
from ..transfer.sync_service import InvalidSyncRule, RuleBusy
from ..transfer.tagfilter import InvalidTagFilter

# ---- errors of the request's form (raised by web/ itself) ------------------------------------------


class InvalidJson(e.DomainError):
    """A body that is empty where one is required, or not JSON at all."""

    code = "INVALID_JSON"
    default_message = "the request body is not valid JSON"


class UnsupportedMediaType(e.DomainError):
    """A management API body that is not JSON (this also keeps cross-site form posts out)."""

    code = "UNSUPPORTED_MEDIA_TYPE"
    default_message = "the body must be JSON (Content-Type: application/json)"


class ValidationFailed(e.DomainError):
    """A body or query that is JSON but not what the operation documents; ``errors`` says where and why."""

    code = "VALIDATION_FAILED"
    default_message = "the request failed validation"

    def __init__(self, message: str | None = None, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class AuthDisabled(e.DomainError):
    """An identity operation on a server running without authentication (``--no-auth``)."""

    code = "AUTH_DISABLED"
    default_message = "this server runs without authentication (--no-auth): there are no identities to manage"


class InvalidReference(e.DomainError):
    """A ``REPOSITORY:TAG`` / ``REPOSITORY@DIGEST`` / image reference in a request body that is not one."""

    code = "INVALID_REFERENCE"
    default_message = "not a valid image reference"


# ---- the registry ----------------------------------------------------------------------------------

STATUS: dict[type[e.DomainError], int] = {
    # anything unexpected (a bug) or a failing disk: not the client's fault
    e.RegistryError: 500,
    e.StorageFailure: 500,
    # the OCI distribution spec's codes, as /v2 answers them
    e.BlobUnknown: 404,
    e.BlobUploadInvalid: 400,
    e.UploadRangeInvalid: 416,
    e.BlobUploadUnknown: 404,
    e.DigestInvalid: 400,
    e.ManifestBlobUnknown: 400,
    e.ManifestInvalid: 400,
    e.ManifestUnknown: 404,
    e.NameInvalid: 400,
    e.NameUnknown: 404,
    e.SizeInvalid: 400,
    e.ManifestTooLarge: 413,
    e.TagInvalid: 400,
    e.Unauthorized: 401,
    e.Denied: 403,
    e.Unsupported: 405,
    e.RangeNotSatisfiable: 416,
    e.PaginationNumberInvalid: 400,
    e.TooManyRequests: 429,
    e.BodyStalled: 408,
    e.UpstreamFailed: 502,
    # management objects
    e.NotFound: 404,
    AlreadyExists: 409,
    InUse: 409,
    LastAdmin: 409,
    UnknownScopeMap: 422,
    WeakPassword: 422,
    InvalidScopeRule: 422,
    InvalidName: 422,
    # cache rules and credential sets
    RuleConflict: 409,
    InvalidCacheRule: 422,
    UnknownCredentialSet: 422,
    CredentialSetMismatch: 422,
    InvalidCredentialSet: 422,
    UpstreamNotAllowed: 422,
    TargetIsCached: 409,
    CacheNamespaceRefused: 409,
    NotCached: 422,
    # imports and sync rules
    imp.ImportFailed: 502,
    imp.TargetConflict: 409,
    imp.SourceNotFound: 404,
    imp.InvalidImport: 422,
    imp.SourceAuthFailed: 422,
    imp.SourceRateLimited: 429,
    imp.SourceRefused: 422,
    imp.SourceInvalid: 422,
    InvalidTagFilter: 422,
    InvalidSchedule: 422,
    InvalidSyncRule: 422,
    RuleBusy: 409,
    # the request's form
    InvalidJson: 400,
    UnsupportedMediaType: 415,
    ValidationFailed: 422,
    AuthDisabled: 404,
    InvalidReference: 422,
}


def registered_class(cls: type[e.DomainError]) -> type[e.DomainError] | None:
    """The class whose registration ``cls`` answers with: itself, or the nearest registered ancestor."""
    for ancestor in cls.__mro__:
        if ancestor in STATUS:
            return ancestor  # type: ignore[return-value]
    return None


def status_of(error: e.DomainError) -> int:
    """The HTTP status of an error; an unregistered class is a bug, answered as 500."""
    owner = registered_class(type(error))
    return STATUS[owner] if owner is not None else 500


def title_of(status: int) -> str:
    """problem+json's ``title``: with ``type: about:blank`` it is the status's reason phrase (RFC 9457)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
