"""The header parsers of the upstream client (WWW-Authenticate, Retry-After, RateLimit-*, Link) and its token cache."""

from __future__ import annotations

import asyncio
import json
from email.utils import format_datetime
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cargohold.upstream.challenge import (
    Challenge,
    find_challenge,
    next_link,
    parse_ratelimit,
    parse_retry_after,
    parse_www_authenticate,
)
from cargohold.upstream.errors import UpstreamProtocolError
from cargohold.upstream.tokens import DEFAULT_EXPIRES_IN, Token, TokenCache, TokenKey, account_key, parse_token_response

# ---- WWW-Authenticate ------------------------------------------------------------------------------


def test_docker_bearer_challenge() -> None:
    header = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"'
    assert parse_www_authenticate(header) == [
        Challenge(
            "bearer",
            {"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/alpine:pull"},
        )
    ]


def test_scheme_and_param_names_are_case_insensitive() -> None:
    [challenge] = parse_www_authenticate('BASIC Realm="Registry Realm"')
    assert challenge == Challenge("basic", {"realm": "Registry Realm"})


def test_commas_inside_quotes_and_several_scopes() -> None:
    [challenge] = parse_www_authenticate('Bearer realm="https://r/token",scope="repository:a:pull,push repository:b:pull"')
    assert challenge.params["scope"] == "repository:a:pull,push repository:b:pull"


def test_escapes_in_quoted_strings() -> None:
    [challenge] = parse_www_authenticate(r'Basic realm="say \"hi\" \\ there", charset="UTF-8"')
    assert challenge.params == {"realm": 'say "hi" \\ there', "charset": "UTF-8"}


def test_several_challenges_in_one_header() -> None:
    header = 'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple", Bearer realm="https://t/token"'
    challenges = parse_www_authenticate(header)
    assert [c.scheme for c in challenges] == ["newauth", "basic", "bearer"]
    assert challenges[0].params == {"realm": "apps", "type": "1", "title": 'Login to "apps"'}
    assert challenges[1].params == {"realm": "simple"}
    assert find_challenge(challenges, "bearer") == Challenge("bearer", {"realm": "https://t/token"})
    assert find_challenge(challenges, "digest") is None


def test_token68_and_bare_schemes() -> None:
    challenges = parse_www_authenticate("Negotiate abc+/def==, Basic, Bearer realm=x")
    assert challenges == [
        Challenge("negotiate", {"": "abc+/def=="}),
        Challenge("basic", {}),
        Challenge("bearer", {"realm": "x"}),
    ]


def test_whitespace_around_equals_and_empty_list_items() -> None:
    challenges = parse_www_authenticate(' ,  Bearer   realm = "r" ,, service=svc ,  ')
    assert challenges == [Challenge("bearer", {"realm": "r", "service": "svc"})]


def test_first_of_a_repeated_parameter_wins() -> None:
    [challenge] = parse_www_authenticate('Bearer realm="first", realm="second"')
    assert challenge.params == {"realm": "first"}


@pytest.mark.parametrize(
    "header",
    ["", " ", ",,,", '"', 'Bearer realm="unterminated', "=", "Bearer =x", "Bearer realm=", '"quoted" Basic', "Bearer realm=a b c", "\x00\x7f"],
)
def test_malformed_headers_do_not_raise(header: str) -> None:
    challenges = parse_www_authenticate(header)
    assert all(isinstance(c, Challenge) for c in challenges)


def test_unterminated_quote_runs_to_the_end() -> None:
    assert parse_www_authenticate('Bearer realm="https://r/token, service=x') == [
        Challenge("bearer", {"realm": "https://r/token, service=x"})
    ]


_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(alphabet=_TOKEN_CHARS, min_size=1, max_size=12)
values = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def challenge_lists(draw: st.DrawFn) -> tuple[str, list[Challenge]]:
    challenges: list[Challenge] = []
    parts: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        scheme = draw(tokens)
        params = draw(st.dictionaries(tokens.map(str.lower), values, max_size=4))
        rendered = []
        for name, value in params.items():
            as_token = value and all(ch in _TOKEN_CHARS for ch in value) and draw(st.booleans())
            name_case = name.upper() if draw(st.booleans()) else name
            space = draw(st.sampled_from(["", " "]))
            rendered.append(f"{name_case}{space}={space}{value if as_token else _quote(value)}")
        parts.append(scheme + (" " + ", ".join(rendered) if rendered else ""))
        challenges.append(Challenge(scheme.lower(), params))
    return ", ".join(parts), challenges


@given(challenge_lists())
@settings(max_examples=150, deadline=None)
def test_round_trip(case: tuple[str, list[Challenge]]) -> None:
    header, expected = case
    assert parse_www_authenticate(header) == expected


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_never_raises(header: str) -> None:
    for challenge in parse_www_authenticate(header):
        assert challenge.scheme and challenge.scheme == challenge.scheme.lower()


