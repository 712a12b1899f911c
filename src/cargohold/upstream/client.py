"""The outbound registry client: manifests, blobs, referrers and tags from an upstream registry.

Cache fills, imports and sync all speak to upstreams through ``UpstreamClient``.
It exists so that each of them does not reinvent the parts that are easy to get
subtly wrong and expensive when wrong:

- **Authentication** starts anonymous and answers the registry's challenge: a
  ``Bearer`` challenge sends it to the token service (tokens are cached per
  scope, single-flight, in ``tokens.TokenCache``), a ``Basic`` one makes it send
  the credentials. Whatever worked is used up front on the next request, so a
  warm client spends one request per operation, not two.
- **Retries** cover connection errors, timeouts and 5xx with exponential
  backoff; a ``429`` is waited out only when its ``Retry-After`` is short,
  otherwise ``UpstreamRateLimited`` tells the caller to back off (Docker Hub
  counts every request). Nothing else is retried, and a policy refusal from the
  outbound guard (``UpstreamRefused``) passes through untouched.
- **Redirects** are followed by hand, so that the registry's ``Authorization``
  header is sent to the registry only — never to the S3 or CDN host a blob
  redirects to — and so that every hop is counted.
- **Bytes are checked**: a manifest must hash to the digest it was asked for
  and to the ``Docker-Content-Digest`` the upstream claims. Blobs are streamed,
  never held, and their digest is the caller's to verify (it writes them).

The client owns no connection: ``session`` comes from
``upstream.http.guarded_session`` and is shared by every client of a worker,
which is where connection pooling happens.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, TypeVar

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from ..oci import mediatypes
from ..oci.digest import Digest
from ..oci.errors import DigestInvalid
from ..oci.names import validate_name, validate_tag
from .challenge import Challenge, find_challenge, next_link, parse_ratelimit, parse_retry_after, parse_www_authenticate
from .errors import (
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from .tokens import Token, TokenCache, TokenKey, account_key, parse_token_response

T = TypeVar("T")

OCI_ARTIFACT_MANIFEST = "application/vnd.oci.artifact.manifest.v1+json"
DEFAULT_ACCEPT: tuple[str, ...] = (
    mediatypes.OCI_INDEX,
    mediatypes.OCI_MANIFEST,
    mediatypes.DOCKER_MANIFEST_LIST,
    mediatypes.DOCKER_MANIFEST,
    OCI_ARTIFACT_MANIFEST,
)

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset({DOCKER_HUB, "index.docker.io", DOCKER_HUB_API_HOST, "registry.hub.docker.com"})
# host[:port] as written in image references; nothing that could smuggle a path, user info or query.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_REGISTRY_RE = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?")

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
MAX_PAGES = 1000
DEFAULT_MANIFEST_LIMIT = 4 << 20
LIST_BODY_LIMIT = 4 << 20  # one page of tags or referrers
TOKEN_BODY_LIMIT = 1 << 20
ERROR_BODY_LIMIT = 64 << 10
NOT_FOUND_CODES = frozenset({"MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN"})
# Worth another try: the network, a stalled read. (UpstreamRefused is neither, on purpose.)
_TRANSIENT: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError)
# Not worth one: a certificate that failed verification fails the same way next time.
_PERMANENT: tuple[type[BaseException], ...] = (aiohttp.ClientConnectorCertificateError,)


def normalize_registry(registry: str) -> str:
    """The canonical name of a registry host: Docker Hub's aliases become ``docker.io``; hosts are lower-cased."""
    host = registry.strip().lower()
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


@dataclass(frozen=True)
class Endpoint:
    """An upstream registry as image references name it (``docker.io``, ``ghcr.io``, ``127.0.0.1:5001``).

    ``insecure`` means plain http; only a cache rule or import that says so sets it. The name is
    normalized on construction, so two endpoints for Docker Hub compare equal.
    """

    registry: str
    insecure: bool = False

    def __post_init__(self) -> None:
        registry = normalize_registry(self.registry)
        if not _REGISTRY_RE.fullmatch(registry):
            raise ValueError(f"not a registry host[:port]: {self.registry[:100]!r}")
        object.__setattr__(self, "registry", registry)

    @property
    def base_url(self) -> str:
        host = DOCKER_HUB_API_HOST if self.registry == DOCKER_HUB else self.registry
        return f"{'http' if self.insecure else 'https'}://{host}"


