"""Token signing keys: ES256 key pairs in ``<data-dir>/keys`` (0600), rotated without breaking tokens.

The newest key signs; every key younger than the retention window verifies,
so tokens signed just before a rotation stay valid for their whole lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: ec.EllipticCurvePrivateKey
    created: float

    @property
    def public(self) -> ec.EllipticCurvePublicKey:
        return self.private.public_key()


def _kid(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b32encode(hashlib.sha256(der).digest()[:15]).decode().rstrip("=")


class KeyRing:
    def __init__(self, directory: Path, retention_seconds: float) -> None:
        self.directory = directory
        self.retention = retention_seconds
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)

    def load(self) -> list[SigningKey]:
        """All usable keys, newest first; creates the first one when there is none."""
        keys = []
        now = time.time()
        for path in self.directory.glob("*.pem"):
            created = path.stat().st_mtime
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(private, ec.EllipticCurvePrivateKey):
                continue
            keys.append(SigningKey(_kid(private), private, created))
        keys.sort(key=lambda k: k.created, reverse=True)
        if not keys:
            return [self.rotate()]
        newest = keys[0]
        return [newest] + [k for k in keys[1:] if now - k.created <= self.retention]

    def rotate(self) -> SigningKey:
        """Create a new signing key; older keys keep verifying for the retention window, then are removed."""
        private = ec.generate_private_key(ec.SECP256R1())
        kid = _kid(private)
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        tmp = self.directory / f".{kid}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / f"{kid}.pem")
        self._prune()
        return SigningKey(kid, private, time.time())

    def _prune(self) -> None:
        now = time.time()
        paths = sorted(self.directory.glob("*.pem"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in paths[1:]:
            if now - path.stat().st_mtime > self.retention:
                path.unlink(missing_ok=True)
