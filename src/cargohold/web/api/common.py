"""What every /api/v1 handler shares: the operation table entry, the caller, parsing, rendering, errors.

A handler sees a ``Call``: who is calling (already authenticated and, for
admin operations, already checked), the validated body and query, and the
``AuthService``. It calls one service or store method and renders a pydantic
model. Everything that can go wrong on the way — credentials, rights, bad
JSON, failed validation, a name taken, the last admin — is a ``DomainError``
with a code registered in ``web/codes.py``, and becomes an
``application/problem+json`` answer here, in one place, so that no handler
needs a ``try`` and no bad input reaches a 500.

The same ``Operation`` entries feed the router (``__init__.py``) and the
OpenAPI document (``openapi.py``), so the documented API is the served one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...auth.errors import AuthenticationRequired, InvalidToken
from ...auth.scopes import Principal, token_principal
from ...auth.service import NAME_PATTERN, AuthService
from ...oci.errors import Denied, DomainError, NotFound
from ..auth import resolve_access
from ..clients import client_address
from ..codes import AuthDisabled, InvalidJson, UnsupportedMediaType, ValidationFailed
from ..errors import problem
from ..keys import AUTH

API_PREFIX = "/api/v1"
LOCAL_OPERATOR = Principal("user", "local", admin=True)  # the caller when auth is off
BASIC_CHALLENGE = 'Basic realm="cargohold"'
_NAME = re.compile(NAME_PATTERN)

# ---- shared schema pieces --------------------------------------------------------------------------

Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=64, description="lower-case name: " + NAME_PATTERN)]
# Free text that goes into the database: no C0 control characters but tab and newline (PostgreSQL refuses NUL).
TEXT_PATTERN = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F]*$"
FilterText = Annotated[str, Field(pattern=TEXT_PATTERN, max_length=255)]


class InModel(BaseModel):
    """A request body: exactly the documented fields, JSON types as documented (no "true" for true)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class QueryModel(BaseModel):
    """Query parameters arrive as strings, so they are converted; unknown parameters are ignored."""

    model_config = ConfigDict(extra="ignore")


class OutModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldError(OutModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``), the format of every /api/v1 error."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str | None = Field(None, description="a stable, machine-readable error code")
    errors: list[FieldError] | None = Field(None, description="what failed validation (422 only)")


# ---- the operation table ---------------------------------------------------------------------------

Access = Literal["admin", "authenticated", "public"]


@dataclass
class Call:
    """One request to an operation, after authentication, authorization and validation."""

    request: web.Request
    auth: AuthService
    caller: Principal
    body: Any = None
    query: Any = None

    @property
    def actor(self) -> str:
        return self.caller.name

    @property
    def client(self) -> str:
        return client_address(self.request)

    async def audit(self, action: str, target: str, outcome: str = "ok", detail: dict[str, Any] | None = None) -> None:
        """Record an admin action; without auth (``--no-auth``) there is no audit log to write to."""
        if self.auth is not None:
            await self.auth.audit(self.actor, self.client, action, target, outcome, detail)

    def name(self, kind: str) -> str:
        """The ``{name}`` path parameter; a name outside the grammar names nothing (404)."""
        value = self.request.match_info["name"]
        if not _NAME.fullmatch(value):
            raise not_found(kind, value)
        return value


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Operation:
    """One row of the route table: what the router serves and what the OpenAPI document says."""

    method: str
    path: str  # below /api/v1, e.g. "/users/{name}"
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    status: int = 200
    body: type[InModel] | None = None
    query: type[QueryModel] | None = None
    response: Any = None  # a model, list[model], or None for an empty body
    access: Access = "admin"
    conflict: str | None = None  # when the operation can answer 409, and why
    action: str | None = None  # the audit action; a non-admin's attempt is audited as denied
    location: bool = False  # a 201 answer names the new resource in Location
    description: str = ""
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Served with auth off too (the loopback-only --no-auth mode), where every caller is the local operator.
    # Identity operations are not: without auth there are no identities.
    without_auth: bool = False
    # Statuses beyond the ones implied above, with what they mean: a 2xx answers with the response model,
    # anything else with a problem (e.g. 202 for a job left running, 502 when an upstream failed).
    answers: dict[int, str] = field(default_factory=dict)


def served_without_auth(operations: list[Operation]) -> list[Operation]:
    """The same operations, also answered when auth is off (cache management needs no identities)."""
    return [replace(op, without_auth=True) for op in operations]


