"""Pull-through blob fill: one upstream download per blob, streamed to every requester in every worker.

Within one process a dict ``digest → _Fill`` lets concurrent requesters share
one task; the task belongs to no requester, so it runs to completion when they
all go away. Across worker processes the partial file is the meeting point:

* ``<root>/<algorithm>/<hex>.part`` — the bytes received so far. Append-only:
  a byte, once written at an offset, never changes, so whatever a requester
  has read is a prefix of what gets verified.
* ``flock(LOCK_EX)`` on it marks the filler. Others fail ``LOCK_NB`` and
  *follow*: they poll the file's size every ``poll_interval`` and try the lock
  again; if the filler died the kernel has released it and the follower takes
  over, re-hashes what is there and resumes with a Range request.
* ``<hex>.size`` (written atomically by the filler once the upstream has
  answered) tells followers the total size ("" when the upstream did not say).

How a reader (holding an fd on the partial file's inode) learns the outcome,
without any shared memory: the filler publishes by *renaming* the verified
file into the blob store, so the inode moves from the partial path to the blob
path; on a mismatch or give-up it unlinks the partial path. Only the lock
holder ever renames or unlinks, and only its own inode. So:

* partial path is still my inode  → running
* blob path is my inode           → verified and published
* neither                         → aborted (``FillFailed``)

Until then readers withhold the last ``withhold`` bytes, so no client ever
receives a complete body that did not verify; the HTTP layer aborts the
response when the stream raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol, TypeVar

from ..oci.digest import Digest, Hasher, new_hasher
from ..registry.ingest import Verified
from ..store.blobs import BlobStore

log = logging.getLogger(__name__)
T = TypeVar("T")

READ_CHUNK = 1 << 20
# Writes and reads at least this large go to a thread (hashlib releases the GIL).
THREAD_MIN = 256 << 10
# A follower whose filler keeps vanishing before answering gives up after this many rounds.
MAX_ROUNDS = 8


class BlobSource(Protocol):
    """What ``fetch()`` yields; ``upstream`` client's blob response has these attributes."""

    size: int | None  # total size of the blob, if the upstream said so
    start: int  # offset of the first byte of ``chunks`` (0 when the upstream ignored the Range)
    chunks: AsyncIterator[bytes]


Fetch = Callable[[int], AbstractAsyncContextManager[BlobSource]]


class FillFailed(Exception):
    """The fill was aborted; ``cause`` is the original exception, if any."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause

    def again(self) -> "FillFailed":
        """A fresh instance for another requester (one exception object raised in many tasks tangles tracebacks)."""
        return type(self)(str(self), self.cause)


class FillMismatch(FillFailed):
    """The bytes did not hash to the digest, or the size was wrong."""


class _StartFailed(Exception):
    """``fetch()`` failed before anything was streamed: hand the original exception to ``open()``."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


RUNNING, PUBLISHED, REPLACED, ABORTED = "running", "published", "replaced", "aborted"


async def _in_thread(fn: Callable[..., T], *args: object) -> T:
    return await _uninterrupted(asyncio.to_thread(fn, *args))


async def _uninterrupted(aw: Awaitable[T]) -> T:
    """Await ``aw``; when cancelled, let it finish first, then raise ``CancelledError``.

    Thread work uses a file descriptor that the caller closes (releasing the
    lock) as soon as the cancellation reaches it; it must not outlive the fd,
    and a rename into the blob store must not run on after the lock is gone.
    """
    task = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task})
        raise


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_ino == b.st_ino and a.st_dev == b.st_dev


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _where(mine: os.stat_result, part: Path, blob: Path) -> str:
    """Where the inode an fd refers to stands now (see the module docstring). Part path first: a rename is atomic."""
    st = _stat(part)
    if st is not None and _same(st, mine):
        return RUNNING
    st = _stat(blob)
    if st is None:
        return ABORTED
    return PUBLISHED if _same(st, mine) else REPLACED


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:  # pragma: no cover - EWOULDBLOCK is BlockingIOError on Linux
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _read_size(sidecar: Path) -> tuple[bool, int | None]:
    """(present, size): the filler has had an answer from the upstream when the sidecar exists."""
    try:
        text = sidecar.read_text().strip()
    except FileNotFoundError:
        return False, None
    try:
        return True, int(text) if text else None
    except ValueError:
        return True, None


