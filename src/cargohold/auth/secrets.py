"""Password hashing (argon2) and high-entropy secrets (robot and refresh tokens).

Robot and refresh tokens carry 256 random bits, so a plain sha256 is a safe
and fast verifier for them; only human passwords need argon2's deliberate cost.
"""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..oci.errors import DomainError

_hasher = PasswordHasher()
ROBOT_PREFIX = "chr_"
REFRESH_PREFIX = "chf_"
MIN_PASSWORD_LENGTH = 12


class WeakPassword(DomainError, ValueError):
    """A password too short to be stored."""

    code = "WEAK_PASSWORD"


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"passwords need at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_password() -> str:
    return secrets.token_urlsafe(18)


# A fixed hash to spend the same argon2 time on unknown users as on known ones (no user enumeration by timing).
DUMMY_HASH = _hasher.hash("cargohold-dummy-password")