# ---- errors ----------------------------------------------------------------------------------------


def not_found(kind: str, name: str) -> NotFound:
    return NotFound(f"no {kind} named {name[:100]!r}")


def api_problem(error: DomainError, extra: dict[str, object] | None = None) -> web.Response:
    """problem+json (``web/errors.py``), with the Basic challenge a 401 from the management API carries."""
    response = problem(error, extra)
    if response.status == 401:
        response.headers["WWW-Authenticate"] = BASIC_CHALLENGE
    return response


def _validation_failed(exc: ValidationError, where: str) -> DomainError:
    if any(e["type"] == "json_invalid" for e in exc.errors()):
        return InvalidJson()
    # Only where, what and why: pydantic's ``input`` would echo a rejected password back.
    errors = [{"loc": [where, *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)]
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
    return ValidationFailed(summary, errors)


# ---- parsing and rendering -------------------------------------------------------------------------


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (content_type.startswith("application/") and content_type.endswith("+json"))


async def _parse_body(request: web.Request, model: type[InModel]) -> InModel:
    # Only JSON: a browser holding cached Basic credentials may send a text/plain or form POST to
    # another origin without asking (no CORS preflight); requiring JSON makes that cross-site
    # request impossible without the preflight this server never approves.
    if not _is_json(request.content_type) or "Content-Type" not in request.headers:
        raise UnsupportedMediaType()
    raw = await request.read()
    if not raw.strip():
        raise InvalidJson("a JSON body is required")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _validation_failed(exc, "body") from None


def _parse_query(request: web.Request, model: type[QueryModel]) -> QueryModel:
    # An empty value (``?actor=``) means "not given", as in a form left blank.
    values = {k: request.query.get(k) for k in model.model_fields if request.query.get(k)}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise _validation_failed(exc, "query") from None


def _json_value(payload: Any) -> Any:
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json")
    if isinstance(payload, list):
        return [_json_value(item) for item in payload]
    return payload


def render(payload: BaseModel | list[Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    all_headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    all_headers.update(headers or {})
    return web.Response(status=status, body=json.dumps(_json_value(payload)).encode(), headers=all_headers)


def created(payload: BaseModel, location: str) -> web.Response:
    return render(payload, 201, {"Location": API_PREFIX + location})


def no_content() -> web.Response:
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


# ---- authentication and authorization --------------------------------------------------------------


async def authenticate(request: web.Request, auth: AuthService) -> Principal:
    """The caller's live rights, whichever way they prove who they are; raises Unauthorized subclasses.

    Basic (a user's password, or a robot token as the password), a robot token
    as a bearer token, or an access token from ``/token``: its ``sub`` and
    ``sid`` name the principal, whose *current* rights apply (a demoted admin is
    demoted at once, whatever their token says), cut down to what the token's
    ``access`` claim names (admin only with ``registry:management:*``).
    """
    access = await resolve_access(request, auth)
    if access.claims is not None:
        if access.principal is None:
            raise InvalidToken("the token names no identity")  # an anonymous token
        return token_principal(access.principal, access.claims.get("access") or [])
    if access.principal is None or not access.principal.authenticated:
        raise AuthenticationRequired("the management API needs credentials: Basic, or a bearer token")
    return access.principal


def endpoint(op: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of one operation: authenticate, authorize, validate, run, map failures."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            auth = request.app.get(AUTH)
            if op.access == "public":
                return await op.handler(Call(request, auth, Principal("anonymous", "anonymous")))  # type: ignore[arg-type]
            if auth is None and op.without_auth:
                call = Call(request, auth, LOCAL_OPERATOR)  # type: ignore[arg-type]
                if op.query is not None:
                    call.query = _parse_query(request, op.query)
                if op.body is not None:
                    call.body = await _parse_body(request, op.body)
                return await op.handler(call)
            if auth is None:
                raise AuthDisabled()
            caller = await authenticate(request, auth)
            if op.access == "admin" and not caller.admin:
                if op.action is not None:
                    target = request.match_info.get("name") or request.match_info.get("id") or "-"
                    await auth.audit(caller.name, client_address(request), op.action, target[:100], "denied")
                raise Denied(f"{caller.name} is not an admin")
            call = Call(request, auth, caller)
            if op.query is not None:
                call.query = _parse_query(request, op.query)
            if op.body is not None:
                call.body = await _parse_body(request, op.body)
            return await op.handler(call)
        except DomainError as exc:
            return api_problem(exc)

    handle.__name__ = op.operation_id
    return handle
