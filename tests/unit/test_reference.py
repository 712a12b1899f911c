"""oci/reference.py: image references with Docker Hub's defaults."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cargohold.oci.digest import Digest
from cargohold.oci.errors import DigestInvalid, NameInvalid, RegistryError, TagInvalid
from cargohold.oci.reference import DOCKER_HUB, Reference

D = "sha256:" + "ab" * 32
D512 = "sha512:" + "cd" * 64


@pytest.mark.parametrize(
    ("value", "registry", "repository", "tag", "digest"),
    [
        # Docker Hub defaults: no host means docker.io, a single component gets library/.
        ("alpine", DOCKER_HUB, "library/alpine", None, None),
        ("alpine:3.20", DOCKER_HUB, "library/alpine", "3.20", None),
        ("library/alpine", DOCKER_HUB, "library/alpine", None, None),
        ("bitnami/redis:7", DOCKER_HUB, "bitnami/redis", "7", None),
        ("docker.io/alpine", DOCKER_HUB, "library/alpine", None, None),
        ("docker.io/library/alpine:edge", DOCKER_HUB, "library/alpine", "edge", None),
        ("index.docker.io/alpine", DOCKER_HUB, "library/alpine", None, None),
        ("registry-1.docker.io/library/alpine", DOCKER_HUB, "library/alpine", None, None),
        ("registry.hub.docker.com/bitnami/redis", DOCKER_HUB, "bitnami/redis", None, None),
        # Other registries: no library/ prefix.
        ("ghcr.io/owner/app:v1", "ghcr.io", "owner/app", "v1", None),
        ("quay.io/app", "quay.io", "app", None, None),
        ("registry.example.com:5000/team/app", "registry.example.com:5000", "team/app", None, None),
        ("myhost:5000/app:1.0", "myhost:5000", "app", "1.0", None),
        ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000", "a/b/c", "t", None),
        ("[::1]:5000/app", "[::1]:5000", "app", None, None),
        ("localhost/app", "localhost", "app", None, None),
        ("localhost:5000/app:dev", "localhost:5000", "app", "dev", None),
        # A first component that is not a host is part of the name on Docker Hub.
        ("localhost", DOCKER_HUB, "library/localhost", None, None),
        ("myhost:5000", DOCKER_HUB, "library/myhost", "5000", None),
        ("team/app", DOCKER_HUB, "team/app", None, None),
        # Digests, with or without a tag.
        (f"alpine@{D}", DOCKER_HUB, "library/alpine", None, D),
        (f"alpine:3.20@{D}", DOCKER_HUB, "library/alpine", "3.20", D),
        (f"ghcr.io/owner/app:v1@{D512}", "ghcr.io", "owner/app", "v1", D512),
        (f"localhost:5000/app@{D}", "localhost:5000", "app", None, D),
    ],
)
def test_parse(value: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = Reference.parse(value)
    assert ref.registry == registry
    assert ref.repository == repository
    assert ref.tag == tag
    assert ref.digest == (Digest.parse(digest) if digest else None)


def test_identifier_prefers_digest_then_tag_then_latest() -> None:
    assert Reference.parse("alpine").identifier == "latest"
    assert Reference.parse("alpine:3.20").identifier == "3.20"
    assert Reference.parse(f"alpine:3.20@{D}").identifier == D
    assert Reference.parse(f"alpine@{D}").identifier == D


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("alpine", "docker.io/library/alpine"),
        ("index.docker.io/alpine:3", "docker.io/library/alpine:3"),
        (f"ghcr.io/o/a:v1@{D}", f"ghcr.io/o/a:v1@{D}"),
        ("localhost:5000/app", "localhost:5000/app"),
    ],
)
def test_str_is_canonical_and_reparses(value: str, canonical: str) -> None:
    ref = Reference.parse(value)
    assert str(ref) == canonical
    assert Reference.parse(str(ref)) == ref


def test_default_registry_is_configurable() -> None:
    ref = Reference.parse("team/app:1", default_registry="registry.local:5000")
    assert (ref.registry, ref.repository, ref.tag) == ("registry.local:5000", "team/app", "1")
    # library/ is a Docker Hub convention only.
    assert Reference.parse("app", default_registry="registry.local").repository == "app"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("", NameInvalid),
        ("x" * 5000, NameInvalid),
        ("Alpine", NameInvalid),  # no slash: uppercase cannot be a name
        ("docker.io/Library/alpine", NameInvalid),
        ("alpine:", TagInvalid),
        ("alpine:-bad", TagInvalid),
        ("alpine:" + "t" * 129, TagInvalid),
        ("alpine:a/b", NameInvalid),
        ("alpine@", DigestInvalid),
        ("alpine@sha256:abc", DigestInvalid),
        ("alpine@md5:" + "a" * 32, DigestInvalid),
        (f"alpine@{D}@{D}", DigestInvalid),
        ("-bad.host/app", NameInvalid),
        ("bad_host.com/app", NameInvalid),
        ("host.com:port/app", NameInvalid),
        ("host.com:/app", NameInvalid),
        ("[zz::1]:5000/app", NameInvalid),
        ("docker.io/", NameInvalid),
        ("ghcr.io//app", NameInvalid),
        ("ghcr.io/app/", NameInvalid),
        ("ghcr.io/../app", NameInvalid),
        ("ghcr.io/a b", NameInvalid),
        ("ghcr.io/app\x00", NameInvalid),
        ("ghcr.io/app\n", NameInvalid),
        ("alpine:latest\n", TagInvalid),
        ("example.com\n/app", NameInvalid),  # a host with a trailing newline
        ("localhost:5000\n/app", NameInvalid),
    ],
)
def test_invalid_references(value: str, error: type[RegistryError]) -> None:
    with pytest.raises(error):
        Reference.parse(value)


def test_uppercase_first_component_is_a_host() -> None:
    # Docker's rule: a first component with uppercase letters cannot be a name, so it is a registry host.
    ref = Reference.parse("MyRegistry/app")
    assert (ref.registry, ref.repository) == ("MyRegistry", "app")


@given(st.text(max_size=300))
@example("ghcr.io/app\n")
@example("example.com\n/app")
def test_arbitrary_text_raises_only_registry_errors(value: str) -> None:
    try:
        ref = Reference.parse(value)
    except (NameInvalid, TagInvalid, DigestInvalid):
        return
    # Whatever parses re-parses to itself from its canonical form.
    assert Reference.parse(str(ref)) == ref
    assert "\n" not in str(ref) and "\x00" not in str(ref)
