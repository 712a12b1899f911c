"""Shared pieces of the import, provenance and sync-rule tests: a docker-registry upstream behind the counting,
fault-injecting ``UpstreamProxy``, and the management-API and CLI calls they make as the admin."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from cachehelpers import docker_registry, random_config
from ocihelpers import (
    OCI_CONFIG,
    OCI_LAYER,
    descriptor,
    image_manifest,
    push_blob,
    push_manifest,
)
from servers import DockerRegistry, Server
from upstream_proxy import FaultHandler, UpstreamProxy

TIMEOUT = 60


def proxied_upstream(name: str, faults: Mapping[str, FaultHandler] | None = None) -> tuple[Callable[..., Any], ...]:
    """The fixtures of a test module, to assign to ``upstream, proxy, _clean_proxy``: ``upstream``, a docker-registry
    (in a temporary directory named ``name``); ``proxy``, an ``UpstreamProxy`` in front of it that also knows the
    fault modes ``faults``; both once per module. And, autouse, ``_clean_proxy``: no fault and no counts when a test
    starts, no fault after it."""

    @pytest.fixture(scope="module")
    def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
        with docker_registry(tmp_path_factory.mktemp(name)) as registry:
            yield registry

    @pytest.fixture(scope="module")
    def proxy(upstream: DockerRegistry) -> Iterator[UpstreamProxy]:
        with UpstreamProxy(upstream.url) as running:
            running.faults.update(faults or {})
            yield running

    @pytest.fixture(autouse=True)
    def _clean_proxy(proxy: UpstreamProxy) -> Iterator[None]:
        proxy.clear_fault()
        proxy.reset()
        yield
        proxy.clear_fault()

    return upstream, proxy, _clean_proxy


def admin(server: Server) -> tuple[str, str]:
    return ("admin", server.admin_password)


def api(server: Server, method: str, path: str, auth: Any = None, timeout: float = TIMEOUT, **kwargs: Any) -> requests.Response:
    """``method`` on ``/api/v1{path}`` as ``auth`` (the admin by default)."""
    return requests.request(method, f"{server.url}/api/v1{path}", auth=auth or admin(server), timeout=timeout, **kwargs)


def start_import(server: Server, source: str, auth: Any = None, **body: Any) -> requests.Response:
    return api(server, "POST", "/imports", auth, json={"source": source, "insecure": True, **body})


def wait_done(server: Server, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """Import job ``job_id`` once it no longer runs (or as it is after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        job = api(server, "GET", f"/imports/{job_id}").json()
        if job["state"] != "running" or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def problem(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    """The body of a problem+json answer with this status and code, and a ``detail``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    assert body["detail"], body
    return body


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def make_robot(server: Server, rules: list[dict[str, Any]]) -> tuple[str, str]:
    """A robot with a new scope map of ``rules``; its ``(name, token)``."""
    name = f"map{uuid.uuid4().hex[:8]}"
    assert api(server, "POST", "/scope-maps", json={"name": name, "rules": rules}).status_code == 201
    created = api(server, "POST", "/tokens", json={"name": f"robot{uuid.uuid4().hex[:8]}", "scope_maps": [name]})
    assert created.status_code == 201, created.text
    return created.json()["name"], created.json()["token"]


def push_one_layer_image(url: str, repo: str, reference: str, layer: bytes, config: bytes | None = None) -> bytes:
    """An OCI image of ``config`` (a random one by default) and ``layer`` into the registry at ``url``, tagged
    ``reference``; its config."""
    config = config or random_config()
    push_blob(url, repo, config)
    push_blob(url, repo, layer)
    push_manifest(url, repo, image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)]), reference=reference)
    return config


def admin_cli(server: Server, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``cargohold ARGS --registry <server>`` as the admin (credentials in the environment), with ``HOME`` at ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_")}
    env |= {"HOME": str(home), "CARGOHOLD_USERNAME": "admin", "CARGOHOLD_PASSWORD": server.admin_password}
    return subprocess.run(
        [sys.executable, "-m", "cargohold", *args, "--registry", server.url], env=env, capture_output=True, text=True,
        timeout=120, check=False, stdin=subprocess.DEVNULL,
    )
