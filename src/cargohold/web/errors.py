"""Where failures become HTTP responses: one renderer per API, both reading the registry in ``codes.py``.

``/v2`` speaks the OCI error format (``{"errors": [{code, message, detail}]}``);
``/api/v1`` and every other path speak ``application/problem+json`` (RFC 9457)
with the same stable ``code``. The token service (``token.py``) speaks OAuth2
errors, with the status from the same registry.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..oci import errors as e
from .codes import ValidationFailed, status_of, title_of

log = logging.getLogger("cargohold.web")

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")


def oci_error_response(code: str, message: str, status: int, detail: object = None) -> web.Response:
    body = {"errors": [{"code": code, "message": message, "detail": detail}]}
    return web.Response(
        status=status,
        # A detail holding something JSON cannot say (a Digest, a set, bytes) is told as text, not turned into a 500.
        body=json.dumps(body, default=str).encode(),
        headers={"Content-Type": "application/json", API_VERSION_HEADER[0]: API_VERSION_HEADER[1]},
    )


def problem_response(status: int, title: str, detail: str, code: str | None = None, extra: dict[str, object] | None = None) -> web.Response:
    """RFC 9457 problem details, the management API's error format."""
    body: dict[str, object] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if code:
        body["code"] = code
    if extra:
        body.update(extra)
    return web.Response(status=status, body=json.dumps(body, default=str).encode(), headers={"Content-Type": "application/problem+json"})


def oci_error(error: e.DomainError) -> web.Response:
    """The /v2 rendering of a domain error."""
    return _with_retry_after(oci_error_response(error.code, error.message, status_of(error), error.detail), error)


def problem(error: e.DomainError, extra: dict[str, object] | None = None) -> web.Response:
    """The problem+json rendering of a domain error; ``extra`` adds members (e.g. the failed import's id)."""
    status = status_of(error)
    members: dict[str, object] = {}
    if isinstance(error, ValidationFailed):
        members["errors"] = error.errors
    members.update(extra or {})
    return _with_retry_after(problem_response(status, title_of(status), error.message, error.code, members), error)


def _with_retry_after(response: web.Response, error: e.DomainError) -> web.Response:
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(0, math.ceil(retry_after)))
    return response


def error_response_for(request: web.Request, error: e.DomainError) -> web.Response:
    """The error in the format of the API the request went to."""
    return oci_error(error) if request.path.startswith("/v2") else problem(error)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {404: "NAME_UNKNOWN", 405: "UNSUPPORTED", 413: "SIZE_INVALID"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except e.DomainError as exc:
        return error_response_for(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if not request.path.startswith("/v2"):
            return problem_response(exc.status, exc.reason or "error", exc.text or exc.reason or "request rejected")
        if exc.status == 404:
            return oci_error_response("UNSUPPORTED", "no such endpoint", 404)
        code = _HTTP_CODES.get(exc.status, "UNSUPPORTED")
        return oci_error_response(code, exc.reason or "request rejected", exc.status)
    except (ConnectionResetError, OSError) as exc:
        if request.transport is None or request.transport.is_closing():
            raise  # the client went away; nobody is left to answer
        log.exception("I/O failure handling %s %s", request.method, request.path)
        return error_response_for(request, e.StorageFailure(f"storage failure: {exc.strerror or type(exc).__name__}"))
    except Exception:
        log.exception("unhandled error handling %s %s", request.method, request.path)
        return error_response_for(request, e.RegistryError("internal server error"))
