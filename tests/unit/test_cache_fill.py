"""Pull-through blob fill: one upstream fetch, streamed to every requester, verified before the last bytes.

Real files in tmp_path; the upstream is a fake ``fetch`` serving bytes from
memory with injectable faults. The cross-process tests run a second Python
process that fills from a slow fetch of its own.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cargohold.cache.fill import BlobFills, FillFailed, FillMismatch
from cargohold.oci.digest import Digest
from cargohold.store.blobs import BlobStore, hash_file

SRC = Path(__file__).resolve().parents[2] / "src"
KiB = 1024
WITHHOLD = 64 * KiB


def blob(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


@dataclass
class Source:
    size: int | None
    start: int
    chunks: AsyncIterator[bytes]


class UpstreamGone(Exception):
    """Stands for the upstream client's not-found / rate-limited errors."""


@dataclass
class FakeUpstream:
    """Serves ``data`` honouring ``fetch(offset)`` as a Range request, with faults per call (0-based)."""

    data: bytes
    chunk: int = 16 * KiB
    delay: float = 0.0
    cut: dict[int, int] = field(default_factory=dict)  # call → bytes sent before the body ends early
    reset: dict[int, int] = field(default_factory=dict)  # call → bytes sent before the connection breaks
    ignore_range: bool = False
    announce_size: bool = True
    start_error: BaseException | None = None
    pause_at: int | None = None  # offset at which the body waits for `gate`
    hold_start: asyncio.Event | None = None  # the answer (or start_error) waits for this
    calls: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.gate = asyncio.Event()
        self.paused = asyncio.Event()

    def __call__(self, offset: int):
        return self._open(offset)

    @asynccontextmanager
    async def _open(self, offset: int) -> AsyncIterator[Source]:
        call = len(self.calls)
        self.calls.append(offset)
        await asyncio.sleep(0)
        if self.hold_start is not None:
            await self.hold_start.wait()
        if self.start_error is not None:
            raise self.start_error
        start = 0 if self.ignore_range else offset
        yield Source(len(self.data) if self.announce_size else None, start, self._body(call, start))

    async def _body(self, call: int, pos: int) -> AsyncIterator[bytes]:
        sent = 0
        budget = self.cut.get(call, self.reset.get(call))
        while pos < len(self.data):
            if self.pause_at is not None and pos >= self.pause_at and not self.gate.is_set():
                self.paused.set()
                await self.gate.wait()
            n = min(self.chunk, len(self.data) - pos, self.pause_at - pos if self.pause_at and pos < self.pause_at else 1 << 62)
            if budget is not None:
                n = min(n, budget - sent)
                if n <= 0:
                    if call in self.reset:
                        raise ConnectionResetError("upstream connection reset")
                    return
            yield self.data[pos : pos + n]
            pos += n
            sent += n
            await asyncio.sleep(self.delay)


@dataclass
class Requester:
    received: bytearray = field(default_factory=bytearray)
    error: BaseException | None = None


async def consume(stream, requester: Requester) -> Requester:
    try:
        async for chunk in stream:
            requester.received += chunk
    except FillFailed as exc:
        requester.error = exc
    return requester


async def eventually(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)
    assert predicate(), what


def fills_for(tmp_path: Path, **kwargs) -> tuple[BlobFills, BlobStore]:
    store = BlobStore(tmp_path / "data")
    kwargs.setdefault("poll_interval", 0.01)
    kwargs.setdefault("withhold", WITHHOLD)
    return BlobFills(tmp_path / "data" / "fills", store, **kwargs), store


def leftovers(tmp_path: Path) -> list[str]:
    root = tmp_path / "data" / "fills"
    return sorted(p.name for p in root.rglob("*") if p.is_file())


async def assert_published(store: BlobStore, digest: Digest, size: int) -> None:
    """Requesters may finish before the blob is published (the tail goes out once verified, before
    fsync and rename), so allow the publishing a moment."""
    async with asyncio.timeout(10):
        while (stored := store.stat(digest)) is None:
            await asyncio.sleep(0.01)
    assert stored.size == size
    assert hash_file(stored.path, digest.algorithm) == (str(digest), size)


