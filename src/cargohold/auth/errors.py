"""Access-control failures; ``web/codes.py`` registers their statuses (401/403/429, 422 for a bad name)."""

from __future__ import annotations

from ..oci.errors import Denied, DomainError, TooManyRequests, Unauthorized


class AuthenticationRequired(Unauthorized):
    """No credentials, or credentials that do not prove an identity."""

    default_message = "authentication required"


class InvalidCredentials(Unauthorized):
    default_message = "invalid username, password or token"


class InvalidToken(Unauthorized):
    default_message = "invalid or expired token"


class InsufficientScope(Unauthorized):
    """A bearer token that lacks an action its holder may have: the client should fetch a wider token."""

    default_message = "token does not grant the requested access"


class AccessDenied(Denied):
    pass


class LoginThrottled(TooManyRequests):
    default_message = "too many failed logins; try again later"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# ---- management failures (bad input to the /api/v1 operations; web/ maps them to 422) ------------


class InvalidName(DomainError, ValueError):
    """A user, robot or scope-map name outside the grammar, or one that is reserved."""

    code = "INVALID_NAME"
