"""``/api/v1/credential-sets``: upstream logins (a Docker Hub access token, a GHCR PAT) that cache rules use.

The password is write-only: it is sealed (Fernet) before it is stored and no
answer, validation error or audit entry ever carries it. What an answer does
say is how the last upstream login went and the upstream's last rate-limit
figures, so an operator can see a revoked token or an exhausted quota.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field

from ...cache.admin import MAX_PASSWORD, MAX_STORED, CredentialSetInfo
from .cache_rules import cache_admin
from .common import TEXT_PATTERN, Call, InModel, Name, Operation, OutModel, created, no_content, not_found, render

LoginServer = Annotated[
    str,
    Field(
        min_length=1, max_length=MAX_STORED, pattern=TEXT_PATTERN,
        description="the registry host[:port] the credentials are for, e.g. docker.io (index.docker.io and "
        "registry-1.docker.io read docker.io); a rule may only use a set for its own source registry",
    ),
]
Username = Annotated[
    str, Field(min_length=1, max_length=MAX_STORED, pattern=r"^[^\x00-\x1F\x7F:]*$", description="the upstream user name")
]
# Never echoed: not in any answer, not in validation errors (common.py drops pydantic's ``input``), not in the audit log.
UpstreamPassword = Annotated[
    str,
    Field(
        min_length=1, max_length=MAX_PASSWORD, pattern=r"^[^\x00]*$",
        description="the upstream password or access token; write-only",
        json_schema_extra={"format": "password", "writeOnly": True},
    ),
]


class LastLogin(OutModel):
    at: datetime | None = Field(description="when the cache last logged in upstream with this set; null: not yet")
    ok: bool | None
    error: str | None = Field(description="why the last login failed")


class RateLimit(OutModel):
    limit: int | None = Field(description="the upstream's ratelimit-limit, as last seen")
    remaining: int | None = Field(description="the upstream's ratelimit-remaining, as last seen")
    at: datetime | None


class CredentialSet(OutModel):
    name: str
    login_server: str
    username: str
    created_at: datetime
    updated_at: datetime
    last_login: LastLogin
    ratelimit: RateLimit

    @classmethod
    def of(cls, info: CredentialSetInfo) -> CredentialSet:
        return cls(
            name=info.name, login_server=info.login_server, username=info.username,
            created_at=info.created_at, updated_at=info.updated_at,
            last_login=LastLogin(at=info.last_login_at, ok=info.last_login_ok, error=info.last_login_error),
            ratelimit=RateLimit(limit=info.ratelimit_limit, remaining=info.ratelimit_remaining, at=info.ratelimit_at),
        )


class CredentialSetCreate(InModel):
    name: Name
    login_server: LoginServer
    username: Username
    password: UpstreamPassword


class CredentialSetUpdate(InModel):
    """Only the fields given change; any change forgets the last login's outcome (it was another login)."""

    login_server: LoginServer | None = None
    username: Username | None = None
    password: UpstreamPassword | None = None


def _detail(info: CredentialSetInfo, password_changed: bool) -> dict[str, Any]:
    """What the audit log keeps: who logs in where, and whether the password changed; never the password."""
    return {"login_server": info.login_server, "username": info.username, "password_changed": password_changed}


async def list_credential_sets(call: Call) -> web.Response:
    return render([CredentialSet.of(c) for c in await cache_admin(call).list_credential_sets()])


async def create_credential_set(call: Call) -> web.Response:
    body: CredentialSetCreate = call.body
    info = await cache_admin(call).create_credential_set(body.name, body.login_server, body.username, body.password)
    await call.audit("credential_set.create", info.name, "ok", _detail(info, True))
    return created(CredentialSet.of(info), f"/credential-sets/{info.name}")


async def get_credential_set(call: Call) -> web.Response:
    name = call.name("credential set")
    info = await cache_admin(call).get_credential_set(name)
    if info is None:
        raise not_found("credential set", name)
    return render(CredentialSet.of(info))


async def update_credential_set(call: Call) -> web.Response:
    name = call.name("credential set")
    body: CredentialSetUpdate = call.body
    info = await cache_admin(call).update_credential_set(
        name, login_server=body.login_server, username=body.username, password=body.password
    )
    if info is None:
        raise not_found("credential set", name)
    await call.audit("credential_set.update", name, "ok", _detail(info, body.password is not None)
    )
    return render(CredentialSet.of(info))


async def delete_credential_set(call: Call) -> web.Response:
    name = call.name("credential set")
    if not await cache_admin(call).delete_credential_set(name):
        raise not_found("credential set", name)
    await call.audit("credential_set.delete", name)
    return no_content()


IN_USE = "a cache or sync rule uses the credential set"
OPERATIONS = [
    Operation(
        "GET", "/credential-sets", list_credential_sets, "listCredentialSets", "List credential sets (never their passwords)",
        "credential-sets", response=list[CredentialSet],
    ),
    Operation(
        "POST", "/credential-sets", create_credential_set, "createCredentialSet",
        "Create a credential set; the password is encrypted at rest and never shown again", "credential-sets", status=201,
        body=CredentialSetCreate, response=CredentialSet, conflict="a credential set of that name exists",
        action="credential_set.create", location=True,
    ),
    Operation(
        "GET", "/credential-sets/{name}", get_credential_set, "getCredentialSet",
        "Show a credential set: its login, the last upstream login's outcome and rate limit (never the password)",
        "credential-sets", response=CredentialSet,
    ),
    Operation(
        "PATCH", "/credential-sets/{name}", update_credential_set, "updateCredentialSet",
        "Change a credential set's login server, user name or password", "credential-sets",
        body=CredentialSetUpdate, response=CredentialSet,
        conflict="cache or sync rules on the old login server use the set, so the login server cannot change",
        action="credential_set.update",
    ),
    Operation(
        "DELETE", "/credential-sets/{name}", delete_credential_set, "deleteCredentialSet",
        "Delete a credential set no cache or sync rule uses", "credential-sets", status=204, conflict=IN_USE,
        action="credential_set.delete",
    ),
]
