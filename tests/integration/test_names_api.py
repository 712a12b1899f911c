"""Repository names: the grammar, NAME_INVALID, nested names, and unknown routes."""

from __future__ import annotations

import uuid

import pytest
import requests

from ocihelpers import OCI_MANIFEST, TIMEOUT, assert_error, digest_of, push_blob, push_image, random_blob, random_digest
from servers import Server

# Sent as-is: requests would otherwise normalise "..", so these go through a prepared request with the raw path.
BAD_NAMES = [
    "UPPER/case",
    "lower/Mixed",
    "a/../b",
    "a/%2e%2e/b",
    "%2e%2e/x",
    "a/%2E%2E/b",
    "a/b%00c",
    "a%00",
    "a//b",
    "a/b/",
    "-lead",
    "a/-lead",
    "trail-",
    "a..b",
    "a/.hidden",
    "a%2fb/c%2f",
    "sp%20ace",
    "x" * 256,
    "/".join(["abcdefghij"] * 23) + "/abcdef",  # 259 characters of valid components
]


def raw_request(method: str, url: str, **kwargs: object) -> requests.Response:
    """A request whose path is not normalised by the client (so "..", "%2e" and "%00" reach the server)."""
    with requests.Session() as session:
        prepared = session.prepare_request(requests.Request(method, url, **kwargs))  # type: ignore[arg-type]
        prepared.url = url
        return session.send(prepared, timeout=TIMEOUT)


def endpoints(name: str) -> list[tuple[str, str]]:
    digest = random_digest()
    return [
        ("GET", f"/v2/{name}/tags/list"),
        ("GET", f"/v2/{name}/manifests/latest"),
        ("HEAD", f"/v2/{name}/manifests/latest"),
        ("PUT", f"/v2/{name}/manifests/latest"),
        ("DELETE", f"/v2/{name}/manifests/{digest}"),
        ("GET", f"/v2/{name}/blobs/{digest}"),
        ("DELETE", f"/v2/{name}/blobs/{digest}"),
        ("POST", f"/v2/{name}/blobs/uploads/"),
        ("GET", f"/v2/{name}/referrers/{digest}"),
    ]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: n[:40])
def test_invalid_name_is_name_invalid(server: Server, name: str) -> None:
    for method, path in endpoints(name):
        kwargs: dict[str, object] = {}
        if method == "PUT":
            kwargs = {"data": b'{"schemaVersion": 2}', "headers": {"Content-Type": OCI_MANIFEST}}
        r = raw_request(method, server.url + path, **kwargs)
        if method == "HEAD":
            assert r.status_code == 400, (method, path, r.status_code)
            assert r.content == b""
        else:
            assert_error(r, 400, "NAME_INVALID")


def test_name_of_255_characters_is_valid(server: Server) -> None:
    name = "/".join(["abcdefghij"] * 22) + "/" + uuid.uuid4().hex[:13]
    assert len(name) == 255
    data = random_blob(10)
    digest = push_blob(server.url, name, data)
    r = requests.get(f"{server.url}/v2/{name}/blobs/{digest}", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.content == data


def test_256_character_name_is_refused_on_upload(server: Server) -> None:
    name = "x" * 256
    data = random_blob(10)
    r = requests.post(f"{server.url}/v2/{name}/blobs/uploads/", params={"digest": digest_of(data)}, data=data, timeout=TIMEOUT)
    assert_error(r, 400, "NAME_INVALID")


@pytest.mark.parametrize("shape", ["a/b/c", "a/b/c/d/e/f", "a-b.c__d/e---f/g.h", "library/x", "blobs/uploads/x", "v2/manifests/tags"])
def test_nested_names_work(server: Server, shape: str) -> None:
    name = f"{shape}/{uuid.uuid4().hex[:8]}"
    digest, body = push_image(server.url, name, tag="latest")
    r = requests.get(f"{server.url}/v2/{name}/manifests/latest", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["Docker-Content-Digest"] == digest
    r = requests.get(f"{server.url}/v2/{name}/tags/list", timeout=TIMEOUT)
    assert r.json() == {"name": name, "tags": ["latest"]}
    r = requests.get(f"{server.url}/v2/{name}/referrers/{digest}", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json()["manifests"] == []


def test_names_that_look_like_routes_stay_apart(server: Server) -> None:
    """``a/blobs/b`` and ``a`` are different repositories even though one's name contains a route word."""
    suffix = uuid.uuid4().hex[:8]
    outer, inner = f"x{suffix}", f"x{suffix}/blobs/y"
    data = random_blob(20)
    digest = push_blob(server.url, inner, data)
    assert requests.get(f"{server.url}/v2/{inner}/blobs/{digest}", timeout=TIMEOUT).content == data
    assert requests.head(f"{server.url}/v2/{outer}/blobs/{digest}", timeout=TIMEOUT).status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/nothing-here"),
        ("GET", "/v2/a/b/unknown/route"),
        ("GET", "/v2/a/blobs"),
        ("GET", "/v2/a/manifests/"),
    ],
)
def test_unknown_route_is_404_json(server: Server, method: str, path: str) -> None:
    r = raw_request(method, server.url + path)
    assert_error(r, 404)
    assert r.headers["Content-Type"].split(";")[0] == "application/json"


@pytest.mark.parametrize("path", ["/v3/", "/", "/api/v1/nothing"])
def test_unknown_path_outside_v2_is_404_problem_json(server: Server, path: str) -> None:
    r = raw_request("GET", server.url + path)
    assert r.status_code == 404
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.json()["status"] == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/a/b/manifests/latest"),
        ("PATCH", "/v2/a/b/tags/list"),
        ("PUT", "/v2/a/b/blobs/sha256:" + "0" * 64),
        ("DELETE", "/v2/"),
    ],
)
def test_wrong_method_is_an_oci_error(server: Server, method: str, path: str) -> None:
    r = raw_request(method, server.url + path)
    assert_error(r, (404, 405), "UNSUPPORTED")
