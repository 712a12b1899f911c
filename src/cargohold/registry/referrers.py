"""The referrers API: which manifests name a given manifest as their ``subject``.

Answered from metadata recorded at push time, so a subject need not exist
(the spec lets referrers arrive before their subject).
"""

from __future__ import annotations

import json

from ..oci import mediatypes as mt
from ..oci.digest import Digest
from ..oci.names import validate_name
from .stores import Stores


class ReferrerService:
    def __init__(self, stores: Stores) -> None:
        self._s = stores

    async def index(self, repository: str, subject: str, artifact_type: str | None) -> bytes:
        """An OCI index whose descriptors are the referrers (optionally of one ``artifact_type``)."""
        validate_name(repository)
        digest = Digest.parse(subject)
        records = await self._s.metadata.referrers(repository, str(digest), artifact_type)
        descriptors = []
        for r in records:
            descriptor: dict[str, object] = {"mediaType": r.media_type, "digest": r.digest, "size": r.size}
            if r.artifact_type:
                descriptor["artifactType"] = r.artifact_type
            if r.annotations:
                descriptor["annotations"] = r.annotations
            descriptors.append(descriptor)
        return json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}).encode()
