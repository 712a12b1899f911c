"""``/token``: the Docker token service (GET with Basic credentials) and its OAuth2 form (POST).

GET is what ``docker login``, skopeo, podman and crane use; POST with the
``password`` and ``refresh_token`` grants is what containerd and docker's
identity tokens use. Access tokens carry only the granted subset of the
requested scopes; refresh tokens are stored (hashed) and can be revoked.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..auth.errors import InvalidCredentials, InvalidToken
from ..auth.scopes import Principal, parse_scopes
from ..auth.service import AuthService
from ..oci.errors import RegistryError
from .auth import parse_authorization
from .clients import client_address
from .codes import status_of
from .keys import AUTH, SETTINGS


def _json(payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    all_headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    all_headers.update(headers or {})
    return web.Response(status=status, body=json.dumps(payload).encode(), headers=all_headers)


def _oauth_error(error: str, description: str, status: int, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return _json({"error": error, "error_description": description}, status, headers)


def _check_service(request: web.Request, service: str | None) -> web.Response | None:
    expected = request.app[SETTINGS].auth_service
    if service and service != expected:
        return _oauth_error("invalid_request", f"this token service is {expected!r}, not {service[:100]!r}", 400)
    return None


def _failure(exc: RegistryError, basic_realm: bool) -> web.Response:
    status = status_of(exc)
    error = "invalid_grant" if isinstance(exc, (InvalidCredentials, InvalidToken)) else "unauthorized_client"
    if status == 429:
        error = "slow_down"
    response = _oauth_error(error, exc.message, status, getattr(exc, "retry_after", None))
    if status == 401 and basic_realm:
        response.headers["WWW-Authenticate"] = 'Basic realm="cargohold"'
    return response


def _issued(auth: AuthService, principal: Principal, scopes: list[str]) -> dict[str, Any]:
    issued, access = auth.issue_access_token(principal, parse_scopes(scopes))
    at = datetime.fromtimestamp(issued.issued_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    granted = " ".join(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access)  # type: ignore[arg-type]
    return {"token": issued.token, "access_token": issued.token, "expires_in": issued.expires_in, "issued_at": at, "scope": granted}


async def get_token(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    if (bad := _check_service(request, request.query.get("service"))) is not None:
        return bad
    parsed = parse_authorization(request.headers.get("Authorization"))
    try:
        if parsed is None:
            if request.headers.get("Authorization"):
                raise InvalidCredentials("malformed Authorization header")
            principal = await auth.anonymous()
        elif parsed[0] == "basic":
            principal = await auth.authenticate(parsed[1], parsed[2], client_address(request))
        else:
            principal = await auth.authenticate_robot_token(parsed[1], client_address(request))
    except RegistryError as exc:
        return _failure(exc, basic_realm=True)
    body = _issued(auth, principal, request.query.getall("scope", []))
    if request.query.get("offline_token") == "true" and principal.authenticated:
        body["refresh_token"] = (await auth.issue_refresh_token(principal, request.query.get("client_id"))).token
    return _json(body)


async def post_token(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    try:
        form = await request.post()
    except (ValueError, LookupError, HttpProcessingError) as exc:
        # A multipart body without a boundary, cut short or malformed, an unknown charset, bytes that are
        # not in the charset: the client's mistake, never a 500.
        return _oauth_error("invalid_request", f"the form body could not be read: {type(exc).__name__}", 400)
    if (bad := _check_service(request, _field(form, "service"))) is not None:
        return bad
    grant_type = _field(form, "grant_type")
    scopes = [str(v) for v in form.getall("scope", [])]
    client = client_address(request)
    try:
        if grant_type == "password":
            username, password = _field(form, "username"), _field(form, "password")
            if not username or not password:
                return _oauth_error("invalid_request", "username and password are required", 400)
            principal = await auth.authenticate(username, password, client)
            body = _issued(auth, principal, scopes)
            if _field(form, "access_type") == "offline":
                body["refresh_token"] = (await auth.issue_refresh_token(principal, _field(form, "client_id"))).token
        elif grant_type == "refresh_token":
            token = _field(form, "refresh_token")
            if not token:
                return _oauth_error("invalid_request", "refresh_token is required", 400)
            principal, successor = await auth.redeem_refresh_token(token, client)
            body = _issued(auth, principal, scopes)
            body["refresh_token"] = successor.token if successor is not None else token  # rotated: the old one is spent
        else:
            return _oauth_error("unsupported_grant_type", "grant_type must be password or refresh_token", 400)
    except RegistryError as exc:
        return _failure(exc, basic_realm=False)
    return _json(body)


def _field(form: Any, key: str) -> str | None:
    value = form.get(key)
    return str(value) if value is not None else None


def add_routes(app: web.Application) -> None:
    app.router.add_get("/token", get_token)
    app.router.add_post("/token", post_token)