@pytest.mark.parametrize("size", [1536 * KiB, 100, 0])
async def test_twenty_requesters_one_fetch(tmp_path: Path, size: int) -> None:
    data = blob(size)
    digest = Digest.of(data)
    fills, store = fills_for(tmp_path)
    upstream = FakeUpstream(data, delay=0.001)
    async with asyncio.timeout(15):

        async def one() -> Requester:
            stream = await fills.open(digest, upstream)
            assert stream.size == len(data)
            return await consume(stream, Requester())

        results = await asyncio.gather(*(one() for _ in range(20)))
    assert upstream.calls == [0]
    assert all(r.error is None and bytes(r.received) == data for r in results)
    await assert_published(store, digest, len(data))
    assert leftovers(tmp_path) == []
    await eventually(lambda: fills.active() == 0)


async def test_published_blob_is_read_from_the_store(tmp_path: Path) -> None:
    data = blob(300 * KiB)
    digest = Digest.of(data)
    fills, store = fills_for(tmp_path)
    await store.write(digest, data)
    upstream = FakeUpstream(data)
    async with asyncio.timeout(5):
        stream = await fills.open(digest, upstream)
        assert stream.size == len(data)
        got = await consume(stream, Requester())
    assert bytes(got.received) == data and upstream.calls == []


@pytest.mark.parametrize("announce_size", [True, False])
async def test_requesters_stream_while_fetching_but_not_the_last_bytes(tmp_path: Path, announce_size: bool) -> None:
    data = blob(1024 * KiB)
    digest = Digest.of(data)
    fills, store = fills_for(tmp_path)
    # Known size: pause just before the end, so only the withholding holds bytes back.
    # Unknown size: pause halfway; readers get what is there less the withheld tail.
    pause = len(data) - 10 * KiB if announce_size else len(data) // 2
    upstream = FakeUpstream(data, pause_at=pause, announce_size=announce_size)
    expected_early = len(data) - WITHHOLD if announce_size else pause - WITHHOLD
    async with asyncio.timeout(15):
        streams = [await fills.open(digest, upstream) for _ in range(3)]
        assert all(s.size == (len(data) if announce_size else None) for s in streams)
        requesters = [Requester() for _ in streams]
        tasks = [asyncio.create_task(consume(s, r)) for s, r in zip(streams, requesters)]
        await upstream.paused.wait()
        await eventually(lambda: all(len(r.received) >= expected_early for r in requesters))
        await asyncio.sleep(0.1)  # several poll intervals: nothing more may arrive while the fetch is paused
        assert [len(r.received) for r in requesters] == [expected_early] * 3
        assert store.stat(digest) is None and not any(t.done() for t in tasks)
        upstream.gate.set()
        await asyncio.gather(*tasks)
    assert all(r.error is None and bytes(r.received) == data for r in requesters)
    assert upstream.calls == [0]
    await assert_published(store, digest, len(data))


async def test_digest_mismatch_aborts_every_requester(tmp_path: Path) -> None:
    data = blob(700 * KiB)
    digest = Digest.of(data)
    bad = data[:-1] + bytes([data[-1] ^ 1])  # same size, last byte wrong
    fills, store = fills_for(tmp_path)
    upstream = FakeUpstream(bad, delay=0.001)
    async with asyncio.timeout(10):
        streams = [await fills.open(digest, upstream, len(data)) for _ in range(5)]
        requesters = await asyncio.gather(*(consume(s, Requester()) for s in streams))
    for r in requesters:
        assert isinstance(r.error, FillMismatch)
        assert len(r.received) <= len(data) - WITHHOLD
    assert upstream.calls == [0]
    assert store.stat(digest) is None
    assert leftovers(tmp_path) == []
    await eventually(lambda: fills.active() == 0)

    good = FakeUpstream(data)
    async with asyncio.timeout(10):
        got = await consume(await fills.open(digest, good, len(data)), Requester())
    assert got.error is None and bytes(got.received) == data and good.calls == [0]
    await assert_published(store, digest, len(data))


