"""A small synchronous client for the management API (``/api/v1``), on the standard library.

The CLI makes one or two requests per command, so ``urllib`` is enough and
keeps start-up cheap (no event loop, no aiohttp import). Every failure is one
of the exception classes below, each carrying what the CLI needs to tell the
user: the problem ``detail`` of an API error, the address that could not be
reached, the registry one is not logged in to. Nothing here ever puts a
password or token into an exception message or a ``repr``.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any

DEFAULT_REGISTRY = "http://127.0.0.1:5000"
DEFAULT_TIMEOUT = 30.0


class CliError(Exception):
    """Anything the CLI reports as a one-line message rather than a traceback."""


class InvalidRegistryUrl(CliError, ValueError):
    pass


class ServerUnreachable(CliError):
    """No HTTP answer at all: refused, unresolvable, timed out, TLS failure."""

    def __init__(self, registry: str, reason: str) -> None:
        self.registry = registry
        self.reason = reason
        super().__init__(f"cannot reach {registry}: {reason}")


class NotLoggedIn(CliError):
    """No credentials for this registry: none stored and none in the environment."""

    def __init__(self, registry: str) -> None:
        self.registry = registry
        super().__init__(
            f"not logged in to {registry}: run `cargohold login --registry {registry}` "
            "(or set CARGOHOLD_USERNAME and CARGOHOLD_PASSWORD, or CARGOHOLD_TOKEN)"
        )


class ApiError(CliError):
    """The server answered with an error; ``detail`` is the problem+json ``detail`` (or the best stand-in)."""

    def __init__(self, status: int, title: str, detail: str, problem: dict[str, Any] | None = None) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.problem = problem or {}
        super().__init__(detail)


class AuthenticationFailed(ApiError):
    """401: the credentials were refused (wrong password, deleted user, expired robot token)."""


class PermissionDenied(ApiError):
    """403: authenticated, but not allowed (most management calls need an admin)."""


class NotFound(ApiError):
    """404: no such user, token or scope map (or no management API at this address)."""


class Conflict(ApiError):
    """409: it already exists, or it is still in use."""


_BY_STATUS: dict[int, type[ApiError]] = {401: AuthenticationFailed, 403: PermissionDenied, 404: NotFound, 409: Conflict}


def normalize_registry(url: str) -> str:
    """``HTTP://Host:5000/`` → ``http://host:5000``: one spelling per registry, used as the credentials key."""
    raw = url.strip()
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidRegistryUrl(f"registry must be an http:// or https:// URL, not {raw[:200]!r}")
    if parts.username or parts.password:
        raise InvalidRegistryUrl("put credentials in `cargohold login`, not in the registry URL")
    if parts.query or parts.fragment or parts.path.strip("/"):
        raise InvalidRegistryUrl(f"registry URL must not have a path, query or fragment: {raw[:200]!r}")
    try:
        port = parts.port
    except ValueError:
        raise InvalidRegistryUrl(f"invalid port in registry URL {raw[:200]!r}") from None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


@dataclass(frozen=True)
class Credentials:
    """Basic (user or robot name + password/token) or Bearer (a robot token alone).

    ``source`` says where they came from (``stored``, ``env``, ``prompt``), so
    messages can say which to fix. The secret never shows in ``repr``.
    """

    username: str | None
    secret: str = field(repr=False)
    source: str = "stored"

    @property
    def bearer(self) -> bool:
        return self.username is None

    def authorization(self) -> str:
        if self.username is None:
            return f"Bearer {self.secret}"
        pair = f"{self.username}:{self.secret}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: urllib would resend the Authorization header to wherever they point."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def quote(segment: str) -> str:
    """One path segment: a name with ``/`` or ``..`` in it must not change which resource is addressed."""
    return urllib.parse.quote(segment, safe="")


