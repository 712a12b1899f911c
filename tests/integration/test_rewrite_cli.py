"""``cargohold rewrite`` and ``cargohold client-config`` as a user runs them, against a real server and upstream.

The upstream is a docker-registry on loopback; cargohold has a rule
``<upstream>/library/* → hub/*``. ``--pin`` must resolve each rewritten tag
through cargohold (filling the cache) to exactly the upstream's digest.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from ocihelpers import push_image
from servers import DockerRegistry, Server

TIMEOUT = 30


@dataclass
class World:
    upstream: DockerRegistry
    server: Server
    home: Path
    digest: str  # of <upstream>/library/alpine:3.20

    def cli(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """A command with the server's URL: ``--registry URL``, as for every command."""
        return self.raw(*args, "--registry", self.server.url, cwd=cwd)

    def raw(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Exactly these arguments (the server's URL only where they, or ``env``, give it)."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_")}
        environ |= {"HOME": str(self.home), "CARGOHOLD_USERNAME": "admin", "CARGOHOLD_PASSWORD": self.server.admin_password}
        return subprocess.run(
            [sys.executable, "-m", "cargohold", *args],
            env=environ | (env or {}), cwd=cwd, capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL,
        )

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.server.url}{path}", auth=("admin", self.server.admin_password),
                                timeout=TIMEOUT, **kwargs)

    def rule(self, **rule: Any) -> None:
        r = requests.post(f"{self.server.url}/api/v1/cache-rules", auth=("admin", self.server.admin_password), json=rule, timeout=TIMEOUT)
        assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("rewrite-cli")
    upstream = DockerRegistry(root / "upstream").start()
    server = None
    try:
        server = Server(root / "data", auth=True, workers=1, extra_env={"CARGOHOLD_ALLOW_PRIVATE_UPSTREAMS": "1"}).start()
        digest, _ = push_image(upstream.url, "library/alpine", "3.20")
        push_image(upstream.url, "library/busybox", "1.36")
        home = root / "home"
        home.mkdir()
        w = World(upstream, server, home, digest)
        w.rule(name="hub", source=f"{upstream.host}/library/*", target="hub/*", insecure=True)
        yield w
    finally:
        if server is not None:
            server.stop()
        upstream.stop()


def test_write_and_pin(world: World, tmp_path: Path) -> None:
    up, host = world.upstream.host, world.server.host
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        f"ARG BASE={up}/library/busybox:1.36\n"
        f"FROM {up}/library/alpine:3.20 AS build\n"
        "# keep this comment\n"
        "FROM $BASE\n"
        "COPY --from=build /etc/os-release /\n"
        f"FROM {host}/team/private:1\n"
    )
    dockerfile.chmod(0o640)
    deploy = tmp_path / "deploy.yaml"
    deploy.write_text(f"spec:\n  containers:\n    - name: a\n      image: \"{up}/library/alpine:3.20\"  # pinned by CI\n")

    result = world.cli("rewrite", str(dockerfile), str(deploy), "--host", host, "--pin", "--write")
    assert result.returncode == 0, result.stderr
    lines = dockerfile.read_text().splitlines()
    assert lines[0].startswith(f"ARG BASE={host}/hub/busybox:1.36@sha256:")
    assert lines[1] == f"FROM {host}/hub/alpine:3.20@{world.digest} AS build"
    assert lines[2:] == ["# keep this comment", "FROM $BASE", "COPY --from=build /etc/os-release /", f"FROM {host}/team/private:1"]
    assert stat.S_IMODE(dockerfile.stat().st_mode) == 0o640
    assert deploy.read_text() == f"spec:\n  containers:\n    - name: a\n      image: \"{host}/hub/alpine:3.20@{world.digest}\"  # pinned by CI\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left behind"
    assert "1 private reference(s) left alone" in " ".join(result.stderr.split())

    # pinned references keep their digest; a second run changes nothing (--registry-host, --host's other name)
    again = world.raw("rewrite", str(dockerfile), str(deploy), "--registry-host", host, "--pin", "--write", "--registry", world.server.url)
    assert again.returncode == 0, again.stderr
    assert dockerfile.read_text().splitlines()[1] == f"FROM {host}/hub/alpine:3.20@{world.digest} AS build"
    assert "rewrote" not in again.stderr