@dataclass(frozen=True)
class Credentials:
    """A login for an upstream. The password is left out of ``repr`` so that it cannot reach a log by accident."""

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class ManifestHead:
    """What a HEAD tells about a manifest: enough to revalidate a tag without spending a GET."""

    digest: str
    media_type: str
    size: int | None


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest's exact bytes, the media type the upstream served it as, and the digest they hash to."""

    body: bytes = field(repr=False)
    media_type: str
    digest: str


@dataclass
class BlobResponse:
    """An open blob download.

    ``size`` is the whole blob's size (from ``Content-Length`` or the ``Content-Range`` total), when
    known; ``start`` the offset of the first byte ``chunks`` yields — 0 when the upstream ignored a
    Range request, so a resuming caller must check it. ``chunks`` raises ``UpstreamUnavailable``
    when the connection fails mid-body. The digest is not verified here.
    """

    size: int | None
    start: int
    chunks: AsyncIterator[bytes]


class UpstreamObserver(Protocol):
    """Hooks for metrics and accounting; subclass ``NullObserver`` and override what you need."""

    def request(self, method: str, status: int | None) -> None:
        """Every HTTP request made (each redirect hop too); ``status`` None for a connection failure.

        Token-service requests are reported with the method ``"TOKEN"``.
        """

    def received(self, nbytes: int) -> None:
        """Payload bytes received: manifests, blobs, tag and referrer lists (not error or token bodies)."""

    def ratelimit(self, limit: int | None, remaining: int | None) -> None:
        """A response carried ``RateLimit-Limit`` and/or ``RateLimit-Remaining``."""

    def login(self, ok: bool, error: str | None) -> None:
        """An attempt to authenticate with the credentials (a token fetch or a first Basic request) ended."""


class NullObserver:
    """An observer that ignores everything; the base class for partial observers."""

    def request(self, method: str, status: int | None) -> None:
        pass

    def received(self, nbytes: int) -> None:
        pass

    def ratelimit(self, limit: int | None, remaining: int | None) -> None:
        pass

    def login(self, ok: bool, error: str | None) -> None:
        pass


@dataclass(frozen=True)
class _Auth:
    """The Authorization a request was sent with, so a 401 can tell what failed."""

    header: str | None = field(default=None, repr=False)
    kind: str = ""  # "", "basic" or "bearer"
    key: TokenKey | None = None
    token: Token | None = None


Reader = Callable[[aiohttp.ClientResponse], Awaitable[T]]


