"""``/api/v1/refresh-tokens``: the long-lived tokens ``/token`` hands out for ``access_type=offline``; revoke them."""

from __future__ import annotations

import re
from datetime import datetime

from aiohttp import web
from pydantic import Field

from .common import Call, FilterText, Operation, OutModel, QueryModel, no_content, not_found, render

ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
_ID = re.compile(ID_PATTERN)


class RefreshTokenQuery(QueryModel):
    principal: FilterText | None = Field(None, description="only the tokens of this user or robot")


class RefreshToken(OutModel):
    id: str
    principal: str
    expires_at: datetime
    revoked: bool


async def list_refresh_tokens(call: Call) -> web.Response:
    q: RefreshTokenQuery = call.query
    records = await call.auth.identities.list_refresh_tokens(q.principal)
    return render(
        [RefreshToken(id=r.id, principal=r.principal, expires_at=r.expires_at, revoked=r.revoked_at is not None) for r in records]
    )


async def revoke_refresh_token(call: Call) -> web.Response:
    token_id = call.request.match_info["id"]
    if not _ID.fullmatch(token_id) or not await call.auth.revoke_refresh_token(token_id, actor=call.actor, client=call.client):
        raise not_found("refresh token", token_id)
    return no_content()


OPERATIONS = [
    Operation(
        "GET", "/refresh-tokens", list_refresh_tokens, "listRefreshTokens", "List refresh tokens (never the tokens themselves)",
        "refresh-tokens", query=RefreshTokenQuery, response=list[RefreshToken],
    ),
    Operation(
        "DELETE", "/refresh-tokens/{id}", revoke_refresh_token, "revokeRefreshToken",
        "Revoke a refresh token (revoking it again is harmless)", "refresh-tokens", status=204,
        action="refresh_token.revoke", path_params={"id": {"type": "string", "pattern": ID_PATTERN}},
    ),
]