class ApiClient:
    """The management API of one registry, as one method per call of the contract."""

    def __init__(self, registry: str, credentials: Credentials | None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.registry = normalize_registry(registry)
        self.credentials = credentials
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect())

    # ---- transport -------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        """Send one request; the decoded JSON answer (None for 204), or one of this module's exceptions."""
        if self.credentials is None:
            raise NotLoggedIn(self.registry)
        url = self.registry + path
        if query:
            pairs = {k: v for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        headers = {
            "Accept": "application/json, application/problem+json",
            "Authorization": self.credentials.authorization(),
            "User-Agent": "cargohold-cli",
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(req, timeout=self.timeout) as response:
                status, payload, ctype = response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            with exc:
                status, payload, ctype = exc.code, _read_quietly(exc), exc.headers.get("Content-Type", "")
        except urllib.error.URLError as exc:
            raise ServerUnreachable(self.registry, _reason(exc.reason)) from None
        except (TimeoutError, socket.timeout):
            raise ServerUnreachable(self.registry, f"no answer within {self.timeout:g} s") from None
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            raise ServerUnreachable(self.registry, _reason(exc)) from None
        except (http.client.HTTPException, ValueError) as exc:  # malformed status line, cut-off body
            raise ServerUnreachable(self.registry, f"no valid HTTP answer ({type(exc).__name__})") from None
        if 300 <= status < 400:
            raise ApiError(status, "Redirect", f"the server answered {status} (a redirect), which the CLI does not follow; "
                           "check the --registry URL (http:// vs https://)")
        if status >= 400:
            raise _api_error(status, payload, ctype, path)
        if status == 204 or not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise ApiError(status, "Invalid response", f"the server's answer to {method} {path} is not JSON") from None

    def get(self, path: str, query: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, query=query)

    # ---- the management API ----------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        return self.get("/api/v1/me")

    def list_users(self) -> list[dict[str, Any]]:
        return _items(self.get("/api/v1/users"), "users")

    def get_user(self, name: str) -> dict[str, Any]:
        return self.get(f"/api/v1/users/{quote(name)}")

    def create_user(self, name: str, password: str, admin: bool = False, scope_maps: list[str] | None = None) -> dict[str, Any]:
        body = {"name": name, "password": password, "admin": admin, "scope_maps": scope_maps or []}
        return self.request("POST", "/api/v1/users", body)

    def update_user(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", f"/api/v1/users/{quote(name)}", changes)

    def delete_user(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/users/{quote(name)}")

    def list_tokens(self) -> list[dict[str, Any]]:
        return _items(self.get("/api/v1/tokens"), "tokens")

    def get_token(self, name: str) -> dict[str, Any]:
        return self.get(f"/api/v1/tokens/{quote(name)}")

    def create_token(self, name: str, scope_maps: list[str] | None = None, expires_in_days: int | None | EllipsisType = ...) -> dict[str, Any]:
        """``expires_in_days``: a number of days, None for a token that never expires, omitted for the server's default."""
        body: dict[str, Any] = {"name": name, "scope_maps": scope_maps or []}
        if expires_in_days is not ...:
            body["expires_in_days"] = expires_in_days
        return self.request("POST", "/api/v1/tokens", body)

    def delete_token(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/tokens/{quote(name)}")

    def list_scope_maps(self) -> list[dict[str, Any]]:
        return _items(self.get("/api/v1/scope-maps"), "scope_maps")

    def get_scope_map(self, name: str) -> dict[str, Any]:
        return self.get(f"/api/v1/scope-maps/{quote(name)}")

    def create_scope_map(self, name: str, rules: list[dict[str, Any]], description: str = "") -> dict[str, Any]:
        return self.request("POST", "/api/v1/scope-maps", {"name": name, "description": description, "rules": rules})

    def delete_scope_map(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/scope-maps/{quote(name)}")

    def delete_repository(self, name: str) -> dict[str, Any]:
        return self.request("DELETE", "/api/v1/repositories", query={"repository": name})

    def audit(
        self, limit: int | None = None, before: int | None = None, actor: str | None = None, action: str | None = None
    ) -> dict[str, Any]:
        answer = self.get("/api/v1/audit", {"limit": limit, "before": before, "actor": actor, "action": action})
        if not isinstance(answer, dict) or not isinstance(answer.get("events"), list):
            raise ApiError(200, "Invalid response", "the server's audit answer has no `events` list")
        return answer


def _items(answer: Any, key: str) -> list[dict[str, Any]]:
    """A list endpoint's items, whether the server answers a bare list or ``{"<key>": [...]}``."""
    if isinstance(answer, list):
        return answer
    if isinstance(answer, dict):
        for candidate in (key, "items"):
            if isinstance(answer.get(candidate), list):
                return answer[candidate]
    raise ApiError(200, "Invalid response", f"the server's answer is not a list of {key.replace('_', ' ')}")


def _read_quietly(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read(64 * 1024)
    except OSError:
        return b""


def _reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is `cargohold serve` running there?)"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name ({reason.strerror or reason})"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({reason.verify_message or reason})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


def _api_error(status: int, payload: bytes, ctype: str, path: str) -> ApiError:
    cls = _BY_STATUS.get(status, ApiError)
    problem: dict[str, Any] | None = None
    if "json" in ctype.lower():
        try:
            decoded = json.loads(payload)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            problem = decoded
    if problem is not None:
        title = str(problem.get("title") or f"HTTP {status}")
        detail = problem.get("detail") or problem.get("title")
        if not detail and isinstance(problem.get("errors"), list) and problem["errors"]:  # an OCI error body
            first = problem["errors"][0]
            detail = first.get("message") if isinstance(first, dict) else None
        return cls(status, title, str(detail or f"HTTP {status}"), problem)
    if status == 404 and path.startswith("/api/"):
        return cls(status, "Not Found", "the server has no management API at this address (is it cargohold, and recent?)")
    return cls(status, f"HTTP {status}", f"the server answered HTTP {status}")
