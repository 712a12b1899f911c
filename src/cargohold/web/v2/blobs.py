"""``/v2/<name>/blobs/<digest>``: pull (with Range) and delete.

Blob bodies go out through ``FileResponse``, which uses kernel ``sendfile``:
the bytes never pass through Python.
"""

from __future__ import annotations

from aiohttp import web

from .common import audit, name, registry



async def get_blob(request: web.Request) -> web.StreamResponse:
    digest = request.match_info["digest"]
    blob = await registry(request).blobs.stat(name(request), digest)
    etag = f'"{blob.digest}"'
    if etag in (request.headers.get("If-None-Match") or ""):
        return web.Response(status=304, headers={"ETag": etag, "Docker-Content-Digest": blob.digest})
    response = web.FileResponse(
        blob.path,
        headers={
            "Docker-Content-Digest": blob.digest,
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "Cache-Control": "max-age=31536000",
        },
    )
    response["etag_digest"] = blob.digest
    return response


async def delete_blob(request: web.Request) -> web.Response:
    repository, digest = name(request), request.match_info["digest"]
    await registry(request).blobs.delete(repository, digest)
    await audit(request, "blob.delete", f"{repository}@{digest}")
    return web.Response(status=202, headers={"Content-Length": "0"})


def digest_etag(response: web.StreamResponse) -> None:
    """A blob's ETag is its digest (FileResponse would otherwise derive one from mtime and size)."""
    digest = response.get("etag_digest") if isinstance(response, web.FileResponse) else None
    if digest:
        response.headers["ETag"] = f'"{digest}"'
