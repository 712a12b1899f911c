"""Crash safety: SIGKILL the whole server mid-push, restart it on the same data, and check the promises.

DESIGN.md: "``kill -9`` at any moment, then restart: no acknowledged push is lost, no partial blob
is visible, leftovers are cleaned, ``cargohold fsck`` is clean."

Each test runs its own server (the session-wide fixtures must not be killed) on a fresh data
directory, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from servers import Server, drop_postgres_schema

MiB = 1024 * 1024
UPLOADERS = 16
CYCLES = 3
KILL_AFTER_ACKS = 3  # kill once this many uploads of the cycle were acknowledged: the rest are in flight
CHUNK = MiB
TIMEOUT = (5, 20)  # connect, read: nothing in this file may hang
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["sqlite", "postgres"])
def start_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[int], Server]]:
    """Start a server of our own, which the test may kill and restart at will."""
    servers: list[Server] = []

    def start(workers: int) -> Server:
        server = Server(data_dir=tmp_path / "data", backend=request.param, workers=workers)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.kill()
            if server.schema:
                drop_postgres_schema(server.schema)


# ---- pushing, and remembering what the registry promised -------------------------------------


@dataclass
class Upload:
    repo: str
    digest: str
    size: int
    mode: str  # "monolithic" or "chunked"
    data: bytes | None  # kept while the upload may still be resumed
    acked: bool = False  # a 201 with the right Docker-Content-Digest reached the client
    session: str | None = None  # absolute URL of the upload session (chunked)
    acked_bytes: int = 0  # bytes covered by 202 answers to PATCH
    finishing: bool = False  # the final PUT was sent
    resumed: bool = False  # completed after the restart from where the session stood
    retried: bool = False  # pushed again from scratch after the restart, as a client would


class Pusher:
    """UPLOADERS threads pushing blobs in a loop until the server dies under them."""

    def __init__(self, server: Server, tag: str, seed: int) -> None:
        self.server = server
        self.tag = tag
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.uploads: list[Upload] = []
        self.acks = 0
        self.enough = threading.Event()
        self.stop = threading.Event()
        self.unexpected: list[str] = []

    def _ack(self, up: Upload, response: requests.Response) -> None:
        if response.status_code == 201 and response.headers.get("Docker-Content-Digest") == up.digest:
            with self.lock:
                up.acked = True
                self.acks += 1
                if self.acks >= KILL_AFTER_ACKS:
                    self.enough.set()
        else:
            self._unexpected(up, response)

    def _unexpected(self, up: Upload, response: requests.Response) -> None:
        with self.lock:
            self.unexpected.append(
                f"{response.request.method} {response.request.url} ({up.mode}, {up.size} bytes): "
                f"{response.status_code} {response.text[:300]!r}"
            )

    def run(self, index: int) -> None:
        http = requests.Session()
        n = 0
        while not self.stop.is_set():
            with self.lock:
                size = self.rng.randint(1 * MiB, 8 * MiB)
                seed = self.rng.getrandbits(64)
            data = random.Random(seed).randbytes(size)
            mode = "monolithic" if (index + n) % 2 == 0 else "chunked"
            up = Upload(f"crash/{self.tag}/r{index % 4}", sha256(data), size, mode, data)
            with self.lock:
                self.uploads.append(up)
            try:
                if mode == "monolithic":
                    self._monolithic(http, up)
                else:
                    self._chunked(http, up, last_chunk_in_put=n % 2 == 0)
            except requests.RequestException:
                return  # the server is gone
            n += 1

    def _monolithic(self, http: requests.Session, up: Upload) -> None:
        assert up.data is not None
        r = http.post(
            f"{self.server.url}/v2/{up.repo}/blobs/uploads/",
            params={"digest": up.digest},
            data=up.data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=TIMEOUT,
        )
        self._ack(up, r)

    def _chunked(self, http: requests.Session, up: Upload, *, last_chunk_in_put: bool) -> None:
        assert up.data is not None
        r = http.post(f"{self.server.url}/v2/{up.repo}/blobs/uploads/", timeout=TIMEOUT)
        if r.status_code != 202 or "Location" not in r.headers:
            self._unexpected(up, r)
            return
        up.session = urljoin(self.server.url, r.headers["Location"])
        offsets = list(range(0, up.size, CHUNK))
        final = offsets.pop() if last_chunk_in_put else None
        for start in offsets:
            end = min(start + CHUNK, up.size) - 1
            r = http.patch(
                up.session,
                data=up.data[start : end + 1],
                headers={"Content-Range": f"{start}-{end}", "Content-Type": "application/octet-stream"},
                timeout=TIMEOUT,
            )
            if r.status_code != 202 or r.headers.get("Range") != f"0-{end}":
                self._unexpected(up, r)
                return
            up.acked_bytes = end + 1
            up.session = urljoin(self.server.url, r.headers.get("Location", up.session))
        up.finishing = True
        if final is None:
            r = http.put(up.session, params={"digest": up.digest}, timeout=TIMEOUT)
        else:
            r = http.put(
                up.session,
                params={"digest": up.digest},
                data=up.data[final:],
                headers={"Content-Range": f"{final}-{up.size - 1}", "Content-Type": "application/octet-stream"},
                timeout=TIMEOUT,
            )
        self._ack(up, r)


def push_until_killed(server: Server, tag: str, seed: int) -> Pusher:
    pusher = Pusher(server, tag, seed)
    threads = [threading.Thread(target=pusher.run, args=(i,), daemon=True) for i in range(UPLOADERS)]
    for t in threads:
        t.start()
    got_acks = pusher.enough.wait(timeout=20)
    server.kill()  # parent and both workers, mid-request
    pusher.stop.set()
    for t in threads:
        t.join(timeout=TIMEOUT[1] + 5)
    assert not any(t.is_alive() for t in threads), "an uploader hung after the kill"
    assert got_acks, f"only {pusher.acks} uploads were acknowledged in 20 s; unexpected answers: {pusher.unexpected}"
    return pusher


# ---- checking after the restart -----------------------------------------------------------------


def fetch_digest(http: requests.Session, server: Server, repo: str, digest: str) -> tuple[int, str | None, int]:
    """GET a blob: status, digest of the bytes served (None unless 200), number of bytes."""
    with http.get(f"{server.url}/v2/{repo}/blobs/{digest}", stream=True, timeout=TIMEOUT) as r:
        if r.status_code != 200:
            return r.status_code, None, 0
        h, n = hashlib.sha256(), 0
        for chunk in r.iter_content(MiB):
            h.update(chunk)
            n += len(chunk)
        return 200, "sha256:" + h.hexdigest(), n


def run_fsck(server: Server) -> tuple[int, str]:
    result = server.run_cli("fsck", "--data-dir", str(server.data_dir))
    return result.returncode, result.stdout + result.stderr


def session_size(response: requests.Response) -> int:
    start, _, end = response.headers["Range"].partition("-")
    assert start == "0", response.headers["Range"]
    return 0 if end == "0" else int(end) + 1


def resume(http: requests.Session, server: Server, up: Upload, failures: list[str]) -> None:
    """Finish an interrupted chunked upload the way a client would: ask where it stands, send the rest."""
    assert up.session is not None and up.data is not None
    r = http.get(up.session, timeout=TIMEOUT)
    if r.status_code == 404 and up.finishing:
        return  # the final PUT consumed the session before the kill; the blob check covers it
    if r.status_code != 204:
        failures.append(
            f"session {up.session} ({up.acked_bytes} bytes acknowledged, finishing={up.finishing}) "
            f"is gone after the restart: {r.status_code} {r.text[:200]!r}"
        )
        return
    size = session_size(r)
    if not up.acked_bytes <= size <= up.size:
        failures.append(f"session {up.session} holds {size} bytes; {up.acked_bytes} were acknowledged of {up.size}")
        return
    if size < up.size:
        r = http.patch(
            up.session,
            data=up.data[size:],
            headers={"Content-Range": f"{size}-{up.size - 1}", "Content-Type": "application/octet-stream"},
            timeout=TIMEOUT,
        )
        if r.status_code != 202:
            failures.append(f"resuming {up.session} at {size}: {r.status_code} {r.text[:200]!r}")
            return
    r = http.put(up.session, params={"digest": up.digest}, timeout=TIMEOUT)
    if r.status_code != 201:
        failures.append(f"completing resumed {up.session} ({size} of {up.size} bytes were kept): {r.status_code} {r.text[:200]!r}")
        return
    up.acked = up.resumed = True


def check_after_restart(server: Server, uploads: list[Upload], cycle: int) -> None:
    failures: list[str] = []
    # Leftovers of the crash in tmp/ are gone once the server is back.
    leftovers = sorted(p.name for p in (server.data_dir / "tmp").iterdir())
    if leftovers:
        failures.append(f"tmp/ still holds {leftovers} after the restart")

    with ThreadPoolExecutor(1) as pool:
        fsck: Future[tuple[int, str]] = pool.submit(run_fsck, server)  # runs while we read blobs
        http = requests.Session()
        for up in uploads:
            status, served, n = fetch_digest(http, server, up.repo, up.digest)
            if up.acked:
                if status != 200:
                    failures.append(f"acknowledged {up.mode} blob {up.digest} ({up.size} bytes, {up.repo}) answers {status}")
                elif served != up.digest or n != up.size:
                    failures.append(f"acknowledged blob {up.digest} served as {served}, {n} of {up.size} bytes")
            elif status == 200:
                if served != up.digest or n != up.size:
                    failures.append(f"unacknowledged blob {up.digest} is served with wrong content: {served}, {n} of {up.size} bytes")
            elif status != 404:
                failures.append(f"unacknowledged blob {up.digest}: unexpected {status}")
        code, output = fsck.result(timeout=60)
    if code != 0 or "clean" not in output:
        failures.append(f"fsck after kill #{cycle} exited {code}:\n{output}")

    # Interrupted chunked uploads can be resumed where the registry says they stand.
    for up in uploads:
        if up.mode == "chunked" and not up.acked and up.session is not None and up.data is not None:
            resume(http, server, up, failures)
            if up.resumed:
                status, served, n = fetch_digest(http, server, up.repo, up.digest)
                if (status, served, n) != (200, up.digest, up.size):
                    failures.append(f"resumed blob {up.digest} answers {status}, {served}, {n} of {up.size} bytes")
    # Whatever was neither acknowledged nor resumed is pushed again from scratch, as clients retry; this
    # also meets the crash leftovers (a blob file published just before the kill, without its metadata).
    for up in uploads:
        if not up.acked and up.data is not None:
            r = http.post(
                f"{server.url}/v2/{up.repo}/blobs/uploads/", params={"digest": up.digest}, data=up.data, timeout=TIMEOUT
            )
            if r.status_code != 201:
                failures.append(f"pushing {up.digest} again after the restart: {r.status_code} {r.text[:200]!r}")
                continue
            up.acked = up.retried = True
            status, served, n = fetch_digest(http, server, up.repo, up.digest)
            if (status, served, n) != (200, up.digest, up.size):
                failures.append(f"re-pushed blob {up.digest} answers {status}, {served}, {n} of {up.size} bytes")
    assert not failures, f"after kill #{cycle}:\n" + "\n".join(failures)


def test_kill_during_concurrent_uploads(start_server: Callable[[int], Server]) -> None:
    server = start_server(2)  # the kill takes the parent and every worker
    everything: list[Upload] = []
    in_flight_total = 0
    for cycle in range(1, CYCLES + 1):
        pusher = push_until_killed(server, f"{server.backend}-c{cycle}", seed=cycle)
        in_flight = [u for u in pusher.uploads if not u.acked]
        in_flight_total += len(in_flight)
        assert not pusher.unexpected, "HTTP errors while pushing (before the kill):\n" + "\n".join(pusher.unexpected)
        everything.extend(pusher.uploads)
        server.start()
        check_after_restart(server, everything, cycle)
        for up in everything:
            up.data = None  # resolved: acknowledged before the kill, resumed, or pushed again
    assert in_flight_total >= CYCLES, "the kills never caught an upload in flight; the test proved nothing"
    assert sum(u.acked and not (u.resumed or u.retried) for u in everything) >= CYCLES * KILL_AFTER_ACKS


# ---- manifests ---------------------------------------------------------------------------------------


def push_blob(http: requests.Session, server: Server, repo: str, data: bytes) -> dict[str, object]:
    digest = sha256(data)
    r = http.post(f"{server.url}/v2/{repo}/blobs/uploads/", params={"digest": digest}, data=data, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    return {"digest": digest, "size": len(data)}


def push_manifest(http: requests.Session, server: Server, repo: str, reference: str, body: bytes, media_type: str) -> str:
    r = http.put(
        f"{server.url}/v2/{repo}/manifests/{reference}", data=body, headers={"Content-Type": media_type}, timeout=TIMEOUT
    )
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == sha256(body)
    return sha256(body)


def test_kill_after_manifest_push(start_server: Callable[[int], Server]) -> None:
    server = start_server(1)  # one process restarts faster; the upload test covers several workers
    repo = f"crash/{server.backend}/manifests"
    http = requests.Session()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    cfg = {"mediaType": OCI_CONFIG, **push_blob(http, server, repo, config)}
    layers = [{"mediaType": LAYER, **push_blob(http, server, repo, os.urandom(MiB + i))} for i in range(2)]

    def manifest(note: str) -> bytes:
        # Deliberately unusual bytes: indentation, key order, non-ASCII, trailing whitespace. Served as-is or not at all.
        doc = {"layers": layers, "schemaVersion": 2, "config": cfg, "mediaType": OCI_MANIFEST, "annotations": {"note": note}}
        return (json.dumps(doc, indent=3, ensure_ascii=False) + "\n\n").encode()

    a, b = manifest("première"), manifest("seconde ✓")
    a_digest = push_manifest(http, server, repo, "stable", a, OCI_MANIFEST)
    assert push_manifest(http, server, repo, "v1", a, OCI_MANIFEST) == a_digest
    b_digest = push_manifest(http, server, repo, "v1", b, OCI_MANIFEST)  # the tag moves to b
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": a_digest, "size": len(a), "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": OCI_MANIFEST, "digest": b_digest, "size": len(b), "platform": {"architecture": "arm64", "os": "linux"}},
            ],
        },
        separators=(",", ":"),
    ).encode()
    index_digest = push_manifest(http, server, repo, "multi", index, OCI_INDEX)
    server.kill()  # right after the last acknowledgement

    server.start()
    expected = {"stable": a, "v1": b, "multi": index, a_digest: a, b_digest: b, index_digest: index}
    failures = []
    for reference, body in expected.items():
        r = http.get(f"{server.url}/v2/{repo}/manifests/{reference}", timeout=TIMEOUT)
        if r.status_code != 200:
            failures.append(f"{reference}: {r.status_code} {r.text[:200]!r}")
        elif r.content != body or r.headers.get("Docker-Content-Digest") != sha256(body):
            failures.append(f"{reference}: served {len(r.content)} bytes digest {sha256(r.content)}, expected {sha256(body)}")
    code, output = run_fsck(server)
    if code != 0 or "clean" not in output:
        failures.append(f"fsck exited {code}:\n{output}")
    if "3 manifests" not in output and "manifests checked" in output:
        failures.append(f"fsck did not see the 3 manifests: {output}")
    assert not failures, "\n".join(failures)
