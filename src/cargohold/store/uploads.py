"""Upload sessions on disk: ``uploads/<id>/data`` plus the repository it belongs to.

The data file is the truth; a running sha256 kept in process memory only saves
re-reading the file when the same worker sees the next chunk (the usual case),
so a chunk that lands on another worker costs a re-hash at completion, never a
wrong answer. A chunk that fails half-way (client gone, wrong length) is cut
back off; after a crash of the server itself a session may hold part of a
chunk, which the status request reports so the client resumes from there.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ..oci.digest import Digest, Hasher, new_hasher
from ..oci.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    SizeInvalid,
    UploadLimitReached,
    UploadRangeInvalid,
)
from .blobs import hash_file
from .files import fsync_dir, fsync_file

_ID_CHARS = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class UploadState:
    id: str
    repository: str
    size: int
    started_at: float


@dataclass(frozen=True, slots=True)
class UploadCaps:
    """Open client upload sessions allowed per repository and per identity (0: no cap)."""

    per_repository: int = 0
    per_identity: int = 0


@dataclass(frozen=True, slots=True)
class FinishedUpload:
    """A verified, fsynced file ready to be published under ``digest``."""

    digest: Digest
    size: int
    path: Path


class UploadStore:
    def __init__(self, root: Path, caps: UploadCaps = UploadCaps()) -> None:
        self.root = root / "uploads"
        self.root.mkdir(parents=True, exist_ok=True)
        self.caps = caps
        # Outside uploads/, whose every entry is a session: serializes "count, then create" across workers.
        self._lock_path = root / "locks" / "upload-sessions"
        self._hashers: dict[str, tuple[int, Hasher]] = {}

    def _dir(self, upload_id: str) -> Path:
        if len(upload_id) != 32 or not set(upload_id) <= _ID_CHARS:
            raise BlobUploadUnknown("upload id is not one this registry issued")
        return self.root / upload_id

    def create(self, repository: str, *, internal: bool = False, owner: str | None = None) -> UploadState:
        """A new session; ``internal`` ones (a single-request push) have an id no client knows.

        A client session (not ``internal``) counts against the caps for its repository and for its
        ``owner`` (the identity that opened it; None when auth is off). The count and the creation
        happen under one ``flock`` shared by all workers, so parallel POSTs cannot overshoot a cap.
        """
        if internal or not (self.caps.per_repository or (owner is not None and self.caps.per_identity)):
            return self._create(repository, internal, owner)
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._check_caps(repository, owner)
            return self._create(repository, internal, owner)
        finally:
            os.close(fd)  # releases the lock

    def _check_caps(self, repository: str, owner: str | None) -> None:
        in_repository = by_owner = 0
        for entry in self.root.iterdir():
            try:
                if (entry / "internal").exists():
                    continue
                if (entry / "repository").read_text() == repository:
                    in_repository += 1
                if owner is not None and (entry / "owner").read_text() == owner:
                    by_owner += 1
            except (FileNotFoundError, NotADirectoryError):
                continue  # being removed, or a session of an older version without an owner
        caps = self.caps
        if caps.per_repository and in_repository >= caps.per_repository:
            raise UploadLimitReached(
                f"repository {repository} already has {in_repository} open upload sessions, the cap "
                f"(upload_sessions_per_repository = {caps.per_repository}); finish or cancel some first",
                detail={"cap": "upload_sessions_per_repository", "limit": caps.per_repository},
            )
        if owner is not None and caps.per_identity and by_owner >= caps.per_identity:
            raise UploadLimitReached(
                f"{owner} already has {by_owner} open upload sessions, the cap "
                f"(upload_sessions_per_identity = {caps.per_identity}); finish or cancel some first",
                detail={"cap": "upload_sessions_per_identity", "limit": caps.per_identity},
            )

    def _create(self, repository: str, internal: bool, owner: str | None) -> UploadState:
        upload_id = uuid.uuid4().hex
        path = self.root / upload_id
        path.mkdir()
        (path / "repository").write_text(repository)
        if owner is not None:
            (path / "owner").write_text(owner)
        (path / "data").touch()
        if internal:
            (path / "internal").touch()
        self._hashers[upload_id] = (0, new_hasher("sha256"))
        return UploadState(upload_id, repository, 0, time.time())

    def state(self, repository: str, upload_id: str) -> UploadState:
        path = self._dir(upload_id)
        try:
            owner = (path / "repository").read_text()
            st = (path / "data").stat()
        except (FileNotFoundError, NotADirectoryError):
            raise BlobUploadUnknown() from None
        if owner != repository:
            # Session ids are bound to their repository; another repository's id is simply unknown here.
            raise BlobUploadUnknown()
        return UploadState(upload_id, repository, st.st_size, (path / "repository").stat().st_mtime)

    async def append(
        self,
        repository: str,
        upload_id: str,
        body: AsyncIterator[bytes],
        start: int | None = None,
        length: int | None = None,
    ) -> UploadState:
        """Append one chunk; ``start`` (from Content-Range) must equal the current length."""
        self.state(repository, upload_id)
        data = self._dir(upload_id) / "data"
        fd = os.open(data, os.O_WRONLY | os.O_APPEND)
        try:
            _lock(fd)
            offset = os.fstat(fd).st_size
            if start is not None and start != offset:
                raise UploadRangeInvalid(f"chunk starts at {start} but the upload holds {offset} bytes")
            cached = self._hashers.pop(upload_id, None)
            hasher = cached[1] if cached is not None and cached[0] == offset else None
            written = 0
            # Two-stage pipeline: a thread hashes and writes one piece (both release the GIL)
            # while the event loop receives the next, so a push uses more than one core.
            loop = asyncio.get_running_loop()
            pending: asyncio.Future[None] | None = None
            try:
                async for chunk in body:
                    if length is not None and written + len(chunk) > length:
                        raise SizeInvalid("chunk longer than its declared length")
                    if pending is not None:
                        await pending
                    pending = loop.run_in_executor(None, _consume, fd, chunk, hasher)
                    written += len(chunk)
                if pending is not None:
                    await pending
                if length is not None and written != length:
                    raise SizeInvalid(f"chunk declared {length} bytes but carried {written}")
            except BaseException:
                if pending is not None and not pending.done():
                    await asyncio.wait([pending])  # never truncate under a write still running
                os.ftruncate(fd, offset)
                raise
            if hasher is not None:
                self._hashers[upload_id] = (offset + written, hasher)
            return UploadState(upload_id, repository, offset + written, 0.0)
        finally:
            os.close(fd)

    async def finish(self, repository: str, upload_id: str, expected: Digest) -> FinishedUpload:
        """Verify the whole upload against ``expected``; on mismatch the session is dropped and nothing is kept."""
        state = self.state(repository, upload_id)
        data = self._dir(upload_id) / "data"
        cached = self._hashers.pop(upload_id, None)
        if cached is not None and cached[0] == state.size and expected.algorithm == "sha256":
            actual = f"sha256:{cached[1].hexdigest()}"
        else:
            actual, _ = await asyncio.to_thread(hash_file, data, expected.algorithm)
        if actual != str(expected):
            self.cancel(repository, upload_id)
            raise DigestInvalid(f"content digest {actual} does not match {expected}")
        await asyncio.to_thread(fsync_file, data)
        return FinishedUpload(expected, state.size, data)

    def discard(self, upload_id: str) -> None:
        self._hashers.pop(upload_id, None)
        shutil.rmtree(self._dir(upload_id), ignore_errors=True)

    def cancel(self, repository: str, upload_id: str) -> None:
        self.state(repository, upload_id)
        self.discard(upload_id)

    def purge(self, max_age_seconds: float, now: float | None = None, empty_max_age_seconds: float | None = None) -> int:
        """Remove sessions untouched for ``max_age_seconds``, and sessions that never received a byte
        after ``empty_max_age_seconds`` (opened and forgotten: they only hold a place under the caps);
        activity is the data file's mtime."""
        now = time.time() if now is None else now
        removed = 0
        for entry in self.root.iterdir():
            empty = False
            try:
                data = (entry / "data").stat()
                mtime = max(data.st_mtime, (entry / "repository").stat().st_mtime)
                empty = data.st_size == 0
            except (FileNotFoundError, NotADirectoryError):
                mtime = entry.stat().st_mtime if entry.exists() else now
            limit = max_age_seconds
            if empty and empty_max_age_seconds is not None:
                limit = min(limit, empty_max_age_seconds)
            if now - mtime > limit:
                self._hashers.pop(entry.name, None)
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
                removed += 1
        if removed:
            fsync_dir(self.root)
        return removed

    def purge_dead(self) -> int:
        """After a crash: drop sessions no client can resume (single-request pushes, already published data)."""
        removed = 0
        for entry in self.root.iterdir():
            if (entry / "internal").exists() or not (entry / "data").exists():
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
                removed += 1
        return removed

    def active(self) -> list[str]:
        return sorted(e.name for e in self.root.iterdir())


def _lock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BlobUploadInvalid("another chunk of this upload is being written") from None


def _consume(fd: int, chunk: bytes, hasher: Hasher | None) -> None:
    if hasher is not None:
        hasher.update(chunk)
    view = memoryview(chunk)
    while view:
        n = os.write(fd, view)
        view = view[n:]

