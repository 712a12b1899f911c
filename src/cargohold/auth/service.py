"""Who is calling, and what they may do: the auth layer's one entry point.

Credential checks are cached so that Basic auth on every request (skopeo,
podman and crane may send it instead of using tokens) costs one argon2 hash
per client per minute, not per request. Every cache is dropped when the shared
generation changes, so a deleted user or a changed scope map takes effect in
every worker at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets as pysecrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..config import Settings
from ..registry.stores import Stores
from ..store.generation import Generation
from ..store.identities import IdentityStore, aware
from . import secrets
from .errors import InvalidCredentials, InvalidToken, LoginThrottled
from .keys import KeyRing
from .scopes import ANONYMOUS, ANONYMOUS_ACTIONS, ANONYMOUS_SCOPE_MAP, Principal, Rule, Scope, grant
from .tokens import IssuedToken, TokenService

_CREDENTIAL_TTL = 60.0
ISSUER = "cargohold"


@dataclass(frozen=True)
class RefreshToken:
    id: str
    token: str
    expires_at: datetime


class AuthService:
    def __init__(self, settings: Settings, identities: IdentityStore, tokens: TokenService, generation: Generation) -> None:
        self.settings = settings
        self.identities = identities
        self.tokens = tokens
        self._generation = generation
        self._seen = generation.current()
        self._principals: dict[str, Principal | None] = {}
        self._credentials: dict[str, tuple[float, Principal]] = {}
        self._anonymous: Principal | None = None

    @classmethod
    def open(cls, settings: Settings, stores: Stores) -> "AuthService":
        keyring = KeyRing(settings.data_dir / "keys", settings.auth_key_retention_seconds)
        tokens = TokenService(keyring, ISSUER, settings.auth_service, settings.auth_token_ttl_seconds)
        return cls(settings, IdentityStore(stores.engine, stores.generation.bump), tokens, stores.generation)

    def _fresh(self) -> None:
        current = self._generation.current()
        if current != self._seen:
            self._seen = current
            self._principals.clear()
            self._credentials.clear()
            self._anonymous = None

    # ---- principals ------------------------------------------------------------------------------

    async def principal_named(self, name: str) -> Principal | None:
        """The current rights of a user or robot, or None if it no longer exists (or a robot expired)."""
        self._fresh()
        if name in self._principals:
            return self._principals[name]
        principal: Principal | None = None
        user = await self.identities.get_user(name)
        if user is not None:
            principal = Principal("user", user.name, user.admin, await self._rules(user.scope_maps))
        else:
            robot = await self.identities.get_robot(name)
            if robot is not None and not _expired(robot.expires_at):
                principal = Principal("robot", robot.name, False, await self._rules(robot.scope_maps))
        if principal is None or principal.kind != "robot":
            self._principals[name] = principal  # robots expire: never cache them past this request
        return principal

    async def anonymous(self) -> Principal:
        """What callers without credentials may do: the read actions of the ``anonymous`` scope map."""
        self._fresh()
        if self._anonymous is None:
            rules = await self._rules([ANONYMOUS_SCOPE_MAP])
            readonly = tuple(Rule(r.repository, r.actions & ANONYMOUS_ACTIONS) for r in rules if r.actions & ANONYMOUS_ACTIONS)
            self._anonymous = Principal("anonymous", "anonymous", False, readonly)
        return self._anonymous

    async def _rules(self, names: list[str]) -> tuple[Rule, ...]:
        rules: list[Rule] = []
        for record in await self.identities.scope_maps_named(names):
            rules.extend(Rule.create(r["repository"], r["actions"]) for r in record.rules)
        return tuple(rules)

    # ---- authentication --------------------------------------------------------------------------

    async def authenticate(self, username: str, password: str, client: str) -> Principal:
        """Basic credentials: a user's password, or a robot token (any username, or the robot's name)."""
        self._fresh()
        key = hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
        cached = self._credentials.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        await self._check_throttle(client, username)
        principal: Principal | None = None
        if password.startswith(secrets.ROBOT_PREFIX):
            principal = await self._robot_by_token(password)
            if principal is not None and username and username != principal.name:
                principal = None
        else:
            user = await self.identities.get_user(username)
            stored = user.password_hash if user is not None else secrets.DUMMY_HASH
            ok = await asyncio.to_thread(secrets.verify_password, stored, password)
            if ok and user is not None:
                principal = await self.principal_named(user.name)
        if principal is None:
            await self.identities.record_login_failure(client, username)
            await self.audit(username or "-", client, "login", username or "-", "denied", None)
            raise InvalidCredentials()
        if len(self._credentials) > 10000:
            self._credentials.clear()
        self._credentials[key] = (time.monotonic() + _CREDENTIAL_TTL, principal)
        return principal

    async def authenticate_robot_token(self, token: str, client: str) -> Principal:
        return await self.authenticate("", token, client)

    async def _robot_by_token(self, token: str) -> Principal | None:
        robot = await self.identities.robot_by_token(secrets.token_hash(token))
        if robot is None or _expired(robot.expires_at):
            return None
        return Principal("robot", robot.name, False, await self._rules(robot.scope_maps))

    async def _check_throttle(self, client: str, username: str) -> None:
        window = self.settings.login_throttle_window_seconds
        since = datetime.now(UTC) - timedelta(seconds=window)
        by_client, by_user = await self.identities.recent_failures(client, username, since)
        limit = self.settings.login_throttle_attempts
        if by_client >= limit or (username and by_user >= limit):
            raise LoginThrottled(window, f"too many failed logins; try again in up to {window} s")

    def verify_access_token(self, token: str) -> dict[str, Any]:
        return self.tokens.verify(token)

    # ---- tokens --------------------------------------------------------------------------------

    def issue_access_token(self, principal: Principal, scopes: list[Scope]) -> tuple[IssuedToken, list[dict[str, object]]]:
        access = grant(principal, scopes)
        return self.tokens.issue(principal.name, access), access

    async def issue_refresh_token(self, principal: Principal) -> RefreshToken:
        token = secrets.new_token(secrets.REFRESH_PREFIX)
        token_id = pysecrets.token_hex(8)
        expires = datetime.now(UTC) + timedelta(seconds=self.settings.auth_refresh_ttl_seconds)
        await self.identities.add_refresh_token(token_id, secrets.token_hash(token), principal.name, expires)
        return RefreshToken(token_id, token, expires)

    async def redeem_refresh_token(self, token: str, client: str) -> Principal:
        record = await self.identities.refresh_token(secrets.token_hash(token))
        if record is None or record.revoked_at is not None or _expired(record.expires_at):
            await self.identities.record_login_failure(client, "refresh-token")
            raise InvalidToken("refresh token is unknown, expired or revoked")
        principal = await self.principal_named(record.principal)
        if principal is None:
            raise InvalidToken("the refresh token's owner no longer exists")
        return principal

    # ---- bootstrap and audit --------------------------------------------------------------------

    async def bootstrap_admin(self, data_dir: Path) -> str | None:
        """On first start: an ``admin`` user with a random password in ``<data-dir>/admin-password`` (0600)."""
        if await self.identities.list_users():
            return None
        password = secrets.new_password()
        path = data_dir / "admin-password"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
            f.flush()
            os.fsync(f.fileno())
        await self.identities.create_user("admin", await asyncio.to_thread(secrets.hash_password, password), True, [])
        await self.audit("cargohold", "-", "user.create", "admin", "ok", {"bootstrap": True})
        return password

    async def audit(
        self, actor: str, client: str, action: str, target: str, outcome: str = "ok", detail: dict[str, Any] | None = None
    ) -> None:
        await self.identities.audit(actor, client, action, target, outcome, detail)


def _expired(when: datetime | None) -> bool:
    when = aware(when)
    return when is not None and when <= datetime.now(UTC)
