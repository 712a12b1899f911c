"""Authentication and authorization of every request, before any handler runs.

/v2 follows the Docker token flow: no or insufficient credentials get 401
with a ``WWW-Authenticate: Bearer realm=…,service=…,scope=…`` challenge; an
authenticated caller without the right gets 403 ``DENIED``. Basic auth and
robot tokens are accepted directly too. The client allow-list is checked
first, for every path.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..auth.errors import AccessDenied, AuthenticationRequired, InsufficientScope, InvalidToken
from ..auth.scopes import ACTION_TO_DOCKER, ANONYMOUS, METADATA, READ
from ..auth.service import AuthService
from ..config import Settings
from ..oci.errors import Denied, RegistryError
from ..oci.names import is_valid_name
from .access import Access
from .clients import client_address
from .errors import error_response_for
from .keys import AUTH, SETTINGS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ACTION = "cargohold_action"  # route attribute: the action a /v2 handler needs on its repository
CATALOG_SCOPE = "registry:catalog:*"


def parse_authorization(header: str | None) -> tuple[str, str, str] | None:
    """("basic", user, password) or ("bearer", token, "") from an Authorization header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "basic":
        try:
            # Non-ASCII text raises ValueError (not binascii.Error) in b64decode: both are bad credentials.
            decoded = base64.b64decode(value, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        return ("basic", user, password) if sep else None
    if scheme == "bearer" and value:
        return ("bearer", value, "")
    return None


async def resolve_access(request: web.Request, auth: AuthService) -> Access:
    """Who is calling: raises for bad credentials; anonymous when none are given."""
    parsed = parse_authorization(request.headers.get("Authorization"))
    client = client_address(request)
    if parsed is None:
        if request.headers.get("Authorization"):
            raise AuthenticationRequired("malformed Authorization header")
        return Access(await auth.anonymous())
    kind, first, second = parsed
    if kind == "basic":
        return Access(await auth.authenticate(first, second, client))
    if first.count(".") == 2:
        claims = auth.verify_access_token(first)
        if claims.get("sub") == ANONYMOUS.name:
            return Access(None, claims)
        holder = await auth.token_holder(claims)
        if holder is None:
            raise InvalidToken("the token's subject no longer exists")
        return Access(holder, claims)
    return Access(await auth.authenticate_robot_token(first, client))


# A Host header worth echoing: a DNS name or an IP literal, and an optional port. Anything else (quotes,
# commas, spaces, a path) would let a client write into the challenge it is sent.
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)


def realm(request: web.Request, settings: Settings) -> str:
    """The token endpoint clients are sent to: ``auth_realm``, else ``public_url``'s ``/token``, else this
    server's ``/token`` under the request's Host when that is a plain host[:port], else under the listen address."""
    if settings.auth_realm:
        return settings.auth_realm
    if settings.public_url:
        return f"{settings.public_url}/token"
    host = request.host if _HOST.fullmatch(request.host or "") else settings.listen
    return f"{request.scheme}://{host}/token"