# ---- Retry-After ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("1", 1.0), (" 120 ", 120.0), ("1.5", 1.5)])
def test_retry_after_delta_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_http_date() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after(format_datetime(datetime(2024, 5, 1, 12, 2, tzinfo=UTC), usegmt=True), now=now) == 120.0
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now=now) == 0.0  # in the past: no wait


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "nan", "inf", "1e999", "Wed, 99 Foo 2024", "١٢"])
def test_retry_after_unparsable(value: str | None) -> None:
    assert parse_retry_after(value) is None


# ---- RateLimit-* ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "count"),
    [("100", 100), ("100;w=21600", 100), (" 76;w=21600 ", 76), ("0;w=60", 0), ("76, 100;w=60", 76), (None, None), ("", None), ("x;w=1", None), ("-1", None), ("١٢", None)],
)
def test_ratelimit(value: str | None, count: int | None) -> None:
    assert parse_ratelimit(value) == count


# ---- Link -------------------------------------------------------------------------------------------


def test_next_link() -> None:
    assert next_link(['</v2/a/tags/list?last=x&n=2>; rel="next"']) == "/v2/a/tags/list?last=x&n=2"
    assert next_link(['<https://r/prev>; rel="prev", <https://r/next?a=b,c>; rel=next']) == "https://r/next?a=b,c"
    assert next_link(['<https://r/x>; rel="first next"']) == "https://r/x"
    assert next_link(['<https://r/x>; title="next"', "garbage"]) is None
    assert next_link([]) is None


# ---- tokens -----------------------------------------------------------------------------------------


def test_token_response_forms() -> None:
    token = parse_token_response(json.dumps({"token": "abc", "expires_in": 300}).encode(), started=100.0)
    assert token.value == "abc" and token.usable_until == 100.0 + 300 - 30
    token = parse_token_response(json.dumps({"access_token": "xyz", "issued_at": "2024-01-01T00:00:00Z"}).encode(), started=0.0)
    assert token.value == "xyz" and token.usable_until == DEFAULT_EXPIRES_IN * 0.9
    assert "abc" not in repr(parse_token_response(b'{"token": "abc"}', 0.0))


@pytest.mark.parametrize("body", [b"not json", b"[]", b"{}", b'{"token": ""}', b'{"token": 5}', b'{"token": "a b"}'])
def test_bad_token_responses(body: bytes) -> None:
    with pytest.raises(UpstreamProtocolError) as caught:
        parse_token_response(body, 0.0)
    assert "a b" not in str(caught.value)


def test_bad_expires_in_falls_back_to_default() -> None:
    for expires_in in (-5, 0, "300", True, None, float("nan")):
        body = json.dumps({"token": "t", "expires_in": expires_in}).encode()
        assert parse_token_response(body, 0.0).usable_until == DEFAULT_EXPIRES_IN * 0.9


def test_account_key_separates_passwords_and_hides_them() -> None:
    assert account_key("u", "p1") != account_key("u", "p2")
    assert account_key("u", "p1") == account_key("u", "p1")
    assert "secret-p1" not in account_key("u", "secret-p1")


async def test_token_cache_single_flight_and_expiry() -> None:
    now = [0.0]
    cache = TokenCache(clock=lambda: now[0])
    key = TokenKey("https://r/token", "svc", "repository:a:pull")
    fetches = 0
    release = asyncio.Event()

    async def fetch() -> Token:
        nonlocal fetches
        fetches += 1
        await release.wait()
        return Token(f"t{fetches}", now[0] + 10)

    waiters = [asyncio.create_task(cache.get(key, fetch)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert {t.value for t in await asyncio.gather(*waiters)} == {"t1"}
    assert fetches == 1
    assert (await cache.get(key, fetch)).value == "t1"  # cached
    now[0] = 11.0
    assert (await cache.get(key, fetch)).value == "t2"  # expired: fetched again
    assert fetches == 2


async def test_token_cache_failure_reaches_every_waiter_and_is_not_cached() -> None:
    cache = TokenCache()
    key = TokenKey("r", "s", "x")
    calls = 0

    async def failing() -> Token:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise UpstreamProtocolError("nope")

    results = await asyncio.gather(*(cache.get(key, failing) for _ in range(3)), return_exceptions=True)
    assert calls == 1 and all(isinstance(r, UpstreamProtocolError) for r in results)

    async def working() -> Token:
        return Token("ok", cache.now() + 60)

    assert (await cache.get(key, working)).value == "ok"


async def test_token_cache_cancelled_caller_does_not_cancel_the_fetch() -> None:
    cache = TokenCache()
    key = TokenKey("r", "s", "x")
    started = asyncio.Event()

    async def fetch() -> Token:
        started.set()
        await asyncio.sleep(0.02)
        return Token("shared", cache.now() + 60)

    first = asyncio.create_task(cache.get(key, fetch))
    await started.wait()
    second = asyncio.create_task(cache.get(key, fetch))
    first.cancel()
    assert (await second).value == "shared"


def test_token_cache_invalidate_keeps_a_newer_token() -> None:
    cache = TokenCache()
    key = TokenKey("r", "s", "x")
    old, new = Token("old", cache.now() + 60), Token("new", cache.now() + 60)
    cache._tokens[key] = new
    cache.invalidate(key, old)
    assert cache.peek(key) == new
    cache.invalidate(key, new)
    assert cache.peek(key) is None
