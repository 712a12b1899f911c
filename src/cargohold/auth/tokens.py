"""Signed, short-lived access tokens (JWT, ES256) in the Docker token format.

Verification is on the pull hot path, so a verified token's claims are kept
until it expires: a repeated bearer token costs a dictionary lookup, not an
ECDSA verification.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from .errors import InvalidToken
from .keys import KeyRing, SigningKey

ALGORITHM = "ES256"
_CACHE_LIMIT = 10000


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: float


class TokenService:
    def __init__(self, keyring: KeyRing, issuer: str, audience: str, ttl_seconds: int) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl_seconds
        self._keys: dict[str, SigningKey] = {}
        self._signing: SigningKey | None = None
        self._verified: dict[str, dict[str, Any]] = {}
        self.reload()

    def reload(self) -> None:
        keys = self.keyring.load()
        self._signing = keys[0]
        self._keys = {k.kid: k for k in keys}

    def issue(self, subject: str, access: list[dict[str, object]], subject_id: str = "") -> IssuedToken:
        self.reload()  # another worker or the CLI may have rotated the key
        assert self._signing is not None
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "iat": now,
            "nbf": now - 5,
            "exp": now + self.ttl,
            "jti": secrets.token_hex(12),
            "access": access,
        }
        if subject_id:
            claims["sid"] = subject_id  # the identity as created: a namesake re-created later is another one
        token = jwt.encode(claims, self._signing.private, algorithm=ALGORITHM, headers={"kid": self._signing.kid})
        return IssuedToken(token, self.ttl, float(now))

    def verify(self, token: str) -> dict[str, Any]:
        cached = self._verified.get(token)
        now = time.time()
        if cached is not None:
            if cached["exp"] > now:
                return cached
            del self._verified[token]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            self.reload()
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise InvalidToken("token signed by an unknown or retired key")
        try:
            claims = jwt.decode(
                token,
                key.public,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "nbf", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("token is for another service") from None
        except jwt.PyJWTError:
            raise InvalidToken("token signature or claims are invalid") from None
        if not isinstance(claims.get("access", []), list):
            raise InvalidToken("token access claim is malformed")
        if len(self._verified) >= _CACHE_LIMIT:
            self._verified.clear()
        self._verified[token] = claims
        return claims
