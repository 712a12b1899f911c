"""Schemathesis against /api/v1/openapi.json of a running server, as an admin: no 5xx, answers as documented.

Bounded: at most 25 generated examples per operation, no stateful runs, no
deadline. The fuzzing admin has a long random name, so generated path
parameters never hit it (nor the bootstrap ``admin``, kept as the last resort).
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from servers import Server, drop_postgres_schema

# Status codes seen per backend and operation: proof that the fuzzing got past authentication.
SEEN: dict[str, dict[str, Counter[int]]] = defaultdict(lambda: defaultdict(Counter))
NO_THROTTLE = {"CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": "100000"}
# Operations that talk to other registries: for them 502 (the upstream failed) is a documented answer.
UPSTREAM_OPERATIONS = frozenset({"POST /api/v1/imports", "POST /api/v1/cache/warm"})
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fuzz_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    server = Server(data_dir=tmp / "data", backend=request.param, auth=True, extra_env=NO_THROTTLE).start()
    try:
        yield server
    finally:
        server.stop()
        if server.schema:
            drop_postgres_schema(server.schema)


@pytest.fixture(scope="module")
def fuzz_admin(fuzz_server: Server) -> tuple[str, str]:
    name, password = f"fuzz-admin-{uuid.uuid4().hex}", f"pw-{uuid.uuid4().hex}"
    r = requests.post(
        f"{fuzz_server.url}/api/v1/users",
        json={"name": name, "password": password, "admin": True},
        auth=("admin", fuzz_server.admin_password),
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return name, password


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Server) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/api/v1/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _pytest9_node_id(request: pytest.FixtureRequest) -> None:
    """schemathesis' lazy-schema runner reads ``node._nodeid``, which pytest 9 no longer has."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_management_api_fuzz(case: Any, fuzz_server: Server, fuzz_admin: tuple[str, str]) -> None:
    response = case.call(base_url=fuzz_server.url, auth=fuzz_admin, timeout=30)
    SEEN[fuzz_server.backend][case.operation.label][response.status_code] += 1
    checks = CHECKS
    if response.status_code == 502 and case.operation.label in UPSTREAM_OPERATIONS:
        # A fuzzed source names a registry this machine cannot reach: a documented 502 problem, not a crash.
        content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type")
        content_type = content_type[0] if isinstance(content_type, list) else content_type
        assert (content_type or "").startswith("application/problem+json"), (content_type, response.text)
        checks = [c for c in CHECKS if c is not not_a_server_error]
    case.validate_response(response, checks=checks)


def test_fuzzing_reached_every_operation_and_left_the_server_usable(fuzz_server: Server, fuzz_admin: tuple[str, str]) -> None:
    seen = SEEN[fuzz_server.backend]
    doc = requests.get(f"{fuzz_server.url}/api/v1/openapi.json", timeout=30).json()
    documented = {f"{method.upper()} {path}" for path, operations in doc["paths"].items() for method in operations}
    documented.discard("GET /api/v1/openapi.json")  # no parameters, nothing to generate: schemathesis skips it
    assert set(seen) == documented, sorted(documented ^ set(seen))
    for operation, statuses in seen.items():
        assert set(statuses) - {401, 403}, f"{operation}: never got past authentication: {dict(statuses)}"
    for operation in ("GET /api/v1/users", "POST /api/v1/users", "POST /api/v1/tokens", "POST /api/v1/scope-maps",
                      "GET /api/v1/audit", "POST /api/v1/keys/rotate", "GET /api/v1/me", "GET /api/v1/cache-rules",
                      "GET /api/v1/credential-sets"):
        assert any(200 <= s < 300 for s in seen[operation]), f"{operation}: {dict(seen[operation])}"
    for auth in (fuzz_admin, ("admin", fuzz_server.admin_password)):
        r = requests.get(f"{fuzz_server.url}/api/v1/me", auth=auth, timeout=30)
        assert r.status_code == 200 and r.json()["admin"] is True, r.text
