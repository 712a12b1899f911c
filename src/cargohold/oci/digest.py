"""Content digests: parsing, validation and incremental hashing.

Only the algorithms the image-spec registers (sha256, sha512) are accepted;
anything else is a ``DigestInvalid`` rather than a crash further down, since a
digest string eventually becomes a file path.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from .errors import DigestInvalid

ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[a-f0-9]+")
# The image-spec grammar for the algorithm part; used to tell "unsupported" from "malformed".
_ALGORITHM_GRAMMAR = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*")
_ENCODED_GRAMMAR = re.compile(r"[a-zA-Z0-9=_-]+")


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated ``algorithm:hex`` digest."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, value: str) -> "Digest":
        algorithm, sep, encoded = value.partition(":")
        if not sep or not _ALGORITHM_GRAMMAR.fullmatch(algorithm) or not _ENCODED_GRAMMAR.fullmatch(encoded):
            raise DigestInvalid(f"malformed digest: {value[:200]!r}")
        expected = ALGORITHMS.get(algorithm)
        if expected is None:
            raise DigestInvalid(f"unsupported digest algorithm: {algorithm[:50]!r}")
        if len(encoded) != expected or not _HEX.fullmatch(encoded):
            raise DigestInvalid(f"malformed {algorithm} digest: {value[:200]!r}")
        return cls(algorithm, encoded)

    @classmethod
    def is_valid(cls, value: str) -> bool:
        try:
            cls.parse(value)
        except DigestInvalid:
            return False
        return True

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> "Digest":
        h = new_hasher(algorithm)
        h.update(data)
        return cls(algorithm, h.hexdigest())

    def hasher(self) -> Hasher:
        return new_hasher(self.algorithm)


def new_hasher(algorithm: str = "sha256") -> Hasher:
    if algorithm not in ALGORITHMS:
        raise DigestInvalid(f"unsupported digest algorithm: {algorithm[:50]!r}")
    return hashlib.new(algorithm)
