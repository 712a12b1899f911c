"""Blob pull, HEAD, Range reads and delete (distribution-spec "pull blobs", conformance §2, §3h, §9)."""

from __future__ import annotations

import pytest
import requests

from ocihelpers import (
    EMPTY_DIGEST,
    EMPTY_JSON,
    EMPTY_JSON_DIGEST,
    TIMEOUT,
    absolute,
    assert_error,
    digest_of,
    push_blob,
    random_blob,
    random_digest,
    start_upload,
    unique_repo,
    with_digest,
)
from servers import Server

ALGORITHMS = ["sha256", "sha512"]


def blob_url(server: Server, repo: str, digest: str) -> str:
    return f"{server.url}/v2/{repo}/blobs/{digest}"


def test_version_check_is_200_json(server: Server) -> None:
    r = requests.get(f"{server.url}/v2/", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json() == {}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_head_and_get_blob(server: Server, algorithm: str) -> None:
    repo = unique_repo("blobs")
    data = random_blob(4096)
    digest = push_blob(server.url, repo, data, algorithm)
    assert digest.startswith(f"{algorithm}:")

    head = requests.head(blob_url(server, repo, digest), timeout=TIMEOUT)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["Docker-Content-Digest"] == digest

    get = requests.get(blob_url(server, repo, digest), timeout=TIMEOUT)
    assert get.status_code == 200
    assert get.content == data
    assert get.headers["Content-Length"] == str(len(data))
    assert get.headers["Docker-Content-Digest"] == digest


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_missing_blob_is_404_blob_unknown(server: Server, algorithm: str) -> None:
    repo = unique_repo("blobs")
    push_blob(server.url, repo, random_blob(16))  # the repository exists; the blob does not
    digest = random_digest(algorithm)
    head = requests.head(blob_url(server, repo, digest), timeout=TIMEOUT)
    assert head.status_code == 404
    assert head.content == b""
    assert_error(requests.get(blob_url(server, repo, digest), timeout=TIMEOUT), 404, "BLOB_UNKNOWN")


def test_hello_world_dummy_digest_is_404(server: Server) -> None:
    """The legacy suite's dummy digest, in a repository that was never created."""
    digest = digest_of(b"hello world")
    repo = unique_repo("blobs")
    assert requests.head(blob_url(server, repo, digest), timeout=TIMEOUT).status_code == 404
    assert_error(requests.get(blob_url(server, repo, digest), timeout=TIMEOUT), 404, "BLOB_UNKNOWN")


def test_blob_of_another_repository_is_not_served(server: Server) -> None:
    data = random_blob(64)
    digest = push_blob(server.url, unique_repo("blobs"), data)
    other = unique_repo("blobs")
    push_blob(server.url, other, random_blob(16))
    assert requests.head(blob_url(server, other, digest), timeout=TIMEOUT).status_code == 404
    assert_error(requests.get(blob_url(server, other, digest), timeout=TIMEOUT), 404, "BLOB_UNKNOWN")


def test_malformed_digest_is_an_error_not_a_crash(server: Server) -> None:
    repo = unique_repo("blobs")
    for bad in ("sha256:short", "sha256:" + "Z" * 64, "md5:d41d8cd98f00b204e9800998ecf8427e", "nodigest"):
        r = requests.get(blob_url(server, repo, bad), timeout=TIMEOUT)
        assert_error(r, (400, 404), ("DIGEST_INVALID", "BLOB_UNKNOWN", "NAME_UNKNOWN"))


# ---- Range reads (conformance N: a 2048-byte blob, sha256 and sha512) -------------------------------


@pytest.fixture(params=ALGORITHMS)
def range_blob(server: Server, request: pytest.FixtureRequest) -> tuple[str, bytes]:
    repo = unique_repo("range")
    data = random_blob(2048)
    digest = push_blob(server.url, repo, data, request.param)
    return blob_url(server, repo, digest), data


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("500-1499", 500, 1499),
        ("500-", 500, 2047),
        ("-500", 1548, 2047),
        ("2000-5000", 2000, 2047),
        ("0-0", 0, 0),
        ("2047-2047", 2047, 2047),
    ],
)
def test_range_read_206(range_blob: tuple[str, bytes], spec: str, start: int, end: int) -> None:
    url, data = range_blob
    r = requests.get(url, headers={"Range": f"bytes={spec}"}, timeout=TIMEOUT)
    assert r.status_code == 206, (spec, r.status_code)
    assert r.content == data[start : end + 1]
    assert r.headers["Content-Length"] == str(end - start + 1)
    assert r.headers["Content-Range"] in (f"bytes {start}-{end}/2048", f"bytes {start}-{end}/*")
    assert r.headers["Docker-Content-Digest"] == url.rsplit("/", 1)[1]


@pytest.mark.parametrize("spec", ["500-0", "5000-10000", "2048-2048", "2048-"])
def test_range_read_416(range_blob: tuple[str, bytes], spec: str) -> None:
    url, _ = range_blob
    r = requests.get(url, headers={"Range": f"bytes={spec}"}, timeout=TIMEOUT)
    assert r.status_code == 416, (spec, r.status_code, r.content[:200])


def test_range_read_of_missing_blob_is_404(server: Server) -> None:
    r = requests.get(blob_url(server, unique_repo("range"), random_digest()), headers={"Range": "bytes=0-9"}, timeout=TIMEOUT)
    assert_error(r, 404, "BLOB_UNKNOWN")


# ---- special contents: the empty blob and the empty JSON blob ------------------------------------


