"""oci/manifest.py: what a manifest references, and whether it is well formed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cargohold.oci import mediatypes as mt
from cargohold.oci.digest import Digest
from cargohold.oci.errors import ManifestInvalid
from cargohold.oci.manifest import Descriptor, ParsedManifest, parse_manifest

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
D4 = "sha512:" + "4" * 128
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


def desc(media_type: str, digest: str, size: int = 10, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def oci_manifest(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": desc(mt.OCI_CONFIG, D1, 100),
        "layers": [desc(LAYER, D2, 200), desc(LAYER, D3, 300)],
    }
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not ...}


def oci_index(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            desc(mt.OCI_MANIFEST, D1, 500, platform={"architecture": "amd64", "os": "linux"}),
            desc(mt.OCI_MANIFEST, D2, 501, platform={"architecture": "arm64", "os": "linux"}),
        ],
    }
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not ...}


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def parse(doc: Any, content_type: str | None = None) -> ParsedManifest:
    return parse_manifest(raw(doc), content_type)


# ---- each media type --------------------------------------------------------


def test_oci_image_manifest() -> None:
    p = parse(oci_manifest(annotations={"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}), mt.OCI_MANIFEST)
    assert p.media_type == mt.OCI_MANIFEST
    assert [d.digest for d in p.blobs] == [D1, D2, D3]
    assert [d.size for d in p.blobs] == [100, 200, 300]
    assert p.blobs[0] == Descriptor(mt.OCI_CONFIG, D1, 100)
    assert p.manifests == ()
    assert p.subject is None
    assert p.annotations == {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
    assert p.required_blobs == p.blobs


def test_oci_index() -> None:
    p = parse(oci_index(), mt.OCI_INDEX)
    assert p.media_type == mt.OCI_INDEX
    assert [d.digest for d in p.manifests] == [D1, D2]
    assert all(d.media_type == mt.OCI_MANIFEST for d in p.manifests)
    assert p.blobs == () and p.required_blobs == ()
    assert p.artifact_type is None


def test_docker_manifest() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": desc(DOCKER_CONFIG, D1, 1000),
        "layers": [desc(DOCKER_LAYER, D2, 2000)],
    }
    p = parse(doc, mt.DOCKER_MANIFEST)
    assert p.media_type == mt.DOCKER_MANIFEST
    assert [d.digest for d in p.required_blobs] == [D1, D2]
    # artifactType falls back to the config media type for OCI image manifests only.
    assert p.artifact_type is None


def test_docker_manifest_requires_layers() -> None:
    doc = {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST, "config": desc(DOCKER_CONFIG, D1)}
    with pytest.raises(ManifestInvalid):
        parse(doc)


def test_docker_manifest_list() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST_LIST,
        "manifests": [desc(mt.DOCKER_MANIFEST, D1, 7, platform={"architecture": "amd64", "os": "linux"})],
    }
    p = parse(doc, mt.DOCKER_MANIFEST_LIST)
    assert p.media_type == mt.DOCKER_MANIFEST_LIST
    assert [d.digest for d in p.manifests] == [D1]


def test_index_with_artifact_type_and_subject() -> None:
    p = parse(oci_index(artifactType="application/vnd.example.sbom", subject=desc(mt.OCI_MANIFEST, D3, 9)))
    assert p.artifact_type == "application/vnd.example.sbom"
    assert p.subject == Descriptor(mt.OCI_MANIFEST, D3, 9)


def test_sha512_descriptors_are_accepted() -> None:
    p = parse(oci_manifest(layers=[desc(LAYER, D4, 1)]))
    assert p.blobs[1].digest == D4


def test_empty_layers_are_accepted_for_oci() -> None:
    assert parse(oci_manifest(layers=[])).blobs == (Descriptor(mt.OCI_CONFIG, D1, 100),)


# ---- missing mediaType: Content-Type decides ----------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (mt.OCI_MANIFEST, mt.OCI_MANIFEST),
        (mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST),
        (mt.OCI_MANIFEST + "; charset=utf-8", mt.OCI_MANIFEST),
        ("  " + mt.OCI_MANIFEST.upper() + " ", mt.OCI_MANIFEST),
        (None, mt.OCI_MANIFEST),
        ("", mt.OCI_MANIFEST),
        ("application/json", mt.OCI_MANIFEST),
    ],
)
def test_image_manifest_without_media_type(content_type: str | None, expected: str) -> None:
    p = parse(oci_manifest(mediaType=...), content_type)
    assert p.media_type == expected
    assert [d.digest for d in p.blobs] == [D1, D2, D3]


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [(mt.OCI_INDEX, mt.OCI_INDEX), (mt.DOCKER_MANIFEST_LIST, mt.DOCKER_MANIFEST_LIST), (None, mt.OCI_INDEX)],
)
def test_index_without_media_type(content_type: str | None, expected: str) -> None:
    p = parse(oci_index(mediaType=...), content_type)
    assert p.media_type == expected
    assert [d.digest for d in p.manifests] == [D1, D2]


def test_content_type_that_contradicts_the_body_is_refused() -> None:
    with pytest.raises(ManifestInvalid):
        parse(oci_index(mediaType=...), mt.OCI_MANIFEST)
    with pytest.raises(ManifestInvalid):
        parse(oci_manifest(mediaType=...), mt.OCI_INDEX)


def test_no_media_type_anywhere_and_no_shape_is_refused() -> None:
    with pytest.raises(ManifestInvalid):
        parse({"schemaVersion": 2})
    with pytest.raises(ManifestInvalid):
        parse({"schemaVersion": 2, "layers": []}, "application/octet-stream")


def test_declared_media_type_must_match_a_manifest_content_type() -> None:
    with pytest.raises(ManifestInvalid):
        parse(oci_manifest(), mt.DOCKER_MANIFEST)
    with pytest.raises(ManifestInvalid):
        parse(oci_manifest(), mt.OCI_INDEX)
    with pytest.raises(ManifestInvalid):
        parse(oci_index(), mt.OCI_MANIFEST)
    # A non-manifest Content-Type does not contradict anything: the body's mediaType wins.
    assert parse(oci_manifest(), "application/json").media_type == mt.OCI_MANIFEST


@pytest.mark.parametrize("media_type", ["application/vnd.oci.image.config.v1+json", "application/json", "", "text/plain"])
def test_unsupported_declared_media_type(media_type: str) -> None:
    with pytest.raises(ManifestInvalid):
        parse(oci_manifest(mediaType=media_type))


def test_declared_media_type_must_be_a_string() -> None:
    with pytest.raises(ManifestInvalid):
        parse(oci_manifest(mediaType=5))
    with pytest.raises(ManifestInvalid):
        parse(oci_manifest(mediaType=[mt.OCI_MANIFEST]))


# ---- schema 1 and schemaVersion ---------------------------------------------


SCHEMA1 = {
    "schemaVersion": 1,
    "name": "library/alpine",
    "tag": "latest",
    "architecture": "amd64",
    "fsLayers": [{"blobSum": D1}],
    "history": [{"v1Compatibility": "{}"}],
}


@pytest.mark.parametrize(
    ("doc", "content_type"),
    [
        (SCHEMA1, None),
        (SCHEMA1, mt.DOCKER_SCHEMA1),
        (SCHEMA1, mt.DOCKER_SCHEMA1_SIGNED),
        ({**SCHEMA1, "signatures": []}, mt.DOCKER_SCHEMA1_SIGNED),
        (oci_manifest(), mt.DOCKER_SCHEMA1_SIGNED),
        (oci_manifest(mediaType=mt.DOCKER_SCHEMA1), None),
        (oci_manifest(schemaVersion=1), None),
    ],
)
def test_schema1_is_refused(doc: dict[str, Any], content_type: str | None) -> None:
    with pytest.raises(ManifestInvalid, match="(?i)schema 1"):
        parse(doc, content_type)


@pytest.mark.parametrize("version", [..., 0, 3, "2", None, [2]])
def test_schema_version_must_be_2(version: Any) -> None:
    with pytest.raises(ManifestInvalid):
        parse(oci_manifest(schemaVersion=version))


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b"null", b"2", b'"manifest"', b"\xff\xfe\x00garbage", b'{"schemaVersion": 2', b"\x00"],
)
def test_not_a_json_object(body: bytes) -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(body, mt.OCI_MANIFEST)


# ---- invalid descriptors ------------------------------------------------------


BAD_DESCRIPTORS: list[Any] = [
    None,
    "sha256:" + "1" * 64,
    [desc(LAYER, D1)],
    {"digest": D1, "size": 1},
    desc("", D1),
    desc(5, D1),  # type: ignore[arg-type]
    {"mediaType": LAYER, "size": 1},
    desc(LAYER, "sha256:abc"),
    desc(LAYER, "md5:" + "1" * 32),
    desc(LAYER, "sha256:" + "A" * 64),
    desc(LAYER, 12345),  # type: ignore[arg-type]
    {"mediaType": LAYER, "digest": D1},
    desc(LAYER, D1, -1),
    desc(LAYER, D1, True),  # type: ignore[arg-type]
    desc(LAYER, D1, 1.5),  # type: ignore[arg-type]
    desc(LAYER, D1, "10"),  # type: ignore[arg-type]
    desc(LAYER, D1, None),  # type: ignore[arg-type]
    desc(LAYER, D1, artifactType=7),
    desc(LAYER, D1, urls="https://example.com/layer"),
    desc(LAYER, D1, urls=[1]),
    desc(LAYER, D1, annotations={"a": 1}),
    desc(LAYER, D1, annotations=["a"]),
]


@pytest.mark.parametrize("bad", BAD_DESCRIPTORS)
def test_invalid_config(bad: Any) -> None:
    with pytest.raises(ManifestInvalid):
        parse(oci_manifest(config=bad))


@pytest.mark.parametrize("bad", [b for b in BAD_DESCRIPTORS if b is not None])
def test_invalid_layer(bad: Any) -> None:
    with pytest.raises(ManifestInvalid):
        parse(oci_manifest(layers=[desc(LAYER, D2), bad]))


@pytest.mark.parametrize("bad", [b for b in BAD_DESCRIPTORS if b is not None])
def test_invalid_index_child(bad: Any) -> None:
    with pytest.raises(ManifestInvalid):
        parse(oci_index(manifests=[bad]))


@pytest.mark.parametrize("bad", [b for b in BAD_DESCRIPTORS if b is not None])
def test_invalid_subject(bad: Any) -> None:
    with pytest.raises(ManifestInvalid):
        parse(oci_manifest(subject=bad))


@pytest.mark.parametrize("layers", [{}, "layers", 5, {"0": desc(LAYER, D2)}])
def test_layers_must_be_a_list(layers: Any) -> None:
    with pytest.raises(ManifestInvalid):
        parse(oci_manifest(layers=layers))


@pytest.mark.parametrize("manifests", [..., None, {}, "x", 1])
def test_index_needs_a_manifests_list(manifests: Any) -> None:
    with pytest.raises(ManifestInvalid):
        parse(oci_index(manifests=manifests))


def test_image_manifest_needs_a_config() -> None:
    with pytest.raises(ManifestInvalid):
        parse(oci_manifest(config=...))
    with pytest.raises(ManifestInvalid):
        parse(oci_manifest(config=..., mediaType=...), mt.OCI_MANIFEST)


@pytest.mark.parametrize("annotations", [[], "x", {"a": None}, {"a": ["b"]}, 5])
def test_top_level_annotations_must_map_strings(annotations: Any) -> None:
    with pytest.raises(ManifestInvalid):
        parse(oci_manifest(annotations=annotations))


@pytest.mark.parametrize("artifact_type", [5, ["x"], {"a": "b"}, True])
def test_artifact_type_must_be_a_string(artifact_type: Any) -> None:
    with pytest.raises(ManifestInvalid):
        parse(oci_manifest(artifactType=artifact_type))


# ---- artifactType ----------------------------------------------------------------


def test_artifact_type_falls_back_to_config_media_type() -> None:
    config = desc("application/vnd.example.thing.config.v1+json", D1, 2)
    assert parse(oci_manifest(config=config)).artifact_type == "application/vnd.example.thing.config.v1+json"
    # Also when the media type came from Content-Type rather than the body.
    assert parse(oci_manifest(config=config, mediaType=...), mt.OCI_MANIFEST).artifact_type == config["mediaType"]


def test_explicit_artifact_type_wins_over_config() -> None:
    doc = oci_manifest(artifactType="application/vnd.example.sig", config=desc(mt.OCI_EMPTY, D1, 2))
    assert parse(doc).artifact_type == "application/vnd.example.sig"


def test_empty_artifact_type_is_not_reported_as_the_type() -> None:
    """distribution-spec (referrers): "If the artifactType is empty or missing in the image manifest,
    the value of artifactType MUST be set to the config descriptor mediaType value"."""
    doc = oci_manifest(artifactType="", config=desc("application/vnd.example.cfg", D1, 2))
    try:
        p = parse(doc)
    except ManifestInvalid:
        return  # refusing an empty (non-RFC 6838) artifactType is also correct
    assert p.artifact_type == "application/vnd.example.cfg"


