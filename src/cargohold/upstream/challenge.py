"""The response headers that tell a registry client what to do next.

``WWW-Authenticate`` says how to authenticate (RFC 7235), ``Retry-After`` when
to come back (RFC 9110), ``RateLimit-Limit``/``RateLimit-Remaining`` how much
is left (Docker Hub's ``100;w=21600`` form and the plain number), and ``Link``
where the next page is (RFC 8288). All of them come from servers we do not
control, so every parser here is total: malformed input gives an empty or
None answer, never an exception.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

# RFC 9110 tchar: the characters an auth-scheme or a parameter name may use.
_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WS = " \t"
# token68, then optional whitespace, then the end of this challenge (a comma or the end of the header).
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*(?=[ \t]*(?:,|$))")


@dataclass(frozen=True)
class Challenge:
    """One challenge: ``scheme`` lower-cased (``"bearer"``, ``"basic"``); ``params`` with lower-cased names.

    A token68 challenge (``Negotiate abc==``) has its token under the empty name ``""``.
    """

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


class _Scanner:
    """A cursor over the header text; tiny, so that the grammar below reads like the RFC."""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def done(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip(self, chars: str) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TCHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str:
        """A quoted-string starting at the opening quote; an unterminated one runs to the end."""
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            self.pos += 1
            if ch == '"':
                break
            if ch == "\\" and self.pos < len(self.text):
                ch = self.text[self.pos]
                self.pos += 1
            out.append(ch)
        return "".join(out)

    def skip_item(self) -> None:
        """Skip garbage up to the next comma outside quotes, so one bad item does not lose the rest."""
        while self.pos < len(self.text) and self.text[self.pos] != ",":
            if self.text[self.pos] == '"':
                self.quoted()
            else:
                self.pos += 1

    def at_param(self) -> bool:
        """Whether the cursor is at ``name = value`` (a parameter) rather than at a new auth-scheme or a token68.

        The value must start like a token or a quoted string: ``abc==`` is a token68, not ``abc`` = ``=``.
        """
        save = self.pos
        name = self.token()
        self.skip(_WS)
        is_param = False
        if name and self.peek() == "=":
            self.pos += 1
            self.skip(_WS)
            is_param = self.peek() == '"' or self.peek() in _TCHARS
        self.pos = save
        return is_param


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Every challenge in one ``WWW-Authenticate`` value, in order.

    Handles quoted strings with backslash escapes, commas inside quotes, several
    challenges in one value (``Bearer realm="a",scope="b", Basic realm="c"``),
    token68 credentials and bare schemes. A repeated parameter keeps its first
    value. Values of repeated headers are parsed one at a time and concatenated.
    """
    s = _Scanner(header)
    challenges: list[Challenge] = []
    while True:
        s.skip(_WS + ",")
        if s.done():
            return challenges
        scheme = s.token()
        if not scheme:
            s.skip_item()
            continue
        params: dict[str, str] = {}
        challenges.append(Challenge(scheme.lower(), params))
        s.skip(_WS)
        token68 = _TOKEN68.match(s.text, s.pos)
        if token68 is not None and not s.at_param():
            params[""] = token68.group(0)
            s.pos = token68.end()
            continue
        _parse_params(s, params)


def _parse_params(s: _Scanner, params: dict[str, str]) -> None:
    """``#auth-param`` after a scheme, up to the start of the next challenge."""
    while True:
        s.skip(_WS + ",")
        if s.done() or not s.at_param():
            return
        name = s.token().lower()
        s.skip(_WS)
        s.pos += 1  # "="
        s.skip(_WS)
        value = s.quoted() if s.peek() == '"' else s.token()  # at_param() saw one of the two
        params.setdefault(name, value)
        s.skip(_WS)
        if not s.done() and s.peek() != ",":
            s.skip_item()


def find_challenge(challenges: list[Challenge], scheme: str) -> Challenge | None:
    """The first challenge of ``scheme`` (lower-case), if any."""
    return next((c for c in challenges if c.scheme == scheme), None)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date (relative to ``now``, epoch seconds).

    A date in the past gives 0. Anything unparsable, negative or infinite gives None: the
    caller then treats the wait as unknown rather than as "retry at once".
    """
    if value is None:
        return None
    text = value.strip()
    if not text or not text.isascii():  # float() would take other scripts' digits
        return None
    if text.isdigit():
        return float(int(text))
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return number if math.isfinite(number) and number >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def parse_ratelimit(value: str | None) -> int | None:
    """The count in a ``RateLimit-Limit``/``RateLimit-Remaining`` value: ``"100"``, ``"100;w=21600"``, ``"76, 100;w=60"``.

    With several items (a server announcing more than one window) the first is taken: it is the
    one the server applies now.
    """
    if value is None:
        return None
    first = value.split(",", 1)[0].split(";", 1)[0].strip()
    if not first.isascii() or not first.isdigit():
        return None
    return int(first)


_LINK = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]*)*)")
_REL = re.compile(r"""rel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.IGNORECASE)


def next_link(values: list[str]) -> str | None:
    """The target of the first ``rel="next"`` link among ``Link`` header values (RFC 8288), as written."""
    for value in values:
        for match in _LINK.finditer(value):
            for rel in _REL.finditer(match.group(2)):
                rels = (rel.group(1) if rel.group(1) is not None else rel.group(2)).lower().split()
                if "next" in rels:
                    return match.group(1).strip()
    return None
