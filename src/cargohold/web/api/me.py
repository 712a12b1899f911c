"""``/api/v1/me``: who the credentials name, for any authenticated caller (``cargohold login`` checks with it)."""

from __future__ import annotations

from typing import Literal

from aiohttp import web

from .common import Call, Operation, OutModel, render


class Me(OutModel):
    name: str
    kind: Literal["user", "robot"]
    admin: bool


async def get_me(call: Call) -> web.Response:
    return render(Me(name=call.caller.name, kind=call.caller.kind, admin=call.caller.admin))  # type: ignore[arg-type]


OPERATIONS = [
    Operation("GET", "/me", get_me, "getMe", "Who the credentials name", "me", response=Me, access="authenticated"),
]