# ---- non-distributable layers ---------------------------------------------------------


@pytest.mark.parametrize("media_type", sorted(mt.NON_DISTRIBUTABLE_LAYERS))
def test_non_distributable_layers_are_not_required(media_type: str) -> None:
    doc = oci_manifest(layers=[desc(LAYER, D2), desc(media_type, D3, urls=["https://example.com/l"]), desc(media_type, D4)])
    p = parse(doc)
    assert [d.digest for d in p.blobs] == [D1, D2, D3, D4]
    assert [d.digest for d in p.required_blobs] == [D1, D2]
    assert p.blobs[2].is_non_distributable and p.blobs[2].urls == ("https://example.com/l",)


def test_docker_foreign_layer_is_not_required() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": desc(DOCKER_CONFIG, D1),
        "layers": [desc(FOREIGN, D2, urls=["https://mcr.microsoft.com/l"]), desc(DOCKER_LAYER, D3)],
    }
    assert [d.digest for d in parse(doc).required_blobs] == [D1, D3]


def test_layer_with_urls_is_not_required() -> None:
    p = parse(oci_manifest(layers=[desc(LAYER, D2, urls=["https://example.com/blob"]), desc(LAYER, D3, urls=[])]))
    assert [d.digest for d in p.required_blobs] == [D1, D3]