class UpstreamClient:
    """A client for one upstream registry and one set of credentials (or none).

    Cheap to create: the session, and optionally the ``TokenCache``, are shared; the client itself
    remembers only which kind of authentication its registry asked for.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: Endpoint,
        credentials: Credentials | None = None,
        *,
        observer: UpstreamObserver | None = None,
        retries: int = 3,
        backoff: float = 0.2,
        max_retry_after: float = 2.0,
        timeout: float = 30.0,
        tokens: TokenCache | None = None,
    ) -> None:
        self._session = session
        self.endpoint = endpoint
        self._credentials = credentials
        self._observer: UpstreamObserver = observer if observer is not None else NullObserver()
        self._retries = max(0, retries)
        self._backoff = max(0.0, backoff)
        self._max_retry_after = max_retry_after
        # Per connect and per read, never in total: a multi-gigabyte layer may take many minutes.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=timeout, sock_read=timeout)
        self._tokens = tokens if tokens is not None else TokenCache()
        self._base = URL(endpoint.base_url)
        self._account = account_key(credentials.username, credentials.password) if credentials else ""
        self._bearer: tuple[str, str] | None = None  # (realm, service) of the registry's Bearer challenge
        self._basic = False  # the registry asked for Basic: send the credentials up front
        self._recent_tokens: deque[str] = deque(maxlen=32)  # for scrubbing messages

    def __repr__(self) -> str:
        user = self._credentials.username if self._credentials else None
        return f"UpstreamClient({self.endpoint.registry!r}, username={user!r})"

    async def __aenter__(self) -> "UpstreamClient":
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Forget what this client learnt about authentication. The session belongs to the caller and stays open."""
        self._bearer = None
        self._basic = False

    # ---- the API -------------------------------------------------------------------------------

    async def head_manifest(self, repository: str, reference: str, accept: Sequence[str] = DEFAULT_ACCEPT) -> ManifestHead:
        """The digest, media type and size of a manifest, from a HEAD (which Docker Hub does not count as a pull).

        The upstream must send ``Docker-Content-Digest`` for a tag (a digest reference names itself),
        and for a digest reference it must be that digest.
        """
        repository = self._repository(repository)
        expected = _reference_digest(reference)
        what = f"HEAD manifest {_display(repository, reference)}"
        url = self._url(f"/v2/{repository}/manifests/{reference}")
        headers = await self._call("HEAD", url, repository, {"Accept": ", ".join(accept)}, _headers_only, what)
        raw = headers.get("Docker-Content-Digest")
        if raw:
            digest = _parse_digest(raw, what)
            if expected is not None and digest != expected:
                raise UpstreamProtocolError(f"{what}: the upstream says its digest is {digest}")
        elif expected is not None:
            digest = expected
        else:
            raise UpstreamProtocolError(f"{what}: the upstream sent no Docker-Content-Digest")
        return ManifestHead(str(digest), mediatypes.bare(headers.get("Content-Type")), _int_header(headers.get("Content-Length")))

    async def get_manifest(
        self,
        repository: str,
        reference: str,
        accept: Sequence[str] = DEFAULT_ACCEPT,
        max_bytes: int = DEFAULT_MANIFEST_LIMIT,
    ) -> FetchedManifest:
        """A manifest's exact bytes, checked against what was asked for.

        ``digest`` is the body's digest in the algorithm of the digest reference (sha256 for a tag).
        The body must hash to a digest reference and to any ``Docker-Content-Digest`` the upstream
        sent; it may not exceed ``max_bytes``. Otherwise ``UpstreamProtocolError``.
        """
        repository = self._repository(repository)
        expected = _reference_digest(reference)
        what = f"GET manifest {_display(repository, reference)}"
        url = self._url(f"/v2/{repository}/manifests/{reference}")
        reader = self._body_reader(max_bytes, what)
        headers, body = await self._call("GET", url, repository, {"Accept": ", ".join(accept)}, reader, what)
        digest = Digest.of(body, expected.algorithm if expected else "sha256")
        if expected is not None and digest != expected:
            raise UpstreamProtocolError(f"{what}: the body hashes to {digest}, not to the digest requested")
        raw = headers.get("Docker-Content-Digest")
        if raw:
            claimed = _parse_digest(raw, what)
            if Digest.of(body, claimed.algorithm) != claimed:
                raise UpstreamProtocolError(f"{what}: the body does not hash to the Docker-Content-Digest {claimed}")
        return FetchedManifest(body, _manifest_media_type(headers.get("Content-Type"), body), str(digest))

    async def head_blob(self, repository: str, digest: str) -> int | None:
        """A blob's size from a HEAD (the upstream's word only: it proves nothing about the bytes)."""
        repository = self._repository(repository)
        Digest.parse(digest)
        what = f"HEAD blob {repository}@{digest}"
        url = self._url(f"/v2/{repository}/blobs/{digest}")
        headers = await self._call("HEAD", url, repository, {"Accept-Encoding": "identity"}, _headers_only, what)
        return _int_header(headers.get("Content-Length"))

    @asynccontextmanager
    async def blob(self, repository: str, digest: str, offset: int = 0) -> AsyncIterator[BlobResponse]:
        """Download a blob, from ``offset`` on (a ``Range`` request) when it is not 0.

        Redirects to object storage are followed without the registry's credentials. The
        connection is released when the block exits, returned to the pool only if the body was
        read to the end.
        """
        repository = self._repository(repository)
        Digest.parse(digest)
        if offset < 0:
            raise ValueError("offset must not be negative")
        what = f"GET blob {repository}@{digest}"
        url = self._url(f"/v2/{repository}/blobs/{digest}")
        # identity: the bytes must be the blob's, and a byte range of a re-compressed body means nothing.
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        response = await self._call("GET", url, repository, headers, _keep_open, what)
        try:
            start, size = _blob_span(response, what)
            yield BlobResponse(size=size, start=start, chunks=_Chunks(response, self._observer, what, self._redact))
        finally:
            if response.content.at_eof():
                response.release()
            else:
                response.close()

    async def referrers(self, repository: str, digest: str) -> bytes | None:
        """The OCI referrers API's image index for ``digest``, or None when the upstream has no referrers API (404).

        On None the caller falls back to the ``sha256-<hex>`` tag schema. Paginated answers are
        merged into one index (a referrers list is not content-addressed, so this rewrites nothing).
        """
        repository = self._repository(repository)
        Digest.parse(digest)
        what = f"GET referrers {repository}@{digest}"
        url = self._url(f"/v2/{repository}/referrers/{digest}")
        reader = self._body_reader(LIST_BODY_LIMIT, what)
        pages: list[bytes] = []
        try:
            for _ in range(MAX_PAGES):
                headers, body = await self._call("GET", url, repository, {"Accept": mediatypes.OCI_INDEX}, reader, what)
                pages.append(body)
                link = next_link(headers.getall("Link", []))
                if link is None:
                    break
                url = self._follow(url, link, what)
            else:
                raise UpstreamProtocolError(f"{what}: more than {MAX_PAGES} pages")
        except UpstreamNotFound:
            if not pages:
                return None
            raise
        docs = [_index_document(page, what) for page in pages]
        if len(pages) == 1:
            return pages[0]
        merged = dict(docs[0])
        merged["manifests"] = [m for doc in docs for m in doc["manifests"]]
        return json.dumps(merged, separators=(",", ":")).encode()

    async def tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """Every tag of ``repository``, following ``Link`` pagination (``page_size`` asks for ``n`` per page)."""
        found, cut = await self.some_tags(repository, max_pages=MAX_PAGES, page_size=page_size)
        if cut is not None:
            raise UpstreamProtocolError(f"GET tags {self._repository(repository)}: more than {MAX_PAGES} pages")
        return found

    async def some_tags(
        self, repository: str, *, max_pages: int, max_tags: int | None = None, page_size: int | None = None
    ) -> tuple[list[str], str | None]:
        """The tags on the first ``max_pages`` pages (at most ``max_tags``), deduplicated, and why the list was cut
        short: ``"pages"``, ``"tags"`` or None (complete). A caller on a request budget reads only what it can pay."""
        repository = self._repository(repository)
        what = f"GET tags {repository}"
        url = self._url(f"/v2/{repository}/tags/list")
        if page_size is not None:
            url = url.with_query(n=str(page_size))
        reader = self._body_reader(LIST_BODY_LIMIT, what)
        found: dict[str, None] = {}
        for _ in range(max_pages):
            headers, body = await self._call("GET", url, repository, {"Accept": "application/json"}, reader, what)
            doc = _json_object(body, what)
            page = doc.get("tags") or []
            if not isinstance(page, list) or not all(isinstance(tag, str) for tag in page):
                raise UpstreamProtocolError(f"{what}: 'tags' is not a list of strings")
            for tag in page:
                found[tag] = None
                if max_tags is not None and len(found) > max_tags:
                    return list(found)[:max_tags], "tags"
            link = next_link(headers.getall("Link", []))
            if link is None:
                return list(found), None
            url = self._follow(url, link, what)
        return list(found), "pages"

    # ---- one operation: auth, retries, redirects -----------------------------------------------

    async def _call(self, method: str, url: URL, repository: str, headers: Mapping[str, str], read: Reader[T], what: str) -> T:
        """Send until a 2xx answer can be ``read``: answer one auth challenge, retry what is transient, map the rest.

        ``read`` is called inside the retry loop, so a connection that drops while a (small) body
        is read is retried too; it must release or close the response.
        """
        scope = f"repository:{repository}:pull"
        failures = 0
        answered = False  # one challenge is answered per call; a second 401 means the credentials do not do
        login_pending = False
        while True:
            auth = await self._authorization(scope)
            try:
                response = await self._send(method, url, headers, auth)
            except _PERMANENT as exc:
                raise UpstreamUnavailable(f"{what}: {self._describe(exc)}") from exc
            except _TRANSIENT as exc:
                failures = await self._transient(failures, f"{what}: {self._describe(exc)}")
                continue
            status = response.status
            if login_pending and status != 401:
                login_pending = False
                self._observer.login(True, None)
            if status == 401 and _same_origin(response.url, self._base):
                challenges = [c for value in response.headers.getall("WWW-Authenticate", []) for c in parse_www_authenticate(value)]
                _, detail = await self._error_detail(response)
                if answered:
                    message = f"{what}: {self.endpoint.registry} refused the {self._who()}{_detail(detail)}"
                    if auth.kind == "basic":
                        self._observer.login(False, message)
                    raise UpstreamAuthFailed(message, status=401)
                answered = True
                login_pending = self._answer(challenges, auth, what, detail)
                continue
            if status == 429 or status >= 500:
                code, detail = await self._error_detail(response)
                message = f"{what}: {self.endpoint.registry} answered {status}{_detail(detail)}"
                failures = await self._retry_status(failures, status, response.headers, message)
                continue
            if 200 <= status < 300:
                try:
                    return await read(response)
                except _TRANSIENT as exc:
                    failures = await self._transient(failures, f"{what}: {self._describe(exc)}")
                    continue
            raise await self._status_error(response, what)

    async def _send(self, method: str, url: URL, headers: Mapping[str, str], auth: _Auth) -> aiohttp.ClientResponse:
        """One request, following redirects by hand; ``Authorization`` goes only to the registry's own origin."""
        for _ in range(MAX_REDIRECTS + 1):
            sent = dict(headers)
            if auth.header and _same_origin(url, self._base):
                sent["Authorization"] = auth.header
            try:
                response = await self._session.request(
                    method, url, headers=sent, allow_redirects=False, raise_for_status=False, timeout=self._timeout
                )
            except _TRANSIENT:
                self._observer.request(method, None)
                raise
            self._observe(method, response)
            location = response.headers.get("Location")
            if response.status not in REDIRECT_STATUSES or not location:
                return response
            response.release()
            try:
                url = url.join(URL(location))
            except ValueError:
                raise UpstreamProtocolError(f"{method} {url.path}: unusable redirect", status=response.status) from None
            if response.status == 303 and method != "HEAD":
                method = "GET"
        raise UpstreamProtocolError(f"{method} {url.path}: more than {MAX_REDIRECTS} redirects")

    def _observe(self, method: str, response: aiohttp.ClientResponse) -> None:
        self._observer.request(method, response.status)
        limit = parse_ratelimit(response.headers.get("RateLimit-Limit"))
        remaining = parse_ratelimit(response.headers.get("RateLimit-Remaining"))
        if limit is not None or remaining is not None:
            self._observer.ratelimit(limit, remaining)

    async def _transient(self, failures: int, message: str, retry_after: float | None = None, status: int | None = None) -> int:
        """Sleep before the next try (exponential backoff), or raise ``UpstreamUnavailable`` when the tries are spent."""
        if failures >= self._retries:
            raise UpstreamUnavailable(f"{message} (gave up after {failures + 1} attempts)", status=status)
        delay = self._backoff * (2**failures)
        if retry_after is not None and retry_after <= self._max_retry_after:
            delay = max(delay, retry_after)
        await asyncio.sleep(delay)
        return failures + 1

    async def _retry_status(self, failures: int, status: int, headers: Mapping[str, str], message: str) -> int:
        """A 429 is waited out only for a short ``Retry-After``; a 5xx is retried like a connection error."""
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if status != 429:
            return await self._transient(failures, message, retry_after, status)
        if retry_after is None or retry_after > self._max_retry_after or failures >= self._retries:
            raise UpstreamRateLimited(message, retry_after, status=status)
        await asyncio.sleep(retry_after)
        return failures + 1

    async def _status_error(self, response: aiohttp.ClientResponse, what: str) -> UpstreamError:
        status = response.status
        code, detail = await self._error_detail(response)
        message = f"{what}: {self.endpoint.registry} answered {status}{_detail(detail)}"
        if code == "TOOMANYREQUESTS":
            return UpstreamRateLimited(message, parse_retry_after(response.headers.get("Retry-After")), status=status)
        if status == 404 or code in NOT_FOUND_CODES:
            return UpstreamNotFound(message, status=status)
        if status in (401, 403) or code in ("UNAUTHORIZED", "DENIED"):
            return UpstreamAuthFailed(message, status=status)
        return UpstreamError(message, status=status)

    # ---- authentication ------------------------------------------------------------------------

    async def _authorization(self, scope: str) -> _Auth:
        """What to send up front: whatever the registry asked for before."""
        if self._bearer is not None:
            realm, service = self._bearer
            key = TokenKey(realm, service, scope, self._account)
            token = await self._tokens.get(key, lambda: self._fetch_token(realm, service, scope))
            if token.value not in self._recent_tokens:
                self._recent_tokens.append(token.value)
            return _Auth(f"Bearer {token.value}", "bearer", key, token)
        if self._basic and self._credentials is not None:
            return _Auth(self._credentials.basic_header(), "basic")
        return _Auth()

    def _answer(self, challenges: list[Challenge], used: _Auth, what: str, detail: str) -> bool:
        """Prepare the retry of a 401; True when it will be the first Basic attempt (to report the login)."""
        bearer = find_challenge(challenges, "bearer")
        if bearer is not None:
            realm = bearer.params.get("realm")
            if not realm:
                raise UpstreamProtocolError(f"{what}: a Bearer challenge without a realm", status=401)
            if used.key is not None:
                self._tokens.invalidate(used.key, used.token)
            self._bearer = (realm, bearer.params.get("service", ""))
            return False
        if find_challenge(challenges, "basic") is not None:
            if self._credentials is None:
                raise UpstreamAuthFailed(f"{what}: {self.endpoint.registry} requires credentials and none are configured", status=401)
            if used.kind == "basic":
                message = f"{what}: {self.endpoint.registry} refused the {self._who()}{_detail(detail)}"
                self._observer.login(False, message)
                raise UpstreamAuthFailed(message, status=401)
            self._basic = True
            return True
        raise UpstreamAuthFailed(f"{what}: {self.endpoint.registry} answered 401 without a Bearer or Basic challenge", status=401)

    async def _fetch_token(self, realm: str, service: str, scope: str) -> Token:
        """GET a token from the realm (Basic-authenticated when there are credentials), retrying what is transient."""
        try:
            url = URL(realm)
        except ValueError:
            raise UpstreamProtocolError("the Bearer challenge's realm is not a URL", status=401) from None
        if url.scheme not in ("http", "https") or not url.host:
            raise UpstreamProtocolError("the Bearer challenge's realm is not an http(s) URL", status=401)
        credentials = self._credentials
        if credentials is not None and url.scheme == "http" and not self.endpoint.insecure:
            raise UpstreamProtocolError(f"token realm {url.host} is plain http; refusing to send credentials there")
        query = {"scope": scope, **({"service": service} if service else {})}
        if credentials is not None:
            query["account"] = credentials.username
        url = url.extend_query(query)
        headers = {"Authorization": credentials.basic_header()} if credentials else {}
        where = f"token service {url.host}"
        failures = 0
        while True:
            started = self._tokens.now()
            try:
                # aiohttp drops Authorization itself when a redirect leaves the realm's origin.
                response = await self._session.get(url, headers=headers, raise_for_status=False, timeout=self._timeout)
            except _TRANSIENT as exc:
                self._observer.request("TOKEN", None)
                failures = await self._transient(failures, f"{where}: {self._describe(exc)}")
                continue
            self._observer.request("TOKEN", response.status)
            status = response.status
            if status == 200:
                try:
                    body = await _read_body(response, TOKEN_BODY_LIMIT, f"{where}: token answer", None)
                except _TRANSIENT as exc:
                    response.close()
                    failures = await self._transient(failures, f"{where}: {self._describe(exc)}")
                    continue
                except BaseException:
                    response.close()
                    raise
                response.release()
                try:
                    token = parse_token_response(body, started)
                except UpstreamProtocolError as exc:
                    if credentials is not None:
                        self._observer.login(False, str(exc))
                    raise
                if credentials is not None:
                    self._observer.login(True, None)
                return token
            _, detail = await self._error_detail(response)
            message = f"{where} answered {status}{_detail(detail)}"
            if status == 429 or status >= 500:
                failures = await self._retry_status(failures, status, response.headers, message)
                continue
            if credentials is not None:
                self._observer.login(False, message)
            raise UpstreamAuthFailed(f"{where} refused a token for {scope} to the {self._who()} ({status}){_detail(detail)}", status=status)

    # ---- helpers -------------------------------------------------------------------------------

    def _who(self) -> str:
        return f"credentials of {self._credentials.username!r}" if self._credentials else "anonymous request"

    def _repository(self, repository: str) -> str:
        """A valid repository name; Docker Hub's official images live under ``library/``."""
        validate_name(repository)
        if self.endpoint.registry == DOCKER_HUB and "/" not in repository:
            return f"library/{repository}"
        return repository

    def _url(self, path: str) -> URL:
        return URL(self.endpoint.base_url + path)

    def _follow(self, current: URL, link: str, what: str) -> URL:
        """The next page from a ``Link`` header: same origin only, so pagination cannot steer the client elsewhere."""
        try:
            target = current.join(URL(link))
        except ValueError:
            raise UpstreamProtocolError(f"{what}: unusable Link header") from None
        if not _same_origin(target, self._base) or target == current:
            raise UpstreamProtocolError(f"{what}: the Link header does not lead to a next page of this registry")
        return target

    def _body_reader(self, limit: int, what: str) -> Reader[tuple[CIMultiDictProxy[str], bytes]]:
        observer = self._observer

        async def read(response: aiohttp.ClientResponse) -> tuple[CIMultiDictProxy[str], bytes]:
            try:
                if response.content_length is not None and response.content_length > limit:
                    raise UpstreamProtocolError(f"{what}: {response.content_length} bytes is more than the limit of {limit}")
                body = await _read_body(response, limit, what, observer)
            except BaseException:
                response.close()
                raise
            response.release()
            return response.headers, body

        return read

    async def _error_detail(self, response: aiohttp.ClientResponse) -> tuple[str | None, str]:
        """The first error code and a short, scrubbed description from an error body; releases the response."""
        try:
            body = await _read_body(response, ERROR_BODY_LIMIT, "error body", None, truncate=True)
        except _TRANSIENT:
            body = b""
        finally:
            if response.content.at_eof():
                response.release()
            else:
                response.close()
        code, text = _describe_error_body(body, response.headers.get("Content-Type"))
        return code, self._redact(text)

    def _describe(self, exc: BaseException) -> str:
        text = str(exc)
        return self._redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)

    def _redact(self, text: str) -> str:
        """Scrub anything secret this client holds from text bound for a message."""
        secrets: list[str] = list(self._recent_tokens)
        if self._credentials is not None:
            secrets += [self._credentials.basic_header().split(" ", 1)[1], self._credentials.password]
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return text


