"""Request parsing shared by the /v2 handlers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import quote

from aiohttp import web

from ...oci.errors import BlobUploadInvalid, PaginationNumberInvalid, SizeInvalid
from ...auth.scopes import READ
from ...cache.repository import CachedRepository
from ...registry.ingest import Readable
from ...registry.repository import LocalRepository, Repository
from ...registry.service import Registry
from ..access import UNRESTRICTED, Access
from ..clients import client_address
from ..keys import AUTH, REGISTRY
from .cache import cache_route, cache_service

STREAM_CHUNK = 1 << 20
_REPOSITORY = "repository"
_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?([0-9]+)-([0-9]+)(?:/(?:[0-9]+|\*))?")


def registry(request: web.Request) -> Registry:
    return request.app[REGISTRY]


def access(request: web.Request) -> Access:
    """Set by the auth middleware; with auth off, everything is allowed."""
    return request.get("access", UNRESTRICTED)


async def audit(request: web.Request, action: str, target: str, detail: dict[str, object] | None = None) -> None:
    auth = request.app.get(AUTH)
    if auth is not None:
        await auth.audit(access(request).subject, client_address(request), action, target, "ok", detail)


def name(request: web.Request) -> str:
    return request.match_info["name"]


def repository(request: web.Request) -> Repository:
    """The repository in the path, as this caller sees it: chosen once per request (local, or a cache namespace)."""
    found = request.get(_REPOSITORY)
    if found is None:
        caller = access(request)
        readable = _readable(caller)
        local = LocalRepository(registry(request), name(request), readable)
        route = cache_route(request)
        found = local if route is None else CachedRepository(local, route, cache_service(request), readable)
        request[_REPOSITORY] = found
    return found


def _readable(caller: Access) -> Readable:
    """The mount rule's question for this caller: may it pull from that repository?"""
    return lambda other: caller.may(other, READ)


async def body_stream(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives, never all of it at once."""
    async for chunk in request.content.iter_chunked(STREAM_CHUNK):
        yield chunk


def content_length(request: web.Request) -> int | None:
    raw = request.headers.get("Content-Length")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit():
        raise SizeInvalid("Content-Length must be a non-negative integer")
    return int(raw)


def content_range(request: web.Request) -> tuple[int, int] | None:
    """``Content-Range: <start>-<end>`` (inclusive) of a chunk, checked against Content-Length."""
    raw = request.headers.get("Content-Range")
    if raw is None:
        return None
    match = _CONTENT_RANGE.fullmatch(raw.strip())
    if not match:
        raise BlobUploadInvalid(f"malformed Content-Range: {raw[:100]!r}")
    start, end = int(match.group(1)), int(match.group(2))
    if end < start:
        raise BlobUploadInvalid("Content-Range ends before it starts")
    length = content_length(request)
    if length is not None and length != end - start + 1:
        raise SizeInvalid(f"Content-Range covers {end - start + 1} bytes but Content-Length is {length}")
    return start, end


def page_size(request: web.Request) -> int | None:
    raw = request.query.get("n")
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise PaginationNumberInvalid(f"n must be a non-negative integer, not {raw[:20]!r}")
    return int(raw)


def page_after(request: web.Request) -> str | None:
    """``last``, cut at its first NUL: the same page (no name holds a NUL, and every name after ``a\\0…`` is
    after ``a``), and a cursor PostgreSQL can compare (it refuses NUL in text: this was a 500)."""
    raw = request.query.get("last")
    return raw.split("\x00", 1)[0] or None if raw else None


def next_link(path: str, n: int, last: str) -> str:
    return f'<{path}?n={n}&last={quote(last, safe="")}>; rel="next"'


def upload_range(size: int) -> str:
    """The ``Range`` header of an upload: inclusive end, ``0-0`` when empty (as Distribution and clients expect)."""
    return f"0-{max(size - 1, 0)}"