# ---- subject ----------------------------------------------------------------------------


def test_subject_is_parsed() -> None:
    subject = desc(mt.OCI_MANIFEST, D4, 1234, annotations={"k": "v"}, artifactType="application/x")
    p = parse(oci_manifest(artifactType="application/vnd.example.sig", subject=subject))
    assert p.subject == Descriptor(mt.OCI_MANIFEST, D4, 1234, "application/x", {"k": "v"})
    # The subject is not a blob the manifest needs.
    assert D4 not in {d.digest for d in p.required_blobs}


def test_null_subject_is_no_subject() -> None:
    assert parse(oci_manifest(subject=None)).subject is None


# ---- nothing but ManifestInvalid, whatever the input ----------------------------------


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(sorted(mt.MANIFESTS | mt.SCHEMA1) + ["application/json", "", ";", "text/plain; charset=utf-8"]),
    st.text(max_size=40),
)
media_types = st.one_of(st.sampled_from(sorted(mt.MANIFESTS | mt.SCHEMA1 | mt.NON_DISTRIBUTABLE_LAYERS) + [LAYER, mt.OCI_CONFIG, ""]), json_values)
digests = st.one_of(
    st.sampled_from([D1, D2, D4, "sha256:" + "A" * 64, "sha256:", "md5:" + "0" * 32]),
    st.builds(lambda b: str(Digest.of(b)), st.binary(max_size=8)),
    json_values,
)
descriptors = st.one_of(
    st.fixed_dictionaries(
        {"mediaType": media_types, "digest": digests, "size": st.one_of(st.integers(-2, 2**63), json_values)},
        optional={
            "urls": st.one_of(st.lists(st.text(max_size=10), max_size=2), json_values),
            "annotations": st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2), json_values),
            "artifactType": st.one_of(st.text(max_size=20), json_values),
            "platform": json_values,
        },
    ),
    json_values,
)
manifest_like = st.fixed_dictionaries(
    {},
    optional={
        "schemaVersion": st.one_of(st.sampled_from([2, 1, 2.0, "2", True]), json_values),
        "mediaType": media_types,
        "config": descriptors,
        "layers": st.one_of(st.lists(descriptors, max_size=3), json_values),
        "manifests": st.one_of(st.lists(descriptors, max_size=3), json_values),
        "subject": descriptors,
        "artifactType": st.one_of(st.text(max_size=20), json_values),
        "annotations": st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2), json_values),
    },
)


