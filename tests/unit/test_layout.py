"""OCI layout index handling (``transfer/layout.py``) and layout source parsing, as pure functions: no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from cargohold.cli.layout_transfer import parse_layout_source
from cargohold.transfer.layout import REF_NAME, Layout, LayoutError, StagedLayout, merge_entry, tag_of

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def named(digest: str, name: str | None) -> dict[str, object]:
    entry: dict[str, object] = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 1}
    if name is not None:
        entry["annotations"] = {REF_NAME: name}
    return entry


def test_tag_of() -> None:
    assert tag_of("team/a:1.0") == "1.0"
    assert tag_of("1.0") == "1.0"  # skopeo's bare tag
    assert tag_of("registry:5000/team/a") is None
    assert tag_of(f"team/a@{A}") is None


def test_merge_keeps_images_that_share_a_tag() -> None:
    entries = merge_entry([], named(A, "team/a:1.0"))
    entries = merge_entry(entries, named(B, "team/b:1.0"))
    assert [e["digest"] for e in entries] == [A, B]
    entries = merge_entry(entries, named(B, "team/a:1.0"))  # the same name moves
    assert [(e["digest"], e["annotations"][REF_NAME]) for e in entries] == [(B, "team/b:1.0"), (B, "team/a:1.0")]
    assert len(merge_entry(entries, named(B, None))) == 3
    assert len(merge_entry(merge_entry(entries, named(A, None)), named(A, None))) == 3


def test_parse_layout_source_with_a_colon_in_the_ref(tmp_path: Path) -> None:
    assert parse_layout_source(f"oci-layout:{tmp_path}") == (tmp_path, None)
    assert parse_layout_source(f"oci-layout:{tmp_path}:team/a:1.0") == (tmp_path, "team/a:1.0")
    assert parse_layout_source("oci-layout:/no/such:team/a:1.0") == (Path("/no/such"), "team/a:1.0")


def test_staged_layout_refuses_a_directory_that_is_something_else(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LayoutError, match="not an OCI layout"):
        StagedLayout(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_staged_layout_abort_and_commit_into_an_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "out"
    staged = StagedLayout(target)
    staged.abort()
    assert list(tmp_path.iterdir()) == []
    target.mkdir()
    staged = StagedLayout(target)
    staged.stage.write_blob_bytes("sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", b"{}")
    staged.commit([named(A, "x:1")])
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert Layout(target).find("1")["digest"] == A
