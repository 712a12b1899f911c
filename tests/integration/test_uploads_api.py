"""Blob uploads: monolithic, POST-only, streamed, chunked, resumed, cancelled, mounted (conformance §3, §4)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import requests

from ocihelpers import (
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
OCTET = {"Content-Type": "application/octet-stream"}


def blob_url(server: Server, repo: str, digest: str) -> str:
    return f"{server.url}/v2/{repo}/blobs/{digest}"


def new_session(server: Server, repo: str) -> str:
    r = start_upload(server.url, repo)
    assert r.status_code == 202, (r.status_code, r.text)
    assert urlsplit(absolute(server.url, r)).path.startswith(f"/v2/{repo}/blobs/uploads/")
    minimum = r.headers.get("OCI-Chunk-Min-Length")
    if minimum is not None:
        assert minimum.isdigit()
    return absolute(server.url, r)


def patch_chunk(url: str, chunk: bytes, start: int | None) -> requests.Response:
    headers = dict(OCTET)
    if start is not None:
        headers["Content-Range"] = f"{start}-{start + len(chunk) - 1}"
    return requests.patch(url, data=chunk, headers=headers, timeout=TIMEOUT)


def assert_stored(server: Server, repo: str, digest: str, data: bytes, location: str | None = None) -> None:
    r = requests.get(blob_url(server, repo, digest), timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.content == data
    if location is not None:
        r = requests.get(location, timeout=TIMEOUT)
        assert r.status_code == 200
        assert r.content == data


def assert_created(server: Server, r: requests.Response, repo: str, digest: str) -> str:
    assert r.status_code == 201, (r.status_code, r.text)
    location = absolute(server.url, r)
    assert urlsplit(location).path == f"/v2/{repo}/blobs/{digest}"
    # Required by the conformance runner (digestHeader, on for 1.1+dev); must name the digest exactly.
    assert r.headers.get("Docker-Content-Digest") == digest
    return location


def assert_not_stored(server: Server, repo: str, *digests: str) -> None:
    for digest in digests:
        assert requests.head(blob_url(server, repo, digest), timeout=TIMEOUT).status_code == 404, digest


# ---- 3a/3b: monolithic ---------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_post_then_monolithic_put(server: Server, algorithm: str) -> None:
    repo = unique_repo("up")
    data = random_blob(3000)
    digest = digest_of(data, algorithm)
    r = start_upload(server.url, repo)
    assert r.status_code == 202
    assert r.headers.get("Location")
    assert re.fullmatch(r"0-\d+", r.headers.get("Range", "0-0"))
    r = requests.put(with_digest(absolute(server.url, r), digest), data=data, headers=OCTET, timeout=TIMEOUT)
    location = assert_created(server, r, repo, digest)
    assert_stored(server, repo, digest, data, location)


def test_post_without_content_length_header(server: Server) -> None:
    """Some clients POST with no Content-Length at all."""
    repo = unique_repo("up")
    r = requests.post(f"{server.url}/v2/{repo}/blobs/uploads/", timeout=TIMEOUT)
    assert r.status_code == 202
    assert r.headers.get("Location")


def test_post_to_path_without_trailing_slash(server: Server) -> None:
    repo = unique_repo("up")
    r = requests.post(f"{server.url}/v2/{repo}/blobs/uploads", headers={"Content-Length": "0"}, timeout=TIMEOUT)
    assert r.status_code == 202
    assert r.headers.get("Location")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_single_post_with_digest_is_201(server: Server, algorithm: str) -> None:
    repo = unique_repo("up")
    data = random_blob(1500)
    digest = digest_of(data, algorithm)
    r = requests.post(f"{server.url}/v2/{repo}/blobs/uploads/", params={"digest": digest}, data=data, headers=OCTET, timeout=TIMEOUT)
    location = assert_created(server, r, repo, digest)
    assert_stored(server, repo, digest, data, location)


def test_put_keeps_the_session_query_string(server: Server) -> None:
    """``digest`` is appended to whatever query the Location already has; extra parameters do no harm."""
    repo = unique_repo("up")
    data = random_blob(100)
    digest = digest_of(data)
    location = new_session(server, repo)
    url = f"{location}{'&' if '?' in location else '?'}_state=opaque&digest={digest}"
    r = requests.put(url, data=data, headers=OCTET, timeout=TIMEOUT)
    assert_created(server, r, repo, digest)
    assert_stored(server, repo, digest, data)


def test_put_without_digest_is_400(server: Server) -> None:
    repo = unique_repo("up")
    location = new_session(server, repo)
    r = requests.put(location, data=b"abc", headers=OCTET, timeout=TIMEOUT)
    assert_error(r, 400, ("DIGEST_INVALID", "BLOB_UPLOAD_INVALID"))


# ---- 3c: streamed ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_streamed_patch_without_content_range(server: Server, algorithm: str) -> None:
    repo = unique_repo("up")
    data = random_blob(5000)
    digest = digest_of(data, algorithm)
    location = new_session(server, repo)
    r = patch_chunk(location, data, None)
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    r = requests.put(with_digest(absolute(server.url, r), digest), headers={"Content-Length": "0"}, timeout=TIMEOUT)
    location = assert_created(server, r, repo, digest)
    assert_stored(server, repo, digest, data, location)


def test_streamed_patch_chunked_transfer_encoding(server: Server) -> None:
    """A generator body goes out with Transfer-Encoding: chunked and no Content-Length."""
    repo = unique_repo("up")
    parts = [random_blob(700) for _ in range(5)]
    data = b"".join(parts)
    digest = digest_of(data)
    location = new_session(server, repo)
    r = requests.patch(location, data=iter(parts), headers=OCTET, timeout=TIMEOUT)
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    r = requests.put(with_digest(absolute(server.url, r), digest), timeout=TIMEOUT)
    assert_created(server, r, repo, digest)
    assert_stored(server, repo, digest, data)


# ---- 3d: chunked -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("put_last_chunk", [False, True], ids=["patch-all", "put-chunk"])
def test_chunked_upload_with_content_range(server: Server, algorithm: str, put_last_chunk: bool) -> None:
    repo = unique_repo("up")
    data = random_blob(3067)
    digest = digest_of(data, algorithm)
    chunks = [(0, data[:1024]), (1024, data[1024:2048]), (2048, data[2048:])]
    location = new_session(server, repo)
    patches = chunks[:-1] if put_last_chunk else chunks
    for start, chunk in patches:
        r = patch_chunk(location, chunk, start)
        assert r.status_code == 202, (start, r.status_code, r.text)
        assert r.headers["Range"] == f"0-{start + len(chunk) - 1}"
        location = absolute(server.url, r)
    if put_last_chunk:
        start, chunk = chunks[-1]
        r = requests.put(
            with_digest(location, digest),
            data=chunk,
            headers={**OCTET, "Content-Range": f"{start}-{start + len(chunk) - 1}"},
            timeout=TIMEOUT,
        )
    else:
        r = requests.put(with_digest(location, digest), headers={"Content-Length": "0"}, timeout=TIMEOUT)
    location = assert_created(server, r, repo, digest)
    assert_stored(server, repo, digest, data, location)


def test_single_chunk_upload(server: Server) -> None:
    repo = unique_repo("up")
    data = random_blob(512)
    digest = digest_of(data)
    r = patch_chunk(new_session(server, repo), data, 0)
    assert r.status_code == 202
    assert r.headers["Range"] == "0-511"
    r = requests.put(with_digest(absolute(server.url, r), digest), headers={"Content-Length": "0"}, timeout=TIMEOUT)
    assert_created(server, r, repo, digest)
    assert_stored(server, repo, digest, data)


# ---- 3e: out-of-order chunks, status, stale sessions -----------------------------------------------------


def upload_status(url: str) -> requests.Response:
    return requests.get(url, timeout=TIMEOUT)


def test_out_of_order_chunk_is_416_and_session_survives(server: Server) -> None:
    repo = unique_repo("up")
    data = random_blob(3067)
    digest = digest_of(data)
    location = new_session(server, repo)

    # Skip ahead while nothing is stored.
    r = patch_chunk(location, data[1024:2048], 1024)
    assert_error(r, 416)
    status = upload_status(location)
    assert status.status_code == 204
    assert re.fullmatch(r"0-\d+", status.headers["Range"])

    r = patch_chunk(location, data[:1024], 0)
    assert r.status_code == 202
    assert r.headers["Range"] == "0-1023"
    location = absolute(server.url, r)

    # Restart from zero, then skip a chunk: both out of order.
    assert_error(patch_chunk(location, data[:1024], 0), 416)
    assert_error(patch_chunk(location, data[2048:], 2048), 416)
    status = upload_status(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-1023"

    r = patch_chunk(location, data[1024:2048], 1024)
    assert r.status_code == 202
    assert r.headers["Range"] == "0-2047"
    location = absolute(server.url, r)

    # Out of order on the final PUT (put-chunk mode): 416 before digest verification, session kept.
    r = requests.put(
        with_digest(location, digest), data=data[:1024], headers={**OCTET, "Content-Range": "0-1023"}, timeout=TIMEOUT
    )
    assert_error(r, 416)
    status = upload_status(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-2047"
    assert_not_stored(server, repo, digest)

    r = requests.put(
        with_digest(location, digest),
        data=data[2048:],
        headers={**OCTET, "Content-Range": f"2048-{len(data) - 1}"},
        timeout=TIMEOUT,
    )
    assert_created(server, r, repo, digest)
    assert_stored(server, repo, digest, data)


def test_resumed_upload_legacy_sequence(server: Server) -> None:
    """The legacy suite's 42-byte sequence: old Locations stay valid for the whole session."""
    repo = unique_repo("up")
    data = random_blob(42)
    digest = digest_of(data)
    chunk1, chunk2 = data[:22], data[22:]

    # 1. New session, second chunk first.
    r = patch_chunk(new_session(server, repo), chunk2, 22)
    assert_error(r, 416)

    # 2. New session, first chunk.
    original = new_session(server, repo)
    r = patch_chunk(original, chunk1, 0)
    assert r.status_code == 202
    assert r.headers["Range"] == "0-21"
    assert r.headers.get("Location")

    # 3. The first chunk again, to the original (stale) Location.
    assert_error(patch_chunk(original, chunk1, 0), 416)

    # 4. Status on the original Location.
    status = upload_status(original)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-21"
    assert status.headers.get("Location")
    assert status.content == b""

    # 5. Second chunk to the Location from the status.
    r = patch_chunk(absolute(server.url, status), chunk2, 22)
    assert r.status_code == 202
    assert r.headers["Range"] == "0-41"
    assert r.headers.get("Location")

    # 6. Finish.
    r = requests.put(with_digest(absolute(server.url, r), digest), headers={"Content-Length": "0"}, timeout=TIMEOUT)
    assert_created(server, r, repo, digest)
    assert_stored(server, repo, digest, data)