def _write_size(sidecar: Path, size: int | None) -> None:
    tmp = sidecar.with_name(f"{sidecar.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text("" if size is None else str(size))
    os.replace(tmp, sidecar)


def _write_and_hash(fd: int, hasher: Hasher, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
    hasher.update(data)


def _rehash(fd: int, hasher: Hasher, size: int) -> int:
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(READ_CHUNK, size - offset), offset)
        if not chunk:
            break
        hasher.update(chunk)
        offset += len(chunk)
    return offset


def _same_prefix(fd: int, other: Path, length: int) -> bool:
    """Whether the first ``length`` bytes behind ``fd`` equal those of ``other`` (constant memory)."""
    try:
        ofd = os.open(other, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        offset = 0
        while offset < length:
            n = min(READ_CHUNK, length - offset)
            a = os.pread(fd, n, offset)
            if not a or a != os.pread(ofd, len(a), offset):
                return False
            offset += len(a)
        return True
    finally:
        os.close(ofd)


class BlobStream:
    """One requester's view of a blob: async-iterable bytes, in order.

    Raises ``FillFailed`` from the iteration when the fill aborts; the caller
    then aborts its HTTP response so the client sees a truncated body.
    """

    def __init__(
        self,
        fd: int,
        size: int | None,
        *,
        fill: "_Fill | None" = None,
        part: Path | None = None,
        blob: Path | None = None,
        withhold: int = 0,
        poll_interval: float = 0.01,
        origin: "_Fill | None" = None,
    ) -> None:
        self.size = size
        # The fill these bytes come from (None: a blob that was in the store already, which proves nothing
        # about who may read it; see ``BlobFills.proof``).
        self.origin = origin if origin is not None else fill
        self._fd: int | None = fd
        self._fill = fill
        self._part = part
        self._blob = blob
        self._withhold = withhold
        self._poll = poll_interval
        self._published = part is None  # no partial file: a published blob, just read it
        self._gen: AsyncIterator[bytes] | None = None
        self._stopped = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._stopped:
            return self._iterate()  # raises: a closed stream must never look like a complete (empty) body
        if self._gen is None:
            self._gen = self._iterate()
        return self._gen

    async def aclose(self) -> None:
        """The requester went away; the fill goes on for the others and to completion."""
        self._stopped = True
        gen = self._gen
        if gen is not None and getattr(gen, "ag_running", False):
            return  # another task is inside the iteration: it stops (and closes the fd) at its next step
        if gen is not None:
            await gen.aclose()  # type: ignore[attr-defined]
        self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close()

    async def _read(self, n: int, offset: int) -> bytes:
        fd = self._fd
        assert fd is not None
        if n >= THREAD_MIN:
            return await _in_thread(os.pread, fd, n, offset)
        return os.pread(fd, n, offset)

    def spans(self) -> AsyncIterator[tuple[int, int]]:
        """``(offset, length)`` runs of the file behind ``fileno()`` that may be sent now, in order.

        For ``sendfile``: the bytes go from the page cache to the socket without passing through
        Python. Iterate either this or the stream itself, not both. Raises ``FillFailed`` as the
        byte iteration does; ``fileno()`` may change between runs (a blob published from another
        file), so read it for each run.
        """
        if self._stopped:
            return self._spans()  # raises: a closed stream must never look like a complete (empty) body
        if self._gen is None:
            self._gen = self._spans()
        return self._gen  # type: ignore[return-value]

    async def sendfile(self, transport: asyncio.WriteTransport, start: int = 0, end: int | None = None) -> int:
        """Send the blob (or bytes ``start`` to ``end``, exclusive: a Range request) to ``transport``
        as they may be sent, from the page cache (``loop.sendfile``).

        No byte passes through Python (measured: 11 % less CPU per cold pull than reading and
        writing). A range is sent as soon as its bytes are in the partial file, except the withheld
        tail, which waits for the digest like a whole-blob read. Returns the bytes sent; raises
        ``FillFailed`` like the byte iteration, after which the caller must abort the transport.
        """
        loop = asyncio.get_running_loop()
        sent = 0
        async for offset, length in self.spans():
            if end is not None and offset >= end:
                break
            lo, hi = max(offset, start), offset + length if end is None else min(offset + length, end)
            if hi <= lo:
                continue
            if transport.is_closing():
                raise ConnectionResetError("the client went away")
            with os.fdopen(self.fileno(), "rb", closefd=False) as file:
                await loop.sendfile(transport, file, lo, hi - lo)
            sent += hi - lo
            if end is not None and hi >= end:
                break
        return sent

    def fileno(self) -> int:
        if self._fd is None:
            raise FillFailed("the stream was closed")
        return self._fd

    async def _iterate(self) -> AsyncIterator[bytes]:
        async for offset, length in self._spans():
            end = offset + length
            while offset < end:
                data = await self._read(min(READ_CHUNK, end - offset), offset)
                if not data:
                    raise FillFailed(f"the partial file ended at {offset} of the {end} bytes it had")
                offset += len(data)
                yield data

    async def _spans(self) -> AsyncIterator[tuple[int, int]]:
        offset = 0
        try:
            while True:
                if self._stopped or self._fd is None:
                    raise FillFailed("the stream was closed")
                fill = self._fill
                changed = fill.changed if fill is not None else None
                mine = os.fstat(self._fd)
                available = mine.st_size
                if not self._published and fill is not None and fill.verified is not None and _same(mine, fill.verified):
                    self._published = True  # verified in this process: the tail may go before fsync and rename
                if self._published:
                    limit = available if self.size is None else min(available, self.size)
                    if offset >= limit:
                        return
                else:
                    total = available if self.size is None else self.size
                    limit = min(available, total - self._withhold)
                if offset < limit:
                    yield offset, limit - offset
                    offset = limit
                    continue
                if not self._published and await self._settle(offset):
                    continue
                if changed is None:
                    await asyncio.sleep(self._poll)
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll):
                            await changed.wait()
        finally:
            self._close()

    async def _settle(self, offset: int) -> bool:
        """Nothing more may be read yet: check how the fill stands. True when the blob is now published."""
        assert self._fd is not None and self._part is not None and self._blob is not None
        mine = os.fstat(self._fd)
        state = _where(mine, self._part, self._blob)
        if state == RUNNING and (self._fill is None or self._fill.task.done()) and _try_lock(self._fd):
            # Nobody in this process watches this fill and no process holds it: orphaned.
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            state = _where(mine, self._part, self._blob)
            if state == RUNNING:
                raise FillFailed(f"the fill of {self._part.name} has no filler left")
        if state == RUNNING:
            return False
        if state == PUBLISHED:
            self._published = True
            return True
        if state == REPLACED and await _in_thread(_same_prefix, self._fd, self._blob, offset):
            # Published from another file (it already existed); what we sent matches it: go on from there.
            fd = os.open(self._blob, os.O_RDONLY | os.O_CLOEXEC)
            self._close()
            self._fd = fd
            self._published = True
            return True
        error = self._fill.error if self._fill is not None else None
        if error is not None:
            raise error.again() from error.cause
        raise FillFailed(f"the fill of {self._part.name} was aborted")


class _Fill:
    """One blob's fill as seen from this process: filling it, or following another process's fill."""

    def __init__(self, owner: "BlobFills", digest: Digest, fetch: Fetch, expected_size: int | None) -> None:
        self.owner = owner
        self.digest = digest
        self.fetch = fetch
        self.expected_size = expected_size
        directory = owner.root / digest.algorithm
        self.part = directory / f"{digest.hex}.part"
        self.sidecar = directory / f"{digest.hex}.size"
        self.blob = owner.blobs.path(digest)
        self.size: int | None = expected_size
        self.ready = asyncio.Event()  # open() may return: size known (or known unknown), or ready_error
        self.ready_error: BaseException | None = None
        self.error: FillFailed | None = None  # why the fill aborted after requesters got streams
        self.published = False
        # Whether the published bytes are ones a fill of this digest hashed (here, or in the worker this
        # one followed), rather than a blob that was stored already: only those prove possession.
        self.proven = False
        # The partial file whose bytes this process has hashed and found right: its readers may send the
        # withheld tail at once, without waiting for fsync and the rename into the store (durability
        # matters to the store, not to a client holding verified bytes).
        self.verified: os.stat_result | None = None
        self.fd: int | None = None  # the partial file this process holds (filling or following)
        self.changed = asyncio.Event()  # replaced on every notify; readers wait on the one they saw
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._run(), name=f"fill {digest}"
        )

    # -- signals to this process's readers -------------------------------------------------

    def _notify(self) -> None:
        event, self.changed = self.changed, asyncio.Event()
        event.set()

    def _set_ready(self, size: int | None) -> None:
        if not self.ready.is_set():
            if size is not None:
                self.size = size
            self.ready.set()

    def _fail(self, exc: BaseException) -> None:
        if not self.ready.is_set():
            self.ready_error = exc
            self.ready.set()
        elif self.error is None:
            self.error = exc if isinstance(exc, FillFailed) else FillFailed(f"fill of {self.digest} failed", exc)

    def _close_fd(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    # -- requester side ---------------------------------------------------------------------

    def stream(self) -> BlobStream:
        fd = None
        if self.fd is not None:
            # Reopen the very inode this fill holds (a new open file description, so not sharing its lock).
            try:
                fd = os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                fd = None
            else:
                if not _same(os.fstat(fd), os.fstat(self.fd)):
                    os.close(fd)
                    fd = None
        if fd is None:
            try:
                fd = os.open(self.part, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                published = self.owner.published_stream(self.digest, self if self.proven else None)
                if published is not None:
                    return published
                if self.error is not None:
                    raise self.error.again() from self.error.cause
                raise FillFailed(f"the fill of {self.digest} was aborted") from None
        return BlobStream(
            fd,
            self.size,
            fill=self,
            part=self.part,
            blob=self.blob,
            withhold=self.owner.withhold,
            poll_interval=self.owner.poll_interval,
        )

    # -- the task ---------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._drive()
        except _StartFailed as start:
            self._fail(start.exc)
        except FillFailed as exc:
            log.warning("cache fill of %s failed: %s", self.digest, exc)
            self._fail(exc)
        except asyncio.CancelledError:
            self._fail(FillFailed(f"fill of {self.digest} was cancelled"))
            raise
        except Exception as exc:
            log.exception("cache fill of %s failed", self.digest)
            self._fail(FillFailed(f"fill of {self.digest} failed: {exc}", exc))
        finally:
            if not self.ready.is_set():  # e.g. a complete leftover that needed no request at all
                if self.published:
                    self._set_ready(self.size)
                else:
                    self._fail(FillFailed(f"the fill of {self.digest} ended without an answer"))
            self._close_fd()
            self._notify()

    async def _drive(self) -> None:
        self.part.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(MAX_ROUNDS):
            if self.owner.blobs.stat(self.digest) is not None:
                self._finish_published()
                return
            fd = os.open(self.part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self.fd = fd
            if _try_lock(fd):
                if _where(os.fstat(fd), self.part, self.blob) != RUNNING:
                    self._close_fd()  # unlinked or published between our open and our lock
                    continue
                if self.owner.blobs.stat(self.digest) is not None:
                    self.part.unlink()  # a fresh file we created after the blob was published
                    self.sidecar.unlink(missing_ok=True)
                    self._close_fd()
                    continue
                await self._fill(fd)
                return
            outcome = await self._follow(fd)
            if outcome == RUNNING:  # the filler died and we hold its lock now
                await self._fill(fd)
                return
            if outcome in (PUBLISHED, REPLACED):
                # PUBLISHED: the inode we followed, which its filler hashed, is the blob now. REPLACED: the
                # blob came from elsewhere (a push, another fill), which proves nothing about this fill.
                self.proven = outcome == PUBLISHED
                self._finish_published()
                return
            self._close_fd()
            if self.ready.is_set():
                raise FillFailed(f"the fill of {self.digest} was aborted by another worker")
            # Nobody here has a stream yet: start over, perhaps as the filler (which surfaces the upstream's error).
        raise FillFailed(f"the fill of {self.digest} kept being aborted by other workers")

    def _finish_published(self) -> None:
        self.published = True
        blob = self.owner.blobs.stat(self.digest)
        self._set_ready(blob.size if blob is not None else self.size)

    async def _follow(self, fd: int) -> str:
        """Tail another process's fill until it is published, aborted, or left to us (returns RUNNING, locked)."""
        mine = os.fstat(fd)
        while True:
            if not self.ready.is_set():
                present, size = _read_size(self.sidecar)
                if present:
                    self._set_ready(size)
            state = _where(mine, self.part, self.blob)
            if state in (PUBLISHED, REPLACED):
                return state
            if state == ABORTED:
                return ABORTED
            if _try_lock(fd):
                # The lock is released after publishing or unlinking, or by the kernel when the filler died.
                state = _where(mine, self.part, self.blob)
                if state == RUNNING:
                    log.info("taking over the fill of %s from a dead worker", self.digest)
                    return RUNNING
                continue
            self._notify()
            await asyncio.sleep(self.owner.poll_interval)

    # -- filling (we hold the lock on fd, which is the partial path's inode) ---------------

    async def _fill(self, fd: int) -> None:
        self.owner._downloading += 1
        try:
            existing = os.fstat(fd).st_size
            hasher = new_hasher(self.digest.algorithm)
            known: int | None = None
            if existing:
                offset = await _in_thread(_rehash, fd, hasher, existing)
                _, known = _read_size(self.sidecar)
            else:
                offset = 0
                self.sidecar.unlink(missing_ok=True)  # left by a filler that never wrote a byte
            if known is not None and self.expected_size is not None and known != self.expected_size:
                raise FillMismatch(f"{self.digest}: partial file says {known} bytes, expected {self.expected_size}")
            if known is None:
                known = self.expected_size
            if known is not None and offset > known:
                raise FillMismatch(f"{self.digest}: {offset} bytes on disk, more than the size {known}")
            offset, size = await self._download(fd, hasher, offset, known)
            await self._verify_and_publish(fd, hasher, offset, size)
        except asyncio.CancelledError:
            raise  # leave the partial file: the next requester resumes it
        except BaseException:
            self._abort(fd)
            raise
        finally:
            self.owner._downloading -= 1

    async def _download(self, fd: int, hasher: Hasher, offset: int, size: int | None) -> tuple[int, int | None]:
        """Append the rest of the blob from the upstream; returns (bytes on disk, total size if known)."""
        attempts = self.owner.attempts
        last: BaseException | None = None
        sidecar: int | None | bool = False  # what we last wrote to the sidecar (False: nothing yet)
        for attempt in range(attempts):
            if size is not None and offset >= size:
                return offset, size
            try:
                async with self.fetch(offset) as source:
                    size = self._check_size(source.size, size, offset)
                    if sidecar is False or sidecar != size:
                        await asyncio.to_thread(_write_size, self.sidecar, size)
                        sidecar = size
                    if size is not None:
                        self.size = size
                    self._set_ready(size)
                    if source.start > offset:
                        raise ConnectionError(f"asked for bytes from {offset}, upstream sent from {source.start}")
                    # Range ignored (start 0) or partly honoured: skip what we already have. The file
                    # stays append-only, so bytes that readers already have are never rewritten.
                    skip = offset - source.start
                    async for chunk in source.chunks:
                        if skip:
                            if len(chunk) <= skip:
                                skip -= len(chunk)
                                continue
                            chunk, skip = chunk[skip:], 0
                        if size is not None and offset + len(chunk) > size:
                            raise FillMismatch(f"{self.digest}: upstream sent more than {size} bytes")
                        if len(chunk) >= THREAD_MIN:
                            await _in_thread(_write_and_hash, fd, hasher, chunk, offset)
                        else:
                            _write_and_hash(fd, hasher, chunk, offset)
                        offset += len(chunk)
                        self._notify()
                if size is None or offset >= size:
                    return offset, size
                last = ConnectionError(f"upstream body ended at {offset} of {size} bytes")
            except (FillFailed, asyncio.CancelledError):
                raise
            except Exception as exc:
                if not self.ready.is_set():
                    raise _StartFailed(exc) from exc
                last = exc
            log.info("cache fill of %s interrupted at %d bytes (attempt %d/%d): %s",
                     self.digest, offset, attempt + 1, attempts, last)
        raise FillFailed(f"{self.digest}: gave up after {attempts} attempts at {offset} of {size} bytes", last)

    def _check_size(self, announced: int | None, known: int | None, offset: int) -> int | None:
        sizes = {s for s in (announced, known, self.expected_size) if s is not None}
        if len(sizes) > 1:
            raise FillMismatch(f"{self.digest}: sizes disagree: {sorted(sizes)}")
        size = sizes.pop() if sizes else None
        if size is not None and offset > size:
            raise FillMismatch(f"{self.digest}: {offset} bytes on disk, more than the size {size}")
        return size

    async def _verify_and_publish(self, fd: int, hasher: Hasher, offset: int, expected: int | None) -> None:
        size = os.fstat(fd).st_size
        if size != offset or (expected is not None and size != expected):
            raise FillMismatch(f"{self.digest}: got {size} bytes, expected {expected}")
        actual = hasher.hexdigest()
        if actual != self.digest.hex:
            raise FillMismatch(f"{self.digest}: upstream bytes hash to {self.digest.algorithm}:{actual}")
        self.verified = os.fstat(fd)
        self.proven = True
        self._notify()
        await _in_thread(os.fsync, fd)
        # Sidecar first: readers learn the outcome from the rename, and no sidecar outlives a published blob.
        self.sidecar.unlink(missing_ok=True)
        await _uninterrupted(self.owner.blobs.adopt(self.part, self.digest))
        self.published = True
        self.size = size
        self._set_ready(size)
        self._notify()

    def _abort(self, fd: int) -> None:
        """Remove our partial file: readers holding it see it gone (and not published) and raise."""
        with contextlib.suppress(OSError):
            self.sidecar.unlink(missing_ok=True)
            if _where(os.fstat(fd), self.part, self.blob) == RUNNING:
                self.part.unlink()


class BlobFills:
    """Starts or joins the fill of a blob; see the module docstring."""

    def __init__(
        self,
        root: Path,
        blobs: BlobStore,
        *,
        poll_interval: float = 0.01,
        withhold: int = 65536,
        attempts: int = 3,
    ) -> None:
        self.root = root
        self.blobs = blobs
        self.poll_interval = poll_interval
        self.withhold = withhold
        self.attempts = max(1, attempts)
        self.root.mkdir(parents=True, exist_ok=True)
        self._fills: dict[Digest, _Fill] = {}
        self._downloading = 0

    def active(self) -> int:
        """Fills running in this process, downloading or following another worker's download."""
        return sum(1 for fill in self._fills.values() if not fill.task.done())

    def downloading(self) -> int:
        """Fills for which this process is the one talking to the upstream."""
        return self._downloading

    def published_stream(self, digest: Digest, origin: _Fill | None = None) -> BlobStream | None:
        path = self.blobs.path(digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        size = os.fstat(fd).st_size
        return BlobStream(fd, size, poll_interval=self.poll_interval, origin=origin)

    async def open(self, digest: Digest, fetch: Fetch, expected_size: int | None = None) -> BlobStream:
        """A stream of the blob for one requester, starting (or joining) the fill if it is not stored.

        Returns once the upstream has answered (or another worker's filler has),
        so ``size`` is known; an exception ``fetch()`` raised before anything was
        streamed propagates unchanged. A stream whose ``origin`` is None is of a blob
        that was in the store already: it proves nothing (``proof``), and a caller
        bound by the possession rule must not hand it out.
        """
        published = self.published_stream(digest)
        if published is not None:
            return published
        fill = self._fills.get(digest)
        if fill is None or fill.task.done():
            fill = _Fill(self, digest, fetch, expected_size)
            self._fills[digest] = fill
            fill.task.add_done_callback(lambda task, fill=fill: self._done(fill))
        await fill.ready.wait()
        if fill.ready_error is not None:
            raise fill.ready_error
        if fill.published:
            published = self.published_stream(digest, fill if fill.proven else None)
            if published is not None:
                return published
        return fill.stream()

    async def proof(self, stream: BlobStream) -> Verified | None:
        """Once the fill behind ``stream`` has ended: proof that it hashed the published bytes, or None.

        None for a stream of a blob that was stored already (``stream.origin`` is None), and for a
        fill that failed. Being cancelled does not cancel the fill.
        """
        fill = stream.origin
        if fill is None:
            return None
        await asyncio.wait([fill.task])
        found = self.blobs.stat(fill.digest)
        if not fill.proven or found is None:
            return None
        return Verified(fill.digest, found.size)

    async def publishing(self, digest: Digest) -> None:
        """Wait out the last step of a fill that has verified its bytes and is making them durable.

        A request arriving in that window (milliseconds) is then answered from the store, as a hit,
        rather than joining a download that is over.
        """
        fill = self._fills.get(digest)
        if fill is not None and fill.verified is not None:
            await asyncio.wait([fill.task])

    def _done(self, fill: _Fill) -> None:
        if self._fills.get(fill.digest) is fill:
            del self._fills[fill.digest]

    def purge(self, max_age_seconds: float, now: float) -> int:
        """Remove partial files nobody has touched for ``max_age_seconds`` and nobody holds.

        A partial file outlives its fill when the worker died and no request for the blob came
        again; it is only worth keeping for a resume soon after. Taking its lock first means a
        file some worker is still filling (or resuming) is never removed.
        """
        removed = 0
        for part in self.root.glob("*/*.part"):
            try:
                fd = os.open(part, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if now - os.fstat(fd).st_mtime <= max_age_seconds or not _try_lock(fd):
                    continue
                if _same(os.fstat(fd), os.stat(part)):
                    part.unlink()
                    part.with_suffix(".size").unlink(missing_ok=True)
                    removed += 1
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        return removed

    async def aclose(self) -> None:
        """Stop this process's fills (shutdown); partial files stay, and another worker resumes them."""
        tasks = [fill.task for fill in self._fills.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
