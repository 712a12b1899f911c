"""Where the CLI keeps logins, and which credentials a command uses.

``cargohold login`` stores one username and password per registry URL in
``$XDG_CONFIG_HOME/cargohold/credentials.json`` (``~/.config/cargohold/`` by
default). The directory is 0700 and the file 0600 from the moment it exists:
it is written to a temporary file created with those permissions, fsynced and
renamed over the old one, under an exclusive lock, so that two logins at once
never lose each other's entry and a crash never leaves half a file.

The environment beats the file, so that scripts and CI need no login:
``CARGOHOLD_TOKEN`` (a robot token, sent as ``Authorization: Bearer``), else
``CARGOHOLD_USERNAME`` + ``CARGOHOLD_PASSWORD``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .client import CliError, Credentials, normalize_registry

FILE_NAME = "credentials.json"
ENV_TOKEN = "CARGOHOLD_TOKEN"
ENV_USERNAME = "CARGOHOLD_USERNAME"
ENV_PASSWORD = "CARGOHOLD_PASSWORD"


class CredentialStoreError(CliError):
    """The credentials file cannot be read or written (corrupt, wrong owner, disk full)."""


class IncompleteEnvironment(CliError):
    """Only one of CARGOHOLD_USERNAME and CARGOHOLD_PASSWORD is set."""


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/cargohold``, or ``~/.config/cargohold`` (XDG base directory spec: relative values are ignored)."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME", "")
    if not base or not os.path.isabs(base):
        home = env.get("HOME") or str(Path.home())
        base = os.path.join(home, ".config")
    return Path(base) / "cargohold"


class CredentialStore:
    """``credentials.json``: ``{"version": 1, "registries": {"<url>": {"username": …, "password": …}}}``."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else config_dir()
        self.path = self.directory / FILE_NAME

    # ---- reading ---------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {"version": 1, "registries": {}}
        except OSError as exc:
            raise CredentialStoreError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise CredentialStoreError(f"{self.path} is not valid JSON; fix or delete it, then log in again") from None
        if not isinstance(data, dict) or not isinstance(data.get("registries", {}), dict):
            raise CredentialStoreError(f"{self.path} is not a cargohold credentials file; fix or delete it")
        data.setdefault("registries", {})
        return data

    def get(self, registry: str) -> Credentials | None:
        entry = self._read()["registries"].get(normalize_registry(registry))
        if not isinstance(entry, dict):
            return None
        username, password = entry.get("username"), entry.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            return None
        return Credentials(username, password, "stored")

    def registries(self) -> list[str]:
        return sorted(self._read()["registries"])

    def insecure_permissions(self) -> bool:
        """Whether the file is readable or writable by anyone but its owner (someone loosened it)."""
        try:
            mode = self.path.stat().st_mode
        except OSError:
            return False
        return bool(stat.S_IMODE(mode) & 0o077)

    # ---- writing ---------------------------------------------------------------------------------

    def put(self, registry: str, username: str, password: str) -> None:
        key = normalize_registry(registry)
        with self._locked():
            data = self._read()
            data["version"] = 1
            data["registries"][key] = {"username": username, "password": password}
            self._write(data)

    def remove(self, registry: str) -> bool:
        """Forget a registry's login; False when there was none."""
        key = normalize_registry(registry)
        if not self.path.exists():
            return False
        with self._locked():
            data = self._read()
            if data["registries"].pop(key, None) is None:
                return False
            self._write(data)
        return True

    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = self.directory.stat()
            if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) != 0o700:
                os.chmod(self.directory, 0o700)
        except OSError as exc:
            raise CredentialStoreError(f"cannot create {self.directory}: {exc.strerror or exc}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock for read-modify-write; a separate lock file, since the data file is replaced."""
        self._ensure_directory()
        try:
            fd = os.open(self.directory / f".{FILE_NAME}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise CredentialStoreError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, data: dict[str, Any]) -> None:
        payload = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
        # mkstemp creates the file 0600 and O_EXCL: the secret is never readable by others, not even briefly.
        fd, tmp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise CredentialStoreError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def environment_credentials(env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials from ``CARGOHOLD_TOKEN`` or ``CARGOHOLD_USERNAME`` + ``CARGOHOLD_PASSWORD``; None when unset."""
    env = os.environ if env is None else env
    token = env.get(ENV_TOKEN, "").strip()  # tokens have no spaces; a stray newline from a file is not part of it
    if token:
        return Credentials(None, token, "env")
    username, password = env.get(ENV_USERNAME, ""), env.get(ENV_PASSWORD, "")
    if username and password:
        return Credentials(username, password, "env")
    if username or password:
        missing = ENV_PASSWORD if username else ENV_USERNAME
        raise IncompleteEnvironment(f"{ENV_USERNAME} and {ENV_PASSWORD} go together: {missing} is not set")
    return None


def resolve_credentials(registry: str, store: CredentialStore | None = None, env: Mapping[str, str] | None = None) -> Credentials | None:
    """What a command authenticates with: the environment first, then the stored login for ``registry``."""
    found = environment_credentials(env)
    if found is not None:
        return found
    return (store or CredentialStore(config_dir(env))).get(registry)