async def test_wrong_size_is_a_mismatch(tmp_path: Path) -> None:
    data = blob(200 * KiB)
    digest = Digest.of(data)
    fills, store = fills_for(tmp_path)
    upstream = FakeUpstream(data)
    async with asyncio.timeout(5):
        with pytest.raises(FillMismatch):
            await fills.open(digest, upstream, expected_size=len(data) + 1)
    assert store.stat(digest) is None and leftovers(tmp_path) == []


async def test_truncated_body_resumes_with_range(tmp_path: Path) -> None:
    data = blob(1024 * KiB)
    digest = Digest.of(data)
    fills, store = fills_for(tmp_path)
    # first response ends cleanly too early, the second breaks the connection, the third completes
    upstream = FakeUpstream(data, cut={0: 300_000}, reset={1: 200_000})
    async with asyncio.timeout(10):
        streams = [await fills.open(digest, upstream) for _ in range(3)]
        requesters = await asyncio.gather(*(consume(s, Requester()) for s in streams))
    assert upstream.calls == [0, 300_000, 500_000]
    assert all(r.error is None and bytes(r.received) == data for r in requesters)
    await assert_published(store, digest, len(data))
    assert leftovers(tmp_path) == []


async def test_truncated_on_every_attempt_gives_up(tmp_path: Path) -> None:
    data = blob(1024 * KiB)
    digest = Digest.of(data)
    fills, store = fills_for(tmp_path, attempts=3)
    upstream = FakeUpstream(data, cut={0: 100_000, 1: 100_000, 2: 100_000, 3: 100_000})
    async with asyncio.timeout(10):
        got = await consume(await fills.open(digest, upstream), Requester())
    assert isinstance(got.error, FillFailed) and not isinstance(got.error, FillMismatch)
    assert len(got.received) < len(data)
    assert upstream.calls == [0, 100_000, 200_000]
    assert store.stat(digest) is None and leftovers(tmp_path) == []


async def test_upstream_ignoring_range_on_resume(tmp_path: Path) -> None:
    data = blob(900 * KiB)
    digest = Digest.of(data)
    fills, store = fills_for(tmp_path)
    upstream = FakeUpstream(data, cut={0: 333_333}, ignore_range=True)
    async with asyncio.timeout(10):
        streams = [await fills.open(digest, upstream) for _ in range(2)]
        requesters = await asyncio.gather(*(consume(s, Requester()) for s in streams))
    assert upstream.calls == [0, 333_333]
    assert all(r.error is None and bytes(r.received) == data for r in requesters)
    await assert_published(store, digest, len(data))


async def test_fetch_error_at_start_propagates_from_open(tmp_path: Path) -> None:
    data = blob(100 * KiB)
    digest = Digest.of(data)
    fills, store = fills_for(tmp_path)
    gone = UpstreamGone("blob unknown upstream")
    upstream = FakeUpstream(data, start_error=gone)
    async with asyncio.timeout(5):
        results = await asyncio.gather(*(fills.open(digest, upstream) for _ in range(5)), return_exceptions=True)
    assert all(r is gone for r in results)
    assert upstream.calls == [0]
    assert store.stat(digest) is None and leftovers(tmp_path) == []
    await eventually(lambda: fills.active() == 0)

    good = FakeUpstream(data)
    async with asyncio.timeout(5):
        got = await consume(await fills.open(digest, good), Requester())
    assert bytes(got.received) == data and good.calls == [0]


async def test_requester_leaving_does_not_stop_the_fill(tmp_path: Path) -> None:
    data = blob(1024 * KiB)
    digest = Digest.of(data)
    fills, store = fills_for(tmp_path)
    upstream = FakeUpstream(data, delay=0.002)
    async with asyncio.timeout(10):
        stream = await fills.open(digest, upstream)
        async for _chunk in stream:
            break
        await stream.aclose()
        with pytest.raises(FillFailed):  # a closed stream never looks like a complete (empty) body
            async for _chunk in stream:
                pass
        assert store.stat(digest) is None and fills.active() == 1
        await eventually(lambda: store.stat(digest) is not None, what="the fill completes with nobody listening")
    assert upstream.calls == [0]
    await assert_published(store, digest, len(data))
    await eventually(lambda: fills.active() == 0)


