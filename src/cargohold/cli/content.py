"""``cargohold tag delete REPO:TAG`` and ``cargohold image delete REPO@DIGEST``: deletes over the registry API.

Both are one ``DELETE /v2/<repo>/manifests/<reference>`` with the stored login
(``registry_client.py``), so they need exactly the right a docker or oras
client would need (``content/delete`` on the repository) and are audited by
the server like any other delete. A tag delete removes only the tag; an image
delete removes the manifest and every tag that names it. The blobs' bytes stay
in the store (other repositories may share them). A cache namespace refuses
both: its content is the upstream's.

Conventions as in ``access.py``: messages on stderr; exit 1 the server
refused, 2 bad usage or unreachable.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from .access import RegistryOpt, _typer, err, fail, session
from .client import DEFAULT_REGISTRY, ApiError
from .registry_client import RegistryClient

tag_app = _typer("Delete tags (the manifest they name stays).")
image_app = _typer("Delete images by digest (the manifest and every tag on it).")


def split_tag(ref: str) -> tuple[str, str]:
    """``team/app:1.0`` → (``team/app``, ``1.0``)."""
    if "@" in ref:
        raise typer.BadParameter(f"{ref!r} names a digest: use `cargohold image delete REPO@DIGEST`", param_hint="REPO:TAG")
    name, sep, tag = ref.rpartition(":")
    if not sep or not name or not tag or "/" in tag:
        raise typer.BadParameter(f"{ref!r} is not REPO:TAG, e.g. team/app:1.0", param_hint="REPO:TAG")
    return name, tag


def split_digest(ref: str) -> tuple[str, str]:
    """``team/app@sha256:…`` → (``team/app``, ``sha256:…``)."""
    name, sep, digest = ref.partition("@")
    if not sep:
        raise typer.BadParameter(
            f"{ref!r} is not REPO@DIGEST (to delete a tag only: `cargohold tag delete REPO:TAG`)", param_hint="REPO@DIGEST"
        )
    if not name or ":" not in digest:
        raise typer.BadParameter(f"{ref!r} is not REPO@DIGEST, e.g. team/app@sha256:…", param_hint="REPO@DIGEST")
    return name, digest


def _delete(registry: str, name: str, reference: str, what: str) -> None:
    with session(registry) as client:
        v2 = RegistryClient(client.registry, client.credentials)
        try:
            v2.delete_manifest(name, reference)
        except ApiError as exc:
            if exc.status == 404:
                raise fail(f"no {what} in {client.registry}") from None
            raise
    err.print(f"Deleted {escape(what)}.")


@tag_app.command("delete")
def tag_delete(
    ref: Annotated[str, typer.Argument(metavar="REPO:TAG", help="the tag to delete, e.g. team/app:1.0")],
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Delete a tag; the manifest it named stays, by digest and under its other tags."""
    name, tag = split_tag(ref)
    _delete(registry, name, tag, f"tag {name}:{tag}")


@image_app.command("delete")
def image_delete(
    ref: Annotated[str, typer.Argument(metavar="REPO@DIGEST", help="the manifest to delete, e.g. team/app@sha256:…")],
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Delete a manifest by digest, and every tag that names it."""
    name, digest = split_digest(ref)
    _delete(registry, name, digest, f"image {name}@{digest}")


def register(root: typer.Typer) -> None:
    """Add ``cargohold tag`` and ``cargohold image`` to the top-level app."""
    root.add_typer(tag_app, name="tag")
    root.add_typer(image_app, name="image")
