"""``cargohold fsck``: prove that what metadata promises is what the disk holds.

Problems are things a client could be served wrongly or not at all: a blob
whose bytes do not hash to its name, a missing file, a manifest whose
references are gone. Notes are harmless leftovers (an unreferenced file from
a crash between rename and commit, an upload session a client may resume).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from ..oci.digest import Digest
from ..oci.errors import RegistryError
from ..oci.manifest import parse_manifest
from ..store.blobs import hash_file
from .stores import Stores


@dataclass
class FsckReport:
    blobs_checked: int = 0
    manifests_checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


async def fsck(
    stores: Stores, progress: Callable[[str], None] = lambda _: None, lazy: Callable[[str], bool] = lambda _: False
) -> FsckReport:
    """``lazy(repository)``: whether the repository is a cache namespace, whose manifests are stored
    before their blobs and children (fetched when pulled, and evicted under a quota)."""
    report = FsckReport()
    not_fetched = 0
    known: set[str] = set()
    for digest, size in await stores.metadata.all_blobs():
        known.add(digest)
        report.blobs_checked += 1
        progress(digest)
        parsed = Digest.parse(digest)
        found = stores.blobs.stat(parsed)
        if found is None:
            report.problems.append(f"blob {digest}: file missing")
            continue
        actual, actual_size = await asyncio.to_thread(hash_file, found.path, parsed.algorithm)
        if actual_size != size:
            report.problems.append(f"blob {digest}: {actual_size} bytes on disk, {size} recorded")
        if actual != digest:
            report.problems.append(f"blob {digest}: content hashes to {actual}")
    links = await stores.metadata.all_links()
    linked: dict[str, set[str]] = {}
    for repository, digest in links:
        linked.setdefault(repository, set()).add(digest)
    manifests_by_repo: dict[str, set[str]] = {}
    manifest_rows = await stores.metadata.all_manifests()
    for repository, digest, _ in manifest_rows:
        manifests_by_repo.setdefault(repository, set()).add(digest)
    for repository, digest, media_type in manifest_rows:
        report.manifests_checked += 1
        try:
            body = await stores.blobs.read(Digest.parse(digest))
        except FileNotFoundError:
            report.problems.append(f"manifest {repository}@{digest}: content missing")
            continue
        try:
            parsed = parse_manifest(body, media_type)
        except RegistryError as exc:
            report.problems.append(f"manifest {repository}@{digest}: {exc.message}")
            continue
        cached = lazy(repository)
        for d in parsed.required_blobs:
            if d.digest not in linked.get(repository, set()):
                if cached:
                    not_fetched += 1
                else:
                    report.problems.append(f"manifest {repository}@{digest}: blob {d.digest} not linked in the repository")
        for d in parsed.manifests:
            if d.digest not in manifests_by_repo.get(repository, set()):
                if cached:
                    not_fetched += 1
                else:
                    report.problems.append(f"manifest {repository}@{digest}: child manifest {d.digest} missing")
    if not_fetched:
        report.notes.append(f"{not_fetched} reference(s) of cached manifests not fetched yet or evicted (fetched when pulled)")
    unreferenced = [str(d) for d in stores.blobs.iter_digests() if str(d) not in known]
    if unreferenced:
        report.notes.append(f"{len(unreferenced)} blob file(s) with no metadata (crash leftovers; harmless, never served)")
    sessions = stores.uploads.active()
    if sessions:
        report.notes.append(f"{len(sessions)} upload session(s) open (resumable; purged when abandoned)")
    return report