def check_parsed(p: ParsedManifest) -> None:
    """Whatever parses is internally consistent."""
    assert p.media_type in mt.MANIFESTS
    for d in (*p.blobs, *p.manifests, *([p.subject] if p.subject else [])):
        assert Digest.is_valid(d.digest)
        assert isinstance(d.size, int) and not isinstance(d.size, bool) and d.size >= 0
        assert isinstance(d.media_type, str) and d.media_type
    if p.media_type in mt.INDEXES:
        assert p.blobs == ()
    else:
        assert p.manifests == () and p.blobs, "an image manifest has at least its config"
    assert set(p.required_blobs) <= set(p.blobs)
    assert not any(d.is_non_distributable for d in p.required_blobs)
    if p.media_type == mt.OCI_MANIFEST:
        assert isinstance(p.artifact_type, str)


@given(manifest_like, content_types)
@settings(max_examples=500)
def test_manifest_shaped_input_raises_only_manifest_invalid(doc: dict[str, Any], content_type: str | None) -> None:
    try:
        p = parse_manifest(json.dumps(doc).encode(), content_type)
    except ManifestInvalid:
        return
    check_parsed(p)


@given(json_values, content_types)
def test_arbitrary_json_raises_only_manifest_invalid(doc: Any, content_type: str | None) -> None:
    try:
        p = parse_manifest(json.dumps(doc).encode(), content_type)
    except ManifestInvalid:
        return
    check_parsed(p)


