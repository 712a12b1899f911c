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


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {404: "NAME_UNKNOWN", 405: "UNSUPPORTED", 413: "SIZE_INVALID"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except e.RegistryError as exc:
        return oci_error_response(exc.code, exc.message, status_of(exc), exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            return oci_error_response("UNSUPPORTED", "no such endpoint", 404)
        code = _HTTP_CODES.get(exc.status, "UNSUPPORTED")
        return oci_error_response(code, exc.reason or "request rejected", exc.status)
    except (ConnectionResetError, OSError) as exc:
        if request.transport is None or request.transport.is_closing():
            raise  # the client went away; nobody is left to answer
        log.exception("I/O failure handling %s %s", request.method, request.path)
        return oci_error_response("UNKNOWN", f"storage failure: {exc.strerror or exc}", 500)
    except Exception:
        log.exception("unhandled error handling %s %s", request.method, request.path)
        return oci_error_response("UNKNOWN", "internal server error", 500)
