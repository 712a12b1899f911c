"""``/v2/<name>/blobs/uploads/``: monolithic, chunked and resumed pushes, and cross-repository mounts."""

from __future__ import annotations

from aiohttp import web

from ...oci.errors import DigestInvalid
from .common import access, body_stream, content_length, content_range, repository, upload_range


def _session_headers(repository: str, upload_id: str, size: int) -> dict[str, str]:
    return {
        "Location": f"/v2/{repository}/blobs/uploads/{upload_id}",
        "Docker-Upload-UUID": upload_id,
        "Range": upload_range(size),
        "Content-Length": "0",
    }


def _created(repository: str, digest: str) -> web.Response:
    return web.Response(
        status=201,
        headers={"Location": f"/v2/{repository}/blobs/{digest}", "Docker-Content-Digest": digest, "Content-Length": "0"},
    )


async def start_upload(request: web.Request) -> web.Response:
    repo = repository(request)
    query = request.query
    mount, source = query.get("mount"), query.get("from")
    if mount and source:
        mounted = await repo.mount(mount, source)
        if mounted is not None:
            return _created(repo.name, mounted)
    digest = query.get("digest")
    if digest:
        await repo.push_blob(digest, body_stream(request), content_length(request))
        return _created(repo.name, digest)
    caller = access(request)
    state = await repo.start_upload(caller.subject if caller.authenticated else None)
    return web.Response(status=202, headers=_session_headers(repo.name, state.id, 0))


async def upload_status(request: web.Request) -> web.Response:
    repo = repository(request)
    state = repo.upload_status(request.match_info["upload_id"])
    return web.Response(status=204, headers=_session_headers(repo.name, state.id, state.size))


async def patch_upload(request: web.Request) -> web.Response:
    repo, upload_id = repository(request), request.match_info["upload_id"]
    chunk = content_range(request)
    state = await repo.append_upload(upload_id, body_stream(request), chunk[0] if chunk else None, content_length(request))
    return web.Response(status=202, headers=_session_headers(repo.name, upload_id, state.size))


async def finish_upload(request: web.Request) -> web.Response:
    repo, upload_id = repository(request), request.match_info["upload_id"]
    digest = request.query.get("digest")
    chunk = content_range(request)
    if not digest:
        raise DigestInvalid("the digest query parameter is required to complete an upload")
    length = content_length(request)
    body = body_stream(request) if (length or request.body_exists) else None
    await repo.complete_upload(upload_id, digest, body, chunk[0] if chunk else None, length)
    return _created(repo.name, digest)


async def cancel_upload(request: web.Request) -> web.Response:
    await repository(request).cancel_upload(request.match_info["upload_id"])
    return web.Response(status=204, headers={"Content-Length": "0"})