def test_diff_without_write(world: World, tmp_path: Path) -> None:
    up, host = world.upstream.host, world.server.host
    values = tmp_path / "values.yaml"
    original = f"image:\n  repository: {up}/library/alpine\n  tag: \"3.20\"\n"
    values.write_text(original)
    result = world.cli("rewrite", str(values), "--host", host)
    assert result.returncode == 0, result.stderr
    assert values.read_text() == original
    assert f"--- a/{values}\n+++ b/{values}\n" in result.stdout
    assert f"-  repository: {up}/library/alpine\n+  repository: {host}/hub/alpine\n" in result.stdout

    as_json = world.cli("rewrite", str(values), "--host", host, "--output", "json")
    assert as_json.returncode == 0, as_json.stderr
    [finding] = json.loads(as_json.stdout)
    assert finding["status"] == "rewritten" and finding["new"] == f"{host}/hub/alpine:3.20" and finding["line"] == 2


def test_check_exit_codes(world: World, tmp_path: Path) -> None:
    up, host = world.upstream.host, world.server.host
    compose = tmp_path / "compose.yaml"
    compose.write_text(f"services:\n  a:\n    image: {up}/library/alpine:3.20\n  b:\n    image: gcr.io/distroless/static\n")
    result = world.cli("rewrite", str(compose), "--host", host, "--check")
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [f"{compose}:3: {up}/library/alpine:3.20", f"{compose}:5: gcr.io/distroless/static"]
    assert "no cache rule" in result.stderr

    compose.write_text(f"services:\n  a:\n    image: {host}/hub/alpine:3.20\n")
    clean = world.cli("rewrite", str(compose), "--host", host, "--check")
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout == ""
    unpinned = world.cli("rewrite", str(compose), "--host", host, "--check", "--pin")
    assert unpinned.returncode == 1 and "not pinned" in unpinned.stderr
    assert compose.read_text() == f"services:\n  a:\n    image: {host}/hub/alpine:3.20\n"  # --check changes nothing

    assert world.cli("rewrite", str(compose), "--host", host, "--check", "--write").returncode == 2


def test_pin_failure_writes_nothing(world: World, tmp_path: Path) -> None:
    up, host = world.upstream.host, world.server.host
    dockerfile = tmp_path / "Dockerfile"
    original = f"FROM {up}/library/alpine:3.20\nFROM {up}/library/alpine:no-such-tag\n"
    dockerfile.write_text(original)
    result = world.cli("rewrite", str(dockerfile), "--host", host, "--pin", "--write")
    assert result.returncode == 1
    assert "no-such-tag" in result.stderr and "nothing written" in result.stderr
    assert dockerfile.read_text() == original


def test_map_option(world: World, tmp_path: Path) -> None:
    host = world.server.host
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM quay.io/org/tool:1\n")
    assert world.cli("rewrite", str(dockerfile), "--host", host, "--map", "quay.io/org=quay-org", "--write").returncode == 0
    assert dockerfile.read_text() == f"FROM {host}/quay-org/tool:1\n"
    bad = world.cli("rewrite", str(dockerfile), "--host", host, "--map", "nonsense")
    assert bad.returncode == 2


def test_registry_option_forms(world: World, tmp_path: Path) -> None:
    up, host = world.upstream.host, world.server.host
    dockerfile = tmp_path / "Dockerfile"
    original = f"FROM {up}/library/alpine:3.20\n"
    dockerfile.write_text(original)
    expected_diff = f"-FROM {up}/library/alpine:3.20\n+FROM {host}/hub/alpine:3.20\n"

    # --registry is the server, as for every command; the host written defaults to its host and port
    as_url = world.raw("rewrite", str(dockerfile), "--registry", world.server.url)
    assert as_url.returncode == 0, as_url.stderr
    assert expected_diff in as_url.stdout
    # ... and comes from CARGOHOLD_REGISTRY like everywhere; --host names what is written
    from_env = world.raw("rewrite", str(dockerfile), "--host", "cargohold.example.com",
                         env={"CARGOHOLD_REGISTRY": world.server.url})
    assert from_env.returncode == 0, from_env.stderr
    assert "+FROM cargohold.example.com/hub/alpine:3.20\n" in from_env.stdout
    # --server, the old hidden name of --registry, still names the server; a wrong one is "cannot reach", exit 2
    unreachable = world.raw("rewrite", str(dockerfile), "--registry", world.server.url, "--server", "http://127.0.0.1:9")
    assert unreachable.returncode == 2 and "cannot reach http://127.0.0.1:9" in unreachable.stderr
    # --registry given a bare HOST (what it meant here before) is a usage error naming --host; so is a host with a path
    bare = world.raw("rewrite", str(dockerfile), "--registry", host, env={"CARGOHOLD_REGISTRY": world.server.url})
    assert bare.returncode == 2 and "--host" in bare.stderr, bare.stderr
    assert world.cli("rewrite", str(dockerfile), "--host", f"{host}/hub").returncode == 2
    assert dockerfile.read_text() == original
    help_text = world.raw("rewrite", "--help", env={"COLUMNS": "200"}).stdout
    assert "--registry" in help_text and "--host" in help_text and "--server" not in help_text


