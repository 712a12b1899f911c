"""Bearer tokens from registry token services, cached until shortly before they expire.

Every token fetch is an upstream request, and Docker Hub counts them; a cold
cache fill of a multi-arch image would otherwise fetch one token per blob. So
tokens are kept per (realm, service, scope, account) and concurrent requests
for the same key share one fetch (single-flight). Expiry is measured on our
own monotonic clock from the moment the fetch started, not from the
``issued_at`` the token service sends: clocks differ, and starting early only
makes the token look older than it is.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .errors import UpstreamProtocolError

DEFAULT_EXPIRES_IN = 60.0  # the token spec's default lifetime when the service does not say
MAX_MARGIN = 30.0  # stop using a token at most this long before it expires...
MARGIN_FRACTION = 0.1  # ...or this fraction of its lifetime before, whichever is shorter
MAX_ENTRIES = 4096  # expired entries are pruned when the cache grows past this

# Process-local key for account fingerprints: keys stay distinct per credential without holding a
# reusable hash of the password (it changes on every start and never leaves the process).
_ACCOUNT_KEY = os.urandom(32)


def account_key(username: str, password: str) -> str:
    """A fingerprint of a credential pair, so that tokens issued to one login are never handed to another."""
    mac = hmac.new(_ACCOUNT_KEY, f"{username}\0{password}".encode(), hashlib.sha256)
    return f"{username}#{mac.hexdigest()[:16]}"


@dataclass(frozen=True)
class TokenKey:
    """What a token is good for; ``account`` is ``""`` for an anonymous token, else ``account_key()``."""

    realm: str
    service: str
    scope: str
    account: str = ""


@dataclass(frozen=True)
class Token:
    """A bearer token and the monotonic time after which it is no longer used."""

    value: str = field(repr=False)
    usable_until: float

    def usable(self, now: float) -> bool:
        return now < self.usable_until


def parse_token_response(body: bytes, started: float) -> Token:
    """The token in a token service's JSON answer (``token`` or ``access_token``; ``expires_in`` optional).

    ``started`` is the monotonic time the request was sent. Raises ``UpstreamProtocolError`` for an
    answer that is not such JSON; the message never quotes the body, which may hold a token.
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise UpstreamProtocolError("token endpoint did not answer JSON") from None
    if not isinstance(doc, dict):
        raise UpstreamProtocolError("token endpoint answered JSON that is not an object")
    value = doc.get("token") or doc.get("access_token")
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        raise UpstreamProtocolError("token endpoint answered without a usable token")
    expires_in = doc.get("expires_in")
    lifetime = float(expires_in) if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) else 0.0
    if not (math.isfinite(lifetime) and lifetime > 0):
        lifetime = DEFAULT_EXPIRES_IN
    margin = min(MAX_MARGIN, lifetime * MARGIN_FRACTION)
    return Token(value, started + lifetime - margin)


class TokenCache:
    """Tokens by ``TokenKey``, with single-flight fetching.

    One cache may be shared by several clients (one per upstream and credential set, for instance):
    the account in the key keeps their tokens apart. Use it from one event loop.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[TokenKey, Token] = {}
        self._inflight: dict[TokenKey, asyncio.Task[Token]] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def now(self) -> float:
        """The cache's clock; a fetch notes it before sending, and the token's lifetime counts from then."""
        return self._clock()

    def peek(self, key: TokenKey) -> Token | None:
        """The cached token for ``key`` if it is still usable."""
        token = self._tokens.get(key)
        if token is None:
            return None
        if not token.usable(self._clock()):
            del self._tokens[key]
            return None
        return token

    async def get(self, key: TokenKey, fetch: Callable[[], Awaitable[Token]]) -> Token:
        """The cached token, or the one ``fetch`` returns; concurrent callers for one key share one fetch.

        The fetch runs as its own task so that a caller that is cancelled does not cancel it for
        the others; its failure reaches every caller waiting on it and is not cached.
        """
        token = self.peek(key)
        if token is not None:
            return token
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(fetch())
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._settle(key, done))
        return await asyncio.shield(task)

    def _settle(self, key: TokenKey, task: asyncio.Task[Token]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if task.cancelled() or task.exception() is not None:  # exception() also marks it retrieved
            return
        self._tokens[key] = task.result()
        if len(self._tokens) > MAX_ENTRIES:
            self._prune()

    def invalidate(self, key: TokenKey, token: Token | None = None) -> None:
        """Forget ``key``'s token (only if it is still ``token``, when given: a newer one stays)."""
        current = self._tokens.get(key)
        if current is not None and (token is None or current == token):
            del self._tokens[key]

    def clear(self) -> None:
        self._tokens.clear()

    def _prune(self) -> None:
        now = self._clock()
        for key in [k for k, t in self._tokens.items() if not t.usable(now)]:
            del self._tokens[key]