async def test_cancelled_requester_does_not_stop_the_fill(tmp_path: Path) -> None:
    """aiohttp cancels the handler when the client disconnects: same outcome as aclose()."""
    data = blob(600 * KiB, seed=2)
    digest = Digest.of(data)
    fills, store = fills_for(tmp_path)
    upstream = FakeUpstream(data, pause_at=300 * KiB)
    async with asyncio.timeout(10):
        requesters = [Requester(), Requester()]
        tasks = [asyncio.create_task(consume(await fills.open(digest, upstream), r)) for r in requesters]
        await upstream.paused.wait()
        await eventually(lambda: len(requesters[0].received) == 300 * KiB)
        tasks[0].cancel()
        upstream.gate.set()
        await tasks[1]
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
    assert bytes(requesters[1].received) == data and upstream.calls == [0]
    await assert_published(store, digest, len(data))


async def test_leftover_partial_file_is_resumed_not_served(tmp_path: Path) -> None:
    data = blob(800 * KiB)
    digest = Digest.of(data)
    fills, store = fills_for(tmp_path)
    part_dir = tmp_path / "data" / "fills" / "sha256"
    part_dir.mkdir(parents=True)
    (part_dir / f"{digest.hex}.part").write_bytes(data[:500_000])
    (part_dir / f"{digest.hex}.size").write_text(str(len(data)))
    upstream = FakeUpstream(data, pause_at=600_000)
    async with asyncio.timeout(10):
        stream = await fills.open(digest, upstream)
        assert stream.size == len(data)
        requester = Requester()
        task = asyncio.create_task(consume(stream, requester))
        await upstream.paused.wait()
        await eventually(lambda: len(requester.received) >= 600_000)
        await asyncio.sleep(0.05)
        assert len(requester.received) == 600_000 and store.stat(digest) is None
        upstream.gate.set()
        await task
    assert upstream.calls == [500_000]
    assert bytes(requester.received) == data
    await assert_published(store, digest, len(data))
    assert leftovers(tmp_path) == []


async def test_complete_leftover_is_verified_without_a_request(tmp_path: Path) -> None:
    data = blob(200 * KiB, seed=3)
    digest = Digest.of(data, "sha512")
    fills, store = fills_for(tmp_path)
    part_dir = tmp_path / "data" / "fills" / "sha512"
    part_dir.mkdir(parents=True)
    (part_dir / f"{digest.hex}.part").write_bytes(data)
    upstream = FakeUpstream(data)
    async with asyncio.timeout(5):
        got = await consume(await fills.open(digest, upstream, len(data)), Requester())
    assert bytes(got.received) == data and upstream.calls == []
    await assert_published(store, digest, len(data))


# -- two BlobFills over one directory: flock treats them like two worker processes ---------------


def second_worker(tmp_path: Path) -> BlobFills:
    return BlobFills(tmp_path / "data" / "fills", BlobStore(tmp_path / "data"), poll_interval=0.01, withhold=WITHHOLD)


async def test_two_workers_share_one_fetch(tmp_path: Path) -> None:
    data = blob(1024 * KiB, seed=4)
    digest = Digest.of(data)
    (a, store), b = fills_for(tmp_path), second_worker(tmp_path)
    up_a, up_b = FakeUpstream(data, delay=0.001), FakeUpstream(data, delay=0.001)

    async def one(fills: BlobFills, upstream: FakeUpstream) -> Requester:
        return await consume(await fills.open(digest, upstream), Requester())

    async with asyncio.timeout(15):
        results = await asyncio.gather(*(one(a, up_a) for _ in range(10)), *(one(b, up_b) for _ in range(10)))
    assert up_a.calls + up_b.calls == [0]
    assert all(r.error is None and bytes(r.received) == data for r in results)
    await assert_published(store, digest, len(data))
    assert leftovers(tmp_path) == []