def quoted(value: str) -> str:
    """An RFC 9110 quoted-string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(request: web.Request, settings: Settings, scope: str | None, error: str | None = None) -> str:
    parts = [f"realm={quoted(realm(request, settings))}", f"service={quoted(settings.auth_service)}"]
    if scope:
        parts.append(f"scope={quoted(scope)}")
    if error:
        parts.append(f"error={quoted(error)}")
    return "Bearer " + ",".join(parts)


def _docker_scope(repository: str, action: str, method: str) -> str:
    docker = ACTION_TO_DOCKER.get(action, "pull")
    if docker == "push":
        return f"repository:{repository}:pull,push"
    return f"repository:{repository}:{docker}"


def _unauthorized(request: web.Request, settings: Settings, exc: RegistryError, scope: str | None, error: str | None) -> web.Response:
    response = error_response_for(request, exc)
    response.headers["WWW-Authenticate"] = challenge(request, settings, scope, error)
    return response


def allow_list(networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            address = ipaddress.ip_address(client_address(request))  # behind a trusted proxy: the forwarded client
        except ValueError:
            address = None
        if address is None or not any(address in net for net in networks):
            return error_response_for(request, Denied("this client address is not allowed to use the registry"))
        return await handler(request)

    return middleware


@web.middleware
async def v2_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Decide /v2 access; other paths resolve their caller themselves (token service, management API)."""
    if not request.path.startswith("/v2"):
        return await handler(request)
    settings = request.app[SETTINGS]
    auth = request.app[AUTH]
    route = request.match_info.route
    action: str | None = getattr(route.handler, ACTION, None) if route is not None else None
    repository = request.match_info.get("name")
    catalog = request.path == "/v2/_catalog"
    scope = None
    if repository and action:
        # The name is echoed in a header: only a valid one (no quotes, no control characters) goes there.
        scope = _docker_scope(repository, action, request.method) if is_valid_name(repository) else None
    elif catalog:
        scope = CATALOG_SCOPE
    try:
        access = await resolve_access(request, auth)
    except InvalidToken as exc:
        return _unauthorized(request, settings, exc, scope, "invalid_token")
    except AuthenticationRequired as exc:
        return _unauthorized(request, settings, exc, scope, None)
    except RegistryError as exc:
        response = error_response_for(request, exc)
        if response.status == 401:
            response.headers["WWW-Authenticate"] = challenge(request, settings, scope)
        return response
    request["access"] = access
    if repository and action:
        if not access.may(repository, action) and not (action == METADATA and access.may(repository, READ)):
            return _refuse(request, settings, access, repository, action, scope)
        source = _mount_source(request)
        if source is not None and access.claims is not None and not access.may(source, READ):
            # The mount would be refused only because the token lacks pull on the source: if its holder
            # may pull there, ask for a token naming both (as Distribution does), so the blob is mounted.
            holder = access.principal
            if holder is not None and holder.may(source, READ):
                wider = f"{scope} repository:{source}:pull" if scope else f"repository:{source}:pull"
                return _unauthorized(request, settings, InsufficientScope(), wider, "insufficient_scope")
    elif not access.authenticated:
        # The version check and the catalog need an identity; a 401 here starts the token flow.
        return _unauthorized(request, settings, AuthenticationRequired(), scope, None)
    elif catalog and access.claims is not None:
        # A token names the catalog, not the repositories in it: list what its holder may list now.
        holder = access.principal if access.may_catalog() else None
        if holder is None:
            return _unauthorized(request, settings, InsufficientScope(), scope, "insufficient_scope")
        request["access"] = Access(holder)
    return await handler(request)


def _mount_source(request: web.Request) -> str | None:
    """``from`` of a cross-repository mount (``POST …/blobs/uploads/?mount=…&from=…``) with a valid name."""
    if request.method != "POST" or not request.path.endswith("/blobs/uploads/"):
        return None
    source = request.query.get("from")
    if not request.query.get("mount") or not source or not is_valid_name(source):
        return None
    return source


def _refuse(
    request: web.Request, settings: Settings, access: Access, repository: str, action: str, scope: str | None
) -> web.Response:
    if not access.authenticated:
        return _unauthorized(request, settings, AuthenticationRequired(), scope, None)
    if access.claims is not None:
        # The token lacks the action; if its holder has the right, the client should get a wider token.
        # An anonymous token has no holder: credentials might help, so it is a 401 too.
        holder = access.principal
        if holder is None or holder.may(repository, action):
            return _unauthorized(request, settings, InsufficientScope(), scope, "insufficient_scope")
    return error_response_for(
        request, AccessDenied(f"{access.subject} may not {action.split('/')[-1]} {repository}")
    )


def mark(action: str) -> Callable[[Handler], Handler]:
    """Declare the action a /v2 handler needs on the repository in its path."""

    def decorate(handler: Handler) -> Handler:
        setattr(handler, ACTION, action)
        return handler

    return decorate