def test_upload_status_of_a_fresh_session(server: Server) -> None:
    repo = unique_repo("up")
    location = new_session(server, repo)
    r = upload_status(location)
    assert r.status_code == 204
    assert r.headers["Range"] == "0-0"
    assert urlsplit(absolute(server.url, r)).path.startswith(f"/v2/{repo}/blobs/uploads/")


def test_upload_status_after_1024_bytes(server: Server) -> None:
    repo = unique_repo("up")
    location = new_session(server, repo)
    assert patch_chunk(location, random_blob(1024), 0).status_code == 202
    r = upload_status(location)
    assert r.status_code == 204
    assert r.headers["Range"] == "0-1023"
    assert r.headers.get("Location")


def test_finished_session_is_gone(server: Server) -> None:
    repo = unique_repo("up")
    data = random_blob(10)
    location = new_session(server, repo)
    r = requests.put(with_digest(location, digest_of(data)), data=data, headers=OCTET, timeout=TIMEOUT)
    assert r.status_code == 201
    assert_error(upload_status(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(patch_chunk(location, b"more", None), 404, "BLOB_UPLOAD_UNKNOWN")


# ---- 3f: cancel ----------------------------------------------------------------------------------------


def test_cancel_upload(server: Server) -> None:
    repo = unique_repo("up")
    data = random_blob(300)
    digest = digest_of(data)
    location = new_session(server, repo)
    assert patch_chunk(location, data, 0).status_code == 202
    r = requests.delete(location, headers={"Content-Length": "0"}, timeout=TIMEOUT)
    assert r.status_code == 204
    assert_error(upload_status(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(patch_chunk(location, data, 0), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(requests.put(with_digest(location, digest), timeout=TIMEOUT), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(requests.delete(location, timeout=TIMEOUT), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_not_stored(server, repo, digest)
    assert requests.delete(blob_url(server, repo, digest), timeout=TIMEOUT).status_code == 404


# ---- 3g: bad digest ----------------------------------------------------------------------------------------


def _bad(data: bytes) -> bytes:
    return data + b"oh no"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bad_digest_post_only(server: Server, algorithm: str) -> None:
    repo = unique_repo("bad")
    data = random_blob(200)
    digest = digest_of(data, algorithm)
    r = requests.post(
        f"{server.url}/v2/{repo}/blobs/uploads/", params={"digest": digest}, data=_bad(data), headers=OCTET, timeout=TIMEOUT
    )
    assert_error(r, 400, "DIGEST_INVALID")
    assert_not_stored(server, repo, digest, digest_of(_bad(data), algorithm))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bad_digest_post_put(server: Server, algorithm: str) -> None:
    repo = unique_repo("bad")
    data = random_blob(200)
    digest = digest_of(data, algorithm)
    r = requests.put(with_digest(new_session(server, repo), digest), data=_bad(data), headers=OCTET, timeout=TIMEOUT)
    assert_error(r, 400, "DIGEST_INVALID")
    assert_not_stored(server, repo, digest, digest_of(_bad(data), algorithm))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bad_digest_streamed(server: Server, algorithm: str) -> None:
    repo = unique_repo("bad")
    data = random_blob(200)
    digest = digest_of(data, algorithm)
    r = patch_chunk(new_session(server, repo), _bad(data), None)
    assert r.status_code == 202
    r = requests.put(with_digest(absolute(server.url, r), digest), headers={"Content-Length": "0"}, timeout=TIMEOUT)
    assert_error(r, 400, "DIGEST_INVALID")
    assert_not_stored(server, repo, digest, digest_of(_bad(data), algorithm))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bad_digest_chunked(server: Server, algorithm: str) -> None:
    repo = unique_repo("bad")
    data = _bad(random_blob(2000))
    digest = digest_of(data[:-5], algorithm)
    location = new_session(server, repo)
    for start in range(0, len(data), 1024):
        r = patch_chunk(location, data[start : start + 1024], start)
        assert r.status_code == 202
        location = absolute(server.url, r)
    r = requests.put(with_digest(location, digest), headers={"Content-Length": "0"}, timeout=TIMEOUT)
    assert_error(r, 400, "DIGEST_INVALID")
    assert_not_stored(server, repo, digest, digest_of(data, algorithm))


@pytest.mark.parametrize("bad", ["sha256:abc", "sha256:" + "A" * 64, "foo:" + "0" * 64, "sha256" + "0" * 64])
def test_malformed_digest_parameter(server: Server, bad: str) -> None:
    repo = unique_repo("bad")
    r = requests.put(with_digest(new_session(server, repo), bad), data=b"x", headers=OCTET, timeout=TIMEOUT)
    assert_error(r, 400, ("DIGEST_INVALID", "UNSUPPORTED"))
    r = requests.post(f"{server.url}/v2/{repo}/blobs/uploads/", params={"digest": bad}, data=b"x", timeout=TIMEOUT)
    assert_error(r, 400, ("DIGEST_INVALID", "UNSUPPORTED"))


# ---- session ids -------------------------------------------------------------------------------------------


def test_upload_id_of_another_repository_is_unknown(server: Server) -> None:
    repo, other = unique_repo("up"), unique_repo("up")
    push_blob(server.url, other, random_blob(8))  # make sure the other repository exists
    location = new_session(server, repo)
    upload_id = urlsplit(location).path.rsplit("/", 1)[1]
    data = random_blob(64)
    stolen = f"{server.url}/v2/{other}/blobs/uploads/{upload_id}"
    assert_error(requests.get(stolen, timeout=TIMEOUT), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(patch_chunk(stolen, data, 0), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(
        requests.put(with_digest(stolen, digest_of(data)), data=data, headers=OCTET, timeout=TIMEOUT), 404, "BLOB_UPLOAD_UNKNOWN"
    )
    assert_error(requests.delete(stolen, timeout=TIMEOUT), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_not_stored(server, other, digest_of(data))
    # The session is untouched in its own repository.
    status = upload_status(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-0"


@pytest.mark.parametrize(
    "upload_id", ["nonsense", "0" * 32, "%2e%2e", "..%2f..%2fetc", "a" * 300, "00000000-0000-0000-0000-000000000000"]
)
def test_garbage_upload_id_is_404(server: Server, upload_id: str) -> None:
    repo = unique_repo("up")
    url = f"{server.url}/v2/{repo}/blobs/uploads/{upload_id}"
    assert_error(requests.get(url, timeout=TIMEOUT), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(patch_chunk(url, b"abc", 0), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(requests.put(with_digest(url, digest_of(b"abc")), data=b"abc", timeout=TIMEOUT), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(requests.delete(url, timeout=TIMEOUT), 404, "BLOB_UPLOAD_UNKNOWN")


# ---- §4: cross-repository mount ----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_mount_from_another_repository_is_201(server: Server, algorithm: str) -> None:
    source, target = unique_repo("mount"), unique_repo("mount")
    data = random_blob(700)
    digest = push_blob(server.url, source, data, algorithm)
    r = requests.post(
        f"{server.url}/v2/{target}/blobs/uploads/",
        params={"mount": digest, "from": source},
        headers={"Content-Length": "0"},
        timeout=TIMEOUT,
    )
    location = assert_created(server, r, target, digest)
    assert_stored(server, target, digest, data, location)
    head = requests.head(blob_url(server, target, digest), timeout=TIMEOUT)
    assert head.headers["Docker-Content-Digest"] == digest


def test_mount_of_a_blob_not_in_from_is_202_with_a_fresh_session(server: Server) -> None:
    source, target = unique_repo("mount"), unique_repo("mount")
    push_blob(server.url, source, random_blob(8))
    data = random_blob(300)
    # The blob exists in the registry, but not in `source`: it must not leak through the mount.
    elsewhere = unique_repo("mount")
    digest = push_blob(server.url, elsewhere, data)
    r = requests.post(
        f"{server.url}/v2/{target}/blobs/uploads/",
        params={"mount": digest, "from": source},
        headers={"Content-Length": "0"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 202, (r.status_code, r.text)
    location = absolute(server.url, r)
    assert urlsplit(location).path.startswith(f"/v2/{target}/blobs/uploads/")
    assert_not_stored(server, target, digest)
    r = requests.put(with_digest(location, digest), data=data, headers=OCTET, timeout=TIMEOUT)
    assert_created(server, r, target, digest)
    assert_stored(server, target, digest, data)


def test_mount_of_a_never_pushed_blob_is_202(server: Server) -> None:
    source, target = unique_repo("mount"), unique_repo("mount")
    push_blob(server.url, source, random_blob(8))
    data = random_blob(50)
    digest = digest_of(data, "sha512")
    r = requests.post(
        f"{server.url}/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source}, timeout=TIMEOUT
    )
    assert r.status_code == 202
    r = requests.put(with_digest(absolute(server.url, r), digest), data=data, headers=OCTET, timeout=TIMEOUT)
    assert_created(server, r, target, digest)


def test_mount_from_unknown_repository_is_202(server: Server) -> None:
    target = unique_repo("mount")
    digest = push_blob(server.url, unique_repo("mount"), random_blob(40))
    r = requests.post(
        f"{server.url}/v2/{target}/blobs/uploads/", params={"mount": digest, "from": unique_repo("nowhere")}, timeout=TIMEOUT
    )
    assert r.status_code == 202
    assert urlsplit(absolute(server.url, r)).path.startswith(f"/v2/{target}/blobs/uploads/")
    assert_not_stored(server, target, digest)


def test_mount_without_from_is_202(server: Server) -> None:
    target = unique_repo("mount")
    r = requests.post(
        f"{server.url}/v2/{target}/blobs/uploads/",
        params={"mount": digest_of(b"hello world")},
        headers={"Content-Length": "0"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 202
    assert urlsplit(absolute(server.url, r)).path.startswith(f"/v2/{target}/blobs/uploads/")

    # Also for a blob that another repository has: no automatic cross-mount without `from`.
    digest = push_blob(server.url, unique_repo("mount"), random_blob(40))
    r = requests.post(f"{server.url}/v2/{target}/blobs/uploads/", params={"mount": digest}, timeout=TIMEOUT)
    assert r.status_code == 202
    assert_not_stored(server, target, digest)


def test_mount_with_malformed_digest_is_400(server: Server) -> None:
    source = unique_repo("mount")
    push_blob(server.url, source, random_blob(8))
    r = requests.post(
        f"{server.url}/v2/{unique_repo('mount')}/blobs/uploads/", params={"mount": "sha256:nope", "from": source}, timeout=TIMEOUT
    )
    assert_error(r, 400, "DIGEST_INVALID")


def test_mount_from_invalid_repository_name_is_400(server: Server) -> None:
    r = requests.post(
        f"{server.url}/v2/{unique_repo('mount')}/blobs/uploads/",
        params={"mount": random_digest(), "from": "Not/Valid"},
        timeout=TIMEOUT,
    )
    assert_error(r, 400, "NAME_INVALID")


def test_upload_into_invalid_repository_name_is_400(server: Server) -> None:
    r = requests.post(f"{server.url}/v2/Bad/Name/blobs/uploads/", timeout=TIMEOUT)
    assert_error(r, 400, "NAME_INVALID")


def test_mount_then_use_in_manifest_is_independent_of_source_delete(server: Server) -> None:
    """After a mount the target owns its link: deleting it from the source leaves the target intact."""
    source, target = unique_repo("mount"), unique_repo("mount")
    data = random_blob(77)
    digest = push_blob(server.url, source, data)
    r = requests.post(f"{server.url}/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source}, timeout=TIMEOUT)
    assert r.status_code == 201
    assert requests.delete(blob_url(server, source, digest), timeout=TIMEOUT).status_code == 202
    assert_stored(server, target, digest, data)
    assert_not_stored(server, source, digest)


# ---- verify before visible, odd chunks, large uploads ------------------------------------------------------


def test_partial_upload_is_not_visible(server: Server) -> None:
    repo = unique_repo("up")
    data = random_blob(2000)
    digest = digest_of(data)
    location = new_session(server, repo)
    r = patch_chunk(location, data, 0)
    assert r.status_code == 202
    assert_not_stored(server, repo, digest)
    r = requests.put(with_digest(absolute(server.url, r), digest), timeout=TIMEOUT)
    assert_created(server, r, repo, digest)


def test_chunk_whose_length_disagrees_with_content_range_is_refused(server: Server) -> None:
    repo = unique_repo("up")
    data = random_blob(1000)
    digest = digest_of(data)
    location = new_session(server, repo)
    assert patch_chunk(location, data[:500], 0).status_code == 202
    # Content-Range claims 100 bytes, the body has 500.
    r = requests.patch(location, data=data[500:], headers={**OCTET, "Content-Range": "500-599"}, timeout=TIMEOUT)
    assert_error(r, (400, 416))
    status = upload_status(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-499"
    r = patch_chunk(location, data[500:], 500)
    assert r.status_code == 202
    r = requests.put(with_digest(absolute(server.url, r), digest), timeout=TIMEOUT)
    assert_created(server, r, repo, digest)
    assert_stored(server, repo, digest, data)


def test_final_put_carries_the_rest_without_content_range(server: Server) -> None:
    repo = unique_repo("up")
    data = random_blob(3000)
    digest = digest_of(data)
    r = patch_chunk(new_session(server, repo), data[:1000], None)
    assert r.status_code == 202
    r = requests.put(with_digest(absolute(server.url, r), digest), data=data[1000:], headers=OCTET, timeout=TIMEOUT)
    assert_created(server, r, repo, digest)
    assert_stored(server, repo, digest, data)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_multi_mebibyte_chunked_upload(server: Server, algorithm: str) -> None:
    """Chunks larger than the server's read buffer, landing on whichever worker accepts the connection."""
    repo = unique_repo("up")
    data = random_blob(5 * 1024 * 1024 + 3)
    digest = digest_of(data, algorithm)
    location = new_session(server, repo)
    step = 2 * 1024 * 1024
    for start in range(0, len(data), step):
        r = patch_chunk(location, data[start : start + step], start)
        assert r.status_code == 202
        location = absolute(server.url, r)
    r = requests.put(with_digest(location, digest), timeout=TIMEOUT)
    assert_created(server, r, repo, digest)
    assert_stored(server, repo, digest, data)
    r = requests.get(blob_url(server, repo, digest), headers={"Range": f"bytes={step - 2}-{step + 1}"}, timeout=TIMEOUT)
    assert r.status_code == 206
    assert r.content == data[step - 2 : step + 2]


def test_repush_after_delete(server: Server) -> None:
    repo = unique_repo("up")
    data = random_blob(123)
    digest = push_blob(server.url, repo, data)
    assert requests.delete(blob_url(server, repo, digest), timeout=TIMEOUT).status_code == 202
    assert_not_stored(server, repo, digest)
    assert push_blob(server.url, repo, data) == digest
    assert_stored(server, repo, digest, data)


@pytest.mark.parametrize("content_range", ["abc", "0-", "-5", "5-2", "bytes=0-1-2", "0-9/x"])
def test_malformed_content_range_is_a_client_error(server: Server, content_range: str) -> None:
    repo = unique_repo("up")
    location = new_session(server, repo)
    r = requests.patch(location, data=b"0123456789", headers={**OCTET, "Content-Range": content_range}, timeout=TIMEOUT)
    assert_error(r, (400, 416), ("BLOB_UPLOAD_INVALID", "SIZE_INVALID"))
    status = upload_status(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-0"
