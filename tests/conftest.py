"""Shared fixtures: a real cargohold on SQLite and on PostgreSQL, and a real docker-registry."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import DockerRegistry, Server, drop_postgres_schema

BACKENDS = ["sqlite", "postgres"]


def _run(tmp: Path, backend: str) -> Iterator[Server]:
    server = Server(data_dir=tmp / "data", backend=backend).start()
    try:
        yield server
    finally:
        server.stop()
        if server.schema:
            drop_postgres_schema(server.schema)


@pytest.fixture(scope="session", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per metadata backend for the whole session; tests use their own repository names."""
    yield from _run(tmp_path_factory.mktemp(f"cargohold-{request.param}"), request.param)


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """For the heavier client tests, which exercise the API rather than the metadata backend."""
    yield from _run(tmp_path_factory.mktemp("cargohold-clients"), "sqlite")


@pytest.fixture(scope="session")
def docker_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    if not shutil.which("docker-registry") and not Path("/usr/bin/docker-registry").exists():
        pytest.fail("docker-registry is not installed; run `make test`, which installs it")
    peer = DockerRegistry(tmp_path_factory.mktemp("docker-registry")).start()
    try:
        yield peer
    finally:
        peer.stop()
