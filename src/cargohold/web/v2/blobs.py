"""``/v2/<name>/blobs/<digest>``: pull (with Range), HEAD and delete.

Stored blobs go out through ``FileResponse``, which uses kernel ``sendfile``:
the bytes never pass through Python. A blob a cache namespace is still
filling goes out as it arrives (``BlobBody.sendfile``), whole or as a range.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web

from ...cache.fill import FillFailed
from ...oci.errors import RangeNotSatisfiable
from ...registry.repository import BlobBody, Repository
from .cache import CACHE_HEADER
from .common import audit, repository

log = logging.getLogger("cargohold.web")

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


def _headers(digest: str, cache: str | None) -> dict[str, str]:
    headers = {
        "Docker-Content-Digest": digest,
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
    }
    if cache is not None:
        headers[CACHE_HEADER] = cache
    return headers


def _not_modified(request: web.Request, digest: str) -> bool:
    return f'"{digest}"' in (request.headers.get("If-None-Match") or "")


async def get_blob(request: web.Request) -> web.StreamResponse:
    digest = request.match_info["digest"]
    repo = repository(request)
    if request.method == "HEAD":
        size, result = await repo.blob_size(digest)
        headers = _headers(digest, result)
        if _not_modified(request, digest):
            return web.Response(status=304, headers=headers)
        if size is not None:
            headers["Content-Length"] = str(size)
        return web.Response(headers=headers)
    answer = await repo.blob(digest)
    if answer.stream is not None:
        return await _stream_fill(request, repo, digest, answer.stream, answer.cache)
    blob = answer.file
    assert blob is not None
    extra = {CACHE_HEADER: answer.cache} if answer.cache is not None else {}
    etag = f'"{blob.digest}"'
    if _not_modified(request, blob.digest):
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


def _range(request: web.Request, size: int | None) -> tuple[int, int] | None:
    """The one byte range asked for, as (start, end exclusive); None for the whole blob.

    Only a single range of a blob of known size is honoured (what registry clients ask for when they
    resume); anything else gets the whole blob, which RFC 9110 allows.
    """
    raw = request.headers.get("Range")
    match = _RANGE.fullmatch(raw.strip()) if raw else None
    if match is None or size is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        return max(size - int(last), 0), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        raise RangeNotSatisfiable(size)
    return start, end


async def _stream_fill(
    request: web.Request, repo: Repository, digest: str, stream: BlobBody, cache: str | None
) -> web.StreamResponse:
    """Pass on an upstream download as it arrives; abort the connection if the fill fails verification.

    The fill withholds the last bytes until the digest checks out, so a client whose connection is
    aborted never holds a complete-looking bad blob. A range is answered 206 as soon as its bytes are
    in (its end, if it reaches the withheld tail, after the digest checked out).
    """
    try:
        span = _range(request, stream.size)
    except RangeNotSatisfiable:
        await stream.aclose()
        raise
    response = web.StreamResponse(headers=_headers(digest, cache))
    start, end = span if span is not None else (0, stream.size)
    if span is not None:
        response.set_status(206)
        response.headers["Content-Range"] = f"bytes {start}-{span[1] - 1}/{stream.size}"
    if end is not None:
        response.content_length = end - start
    await response.prepare(request)
    if request.transport is None:
        await stream.aclose()
        raise ConnectionResetError("the client went away")
    try:
        await stream.sendfile(request.transport, start, end)
    except ConnectionError:
        # os.sendfile writes past the transport, so a client that hung up shows as a broken pipe while
        # the transport still looks open; close it, so that the client counts as gone (web/disconnects.py).
        if request.transport is not None:
            request.transport.abort()
        raise
    except FillFailed as error:
        log.warning("aborting %s@%s: %s", repo.name, digest, error)
        response.force_close()
        if request.transport is not None:
            request.transport.abort()
        return response
    finally:
        await stream.aclose()
    await response.write_eof()
    # The client has its bytes; the connection's next request waits until the blob is linked and counted.
    await repo.blob_sent(digest)
    return response


async def delete_blob(request: web.Request) -> web.Response:
    repo, digest = repository(request), request.match_info["digest"]
    await repo.delete_blob(digest)
    await audit(request, "blob.delete", f"{repo.name}@{digest}")
    return web.Response(status=202, headers={"Content-Length": "0"})


def digest_etag(response: web.StreamResponse) -> None:
    """A blob's ETag is its digest (FileResponse would otherwise derive one from mtime and size)."""
    digest = response.get("etag_digest") if isinstance(response, web.FileResponse) else None
    if digest:
        response.headers["ETag"] = f'"{digest}"'
