"""``cargohold tag delete``, ``image delete`` and ``repository delete`` against the real server, as a user runs them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from clihelpers import Cli, push_image, unique
from ocihelpers import OCI_MANIFEST
from servers import Server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(
        data_dir=tmp_path_factory.mktemp(f"cargohold-cli-delete-{request.param}") / "data", backend=request.param,
        auth=True, workers=1, extra_env={"CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": "1000"},
    ) as server:
        yield server


@pytest.fixture
def make_cli(registry: Server, tmp_path: Path) -> Callable[[str], Cli]:
    def make(name: str = "user") -> Cli:
        home = tmp_path / name
        home.mkdir()
        return Cli(registry, home)

    return make


@pytest.fixture
def admin(make_cli: Callable[[str], Cli]) -> Cli:
    cli = make_cli("admin")
    cli.login_admin()
    return cli


def _admin(server: Server) -> tuple[str, str]:
    return ("admin", server.admin_password)


def _tags(server: Server, repo: str) -> list[str]:
    r = requests.get(f"{server.url}/v2/{repo}/tags/list", auth=_admin(server), timeout=30)
    return sorted(r.json().get("tags") or []) if r.status_code == 200 else []


def _manifest_status(server: Server, repo: str, reference: str) -> int:
    r = requests.head(f"{server.url}/v2/{repo}/manifests/{reference}", auth=_admin(server),
                      headers={"Accept": OCI_MANIFEST}, timeout=30)
    return r.status_code


def _tag_again(server: Server, repo: str, digest: str, tag: str) -> None:
    body = requests.get(f"{server.url}/v2/{repo}/manifests/{digest}", auth=_admin(server),
                        headers={"Accept": OCI_MANIFEST}, timeout=30).content
    r = requests.put(f"{server.url}/v2/{repo}/manifests/{tag}", data=body, auth=_admin(server),
                     headers={"Content-Type": OCI_MANIFEST}, timeout=30)
    assert r.status_code == 201, r.text


def _audit(server: Server, action: str) -> list[dict[str, object]]:
    r = requests.get(f"{server.url}/api/v1/audit", params={"action": action, "limit": "100"}, auth=_admin(server), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["events"]


def test_tag_delete_removes_only_the_tag(admin: Cli, registry: Server) -> None:
    repo = f"team/{unique('tags')}"
    digest = push_image(registry, repo, "1.0")
    _tag_again(registry, repo, digest, "stable")
    result = admin.ok("tag", "delete", f"{repo}:1.0")
    assert f"Deleted tag {repo}:1.0" in result.stderr
    assert _tags(registry, repo) == ["stable"]
    assert _manifest_status(registry, repo, digest) == 200
    gone = admin("tag", "delete", f"{repo}:1.0")
    assert gone.returncode == 1 and "no tag" in gone.stderr
    assert any(e["target"] == f"{repo}:1.0" for e in _audit(registry, "manifest.delete"))


def test_image_delete_removes_the_manifest_and_its_tags(admin: Cli, registry: Server) -> None:
    repo = f"team/{unique('images')}"
    digest = push_image(registry, repo, "1.0")
    _tag_again(registry, repo, digest, "latest")
    other = push_image(registry, repo, "2.0")
    admin.ok("image", "delete", f"{repo}@{digest}")
    assert _manifest_status(registry, repo, digest) == 404
    assert _tags(registry, repo) == ["2.0"]
    assert _manifest_status(registry, repo, other) == 200


def test_references_of_the_wrong_kind_are_usage_errors(admin: Cli) -> None:
    digest = "sha256:" + "a" * 64
    for args, hint in (
        (("tag", "delete", f"team/app@{digest}"), "image delete"),
        (("tag", "delete", "team/app"), "REPO:TAG"),
        (("image", "delete", "team/app:1.0"), "tag delete"),
    ):
        result = admin(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert hint in result.stderr


def test_repository_delete_asks_first_then_deletes_everything(admin: Cli, registry: Server) -> None:
    repo = f"team/{unique('whole')}"
    push_image(registry, repo, "1.0")
    push_image(registry, repo, "2.0")
    refused = admin("repository", "delete", repo)  # stdin is not a terminal: no silent yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert _tags(registry, repo) == ["1.0", "2.0"]

    result = admin.json("repository", "delete", repo, "--yes")
    assert result == {"repository": repo, "tags": 2, "manifests": 2}
    assert repo not in admin.json("repository", "list")
    assert _tags(registry, repo) == []
    events = [e for e in _audit(registry, "repository.delete") if e["target"] == repo]
    assert events and events[0]["outcome"] == "ok" and events[0]["detail"] == {"tags": 2, "manifests": 2}

    again = admin("repository", "delete", repo, "--yes")
    assert again.returncode == 1 and "no repository" in again.stderr
    # The name is free again: a new push starts an empty repository.
    push_image(registry, repo, "3.0")
    assert _tags(registry, repo) == ["3.0"]


def test_deleting_needs_content_delete(admin: Cli, make_cli: Callable[[str], Cli], registry: Server) -> None:
    repo = f"team/{unique('guarded')}"
    digest = push_image(registry, repo, "1.0")
    writers = unique("writers")
    admin.ok("scope-map", "create", writers, "--rule", "team/*=content/read,content/write,metadata/read")
    name, password = unique("writer"), "writer-password-1234"
    admin.ok("user", "create", name, "--scope-map", writers, "--password-stdin", input=password + "\n")
    writer = make_cli(name)
    writer.ok("login", "--username", name, "--password-stdin", input=password + "\n")

    for args in (("repository", "delete", repo, "--yes"), ("tag", "delete", f"{repo}:1.0"), ("image", "delete", f"{repo}@{digest}")):
        result = writer(*args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
    assert _tags(registry, repo) == ["1.0"]
    denied = [e for e in _audit(registry, "repository.delete") if e["target"] == repo]
    assert denied and denied[0]["outcome"] == "denied" and denied[0]["actor"] == name

    deleters = unique("deleters")
    admin.ok("scope-map", "create", deleters, "--rule", f"{repo}=content/read,content/delete")
    admin.ok("user", "update", name, "--scope-map", writers, "--scope-map", deleters)
    writer.ok("repository", "delete", repo, "--yes")
    assert _tags(registry, repo) == []


def test_a_cache_namespace_is_refused(admin: Cli, registry: Server) -> None:
    namespace = unique("mirror")
    r = requests.post(f"{registry.url}/api/v1/cache-rules", auth=_admin(registry), timeout=30,
                      json={"name": namespace, "source": "ghcr.io/*", "target": f"{namespace}/*"})
    assert r.status_code == 201, r.text
    result = admin("repository", "delete", f"{namespace}/app", "--yes")
    assert result.returncode == 1
    assert "cache namespace" in result.stderr and "cache evict" in result.stderr
    r = requests.delete(f"{registry.url}/api/v1/repositories", params={"repository": f"{namespace}/app"},
                        auth=_admin(registry), timeout=30)
    assert r.status_code == 409 and r.json()["code"] == "CACHE_NAMESPACE"


def test_bad_names_get_a_problem_not_a_500(registry: Server) -> None:
    for name in ("", "UPPER/case", "a" * 300, "../etc"):
        r = requests.delete(f"{registry.url}/api/v1/repositories", params={"repository": name}, auth=_admin(registry), timeout=30)
        assert r.status_code in (404, 422), (name, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("application/problem+json")
