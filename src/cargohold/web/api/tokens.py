"""``/api/v1/tokens``: robot accounts for CI and machines, each with one token (``chr_…``) shown once."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from pydantic import Field

from ...store.identities import RobotRecord
from .common import Call, InModel, Name, Operation, OutModel, created, no_content, not_found, render
from .users import ScopeMapNames


class Robot(OutModel):
    name: str
    scope_maps: list[str]
    expires_at: datetime | None
    created_by: str
    created_at: datetime
    expired: bool

    @classmethod
    def fields_of(cls, record: RobotRecord) -> dict[str, object]:
        expired = record.expires_at is not None and record.expires_at <= datetime.now(UTC)
        return {
            "name": record.name,
            "scope_maps": record.scope_maps,
            "expires_at": record.expires_at,
            "created_by": record.created_by,
            "created_at": record.created_at,
            "expired": expired,
        }

    @classmethod
    def of(cls, record: RobotRecord) -> "Robot":
        return cls.model_validate(cls.fields_of(record))


class RobotCreated(Robot):
    token: str = Field(description="the robot's secret (use it as the Basic password or a bearer token); shown only here")


class RobotCreate(InModel):
    name: Name
    scope_maps: ScopeMapNames = Field(default_factory=list)
    expires_in_days: int | None = Field(90, ge=1, le=3650, description="null: the token never expires")


async def list_robots(call: Call) -> web.Response:
    return render([Robot.of(r) for r in await call.auth.identities.list_robots()])


async def create_robot(call: Call) -> web.Response:
    body: RobotCreate = call.body
    robot, token = await call.auth.create_robot(
        body.name, body.scope_maps, body.expires_in_days, actor=call.actor, client=call.client
    )
    return created(RobotCreated.model_validate({**Robot.fields_of(robot), "token": token}), f"/tokens/{robot.name}")


async def get_robot(call: Call) -> web.Response:
    name = call.name("token")
    robot = await call.auth.identities.get_robot(name)
    if robot is None:
        raise not_found("token", name)
    return render(Robot.of(robot))


async def delete_robot(call: Call) -> web.Response:
    name = call.name("token")
    if not await call.auth.delete_robot(name, actor=call.actor, client=call.client):
        raise not_found("token", name)
    return no_content()


OPERATIONS = [
    Operation("GET", "/tokens", list_robots, "listTokens", "List robot tokens", "tokens", response=list[Robot]),
    Operation(
        "POST", "/tokens", create_robot, "createToken", "Create a robot token; the secret is in this answer only", "tokens",
        status=201, body=RobotCreate, response=RobotCreated, conflict="a user or robot of that name exists",
        action="token.create", location=True,
    ),
    Operation("GET", "/tokens/{name}", get_robot, "getToken", "Show a robot token (never its secret)", "tokens", response=Robot),
    Operation(
        "DELETE", "/tokens/{name}", delete_robot, "deleteToken", "Delete a robot token", "tokens", status=204,
        action="token.delete",
    ),
]
