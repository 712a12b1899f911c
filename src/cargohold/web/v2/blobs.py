"""``/v2/<name>/blobs/<digest>``: pull (with Range) and delete.

Blob bodies go out through ``FileResponse``, which uses kernel ``sendfile``:
the bytes never pass through Python.
"""

from __future__ import annotations

import logging

from aiohttp import web

from ...cache.fill import BlobStream, FillFailed
from ...cache.rules import Route
from .cache import CACHE_HEADER, cache_route, cache_service, refuse_writes
from .common import audit, name, registry

log = logging.getLogger("cargohold.web")


async def get_blob(request: web.Request) -> web.StreamResponse:
    digest = request.match_info["digest"]
    route = cache_route(request)
    extra: dict[str, str] = {}
    if route is not None:
        found, result = await cache_service(request).blob(route, digest)
        if isinstance(found, BlobStream):
            return await _stream_fill(request, route, digest, found)
        blob = found
        extra[CACHE_HEADER] = result
    else:
        blob = await registry(request).blobs.stat(name(request), digest)
    etag = f'"{blob.digest}"'
    if etag in (request.headers.get("If-None-Match") or ""):
        return web.Response(status=304, headers={"ETag": etag, "Docker-Content-Digest": blob.digest, **extra})
    response = web.FileResponse(
        blob.path,
        headers={
            "Docker-Content-Digest": blob.digest,
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "Cache-Control": "max-age=31536000",
            **extra,
        },
    )
    response["etag_digest"] = blob.digest
    return response


async def _stream_fill(request: web.Request, route: Route, digest: str, stream: BlobStream) -> web.StreamResponse:
    """Pass on an upstream download as it arrives; abort the connection if the fill fails verification.

    The fill withholds the last bytes until the digest checks out, so a client whose connection is
    aborted never holds a complete-looking bad blob.
    """
    response = web.StreamResponse(
        headers={
            "Docker-Content-Digest": digest,
            "Content-Type": "application/octet-stream",
            "ETag": f'"{digest}"',
            CACHE_HEADER: "MISS",
        }
    )
    if stream.size is not None:
        response.content_length = stream.size
    if request.method == "HEAD":
        await stream.aclose()
        return response
    await response.prepare(request)
    if request.transport is None:
        await stream.aclose()
        raise ConnectionResetError("the client went away")
    try:
        await stream.sendfile(request.transport)
    except FillFailed as error:
        log.warning("aborting %s@%s: %s", route.local, digest, error)
        response.force_close()
        if request.transport is not None:
            request.transport.abort()
        return response
    finally:
        await stream.aclose()
    await response.write_eof()
    # The client has every byte; the connection's next request waits until the blob is linked and counted.
    await cache_service(request).recorded(digest)
    return response


async def delete_blob(request: web.Request) -> web.Response:
    refuse_writes(request)
    repository, digest = name(request), request.match_info["digest"]
    await registry(request).blobs.delete(repository, digest)
    await audit(request, "blob.delete", f"{repository}@{digest}")
    return web.Response(status=202, headers={"Content-Length": "0"})


def digest_etag(response: web.StreamResponse) -> None:
    """A blob's ETag is its digest (FileResponse would otherwise derive one from mtime and size)."""
    digest = response.get("etag_digest") if isinstance(response, web.FileResponse) else None
    if digest:
        response.headers["ETag"] = f'"{digest}"'