@given(st.binary(max_size=2000), content_types)
@example(b"\xef\xbb\xbf{}", None)  # a UTF-8 byte order mark
@example(b'{"schemaVersion": 2, "size": 1' + b"0" * 5000 + b"}", None)  # an integer beyond int-max-str-digits
@example(b"\x00\x00\x00{", None)
@example(b'{"schemaVersion": 2, "config": {"mediaType": "a", "digest": "sha256:\\ud800", "size": 1}}', None)
def test_arbitrary_bytes_raise_only_manifest_invalid(body: bytes, content_type: str | None) -> None:
    try:
        p = parse_manifest(body, content_type)
    except ManifestInvalid:
        return
    check_parsed(p)


DEPTH = 100_000


@pytest.mark.parametrize(
    "body",
    [
        b"[" * DEPTH + b"]" * DEPTH,
        b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
        b'{"schemaVersion": 2, "config": ' + b"[" * DEPTH + b"]" * DEPTH + b"}",
    ],
    ids=["deep-array", "deep-object", "deep-config"],
)
def test_deeply_nested_json_is_manifest_invalid(body: bytes) -> None:
    """A few hundred kilobytes of brackets must be a 400 MANIFEST_INVALID, not a RecursionError (500)."""
    try:
        parse_manifest(body, mt.OCI_MANIFEST)
    except ManifestInvalid:
        pass
    except RecursionError:
        pytest.fail(f"parse_manifest let RecursionError escape for {len(body)} bytes of nested JSON")
    else:
        pytest.fail("deeply nested JSON was accepted as a manifest")
