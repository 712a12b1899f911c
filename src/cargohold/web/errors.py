"""The one place where failures become HTTP responses.

``/v2`` speaks the OCI error format; everything else will speak
``application/problem+json`` (management API, later issues).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..oci import errors as e

log = logging.getLogger("cargohold.web")

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")

STATUS: dict[type[e.RegistryError], int] = {
    e.BlobUnknown: 404,
    e.UploadRangeInvalid: 416,
    e.BlobUploadInvalid: 400,
    e.BlobUploadUnknown: 404,
    e.DigestInvalid: 400,
    e.ManifestBlobUnknown: 400,
    e.ManifestInvalid: 400,
    e.ManifestUnknown: 404,
    e.NameInvalid: 400,
    e.NameUnknown: 404,
    e.ManifestTooLarge: 413,
    e.SizeInvalid: 400,
    e.TagInvalid: 400,
    e.Unauthorized: 401,
    e.Denied: 403,
    e.Unsupported: 405,
    e.RangeNotSatisfiable: 416,
    e.PaginationNumberInvalid: 400,
    e.TooManyRequests: 429,
    e.UploadLimitReached: 429,
    e.BodyStalled: 408,
    e.StorageFailure: 500,
    e.UpstreamFailed: 502,
}


def status_of(error: e.RegistryError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


def oci_error_response(code: str, message: str, status: int, detail: object = None) -> web.Response:
    body = {"errors": [{"code": code, "message": message, "detail": detail}]}
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", API_VERSION_HEADER[0]: API_VERSION_HEADER[1]},
    )


def problem_response(status: int, title: str, detail: str, code: str | None = None, extra: dict[str, object] | None = None) -> web.Response:
    """RFC 9457 problem details, the management API's error format."""
    body: dict[str, object] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if code:
        body["code"] = code
    if extra:
        body.update(extra)
    return web.Response(status=status, body=json.dumps(body).encode(), headers={"Content-Type": "application/problem+json"})


def error_response_for(request: web.Request, error: e.RegistryError) -> web.Response:
    """The error in the format of the API the request went to."""
    status = status_of(error)
    if request.path.startswith("/v2"):
        response = oci_error_response(error.code, error.message, status, error.detail)
    else:
        response = problem_response(status, error.code.replace("_", " ").capitalize(), error.message, error.code)
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {404: "NAME_UNKNOWN", 405: "UNSUPPORTED", 413: "SIZE_INVALID"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except e.RegistryError as exc:
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
