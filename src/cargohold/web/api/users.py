"""``/api/v1/users``: people, who log in with a password; admins manage the registry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import Field

from ...auth.secrets import MIN_PASSWORD_LENGTH
from ...store.identities import UserRecord
from .common import Call, InModel, Name, Operation, OutModel, created, no_content, not_found, render

# Never echoed: not in any answer, not in validation errors (common.py drops pydantic's ``input``), not in the audit log.
Password = Annotated[
    str, Field(min_length=MIN_PASSWORD_LENGTH, max_length=1024, json_schema_extra={"format": "password", "writeOnly": True})
]
ScopeMapNames = Annotated[list[Name], Field(max_length=100)]


class User(OutModel):
    name: str
    admin: bool
    scope_maps: list[str]
    created_at: datetime

    @classmethod
    def of(cls, record: UserRecord) -> "User":
        return cls(name=record.name, admin=record.admin, scope_maps=record.scope_maps, created_at=record.created_at)


class UserCreate(InModel):
    name: Name
    password: Password
    admin: bool = False
    scope_maps: ScopeMapNames = Field(default_factory=list)


class UserUpdate(InModel):
    """Only the fields given change; a new password also revokes the user's refresh tokens."""

    password: Password | None = None
    admin: bool | None = None
    scope_maps: ScopeMapNames | None = None


async def list_users(call: Call) -> web.Response:
    return render([User.of(u) for u in await call.auth.identities.list_users()])


async def create_user(call: Call) -> web.Response:
    body: UserCreate = call.body
    user = await call.auth.create_user(
        body.name, body.password, body.admin, body.scope_maps, actor=call.actor, client=call.client
    )
    return created(User.of(user), f"/users/{user.name}")


async def get_user(call: Call) -> web.Response:
    name = call.name("user")
    user = await call.auth.identities.get_user(name)
    if user is None:
        raise not_found("user", name)
    return render(User.of(user))


async def update_user(call: Call) -> web.Response:
    name = call.name("user")
    body: UserUpdate = call.body
    user = await call.auth.update_user(
        name,
        password=body.password,
        admin=body.admin,
        scope_maps=body.scope_maps,
        actor=call.actor,
        client=call.client,
    )
    if user is None:
        raise not_found("user", name)
    return render(User.of(user))


async def delete_user(call: Call) -> web.Response:
    name = call.name("user")
    if not await call.auth.delete_user(name, actor=call.actor, client=call.client):
        raise not_found("user", name)
    return no_content()


LAST_ADMIN = "the registry keeps at least one admin"
OPERATIONS = [
    Operation("GET", "/users", list_users, "listUsers", "List users", "users", response=list[User]),
    Operation(
        "POST", "/users", create_user, "createUser", "Create a user", "users", status=201, body=UserCreate, response=User,
        conflict="a user or robot of that name exists", action="user.create", location=True,
    ),
    Operation("GET", "/users/{name}", get_user, "getUser", "Show a user", "users", response=User),
    Operation(
        "PATCH", "/users/{name}", update_user, "updateUser", "Change a user's password, admin flag or scope maps", "users",
        body=UserUpdate, response=User, conflict=LAST_ADMIN, action="user.update",
    ),
    Operation(
        "DELETE", "/users/{name}", delete_user, "deleteUser", "Delete a user (its refresh tokens are revoked)", "users",
        status=204, conflict=LAST_ADMIN, action="user.delete",
    ),
]