def test_sync_rule_target_is_used_and_pinned(world: World, tmp_path: Path) -> None:
    up, host = world.upstream.host, world.server.host
    digest, _ = push_image(world.upstream.url, "library/synced", "2.0")
    r = world.admin("POST", "/api/v1/sync-rules", json={
        "name": "synced", "source": f"{up}/library/synced", "target": "base/synced", "tag_regex": r"2\.0", "insecure": True,
    })
    assert r.status_code == 201, r.text
    try:
        run = world.admin("POST", "/api/v1/sync-rules/synced/runs")
        assert run.status_code == 201 and run.json()["state"] == "succeeded", run.text
        dockerfile = tmp_path / "Dockerfile"
        dockerfile.write_text(f"FROM {up}/library/synced:2.0\nFROM {up}/library/alpine:3.20\n")
        result = world.cli("rewrite", str(dockerfile), "--host", host, "--pin", "--write")
        assert result.returncode == 0, result.stderr
        # the sync rule's exact repository beats the cache rule <up>/library/* → hub/*, and the pin is the local tag's
        assert dockerfile.read_text() == f"FROM {host}/base/synced:2.0@{digest}\nFROM {host}/hub/alpine:3.20@{world.digest}\n"
        as_json = world.cli("rewrite", str(dockerfile), "--host", host, "--output", "json")
        assert [f["status"] for f in json.loads(as_json.stdout)] == ["private", "private"]
        listed = world.cli("rewrite", str(tmp_path / "Dockerfile"), "--host", host, "--check")
        assert listed.returncode == 0, listed.stderr

        # a tag the rule did not copy cannot be pinned: cargohold's base/synced is a plain repository, not a cache
        push_image(world.upstream.url, "library/synced", "3.0")
        dockerfile.write_text(f"FROM {up}/library/synced:3.0\n")
        missing = world.cli("rewrite", str(dockerfile), "--host", host, "--pin", "--output", "json")
        assert missing.returncode == 1 and "base/synced:3.0: no such manifest" in " ".join(missing.stderr.split())
        [finding] = json.loads(missing.stdout)
        assert finding["via"] == "sync rule synced"
    finally:
        assert world.admin("DELETE", "/api/v1/sync-rules/synced").status_code == 204


def test_client_config(world: World) -> None:
    up, host = world.upstream.host, world.server.host
    containerd = world.cli("client-config", "containerd")
    assert containerd.returncode == 0, containerd.stderr
    assert containerd.stdout == (
        f"# /etc/containerd/certs.d/{up}/hosts.toml\n"
        f'server = "http://{up}"\n\n'
        f'[host."http://{host}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )
    podman = world.cli("client-config", "podman", "--host", "cargohold.example.com")
    assert podman.returncode == 0, podman.stderr
    assert (
        f'[[registry]]\nprefix = "{up}/library"\nlocation = "{up}/library"\ninsecure = true\n\n'
        '[[registry.mirror]]\nlocation = "cargohold.example.com/hub"\n'
    ) in podman.stdout

    docker = world.cli("client-config", "docker")
    assert docker.returncode == 1
    assert "--dockerhub-mirror" in docker.stderr
    world.rule(name="dh", source="docker.io/library/*", target="dh/*", dockerhub_mirror=True)
    docker = world.cli("client-config", "docker", "--host", "https://cargohold.example.com")
    assert docker.returncode == 0, docker.stderr
    assert json.loads(docker.stdout) == {"registry-mirrors": ["https://cargohold.example.com"]}
    containerd = world.cli("client-config", "containerd", "--host", "https://cargohold.example.com")
    assert '# /etc/containerd/certs.d/docker.io/hosts.toml\nserver = "https://registry-1.docker.io"\n' in containerd.stdout
    assert '[host."https://cargohold.example.com"]\n' in containerd.stdout

    # a bare --host takes the scheme of the plain-HTTP --registry: containerd, docker and podman all say http
    containerd = world.cli("client-config", "containerd", "--host", "cargohold.example.com:5000")
    assert containerd.returncode == 0, containerd.stderr
    assert '[host."http://cargohold.example.com:5000"]\n  capabilities = ["pull", "resolve"]\n' in containerd.stdout
    assert "https://cargohold.example.com" not in containerd.stdout
    docker = world.cli("client-config", "docker", "--host", "cargohold.example.com:5000")
    assert json.loads(docker.stdout) == {"registry-mirrors": ["http://cargohold.example.com:5000"],
                                         "insecure-registries": ["cargohold.example.com:5000"]}
    podman = world.cli("client-config", "podman", "--host", "cargohold.example.com:5000")
    assert '[[registry.mirror]]\nlocation = "cargohold.example.com:5000/hub"\ninsecure = true\n' in podman.stdout
