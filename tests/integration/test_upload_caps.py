"""Upload sessions: caps per repository and per identity, held under a race across workers; empty sessions purged."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from servers import Server

TIMEOUT = (5, 30)
PER_REPOSITORY, PER_IDENTITY = 5, 8


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        data_dir=tmp_path_factory.mktemp("upload-caps") / "data",
        workers=2,  # the race is between processes as well as within one
        auth=True,
        extra_env={
            "CARGOHOLD_UPLOAD_SESSIONS_PER_REPOSITORY": str(PER_REPOSITORY),
            "CARGOHOLD_UPLOAD_SESSIONS_PER_IDENTITY": str(PER_IDENTITY),
        },
    ).start()
    try:
        yield server
    finally:
        server.stop()


def bearer(server: Server, repos: list[str]) -> dict[str, str]:
    """One token for all of ``repos`` (so the race costs no password checks)."""
    params = [("service", "cargohold"), *(("scope", f"repository:{r}:push,pull") for r in repos)]
    r = requests.get(f"{server.url}/token", params=params, auth=("admin", server.admin_password), timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def race(server: Server, headers: dict[str, str], repos: list[str]) -> list[requests.Response]:
    """One POST per entry of ``repos``, all at once."""

    def post(repo: str) -> requests.Response:
        return requests.post(f"{server.url}/v2/{repo}/blobs/uploads/", headers=headers, timeout=TIMEOUT)

    with ThreadPoolExecutor(max_workers=len(repos)) as pool:
        return list(pool.map(post, repos))


def refused(responses: list[requests.Response], cap: str) -> int:
    count = 0
    for r in responses:
        if r.status_code == 202:
            continue
        assert r.status_code == 429, (r.status_code, r.text)
        error = r.json()["errors"][0]
        assert error["code"] == "TOOMANYREQUESTS" and cap in error["message"], error
        count += 1
    return count


def test_caps_hold_under_a_race(capped: Server) -> None:
    base = f"cap/{uuid.uuid4().hex[:8]}"
    a, b, c = f"{base}/a", f"{base}/b", f"{base}/c"
    headers = bearer(capped, [a, b, c])

    # Per repository: 30 parallel POSTs, exactly the cap succeed.
    answers = race(capped, headers, [a] * 30)
    assert sum(r.status_code == 202 for r in answers) == PER_REPOSITORY
    assert refused(answers, "upload_sessions_per_repository") == 30 - PER_REPOSITORY

    # Per identity: the same caller in two more repositories gets only what is left of its own cap.
    answers = race(capped, headers, [b, c] * 10)
    assert sum(r.status_code == 202 for r in answers) == PER_IDENTITY - PER_REPOSITORY
    assert refused(answers, "upload_sessions_per_identity") == 20 - (PER_IDENTITY - PER_REPOSITORY)

    # Finishing or cancelling a session gives its place back.
    opened = [r for r in race(capped, headers, [a]) if r.status_code == 202]
    assert not opened
    sessions = sessions_of(capped.data_dir, a)
    assert len(sessions) == PER_REPOSITORY
    r = requests.delete(f"{capped.url}/v2/{a}/blobs/uploads/{sessions[0]}", headers=headers, timeout=TIMEOUT)
    assert r.status_code == 204, r.text
    r = requests.post(f"{capped.url}/v2/{a}/blobs/uploads/", headers=headers, timeout=TIMEOUT)
    assert r.status_code == 202, r.text


def sessions_of(data_dir: Path, repo: str) -> list[str]:
    found = []
    for entry in (data_dir / "uploads").iterdir():
        if (entry / "repository").exists() and (entry / "repository").read_text() == repo:
            found.append(entry.name)
    return found


def test_sessions_that_never_received_a_byte_are_purged(tmp_path: Path) -> None:
    env = {"CARGOHOLD_UPLOAD_EMPTY_MAX_AGE_SECONDS": "2", "CARGOHOLD_UPLOAD_PURGE_INTERVAL_SECONDS": "1"}
    with Server(data_dir=tmp_path / "data", workers=1, extra_env=env) as server:
        repo = f"purge/{uuid.uuid4().hex[:8]}"
        empty = requests.post(f"{server.url}/v2/{repo}/blobs/uploads/", timeout=TIMEOUT).headers["Location"]
        started = requests.post(f"{server.url}/v2/{repo}/blobs/uploads/", timeout=TIMEOUT).headers["Location"]
        r = requests.patch(f"{server.url}{started}", data=b"some bytes", timeout=TIMEOUT)
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 20
        while requests.get(f"{server.url}{empty}", timeout=TIMEOUT).status_code != 404:
            assert time.monotonic() < deadline, "the empty session was never purged"
            time.sleep(0.5)
        r = requests.get(f"{server.url}{started}", timeout=TIMEOUT)
        assert r.status_code == 204 and r.headers["Range"] == "0-9", (r.status_code, r.headers)
