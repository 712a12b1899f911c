"""store/uploads.py used directly: sessions on disk, appended by chunks, verified at the end."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from cargohold.oci.digest import Digest
from cargohold.oci.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    SizeInvalid,
    UploadRangeInvalid,
)
from cargohold.store.uploads import UploadStore

REPO = "team/app"


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


class Boom(RuntimeError):
    pass


async def failing(parts: Iterable[bytes], exc: BaseException | None = None) -> AsyncIterator[bytes]:
    """Yield ``parts`` and then fail, like a client connection dropped half-way through a chunk."""
    for part in parts:
        await asyncio.sleep(0)
        yield part
    raise exc if exc is not None else Boom("connection reset by peer")


def sha256(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


@pytest.fixture
def store(tmp_path: Path) -> UploadStore:
    return UploadStore(tmp_path)


def data_file(store: UploadStore, upload_id: str) -> Path:
    return store.root / upload_id / "data"


async def test_create_and_state(store: UploadStore) -> None:
    s = store.create(REPO)
    assert len(s.id) == 32 and set(s.id) <= set("0123456789abcdef")
    assert (s.repository, s.size) == (REPO, 0)
    assert store.state(REPO, s.id).size == 0
    assert store.active() == [s.id]
    assert store.create(REPO).id != s.id


async def test_append_chunks_and_finish(store: UploadStore) -> None:
    s = store.create(REPO)
    a, b, c = os.urandom(1000), os.urandom(70_000), b"tail"
    assert (await store.append(REPO, s.id, chunks(a))).size == 1000
    assert (await store.append(REPO, s.id, chunks(b[:10], b[10:]), start=1000, length=len(b))).size == 71_000
    assert (await store.append(REPO, s.id, chunks(c), start=71_000)).size == 71_004
    assert store.state(REPO, s.id).size == 71_004
    finished = await store.finish(REPO, s.id, sha256(a + b + c))
    assert finished.digest == sha256(a + b + c)
    assert finished.size == 71_004
    assert finished.path.read_bytes() == a + b + c


async def test_empty_chunk_and_empty_upload(store: UploadStore) -> None:
    s = store.create(REPO)
    assert (await store.append(REPO, s.id, chunks(), start=0, length=0)).size == 0
    finished = await store.finish(REPO, s.id, sha256(b""))
    assert finished.size == 0


async def test_finish_with_sha512(store: UploadStore) -> None:
    s = store.create(REPO)
    data = os.urandom(5000)
    await store.append(REPO, s.id, chunks(data))
    expected = Digest("sha512", hashlib.sha512(data).hexdigest())
    assert (await store.finish(REPO, s.id, expected)).digest == expected


@pytest.mark.parametrize("start", [1, 99, 101, 10_000])
async def test_out_of_order_start_is_range_invalid(store: UploadStore, start: int) -> None:
    s = store.create(REPO)
    await store.append(REPO, s.id, chunks(b"x" * 100))
    with pytest.raises(UploadRangeInvalid):
        await store.append(REPO, s.id, chunks(b"y" * 10), start=start)
    assert store.state(REPO, s.id).size == 100
    assert data_file(store, s.id).read_bytes() == b"x" * 100
    # The right offset still works, and the hash is still right.
    await store.append(REPO, s.id, chunks(b"z"), start=100)
    assert (await store.finish(REPO, s.id, sha256(b"x" * 100 + b"z"))).size == 101


async def test_range_invalid_is_a_blob_upload_invalid() -> None:
    assert issubclass(UploadRangeInvalid, BlobUploadInvalid)


@pytest.mark.parametrize("exc", [Boom("reset"), asyncio.CancelledError(), ConnectionResetError()])
async def test_failed_chunk_is_cut_back(store: UploadStore, exc: BaseException) -> None:
    s = store.create(REPO)
    first = os.urandom(3000)
    await store.append(REPO, s.id, chunks(first))
    with pytest.raises(type(exc)):
        await store.append(REPO, s.id, failing([os.urandom(500), os.urandom(700)], exc), start=3000)
    assert store.state(REPO, s.id).size == 3000
    assert data_file(store, s.id).read_bytes() == first
    # The client resumes at the acknowledged length; the final digest covers exactly the acknowledged bytes.
    second = os.urandom(1200)
    assert (await store.append(REPO, s.id, chunks(second), start=3000)).size == 4200
    finished = await store.finish(REPO, s.id, sha256(first + second))
    assert finished.path.read_bytes() == first + second


async def test_failed_first_chunk_leaves_an_empty_upload(store: UploadStore) -> None:
    s = store.create(REPO)
    with pytest.raises(Boom):
        await store.append(REPO, s.id, failing([b"partial"]))
    assert store.state(REPO, s.id).size == 0
    await store.append(REPO, s.id, chunks(b"whole"), start=0)
    assert (await store.finish(REPO, s.id, sha256(b"whole"))).size == 5


@pytest.mark.parametrize(("parts", "length"), [([b"abc", b"def"], 5), ([b"abc"], 4), ([b"abcdef"], 0)])
async def test_chunk_of_wrong_declared_length_is_cut_back(store: UploadStore, parts: list[bytes], length: int) -> None:
    s = store.create(REPO)
    await store.append(REPO, s.id, chunks(b"head"))
    with pytest.raises(SizeInvalid):
        await store.append(REPO, s.id, chunks(*parts), start=4, length=length)
    assert data_file(store, s.id).read_bytes() == b"head"
    assert (await store.finish(REPO, s.id, sha256(b"head"))).size == 4


async def test_finish_with_wrong_digest_drops_the_session(store: UploadStore) -> None:
    s = store.create(REPO)
    await store.append(REPO, s.id, chunks(b"some bytes"))
    with pytest.raises(DigestInvalid):
        await store.finish(REPO, s.id, sha256(b"other bytes"))
    assert not (store.root / s.id).exists()
    assert store.active() == []
    with pytest.raises(BlobUploadUnknown):
        store.state(REPO, s.id)
    with pytest.raises(BlobUploadUnknown):
        await store.append(REPO, s.id, chunks(b"more"))


async def test_finish_with_wrong_algorithm_digest_drops_the_session(store: UploadStore) -> None:
    s = store.create(REPO)
    await store.append(REPO, s.id, chunks(b"x"))
    with pytest.raises(DigestInvalid):
        await store.finish(REPO, s.id, Digest("sha512", hashlib.sha512(b"y").hexdigest()))
    assert not (store.root / s.id).exists()


async def test_chunks_spread_over_two_workers(tmp_path: Path) -> None:
    """Two stores on one directory stand for two worker processes; each sees only its own hasher cache."""
    w1, w2 = UploadStore(tmp_path), UploadStore(tmp_path)
    s = w1.create(REPO)
    parts = [os.urandom(1000 + i) for i in range(4)]
    offset = 0
    for i, part in enumerate(parts):
        worker = (w1, w2, w1, w2)[i]
        offset = (await worker.append(REPO, s.id, chunks(part), start=offset)).size
    assert (await w1.finish(REPO, s.id, sha256(b"".join(parts)))).size == offset


async def test_worker_with_stale_hasher_does_not_finish_wrongly(tmp_path: Path) -> None:
    w1, w2 = UploadStore(tmp_path), UploadStore(tmp_path)
    s = w1.create(REPO)
    await w1.append(REPO, s.id, chunks(b"a" * 10))  # w1 caches a hasher at offset 10
    await w2.append(REPO, s.id, chunks(b"b" * 10), start=10)
    assert (await w1.finish(REPO, s.id, sha256(b"a" * 10 + b"b" * 10))).size == 20


async def test_concurrent_chunks_of_one_upload_are_refused(store: UploadStore) -> None:
    s = store.create(REPO)
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"first"
        await release.wait()
        yield b"-rest"

    task = asyncio.create_task(store.append(REPO, s.id, slow()))
    await asyncio.sleep(0.05)
    with pytest.raises(BlobUploadInvalid):
        await store.append(REPO, s.id, chunks(b"intruder"))
    release.set()
    assert (await task).size == len(b"first-rest")
    assert data_file(store, s.id).read_bytes() == b"first-rest"


async def test_upload_id_of_another_repository_is_unknown(store: UploadStore) -> None:
    s = store.create(REPO)
    await store.append(REPO, s.id, chunks(b"mine"))
    for other in ("team/other", "team/app/sub", "team", "TEAM/APP"):
        with pytest.raises(BlobUploadUnknown):
            store.state(other, s.id)
        with pytest.raises(BlobUploadUnknown):
            await store.append(other, s.id, chunks(b"theirs"))
        with pytest.raises(BlobUploadUnknown):
            await store.finish(other, s.id, sha256(b"mine"))
        with pytest.raises(BlobUploadUnknown):
            store.cancel(other, s.id)
    # None of that touched the session.
    assert data_file(store, s.id).read_bytes() == b"mine"
    assert (await store.finish(REPO, s.id, sha256(b"mine"))).size == 4


@pytest.mark.parametrize(
    "upload_id",
    [
        "",
        "0" * 31,
        "0" * 33,
        "G" * 32,
        "ABCDEF0123456789ABCDEF0123456789",
        "../../../../../../../../etc/pas",
        "../" + "0" * 29,
        "0" * 30 + "/.",
        "0" * 31 + "\x00",
        "0" * 31 + "\n",
        "12345678-1234-1234-1234-123456789abc",
    ],
)
async def test_malformed_upload_id_is_unknown(store: UploadStore, upload_id: str) -> None:
    with pytest.raises(BlobUploadUnknown):
        store.state(REPO, upload_id)
    with pytest.raises(BlobUploadUnknown):
        await store.append(REPO, upload_id, chunks(b"x"))
    with pytest.raises(BlobUploadUnknown):
        await store.finish(REPO, upload_id, sha256(b"x"))
    with pytest.raises(BlobUploadUnknown):
        store.cancel(REPO, upload_id)


async def test_well_formed_but_never_issued_id_is_unknown(store: UploadStore) -> None:
    with pytest.raises(BlobUploadUnknown):
        store.state(REPO, "0123456789abcdef" * 2)


async def test_cancel(store: UploadStore) -> None:
    s = store.create(REPO)
    await store.append(REPO, s.id, chunks(b"x"))
    store.cancel(REPO, s.id)
    assert store.active() == []
    with pytest.raises(BlobUploadUnknown):
        store.state(REPO, s.id)


def age(store: UploadStore, upload_id: str, seconds: float) -> None:
    old = time.time() - seconds
    for entry in (store.root / upload_id, store.root / upload_id / "data", store.root / upload_id / "repository"):
        os.utime(entry, (old, old))


async def test_purge_removes_only_old_sessions(store: UploadStore) -> None:
    old, fresh, active = store.create(REPO), store.create(REPO), store.create("other/repo")
    await store.append(REPO, old.id, chunks(b"stale"))
    await store.append("other/repo", active.id, chunks(b"busy"))
    age(store, old.id, 3600)
    age(store, active.id, 3600)
    # A chunk arrives: activity is the data file's mtime, so this session is not abandoned.
    await store.append("other/repo", active.id, chunks(b" still"), start=4)
    assert store.purge(max_age_seconds=600) == 1
    assert sorted(store.active()) == sorted([fresh.id, active.id])
    with pytest.raises(BlobUploadUnknown):
        store.state(REPO, old.id)
    assert store.state(REPO, fresh.id).size == 0
    assert (await store.finish("other/repo", active.id, sha256(b"busy still"))).size == 10


async def test_purge_with_explicit_now(store: UploadStore) -> None:
    s = store.create(REPO)
    assert store.purge(max_age_seconds=60, now=time.time() + 30) == 0
    assert store.active() == [s.id]
    assert store.purge(max_age_seconds=60, now=time.time() + 120) == 1
    assert store.active() == []


async def test_purge_removes_old_half_created_leftovers(store: UploadStore) -> None:
    """A crash between mkdir and writing the files leaves a directory without data; it is purged once old."""
    s = store.create(REPO)
    (store.root / s.id / "data").unlink()
    (store.root / s.id / "repository").unlink()
    stray = store.root / "stray-file"
    stray.write_text("x")
    young = store.create(REPO)
    old = time.time() - 7200
    os.utime(store.root / s.id, (old, old))
    os.utime(stray, (old, old))
    assert store.purge(max_age_seconds=600) == 2
    assert store.active() == [young.id]


async def test_purge_dead_drops_only_sessions_no_client_can_resume(store: UploadStore) -> None:
    resumable = store.create(REPO)
    await store.append(REPO, resumable.id, chunks(b"half"))
    store.create(REPO, internal=True)  # a single-request push interrupted by a crash
    published = store.create(REPO)
    (store.root / published.id / "data").unlink()  # renamed into blobs/ just before the crash
    assert store.purge_dead() == 2
    assert store.active() == [resumable.id]
    assert store.state(REPO, resumable.id).size == 4