class _Chunks:
    """A blob body as it arrives (``readany``: the connection's natural chunking, no waiting to fill a buffer)."""

    def __init__(self, response: aiohttp.ClientResponse, observer: UpstreamObserver, what: str, redact: Callable[[str], str]) -> None:
        self._response, self._observer, self._what, self._redact = response, observer, what, redact

    def __aiter__(self) -> "_Chunks":
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._response.content.readany()
        except _TRANSIENT as exc:
            detail = self._redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            raise UpstreamUnavailable(f"{self._what}: the download broke off: {detail}") from exc
        if not chunk:
            raise StopAsyncIteration
        self._observer.received(len(chunk))
        return chunk


# ---- module helpers -----------------------------------------------------------------------------


async def _headers_only(response: aiohttp.ClientResponse) -> CIMultiDictProxy[str]:
    response.release()
    return response.headers


async def _keep_open(response: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
    return response


async def _read_body(
    response: aiohttp.ClientResponse, limit: int, what: str, observer: UpstreamObserver | None, *, truncate: bool = False
) -> bytes:
    """The body up to ``limit`` bytes: beyond it, the first ``limit`` bytes (``truncate``) or ``UpstreamProtocolError``."""
    buffer = bytearray()
    while chunk := await response.content.readany():
        if observer is not None:
            observer.received(len(chunk))
        buffer += chunk
        if len(buffer) > limit:
            if truncate:
                return bytes(buffer[:limit])
            raise UpstreamProtocolError(f"{what}: more than the limit of {limit} bytes")
    return bytes(buffer)


def _describe_error_body(body: bytes, content_type: str | None) -> tuple[str | None, str]:
    """(first error code, short text) from an OCI error body, an OAuth error body or plain text."""
    try:
        doc: Any = json.loads(body) if body else None
    except (UnicodeDecodeError, ValueError):
        doc = None
    if isinstance(doc, dict):
        errors = doc.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            code = errors[0].get("code")
            code = code if isinstance(code, str) else None
            message = errors[0].get("message")
            text = f"{code or 'error'}: {message}" if isinstance(message, str) and message else (code or "")
            return code, text[:300]
        if isinstance(doc.get("error"), str):
            description = doc.get("error_description")
            text = doc["error"] + (f": {description}" if isinstance(description, str) else "")
            return None, text[:300]
    if body and mediatypes.bare(content_type).startswith("text/"):
        return None, " ".join(body[:300].decode("utf-8", "replace").split())
    return None, ""


def _detail(detail: str) -> str:
    """``detail`` for appending to a message: ``" (…)"``, or nothing when there is none."""
    return f" ({detail})" if detail else ""


def _same_origin(a: URL, b: URL) -> bool:
    return a.scheme == b.scheme and (a.host or "").lower() == (b.host or "").lower() and a.port == b.port


def _reference_digest(reference: str) -> Digest | None:
    """The digest a reference pins, or None for a tag; raises the OCI error for an invalid one."""
    if ":" in reference:
        return Digest.parse(reference)
    validate_tag(reference)
    return None


def _display(repository: str, reference: str) -> str:
    return f"{repository}@{reference}" if ":" in reference else f"{repository}:{reference}"


def _parse_digest(raw: str, what: str) -> Digest:
    try:
        return Digest.parse(raw.strip())
    except DigestInvalid:
        raise UpstreamProtocolError(f"{what}: the upstream sent an invalid Docker-Content-Digest") from None


def _int_header(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _manifest_media_type(content_type: str | None, body: bytes) -> str:
    """The served media type; for a generic one (``application/json``, none), the body's ``mediaType``."""
    served = mediatypes.bare(content_type)
    if served and served not in ("application/json", "application/octet-stream", "text/plain"):
        return served
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return served
    declared = doc.get("mediaType") if isinstance(doc, dict) else None
    return declared if isinstance(declared, str) and declared else served


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


def _blob_span(response: aiohttp.ClientResponse, what: str) -> tuple[int, int | None]:
    """(offset of the first byte, total size) of a blob answer: 206 from ``Content-Range``, 200 from 0."""
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch((response.headers.get("Content-Range") or "").strip())
        if match is None:
            raise UpstreamProtocolError(f"{what}: a 206 without a usable Content-Range", status=206)
        total = match.group(3)
        return int(match.group(1)), None if total == "*" else int(total)
    return 0, _int_header(response.headers.get("Content-Length"))


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise UpstreamProtocolError(f"{what}: the answer is not JSON") from None
    if not isinstance(doc, dict):
        raise UpstreamProtocolError(f"{what}: the answer is not a JSON object")
    return doc


def _index_document(body: bytes, what: str) -> dict[str, Any]:
    doc = _json_object(body, what)
    if not isinstance(doc.get("manifests"), list):
        raise UpstreamProtocolError(f"{what}: the answer is not an image index")
    return doc
