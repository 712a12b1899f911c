"""Upstream passwords encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256).

The key is ``CARGOHOLD_SECRET_KEY`` when set (so that replicas and restores
share it), else a key generated once into ``<data-dir>/secret-key`` with
0600 permissions. A database dump alone therefore does not reveal upstream
credentials.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "secret-key"


class SecretKeyError(RuntimeError):
    """The secret key is malformed, or does not decrypt what the database holds (a different key)."""


def load_key(data_dir: Path, configured: str | None) -> Fernet:
    if configured:
        try:
            return Fernet(configured.encode())
        except (ValueError, TypeError):
            raise SecretKeyError("CARGOHOLD_SECRET_KEY must be 32 bytes in URL-safe base64 (cargohold can print one: "
                                 "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')") from None
    path = data_dir / KEY_FILE
    try:
        return Fernet(path.read_bytes().strip())
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    # Written whole under a private name, then hard-linked into place: a worker that loses the race
    # never reads a half-written (empty) key file, it reads the winner's complete one.
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".secret-key.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:  # another worker won the race: use its key
            return Fernet(path.read_bytes().strip())
    finally:
        os.unlink(tmp)
    return Fernet(key)


class SecretBox:
    def __init__(self, fernet: Fernet) -> None:
        self._fernet = fernet

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SecretKeyError(
                "a stored upstream credential does not decrypt with this server's secret key "
                "(was CARGOHOLD_SECRET_KEY or <data-dir>/secret-key changed?)"
            ) from None
