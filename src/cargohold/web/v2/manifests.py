"""``/v2/<name>/manifests/<reference>``: pull, push and delete, byte-exact."""

from __future__ import annotations

from aiohttp import web

from ...oci.errors import ManifestTooLarge, ManifestUnknown
from ...registry.manifests import accepts, is_digest_reference
from ..keys import SETTINGS
from .cache import CACHE_HEADER
from .common import audit, repository


async def get_manifest(request: web.Request) -> web.Response:
    reference = request.match_info["reference"]
    answered = await repository(request).manifest(reference)
    manifest, result = answered.manifest, answered.cache
    # Clients such as skopeo send one Accept header per media type: they all count (RFC 9110 §5.3).
    if not is_digest_reference(reference) and not accepts(",".join(request.headers.getall("Accept", ())), manifest.media_type):
        # Never converted (bytes are sacred): a client that cannot take this type is told so.
        raise ManifestUnknown(
            f"manifest is {manifest.media_type}, which the request's Accept header does not allow",
            detail={"mediaType": manifest.media_type},
        )
    headers = {
        "Content-Type": manifest.media_type,
        "Docker-Content-Digest": manifest.digest,
        "ETag": f'"{manifest.digest}"',
    }
    if result is not None:
        headers[CACHE_HEADER] = result
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(manifest.body))
        return web.Response(headers=headers)
    return web.Response(body=manifest.body, headers=headers)


async def put_manifest(request: web.Request) -> web.Response:
    repo, reference = repository(request), request.match_info["reference"]
    limit = request.app[SETTINGS].manifest_max_bytes
    if (request.content_length or 0) > limit:
        raise ManifestTooLarge(f"manifest is {request.content_length} bytes; the limit is {limit}")
    body = await request.content.read(limit + 1)
    while len(body) <= limit and not request.content.at_eof():
        more = await request.content.read(limit + 1 - len(body))
        if not more:
            break
        body += more
    extra_tags = request.query.getall("tag", [])
    pushed = await repo.put_manifest(reference, body, request.headers.get("Content-Type"), extra_tags)
    await audit(request, "manifest.push", f"{repo.name}@{pushed.digest}", {"reference": reference, "tags": extra_tags})
    headers = {
        "Location": f"/v2/{repo.name}/manifests/{pushed.digest}",
        "Docker-Content-Digest": pushed.digest,
        "Content-Length": "0",
    }
    if pushed.subject:
        headers["OCI-Subject"] = pushed.subject
    response = web.Response(status=201, headers=headers)
    for tag in extra_tags:
        response.headers.add("OCI-Tag", tag)
    return response


async def delete_manifest(request: web.Request) -> web.Response:
    repo, reference = repository(request), request.match_info["reference"]
    await repo.delete_manifest(reference)
    await audit(request, "manifest.delete", f"{repo.name}:{reference}" if ":" not in reference else f"{repo.name}@{reference}")
    return web.Response(status=202, headers={"Content-Length": "0"})