async def test_other_workers_see_the_abort(tmp_path: Path) -> None:
    data = blob(700 * KiB, seed=5)
    digest = Digest.of(data)
    bad = bytes(1) + data[1:]  # first byte wrong
    (a, store), b = fills_for(tmp_path), second_worker(tmp_path)
    up_a, up_b = FakeUpstream(bad, pause_at=len(data) - 1000), FakeUpstream(data)
    async with asyncio.timeout(10):
        filler = asyncio.create_task(consume(await a.open(digest, up_a), Requester()))
        await up_a.paused.wait()
        followers = [await b.open(digest, up_b) for _ in range(3)]
        tasks = [asyncio.create_task(consume(s, Requester())) for s in followers]
        await asyncio.sleep(0.05)
        up_a.gate.set()
        mine = await filler
        theirs = await asyncio.gather(*tasks)
    assert isinstance(mine.error, FillMismatch)
    for r in theirs:
        assert isinstance(r.error, FillFailed) and len(r.received) <= len(data) - WITHHOLD
    assert up_a.calls == [0] and up_b.calls == []
    assert store.stat(digest) is None and leftovers(tmp_path) == []


async def test_upstream_error_reaches_the_other_worker_through_its_own_request(tmp_path: Path) -> None:
    data = blob(100 * KiB, seed=6)
    digest = Digest.of(data)
    (a, store), b = fills_for(tmp_path), second_worker(tmp_path)
    up_a = FakeUpstream(data, start_error=UpstreamGone("a"), hold_start=asyncio.Event())
    up_b = FakeUpstream(data, start_error=UpstreamGone("b"))
    async with asyncio.timeout(10):
        first = asyncio.create_task(a.open(digest, up_a))
        await eventually(lambda: up_a.calls == [0])
        second = asyncio.create_task(b.open(digest, up_b))
        await asyncio.sleep(0.05)
        assert not second.done()  # following: the filler has no answer yet
        up_a.hold_start.set()
        with pytest.raises(UpstreamGone, match="a"):
            await first
        with pytest.raises(UpstreamGone, match="b"):
            await second
    assert up_a.calls == [0] and up_b.calls == [0]
    assert store.stat(digest) is None and leftovers(tmp_path) == []


async def test_stopped_worker_is_taken_over_with_range(tmp_path: Path) -> None:
    data = blob(1024 * KiB, seed=9)
    digest = Digest.of(data)
    half = len(data) // 2
    (a, store), b = fills_for(tmp_path), second_worker(tmp_path)
    up_a, up_b = FakeUpstream(data, pause_at=half), FakeUpstream(data)
    async with asyncio.timeout(10):
        await a.open(digest, up_a)
        await up_a.paused.wait()
        follower = await b.open(digest, up_b)
        task = asyncio.create_task(consume(follower, Requester()))
        await asyncio.sleep(0.05)
        assert up_b.calls == []
        await a.aclose()  # worker shutdown: the partial file stays, the lock goes
        got = await task
    assert up_a.calls == [0] and up_b.calls == [half]
    assert got.error is None and bytes(got.received) == data
    await assert_published(store, digest, len(data))


# -- across worker processes -------------------------------------------------------------------

FILLER = textwrap.dedent(
    """
    import asyncio, os, sys
    from contextlib import asynccontextmanager
    from dataclasses import dataclass
    from pathlib import Path

    from cargohold.cache.fill import BlobFills
    from cargohold.oci.digest import Digest
    from cargohold.store.blobs import BlobStore

    data_dir, digest, source, gate, mode = sys.argv[1:6]
    data = Path(source).read_bytes()
    half = len(data) // 2

    @dataclass
    class Source:
        size: int
        start: int
        chunks: object

    async def body(pos):
        while pos < len(data):
            if pos >= half:
                if mode == "hang":
                    await asyncio.sleep(3600)
                while not os.path.exists(gate):
                    await asyncio.sleep(0.005)
            n = min(64 * 1024, len(data) - pos)
            yield data[pos:pos + n]
            pos += n
            await asyncio.sleep(0.002)

    @asynccontextmanager
    async def fetch(offset):
        yield Source(len(data), offset, body(offset))

    async def main():
        fills = BlobFills(Path(data_dir) / "fills", BlobStore(Path(data_dir)), poll_interval=0.01)
        stream = await fills.open(Digest.parse(digest), fetch)
        print("filling", flush=True)
        async for _ in stream:
            pass
        print("done", flush=True)

    asyncio.run(main())
    """
)


