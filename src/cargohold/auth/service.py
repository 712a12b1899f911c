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
import re
import secrets as pysecrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..config import Settings
from ..registry.stores import Stores
from ..store.generation import Generation
from ..store.identities import IdentityStore, RefreshUse, RobotRecord, ScopeMapRecord, UserRecord, aware
from . import secrets
from .errors import InvalidCredentials, InvalidName, InvalidToken, LoginThrottled
from .gate import VerifyGate
from .keys import KeyRing
from .scopes import ACTIONS, ANONYMOUS, ANONYMOUS_ACTIONS, ANONYMOUS_SCOPE_MAP, InvalidRule, Principal, Rule, Scope, grant
from .tokens import IssuedToken, TokenService

_CREDENTIAL_TTL = 60.0
ISSUER = "cargohold"

# Users, robots and scope maps. Users and robots share one namespace (a Basic-auth username names one of them).
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# Anonymous access tokens carry ``sub: anonymous``: an identity of that name would inherit them.
RESERVED_IDENTITY_NAMES = frozenset({ANONYMOUS.name})
# OAuth client ids whose refresh tokens do not rotate: the docker daemon (moby's registry.AuthClientID)
# presents the identity token stored by `docker login` on every pull and ignores any refresh_token answered.
NON_ROTATING_CLIENTS = frozenset({"docker"})


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
        self._principals: dict[str, tuple[Principal | None, datetime | None]] = {}  # name -> (rights, robot expiry)
        self._credentials: dict[str, tuple[float, Principal]] = {}
        self._verifying: dict[str, asyncio.Future[Principal]] = {}
        self._anonymous: Principal | None = None
        self._gate = VerifyGate(settings.auth_verify_concurrency)

    @classmethod
    def open(cls, settings: Settings, stores: Stores) -> "AuthService":
        keyring = KeyRing(settings.data_dir / "keys", settings.auth_key_retention_seconds)
        tokens = TokenService(keyring, ISSUER, settings.auth_service, settings.auth_token_ttl_seconds)
        # Identities have their own change counter: a push must not drop every worker's checked passwords.
        generation = Generation(settings.data_dir / "auth-generation")
        return cls(settings, IdentityStore(stores.engine, generation.bump), tokens, generation)

    def _fresh(self) -> None:
        current = self._generation.current()
        if current != self._seen:
            self._seen = current
            self._principals.clear()
            self._credentials.clear()
            self._anonymous = None

    # ---- principals ------------------------------------------------------------------------------

    async def principal_named(self, name: str) -> Principal | None:
        """The current rights of a user or robot, or None if it no longer exists (or a robot expired).

        Cached per worker until the shared generation changes (a robot only until it expires), since
        every bearer token on /v2 asks whether its subject still exists."""
        self._fresh()
        cached = self._principals.get(name)
        if cached is not None:
            if not _expired(cached[1]):
                return cached[0]
            return None
        principal: Principal | None = None
        expires: datetime | None = None
        user = await self.identities.get_user(name)
        if user is not None:
            principal = Principal("user", user.name, user.admin, await self._member_rules(user.scope_maps), user.subject_id)
        else:
            robot = await self.identities.get_robot(name)
            if robot is not None and not _expired(robot.expires_at):
                expires = robot.expires_at
                principal = Principal("robot", robot.name, False, await self._member_rules(robot.scope_maps), robot.subject_id)
        if len(self._principals) > 10000:
            self._principals.clear()
        self._principals[name] = (principal, expires)
        return principal

    async def token_holder(self, claims: dict[str, Any]) -> Principal | None:
        """The identity an access token was issued to, or None if it is gone: deleted, expired, re-created
        under the same name, or its password changed since (the token's ``sid`` no longer matches)."""
        subject = claims.get("sub")
        if not isinstance(subject, str) or subject in RESERVED_IDENTITY_NAMES:
            return None
        holder = await self.principal_named(subject)
        if holder is None or not holder.sid or claims.get("sid") != holder.sid:
            return None
        return holder

    async def anonymous(self) -> Principal:
        """What callers without credentials may do: the read actions of the ``anonymous`` scope map."""
        self._fresh()
        if self._anonymous is None:
            rules = await self._rules([ANONYMOUS_SCOPE_MAP])
            readonly = tuple(Rule(r.repository, r.actions & ANONYMOUS_ACTIONS) for r in rules if r.actions & ANONYMOUS_ACTIONS)
            self._anonymous = Principal("anonymous", "anonymous", False, readonly)
        return self._anonymous

    async def _member_rules(self, names: list[str]) -> tuple[Rule, ...]:
        """A user's or robot's own rules plus what anyone may do without credentials: logging in never takes rights away."""
        return await self._rules(names) + (await self.anonymous()).rules

    async def _rules(self, names: list[str]) -> tuple[Rule, ...]:
        rules: list[Rule] = []
        for record in await self.identities.scope_maps_named(names):
            rules.extend(Rule.create(r["repository"], r["actions"]) for r in record.rules)
        return tuple(rules)

    # ---- authentication --------------------------------------------------------------------------

    async def authenticate(self, username: str, password: str, client: str) -> Principal:
        """Basic credentials: a user's password, or a robot token (any username, or the robot's name).

        One check per credentials at a time: concurrent requests with the same
        credentials wait for the same argon2 verification instead of each
        paying for one, and a recently verified entry is served while it is
        re-verified in the background, so steady Basic-auth traffic never stalls.
        """
        self._fresh()
        # No identity's name holds a NUL, and PostgreSQL cannot store one (throttle, audit): it was a 500.
        username = username.replace("\x00", "\ufffd")
        key = hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
        cached = self._credentials.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        pending = self._verifying.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._verify(key, username, password, client))
            self._verifying[key] = pending
            pending.add_done_callback(lambda done: (self._verifying.pop(key, None), done.cancelled() or done.exception()))
        if cached is not None and cached[0] + _CREDENTIAL_TTL > now:
            return cached[1]  # stale by less than a TTL: answer now, the check above refreshes it
        return await asyncio.shield(pending)

    async def _verify(self, key: str, username: str, password: str, client: str) -> Principal:
        robot = password.startswith(secrets.ROBOT_PREFIX)
        # A robot token carries 256 random bits: nobody guesses one, so robots are throttled by client
        # address only, and wrong passwords typed for a robot's name cannot lock the robot out.
        attempt, suspect = await self._reserve_attempt(client, None if robot else username)
        principal: Principal | None = None
        if robot:
            principal = await self._robot_by_token(password)  # a sha256 lookup, no argon2
            if principal is not None and username and username != principal.name:
                principal = None
        elif username:  # no identity has an empty name: a bare non-robot bearer token costs no argon2
            user = await self.identities.get_user(username)
            stored = user.password_hash if user is not None else secrets.DUMMY_HASH
            async with self._gate.slot(suspect):
                ok = await asyncio.to_thread(secrets.verify_password, stored, password)
            if ok and user is not None:
                principal = await self.principal_named(user.name)
        if principal is None:
            self._credentials.pop(key, None)  # the reserved attempt stays: it is this failure
            await self.audit(username or "-", client, "login", username or "-", "denied", None)
            raise InvalidCredentials()
        await self.identities.forget_login_attempt(attempt)
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
        return Principal("robot", robot.name, False, await self._member_rules(robot.scope_maps), robot.subject_id)

    async def _reserve_attempt(self, client: str, username: str | None) -> tuple[int, bool]:
        """Count this attempt as a failure before checking it (so parallel guesses cannot all slip under
        the limit); raises LoginThrottled when the client or the username has used up the window.

        Returns the attempt's id and whether the client is *suspect* (it failed, or has checks in flight,
        within the window): suspects wait behind everyone else at the argon2 gate."""
        window = self.settings.login_throttle_window_seconds
        since = datetime.now(UTC) - timedelta(seconds=window)
        reserved = await self.identities.reserve_login_attempt(client, username, since, self.settings.login_throttle_attempts)
        if reserved is None:
            raise LoginThrottled(window, f"too many failed logins; try again in up to {window} s")
        attempt, earlier = reserved
        return attempt, earlier > 0

    def verify_access_token(self, token: str) -> dict[str, Any]:
        return self.tokens.verify(token)

    # ---- tokens --------------------------------------------------------------------------------

    def issue_access_token(self, principal: Principal, scopes: list[Scope]) -> tuple[IssuedToken, list[dict[str, object]]]:
        access = grant(principal, scopes)
        return self.tokens.issue(principal.name, access, principal.sid), access

    async def issue_refresh_token(self, principal: Principal, client_id: str | None = None) -> RefreshToken:
        """A refresh token that rotates on use, except for the docker daemon (``client_id=docker``): it
        keeps the identity token of ``docker login`` in its config file and never stores a successor."""
        token = secrets.new_token(secrets.REFRESH_PREFIX)
        token_id = pysecrets.token_hex(8)
        expires = datetime.now(UTC) + timedelta(seconds=self.settings.auth_refresh_ttl_seconds)
        rotates = client_id not in NON_ROTATING_CLIENTS
        await self.identities.add_refresh_token(token_id, secrets.token_hash(token), principal.name, expires, rotates)
        return RefreshToken(token_id, token, expires)

    async def redeem_refresh_token(self, token: str, client: str) -> tuple[Principal, RefreshToken | None]:
        """The refresh token's owner and the token that replaces it: each refresh token works once
        (None in place of a successor: a non-rotating token, which stays valid until revoked).

        Presenting a used one again (a stolen copy, a replay, or a second concurrent use) revokes its
        whole family, the successor included, so a thief and the rightful client cannot both go on."""
        attempt, _ = await self._reserve_attempt(client, None)  # 256-bit secrets: throttled by client only
        successor = secrets.new_token(secrets.REFRESH_PREFIX)
        successor_id = pysecrets.token_hex(8)
        expires = datetime.now(UTC) + timedelta(seconds=self.settings.auth_refresh_ttl_seconds)
        outcome, record = await self.identities.use_refresh_token(
            secrets.token_hash(token), successor_id, secrets.token_hash(successor), expires
        )
        if outcome is RefreshUse.REUSED and record is not None:
            await self.audit(record.principal, client, "refresh_token.reuse", record.id, "denied", {"family_revoked": True})
        if outcome not in (RefreshUse.ROTATED, RefreshUse.STATIC) or record is None:
            raise InvalidToken("refresh token is unknown, expired, revoked or already used")
        principal = await self.principal_named(record.principal)
        if principal is None:
            raise InvalidToken("the refresh token's owner no longer exists")
        await self.identities.forget_login_attempt(attempt)
        return principal, RefreshToken(successor_id, successor, expires) if outcome is RefreshUse.ROTATED else None

    # ---- management: the /api/v1 operations that take more than one store call --------------------
    # Each one that changes something records who did it, from where, in the audit log; passwords,
    # their hashes and token hashes never reach the log.

    async def create_user(
        self, name: str, password: str, admin: bool, scope_maps: list[str], *, actor: str, client: str
    ) -> UserRecord:
        """Raises InvalidName, WeakPassword, UnknownScopeMap or AlreadyExists."""
        _check_identity_name(name)
        password_hash = await asyncio.to_thread(secrets.hash_password, password)  # argon2 is deliberately slow
        user = await self.identities.create_user(name, password_hash, admin, _unique(scope_maps))
        await self.audit(actor, client, "user.create", name, "ok", {"admin": admin, "scope_maps": user.scope_maps})
        return user

    async def update_user(
        self,
        name: str,
        *,
        password: str | None = None,
        admin: bool | None = None,
        scope_maps: list[str] | None = None,
        actor: str,
        client: str,
    ) -> UserRecord | None:
        """None for an unknown user. A new password also revokes the user's refresh tokens.

        Raises WeakPassword, UnknownScopeMap or LastAdmin (demoting the last admin)."""
        if await self.identities.get_user(name) is None:
            return None
        password_hash = await asyncio.to_thread(secrets.hash_password, password) if password is not None else None
        maps = _unique(scope_maps) if scope_maps is not None else None
        user = await self.identities.update_user(name, password_hash=password_hash, admin=admin, maps=maps)
        if user is None:
            return None
        detail: dict[str, Any] = {}
        if password is not None:
            detail["password_changed"] = True
            detail["refresh_tokens_revoked"] = await self.identities.revoke_refresh_tokens(name)
        if admin is not None:
            detail["admin"] = admin
        if maps is not None:
            detail["scope_maps"] = maps
        await self.audit(actor, client, "user.update", name, "ok", detail)
        return user

    async def delete_user(self, name: str, *, actor: str, client: str) -> bool:
        """False for an unknown user; raises LastAdmin rather than delete the last admin."""
        deleted = await self.identities.delete_user(name)
        if deleted:
            await self.audit(actor, client, "user.delete", name)
        return deleted

    async def create_robot(
        self, name: str, scope_maps: list[str], expires_in_days: int | None, *, actor: str, client: str
    ) -> tuple[RobotRecord, str]:
        """A robot and its token (``chr_…``): the token exists only in this return value, only its hash is kept.

        Raises InvalidName, UnknownScopeMap or AlreadyExists."""
        _check_identity_name(name)
        token = secrets.new_token(secrets.ROBOT_PREFIX)
        expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days is not None else None
        robot = await self.identities.create_robot(name, secrets.token_hash(token), _unique(scope_maps), expires, actor)
        await self.audit(
            actor, client, "token.create", name, "ok",
            {"scope_maps": robot.scope_maps, "expires_at": expires.isoformat() if expires else None},
        )
        return robot, token

    async def delete_robot(self, name: str, *, actor: str, client: str) -> bool:
        deleted = await self.identities.delete_robot(name)
        if deleted:
            await self.audit(actor, client, "token.delete", name)
        return deleted

    async def create_scope_map(
        self, name: str, description: str, rules: list[dict[str, Any]], *, actor: str, client: str
    ) -> ScopeMapRecord:
        """Raises InvalidName, InvalidRule or AlreadyExists."""
        if not _NAME.fullmatch(name):
            raise InvalidName(f"scope map names match {NAME_PATTERN}")
        record = await self.identities.create_scope_map(name, description, _checked_rules(name, rules))
        await self.audit(actor, client, "scope_map.create", name, "ok", {"rules": record.rules})
        return record

    async def replace_scope_map(
        self, name: str, description: str, rules: list[dict[str, Any]], *, actor: str, client: str
    ) -> ScopeMapRecord | None:
        """None for an unknown scope map; every worker sees the new rules on its next request."""
        record = await self.identities.replace_scope_map(name, description, _checked_rules(name, rules))
        if record is not None:
            await self.audit(actor, client, "scope_map.update", name, "ok", {"rules": record.rules})
        return record

    async def delete_scope_map(self, name: str, *, actor: str, client: str) -> bool:
        """False for an unknown scope map; raises InUse while a user or robot names it."""
        deleted = await self.identities.delete_scope_map(name)
        if deleted:
            await self.audit(actor, client, "scope_map.delete", name)
        return deleted

    async def revoke_refresh_token(self, token_id: str, *, actor: str, client: str) -> bool:
        """False for an unknown id; revoking a revoked token again is a no-op that still answers True."""
        record = await self.identities.refresh_token_by_id(token_id)
        if record is None:
            return False
        if await self.identities.revoke_refresh_token(token_id):
            await self.audit(actor, client, "refresh_token.revoke", token_id, "ok", {"principal": record.principal})
        return True

    async def rotate_signing_key(self, *, actor: str, client: str) -> str:
        """A new token signing key; tokens signed by the previous ones verify until they expire."""
        key = await asyncio.to_thread(self.tokens.keyring.rotate)
        self.tokens.reload()
        await self.audit(actor, client, "key.rotate", key.kid)
        return key.kid

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


def _check_identity_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidName(f"names match {NAME_PATTERN}")
    if name in RESERVED_IDENTITY_NAMES:
        raise InvalidName(f"{name!r} is reserved")


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _checked_rules(scope_map: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rules in their stored form (actions deduplicated, in canonical order); raises InvalidRule."""
    out: list[dict[str, Any]] = []
    for raw in rules:
        rule = Rule.create(raw["repository"], list(raw["actions"]))
        if scope_map == ANONYMOUS_SCOPE_MAP and not rule.actions <= ANONYMOUS_ACTIONS:
            raise InvalidRule(f"the {ANONYMOUS_SCOPE_MAP!r} scope map may only grant {' and '.join(sorted(ANONYMOUS_ACTIONS))}")
        out.append({"repository": rule.repository, "actions": [a for a in ACTIONS if a in rule.actions]})
    return out


def _expired(when: datetime | None) -> bool:
    when = aware(when)
    return when is not None and when <= datetime.now(UTC)
