"""``/api/v1/keys``: rotate the key that signs access tokens; tokens signed before stay valid until they expire."""

from __future__ import annotations

from aiohttp import web

from .common import Call, Operation, OutModel, render


class RotatedKey(OutModel):
    kid: str


async def rotate(call: Call) -> web.Response:
    return render(RotatedKey(kid=await call.auth.rotate_signing_key(actor=call.actor, client=call.client)))


OPERATIONS = [
    Operation(
        "POST", "/keys/rotate", rotate, "rotateSigningKey", "Start signing access tokens with a new key", "keys",
        response=RotatedKey, action="key.rotate",
    ),
]
