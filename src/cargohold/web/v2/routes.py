"""The /v2 route table. Repository names contain slashes, hence the greedy name pattern."""

from __future__ import annotations

from aiohttp import web

from ...auth.scopes import DELETE, METADATA, READ, WRITE
from ..auth import mark
from . import base, blobs, listing, manifests, referrers, uploads

# The action each handler needs on the repository in its path (checked by web/auth.py).
for _handler, _action in (
    (listing.list_tags, METADATA),
    (manifests.get_manifest, READ),
    (manifests.put_manifest, WRITE),
    (manifests.delete_manifest, DELETE),
    (uploads.start_upload, WRITE),
    (uploads.upload_status, WRITE),
    (uploads.patch_upload, WRITE),
    (uploads.finish_upload, WRITE),
    (uploads.cancel_upload, WRITE),
    (blobs.get_blob, READ),
    (blobs.delete_blob, DELETE),
    (referrers.list_referrers, READ),
):
    mark(_action)(_handler)

# Any characters here: the registry layer validates names, so a bad one is NAME_INVALID, not a 404.
NAME = "{name:.+}"


def add_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.get("/v2/", base.version_check),
            web.get("/v2/_catalog", listing.catalog),
            web.get(f"/v2/{NAME}/tags/list", listing.list_tags),
            web.get(f"/v2/{NAME}/manifests/{{reference}}", manifests.get_manifest),
            web.put(f"/v2/{NAME}/manifests/{{reference}}", manifests.put_manifest),
            web.delete(f"/v2/{NAME}/manifests/{{reference}}", manifests.delete_manifest),
            web.post(f"/v2/{NAME}/blobs/uploads/", uploads.start_upload),
            web.post(f"/v2/{NAME}/blobs/uploads", uploads.start_upload),
            web.get(f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.upload_status),
            web.patch(f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.patch_upload),
            web.put(f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.finish_upload),
            web.delete(f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.cancel_upload),
            web.get(f"/v2/{NAME}/blobs/{{digest}}", blobs.get_blob),
            web.delete(f"/v2/{NAME}/blobs/{{digest}}", blobs.delete_blob),
            web.get(f"/v2/{NAME}/referrers/{{digest}}", referrers.list_referrers),
        ]
    )