def _push_empty_monolithic(server: Server, repo: str, digest: str) -> requests.Response:
    r = start_upload(server.url, repo)
    assert r.status_code == 202
    return requests.put(with_digest(absolute(server.url, r), digest), data=b"", timeout=TIMEOUT)


def _push_empty_post_only(server: Server, repo: str, digest: str) -> requests.Response:
    return requests.post(
        f"{server.url}/v2/{repo}/blobs/uploads/", params={"digest": digest}, headers={"Content-Length": "0"}, timeout=TIMEOUT
    )


def _push_empty_chunked_without_patch(server: Server, repo: str, digest: str) -> requests.Response:
    r = start_upload(server.url, repo)
    assert r.status_code == 202
    return requests.put(with_digest(absolute(server.url, r), digest), headers={"Content-Length": "0"}, timeout=TIMEOUT)


def _push_empty_streamed(server: Server, repo: str, digest: str) -> requests.Response:
    r = start_upload(server.url, repo)
    assert r.status_code == 202
    r = requests.patch(absolute(server.url, r), data=b"", headers={"Content-Type": "application/octet-stream"}, timeout=TIMEOUT)
    assert r.status_code == 202, r.text
    return requests.put(with_digest(absolute(server.url, r), digest), headers={"Content-Length": "0"}, timeout=TIMEOUT)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "push", [_push_empty_monolithic, _push_empty_post_only, _push_empty_chunked_without_patch, _push_empty_streamed]
)
def test_empty_blob(server: Server, algorithm: str, push) -> None:  # type: ignore[no-untyped-def]
    repo = unique_repo("empty")
    digest = digest_of(b"", algorithm)
    if algorithm == "sha256":
        assert digest == EMPTY_DIGEST
    r = push(server, repo, digest)
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers.get("Location")

    head = requests.head(blob_url(server, repo, digest), timeout=TIMEOUT)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "0"
    assert head.headers["Docker-Content-Digest"] == digest

    get = requests.get(blob_url(server, repo, digest), timeout=TIMEOUT)
    assert get.status_code == 200
    assert get.content == b""
    assert get.headers["Content-Length"] == "0"
    assert get.headers["Docker-Content-Digest"] == digest


def test_empty_json_blob_push_head_get_delete(server: Server) -> None:
    repo = unique_repo("emptyjson")
    digest = push_blob(server.url, repo, EMPTY_JSON)
    assert digest == EMPTY_JSON_DIGEST
    url = blob_url(server, repo, digest)
    head = requests.head(url, timeout=TIMEOUT)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "2"
    get = requests.get(url, timeout=TIMEOUT)
    assert get.status_code == 200
    assert get.content == b"{}"
    assert requests.delete(url, timeout=TIMEOUT).status_code == 202
    assert requests.head(url, timeout=TIMEOUT).status_code == 404


# ---- delete ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_delete_blob_then_head_404(server: Server, algorithm: str) -> None:
    repo = unique_repo("blobdel")
    digest = push_blob(server.url, repo, random_blob(512), algorithm)
    url = blob_url(server, repo, digest)
    # Several connections, so that every worker process is asked.
    for _ in range(4):
        assert requests.head(url, timeout=TIMEOUT).status_code == 200
    r = requests.delete(url, timeout=TIMEOUT)
    assert r.status_code == 202
    for _ in range(4):
        assert requests.head(url, timeout=TIMEOUT).status_code == 404
        assert_error(requests.get(url, timeout=TIMEOUT), 404, "BLOB_UNKNOWN")


def test_delete_blob_only_unlinks_it_from_that_repository(server: Server) -> None:
    data = random_blob(128)
    first, second = unique_repo("blobdel"), unique_repo("blobdel")
    digest = push_blob(server.url, first, data)
    push_blob(server.url, second, data)
    assert requests.delete(blob_url(server, first, digest), timeout=TIMEOUT).status_code == 202
    assert requests.head(blob_url(server, first, digest), timeout=TIMEOUT).status_code == 404
    r = requests.get(blob_url(server, second, digest), timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.content == data


def test_delete_missing_blob_is_404(server: Server) -> None:
    repo = unique_repo("blobdel")
    push_blob(server.url, repo, random_blob(16))
    r = requests.delete(blob_url(server, repo, random_digest()), timeout=TIMEOUT)
    assert_error(r, 404, "BLOB_UNKNOWN")


def test_delete_twice_is_404_the_second_time(server: Server) -> None:
    repo = unique_repo("blobdel")
    digest = push_blob(server.url, repo, random_blob(16))
    assert requests.delete(blob_url(server, repo, digest), timeout=TIMEOUT).status_code == 202
    assert_error(requests.delete(blob_url(server, repo, digest), timeout=TIMEOUT), 404, "BLOB_UNKNOWN")


def test_etag_is_the_digest_and_if_none_match_answers_304(server: Server) -> None:
    repo = unique_repo("etag")
    data = random_blob(300)
    digest = push_blob(server.url, repo, data)
    first = requests.get(blob_url(server, repo, digest), timeout=TIMEOUT)
    assert first.headers["ETag"] == f'"{digest}"'
    again = requests.get(blob_url(server, repo, digest), headers={"If-None-Match": f'"{digest}"'}, timeout=TIMEOUT)
    assert again.status_code == 304
    assert again.content == b""
    other = requests.get(blob_url(server, repo, digest), headers={"If-None-Match": '"sha256:other"'}, timeout=TIMEOUT)
    assert other.status_code == 200 and other.content == data