def start_filler(tmp_path: Path, data: bytes, digest: Digest, mode: str) -> tuple[subprocess.Popen, Path]:
    source = tmp_path / "upstream.bin"
    source.write_bytes(data)
    script = tmp_path / "filler.py"
    script.write_text(FILLER)
    gate = tmp_path / "gate"
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "data"), str(digest), str(source), str(gate), mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return proc, gate


async def wait_for_part(tmp_path: Path, digest: Digest, size: int, proc: subprocess.Popen) -> Path:
    part = tmp_path / "data" / "fills" / digest.algorithm / f"{digest.hex}.part"

    def grown() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "filler exited"
        return part.exists() and part.stat().st_size >= size

    await eventually(grown, timeout=10, what="the other process fills half")
    return part


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=5)  # reaps it and closes the pipes


async def test_follower_streams_another_process_fill(tmp_path: Path) -> None:
    data = blob(1024 * KiB, seed=7)
    digest = Digest.of(data)
    half = len(data) // 2
    proc, gate = start_filler(tmp_path, data, digest, "gate")
    try:
        fills, store = fills_for(tmp_path)
        await wait_for_part(tmp_path, digest, half, proc)
        upstream = FakeUpstream(data)
        async with asyncio.timeout(15):
            stream = await fills.open(digest, upstream)
            assert stream.size == len(data)
            requester = Requester()
            task = asyncio.create_task(consume(stream, requester))
            await eventually(lambda: len(requester.received) >= half, what="follower streams the first half")
            assert proc.poll() is None and store.stat(digest) is None
            gate.touch()
            await task
            out, err = await asyncio.to_thread(proc.communicate, timeout=10)
        assert proc.returncode == 0, err.decode()
        assert b"done" in out
        assert requester.error is None and bytes(requester.received) == data
        assert upstream.calls == []
        await assert_published(store, digest, len(data))
        assert leftovers(tmp_path) == []
    finally:
        stop(proc)


async def test_follower_takes_over_when_the_filler_is_killed(tmp_path: Path) -> None:
    data = blob(1024 * KiB, seed=8)
    digest = Digest.of(data)
    half = len(data) // 2
    proc, _gate = start_filler(tmp_path, data, digest, "hang")
    try:
        fills, store = fills_for(tmp_path)
        await wait_for_part(tmp_path, digest, half, proc)
        upstream = FakeUpstream(data)
        async with asyncio.timeout(15):
            streams = [await fills.open(digest, upstream) for _ in range(3)]
            requesters = [Requester() for _ in streams]
            tasks = [asyncio.create_task(consume(s, r)) for s, r in zip(streams, requesters)]
            await eventually(lambda: all(len(r.received) >= half for r in requesters))
            assert upstream.calls == [] and fills.downloading() == 0
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 5)
            await asyncio.gather(*tasks)
        assert upstream.calls == [half]  # one Range request from where the dead filler stopped
        assert all(r.error is None and bytes(r.received) == data for r in requesters)
        await assert_published(store, digest, len(data))
        assert leftovers(tmp_path) == []
    finally:
        stop(proc)


def test_purge_removes_only_old_partial_files_nobody_holds(tmp_path: Path) -> None:
    import fcntl
    import time

    fills, _ = fills_for(tmp_path)
    directory = fills.root / "sha256"
    directory.mkdir(parents=True, exist_ok=True)
    old, held, young = (directory / f"{c * 64}.part" for c in "abc")
    for part in (old, held, young):
        part.write_bytes(b"partial")
        part.with_suffix(".size").write_text("100")
    now = time.time()
    for part in (old, held):
        os.utime(part, (now - 3600, now - 3600))
    holder = os.open(held, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a worker still filling it (another open file description)
        assert fills.purge(600, now) == 1
    finally:
        os.close(holder)
    assert not old.exists() and not old.with_suffix(".size").exists()
    assert held.exists() and young.exists() and young.with_suffix(".size").exists()
    assert fills.purge(600, now) == 1  # released now: the old one goes too
    assert not held.exists() and young.exists()
