"""The server starts, answers the version check and round-trips a blob."""

from __future__ import annotations

import hashlib

import requests

from servers import Server


def test_version_check(server: Server) -> None:
    r = requests.get(f"{server.url}/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert r.json() == {}


def test_monolithic_blob_round_trip(server: Server) -> None:
    data = b"smoke test blob"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(f"{server.url}/v2/smoke/repo/blobs/uploads/", params={"digest": digest}, data=data)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    got = requests.get(f"{server.url}{r.headers['Location']}")
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["ETag"] == f'"{digest}"'
