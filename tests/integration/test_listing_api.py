"""Tag listing and the catalog, with ``n``/``last`` pagination and ``Link`` (conformance §8)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from ocihelpers import OCI_MANIFEST, TIMEOUT, assert_error, push_blob, push_image, push_manifest, random_blob, unique_repo
from servers import Server

LINK = re.compile(r'^<([^>]+)>;\s*rel="next"$')

# Mixed case on purpose: byte order puts every upper-case tag before every lower-case one.
TAGS = ["test0", "TEST0", "test1", "TEST1", "Test2", "_under", "1.0", "1.0-rc", "v1", "V2", "latest", "a-b", "a.b", "a_b"]


def tags_url(server: Server, repo: str) -> str:
    return f"{server.url}/v2/{repo}/tags/list"


@pytest.fixture(scope="module")
def tagged(server: Server) -> tuple[str, list[str]]:
    """One tagged repository per backend, shared by the read-only tests below."""
    repo = unique_repo("list")
    _, body = push_image(server.url, repo)
    for tag in TAGS:
        push_manifest(server.url, repo, body, reference=tag, media_type=OCI_MANIFEST)
    return repo, sorted(TAGS, key=lambda t: t.encode())


def next_link(r: requests.Response) -> str | None:
    raw = r.headers.get("Link")
    if raw is None:
        return None
    match = LINK.match(raw.strip())
    assert match, f"malformed Link header: {raw!r}"
    return match.group(1)


def assert_link(r: requests.Response, path: str, n: int, last: str) -> str:
    target = next_link(r)
    assert target is not None, f"no Link on {r.url}"
    parts = urlsplit(target)
    assert parts.path == path
    query = parse_qs(parts.query, keep_blank_values=True)
    assert query == {"n": [str(n)], "last": [last]}, query
    return target


def test_all_tags_byte_order(server: Server, tagged: tuple[str, list[str]]) -> None:
    repo, expected = tagged
    r = requests.get(tags_url(server, repo), timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    assert r.json() == {"name": repo, "tags": expected}
    assert "Link" not in r.headers
    # Byte order, not case-insensitive order.
    assert expected.index("TEST0") < expected.index("Test2") < expected.index("latest") < expected.index("test0")


def test_n_and_last(server: Server, tagged: tuple[str, list[str]]) -> None:
    repo, expected = tagged
    n = len(expected) // 2
    r = requests.get(tags_url(server, repo), params={"n": n}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json()["tags"] == expected[:n]
    assert_link(r, f"/v2/{repo}/tags/list", n, expected[n - 1])

    r = requests.get(tags_url(server, repo), params={"n": n, "last": expected[n - 1]}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json()["tags"] == expected[n : 2 * n]


@pytest.mark.parametrize("middle", [0, 3, 7, 13])
def test_last_without_n(server: Server, tagged: tuple[str, list[str]], middle: int) -> None:
    """N's check: every tag <= last absent, every tag > last present."""
    repo, expected = tagged
    last = expected[middle]
    r = requests.get(tags_url(server, repo), params={"last": last}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json()["tags"] == expected[middle + 1 :]
    assert "Link" not in r.headers


def test_last_that_is_not_a_tag(server: Server, tagged: tuple[str, list[str]]) -> None:
    repo, expected = tagged
    r = requests.get(tags_url(server, repo), params={"last": "b"}, timeout=TIMEOUT)
    assert r.json()["tags"] == [t for t in expected if t.encode() > b"b"]


def test_last_with_a_nul_is_the_page_after_its_prefix(server: Server, tagged: tuple[str, list[str]]) -> None:
    """No name holds a NUL, so ``last=b\\0x`` pages like ``last=b``; PostgreSQL cannot compare it (was a 500)."""
    repo, expected = tagged
    for last, after in (("b\x00x", b"b"), ("\x00", b"")):
        r = requests.get(tags_url(server, repo), params={"n": 100, "last": last}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        assert r.json()["tags"] == [t for t in expected if t.encode() > after]
    r = requests.get(f"{server.url}/v2/_catalog", params={"n": 1, "last": "\x00"}, timeout=TIMEOUT)
    assert r.status_code == 200 and len(r.json()["repositories"]) == 1, r.text


def test_follow_link_through_every_page(server: Server, tagged: tuple[str, list[str]]) -> None:
    repo, expected = tagged
    for n in (1, 3, 5, len(expected) - 1, len(expected), len(expected) + 1):
        seen: list[str] = []
        url: str | None = f"{tags_url(server, repo)}?n={n}"
        pages = 0
        while url is not None:
            r = requests.get(url, timeout=TIMEOUT)
            assert r.status_code == 200
            page = r.json()["tags"]
            assert len(page) <= n
            seen += page
            pages += 1
            target = next_link(r)
            more = len(seen) < len(expected)
            # Link present exactly when more tags remain.
            assert (target is not None) == more, (n, len(seen), r.headers.get("Link"))
            if target is not None:
                assert_link(r, f"/v2/{repo}/tags/list", n, seen[-1])
            url = urljoin(r.url, target) if target else None
        assert seen == expected, n
        assert pages == max(1, -(-len(expected) // n))


def test_n_zero_is_an_empty_list(server: Server, tagged: tuple[str, list[str]]) -> None:
    repo, _ = tagged
    r = requests.get(tags_url(server, repo), params={"n": 0}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json() == {"name": repo, "tags": []}
    assert "Link" not in r.headers


@pytest.mark.parametrize("n", ["-1", "abc", "1.5", "0x10", "99999999999999999999"])
def test_bad_n_is_400(server: Server, tagged: tuple[str, list[str]], n: str) -> None:
    repo, _ = tagged
    r = requests.get(tags_url(server, repo), params={"n": n}, timeout=TIMEOUT)
    assert_error(r, 400)


def test_unknown_repository_is_404_name_unknown(server: Server) -> None:
    r = requests.get(tags_url(server, unique_repo("nowhere")), timeout=TIMEOUT)
    assert_error(r, 404, "NAME_UNKNOWN")


def test_repository_with_only_blobs_lists_no_tags(server: Server) -> None:
    repo = unique_repo("list")
    push_blob(server.url, repo, random_blob(10))
    r = requests.get(tags_url(server, repo), timeout=TIMEOUT)
    # N accepts 404 for an empty repository; 200 with an empty list is fine too.
    if r.status_code == 200:
        assert r.json() == {"name": repo, "tags": []}
    else:
        assert_error(r, 404, "NAME_UNKNOWN")


def test_untagged_manifest_is_not_listed(server: Server) -> None:
    repo = unique_repo("list")
    push_image(server.url, repo, tag="only")
    push_image(server.url, repo)  # by digest only
    assert requests.get(tags_url(server, repo), timeout=TIMEOUT).json()["tags"] == ["only"]


def test_invalid_repository_name_is_400(server: Server) -> None:
    assert_error(requests.get(f"{server.url}/v2/Upper/Case/tags/list", timeout=TIMEOUT), 400, "NAME_INVALID")


# ---- catalog -----------------------------------------------------------------------------------------------


def _whole_catalog(server: Server, n: int | None) -> tuple[list[str], int]:
    url: str | None = f"{server.url}/v2/_catalog" + (f"?n={n}" if n is not None else "")
    seen: list[str] = []
    pages = 0
    while url is not None:
        r = requests.get(url, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        page = r.json()["repositories"]
        if n is not None:
            assert len(page) <= n
        seen += page
        pages += 1
        target = next_link(r)
        if target is not None:
            assert n is not None
            assert len(page) == n
            assert_link(r, "/v2/_catalog", n, seen[-1])
        url = urljoin(r.url, target) if target else None
    return seen, pages


def test_catalog_pagination(server: Server) -> None:
    prefix = unique_repo("catalog")
    mine = [f"{prefix}/{name}" for name in ("b", "a", "c/d", "a-z", "a/b")]
    for repo in mine:
        push_image(server.url, repo, tag="x")
    ordered = sorted(mine, key=lambda s: s.encode())

    everything, pages = _whole_catalog(server, None)
    assert pages == 1
    assert everything == sorted(everything, key=lambda s: s.encode())
    assert len(set(everything)) == len(everything)
    assert set(mine) <= set(everything)

    total = len(everything)
    for n in (max(1, total // 4), total // 2 + 1, total, total + 3):
        paged, pages = _whole_catalog(server, n)
        assert paged == everything, n
        assert pages == max(1, -(-total // n))

    # One repository per page through mine, following Link from just before the first.
    url = f"{server.url}/v2/_catalog?n=1&last={prefix}"
    seen: list[str] = []
    for _ in mine[:-1]:
        r = requests.get(url, timeout=TIMEOUT)
        (repo,) = r.json()["repositories"]
        seen.append(repo)
        url = urljoin(r.url, assert_link(r, "/v2/_catalog", 1, repo))
    seen += requests.get(url, timeout=TIMEOUT).json()["repositories"]
    assert seen == ordered

    # last= in the middle of my repositories.
    r = requests.get(f"{server.url}/v2/_catalog", params={"n": 2, "last": ordered[1]}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json()["repositories"] == ordered[2:4]
    assert_link(r, "/v2/_catalog", 2, ordered[3])


def test_catalog_n_zero_and_bad_n(server: Server) -> None:
    push_image(server.url, unique_repo("catalog"), tag="x")
    r = requests.get(f"{server.url}/v2/_catalog", params={"n": 0}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json() == {"repositories": []}
    assert "Link" not in r.headers
    for bad in ("-1", "ten"):
        assert_error(requests.get(f"{server.url}/v2/_catalog", params={"n": bad}, timeout=TIMEOUT), 400)
