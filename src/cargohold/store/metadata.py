"""Registry metadata over SQLAlchemy Core: repositories, blob links, manifests, tags and referrers.

All SQL of the registry lives here. Each public method is one transaction;
writes bump the shared generation so that every worker's manifest cache
forgets what may have changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..oci.errors import ManifestBlobUnknown
from .db import SqlStore
from .schema import blobs, manifest_references, manifests, provenance, repositories, repository_blobs, tags


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class RemovedRepository:
    """What deleting a repository took with it (for the answer and the audit entry)."""

    name: str
    tags: int
    manifests: int


@dataclass(frozen=True, slots=True)
class NewManifest:
    """What ``put_manifest`` needs to know of a validated manifest."""

    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    subject: str | None
    annotations: dict[str, str] | None
    blobs: tuple[str, ...]
    required_blobs: tuple[str, ...]
    children: tuple[str, ...]


def _now() -> datetime:
    return datetime.now(UTC)


class MetadataStore(SqlStore):
    def __init__(self, engine: AsyncEngine, on_change: Callable[[], None] = lambda: None) -> None:
        super().__init__(engine, on_change)
        dialect = engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        self._insert = insert
        # Tags and names sort and page in byte order, whatever the PostgreSQL database's collation is.
        self._bytewise: Callable[[Any], Any] = (lambda c: c.collate("C")) if dialect == "postgresql" else (lambda c: c)

    async def _ensure_repository(self, conn: AsyncConnection, name: str) -> int:
        await conn.execute(
            self._insert(repositories).values(name=name, created_at=_now()).on_conflict_do_nothing(index_elements=["name"])
        )
        return (await conn.execute(select(repositories.c.id).where(repositories.c.name == name))).scalar_one()

    @staticmethod
    async def _repository_id(conn: AsyncConnection, name: str) -> int | None:
        return (await conn.execute(select(repositories.c.id).where(repositories.c.name == name))).scalar_one_or_none()

    async def _add_blob_row(self, conn: AsyncConnection, digest: str, size: int) -> None:
        await conn.execute(
            self._insert(blobs).values(digest=digest, size=size, created_at=_now()).on_conflict_do_nothing(
                index_elements=["digest"]
            )
        )

    async def _link(self, conn: AsyncConnection, repo_id: int, digest: str) -> None:
        await conn.execute(
            self._insert(repository_blobs)
            .values(repository_id=repo_id, digest=digest, created_at=_now())
            .on_conflict_do_nothing(index_elements=["repository_id", "digest"])
        )

    # ---- repositories -------------------------------------------------------------------------

    async def repository_exists(self, name: str) -> bool:
        async with self._read() as conn:
            return await self._repository_id(conn, name) is not None

    async def catalog(self, n: int | None, last: str | None) -> list[str]:
        name = self._bytewise(repositories.c.name)
        query = select(repositories.c.name).order_by(name)
        if last:
            query = query.where(name > last)
        if n is not None:
            query = query.limit(n)
        async with self._read() as conn:
            return list((await conn.execute(query)).scalars())

    async def delete_repository(self, name: str) -> RemovedRepository | None:
        """The repository, its tags, manifests, blob links and provenance, in one transaction; None if unknown.

        The blobs' bytes stay in the blob store: other repositories may link the same digests.
        """
        async with self._write() as conn:
            repo_id = await self._repository_id(conn, name)
            if repo_id is None:
                return None
            tag_count = (await conn.execute(select(func.count()).where(tags.c.repository_id == repo_id))).scalar_one()
            manifest_count = (
                await conn.execute(select(func.count()).where(manifests.c.repository_id == repo_id))
            ).scalar_one()
            # Children first, explicitly: the cascade is declared, but not every backend enforces it the same way.
            await conn.execute(delete(tags).where(tags.c.repository_id == repo_id))
            await conn.execute(delete(manifest_references).where(manifest_references.c.repository_id == repo_id))
            await conn.execute(delete(manifests).where(manifests.c.repository_id == repo_id))
            await conn.execute(delete(repository_blobs).where(repository_blobs.c.repository_id == repo_id))
            await conn.execute(delete(provenance).where(provenance.c.repository == name))
            await conn.execute(delete(repositories).where(repositories.c.id == repo_id))
        return RemovedRepository(name, tag_count, manifest_count)

    # ---- blobs ------------------------------------------------------------------------------

    async def add_blob(self, repository: str, digest: str, size: int) -> None:
        async with self._write() as conn:
            repo_id = await self._ensure_repository(conn, repository)
            await self._add_blob_row(conn, digest, size)
            await self._link(conn, repo_id, digest)

    async def linked_blob_size(self, repository: str, digest: str) -> int | None:
        query = (
            select(blobs.c.size)
            .select_from(repository_blobs.join(blobs, blobs.c.digest == repository_blobs.c.digest))
            .join(repositories, repositories.c.id == repository_blobs.c.repository_id)
            .where(repositories.c.name == repository, repository_blobs.c.digest == digest)
        )
        async with self._read() as conn:
            return (await conn.execute(query)).scalar_one_or_none()

    async def blob_size(self, digest: str) -> int | None:
        async with self._read() as conn:
            return (await conn.execute(select(blobs.c.size).where(blobs.c.digest == digest))).scalar_one_or_none()

    async def mount_blob(self, repository: str, source: str, digest: str) -> int | None:
        """Link ``digest`` into ``repository`` if ``source`` may serve it; its size, or None."""
        async with self._write() as conn:
            source_id = await self._repository_id(conn, source)
            if source_id is None:
                return None
            size = (
                await conn.execute(
                    select(blobs.c.size)
                    .select_from(repository_blobs.join(blobs, blobs.c.digest == repository_blobs.c.digest))
                    .where(repository_blobs.c.repository_id == source_id, repository_blobs.c.digest == digest)
                )
            ).scalar_one_or_none()
            if size is None:
                return None
            await self._link(conn, await self._ensure_repository(conn, repository), digest)
            return size

    async def repositories_linking(self, digest: str, limit: int) -> list[str]:
        """Names of repositories that link ``digest`` (the first ``limit``, in name order): candidates for a mount."""
        query = (
            select(repositories.c.name)
            .select_from(repository_blobs.join(repositories, repositories.c.id == repository_blobs.c.repository_id))
            .where(repository_blobs.c.digest == digest)
            .order_by(repositories.c.name)
            .limit(limit)
        )
        async with self._read() as conn:
            return list((await conn.execute(query)).scalars())

    async def unlink_blob(self, repository: str, digest: str) -> bool:
        async with self._write() as conn:
            repo_id = await self._repository_id(conn, repository)
            if repo_id is None:
                return False
            result = await conn.execute(
                delete(repository_blobs).where(
                    repository_blobs.c.repository_id == repo_id, repository_blobs.c.digest == digest
                )
            )
            return result.rowcount > 0

    # ---- manifests and tags -----------------------------------------------------------------

    async def put_manifest(
        self, repository: str, manifest: NewManifest, tag_names: Sequence[str] = (), *, lazy: bool = False
    ) -> None:
        """Record a manifest whose bytes are already durable, and point ``tag_names`` at it.

        Every required reference must be present in the repository, except for ``lazy`` (cached)
        manifests, whose blobs and children are fetched from the upstream when first pulled.
        All of it is one transaction.
        """
        async with self._write() as conn:
            repo_id = await self._ensure_repository(conn, repository)
            if not lazy:
                await self._check_references(conn, repo_id, manifest)
            await self._add_blob_row(conn, manifest.digest, manifest.size)
            await conn.execute(
                self._insert(manifests)
                .values(
                    repository_id=repo_id,
                    digest=manifest.digest,
                    media_type=manifest.media_type,
                    artifact_type=manifest.artifact_type,
                    size=manifest.size,
                    subject=manifest.subject,
                    annotations=json.dumps(manifest.annotations) if manifest.annotations else None,
                    created_at=_now(),
                )
                .on_conflict_do_nothing(index_elements=["repository_id", "digest"])
            )
            refs = [(d, "blob") for d in dict.fromkeys(manifest.blobs)]
            refs += [(d, "manifest") for d in dict.fromkeys(manifest.children)]
            if refs:
                await conn.execute(
                    self._insert(manifest_references)
                    .values(
                        [{"repository_id": repo_id, "digest": manifest.digest, "child": c, "kind": k} for c, k in refs]
                    )
                    .on_conflict_do_nothing(index_elements=["repository_id", "digest", "child"])
                )
            for tag in dict.fromkeys(tag_names):
                stmt = self._insert(tags).values(repository_id=repo_id, name=tag, digest=manifest.digest, updated_at=_now())
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["repository_id", "name"],
                        set_={"digest": stmt.excluded.digest, "updated_at": stmt.excluded.updated_at},
                    )
                )

    async def _check_references(self, conn: AsyncConnection, repo_id: int, manifest: NewManifest) -> None:
        wanted_blobs = set(manifest.required_blobs)
        if wanted_blobs:
            found = set(
                (
                    await conn.execute(
                        select(repository_blobs.c.digest).where(
                            repository_blobs.c.repository_id == repo_id, repository_blobs.c.digest.in_(wanted_blobs)
                        )
                    )
                ).scalars()
            )
            missing = wanted_blobs - found
            if missing:
                raise ManifestBlobUnknown(detail=[{"digest": d} for d in sorted(missing)])
        wanted_children = set(manifest.children)
        if wanted_children:
            found = set(
                (
                    await conn.execute(
                        select(manifests.c.digest).where(
                            manifests.c.repository_id == repo_id, manifests.c.digest.in_(wanted_children)
                        )
                    )
                ).scalars()
            )
            missing = wanted_children - found
            if missing:
                raise ManifestBlobUnknown(
                    "index references manifests unknown to this repository",
                    detail=[{"digest": d} for d in sorted(missing)],
                )

    async def resolve(self, repository: str, reference: str, by_digest: bool) -> ManifestRecord | None:
        cols = (manifests.c.digest, manifests.c.media_type, manifests.c.size)
        base = manifests.join(repositories, repositories.c.id == manifests.c.repository_id)
        if by_digest:
            query = select(*cols).select_from(base).where(repositories.c.name == repository, manifests.c.digest == reference)
        else:
            query = (
                select(*cols)
                .select_from(
                    base.join(
                        tags, and_(tags.c.repository_id == manifests.c.repository_id, tags.c.digest == manifests.c.digest)
                    )
                )
                .where(repositories.c.name == repository, tags.c.name == reference)
            )
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return ManifestRecord(row.digest, row.media_type, row.size) if row else None

    async def delete_manifest(self, repository: str, digest: str) -> bool:
        async with self._write() as conn:
            repo_id = await self._repository_id(conn, repository)
            if repo_id is None:
                return False
            result = await conn.execute(
                delete(manifests).where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
            )
            return result.rowcount > 0

    async def delete_tag(self, repository: str, tag: str) -> bool:
        async with self._write() as conn:
            repo_id = await self._repository_id(conn, repository)
            if repo_id is None:
                return False
            result = await conn.execute(delete(tags).where(tags.c.repository_id == repo_id, tags.c.name == tag))
            return result.rowcount > 0

    async def list_tags(self, repository: str, n: int | None, last: str | None) -> list[str] | None:
        """Tags in lexical order after ``last``; None when the repository does not exist."""
        async with self._read() as conn:
            repo_id = await self._repository_id(conn, repository)
            if repo_id is None:
                return None
            name = self._bytewise(tags.c.name)
            query = select(tags.c.name).where(tags.c.repository_id == repo_id).order_by(name)
            if last:
                query = query.where(name > last)
            if n is not None:
                query = query.limit(n)
            return list((await conn.execute(query)).scalars())

    async def referrers(self, repository: str, subject: str, artifact_type: str | None) -> list[ManifestRecord]:
        query = (
            select(
                manifests.c.digest,
                manifests.c.media_type,
                manifests.c.size,
                manifests.c.artifact_type,
                manifests.c.annotations,
            )
            .select_from(manifests.join(repositories, repositories.c.id == manifests.c.repository_id))
            .where(repositories.c.name == repository, manifests.c.subject == subject)
            .order_by(manifests.c.created_at, manifests.c.digest)
        )
        if artifact_type is not None:
            query = query.where(manifests.c.artifact_type == artifact_type)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            ManifestRecord(r.digest, r.media_type, r.size, r.artifact_type, json.loads(r.annotations) if r.annotations else None)
            for r in rows
        ]

    # ---- integrity ----------------------------------------------------------------------------

    async def all_blobs(self) -> list[tuple[str, int]]:
        async with self._read() as conn:
            return [(r.digest, r.size) for r in await conn.execute(select(blobs.c.digest, blobs.c.size))]

    async def all_links(self) -> list[tuple[str, str]]:
        query = select(repositories.c.name, repository_blobs.c.digest).select_from(
            repository_blobs.join(repositories, repositories.c.id == repository_blobs.c.repository_id)
        )
        async with self._read() as conn:
            return [(r.name, r.digest) for r in await conn.execute(query)]

    async def all_manifests(self) -> list[tuple[str, str, str]]:
        query = select(repositories.c.name, manifests.c.digest, manifests.c.media_type).select_from(
            manifests.join(repositories, repositories.c.id == manifests.c.repository_id)
        )
        async with self._read() as conn:
            return [(r.name, r.digest, r.media_type) for r in await conn.execute(query)]
