"""What the outbound registry client raises when an upstream lets it down.

Callers decide by class, not by message: ``cache`` serves a stale copy on
``UpstreamUnavailable`` and ``UpstreamRateLimited``, answers 404 on
``UpstreamNotFound``, and reports a broken credential set on
``UpstreamAuthFailed``. ``upstream.guard.UpstreamRefused`` (a policy refusal)
is deliberately *not* one of these: it is never retried or wrapped, so it
cannot be mistaken for a flaky network.

Messages name the registry, the request and the upstream's own error code, and
never carry a password or a token: they end up in logs and API answers.
"""

from __future__ import annotations


class UpstreamError(Exception):
    """Base of everything the client raises for upstream trouble.

    ``status`` is the HTTP status that caused it, when there was one (None for a
    connection failure or a malformed answer).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UpstreamUnavailable(UpstreamError):
    """Connection errors, timeouts and 5xx answers, after the retries were spent."""


class UpstreamRateLimited(UpstreamError):
    """429 (or ``TOOMANYREQUESTS``) whose ``Retry-After`` was too long to wait for inline.

    ``retry_after`` is in seconds, None when the upstream did not say; callers use
    it to back off the whole upstream instead of hammering it from every request.
    """

    def __init__(self, message: str, retry_after: float | None = None, *, status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class UpstreamNotFound(UpstreamError):
    """404, ``MANIFEST_UNKNOWN``, ``BLOB_UNKNOWN`` or ``NAME_UNKNOWN``: the upstream does not have it."""


class UpstreamAuthFailed(UpstreamError):
    """401/403 even after presenting credentials, no credentials where some are required, or a refusing token endpoint."""


class UpstreamProtocolError(UpstreamError):
    """An answer that breaks the protocol: a manifest that does not hash to its digest, a token endpoint
    that does not answer JSON, an oversized manifest, a missing ``Docker-Content-Digest``.

    Not retried: the same upstream will most likely answer the same way.
    """
