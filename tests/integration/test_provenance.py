"""Provenance of imports (``GET /api/v1/provenance``, ``cargohold repository show``) and import jobs that outlive a worker.

The source is a real docker-registry behind the counting, fault-injecting
``UpstreamProxy``; the server runs with two workers and auth on, and is
restarted (and killed) by the tests that need it to be.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from cachehelpers import cache_server
from importhelpers import (
    TIMEOUT,
    admin,
    admin_cli,
    api,
    make_robot,
    problem,
    proxied_upstream,
    push_one_layer_image,
    start_import,
    unique,
    wait_done,
)
from ocihelpers import OCI_MANIFEST, digest_of, push_image
from servers import DockerRegistry, Server
from upstream_proxy import UpstreamProxy

upstream, proxy, _clean_proxy = proxied_upstream("provenance-upstream")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with cache_server(tmp_path_factory.mktemp("provenance-server") / "data", workers=2) as running:
        yield running


def provenance(server: Server, repository: str, auth: Any = None, **params: Any) -> list[dict[str, Any]]:
    r = api(server, "GET", "/provenance", auth, params={"repository": repository, **params})
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


# ---- the API -------------------------------------------------------------------------------------


def test_each_import_records_its_provenance_and_force_shows_the_new_source(
    server: Server, upstream: DockerRegistry, proxy: UpstreamProxy
) -> None:
    src = unique("prov")
    first, _ = push_image(upstream.url, src, "a")
    second, _ = push_image(upstream.url, src, "b")
    target = unique("imp")
    before = datetime.now(UTC) - timedelta(seconds=5)
    r = start_import(server, f"{proxy.host}/{src}:a", targets=[f"{target}:t", f"{target}:u"])
    assert r.status_code == 201, r.text
    job = r.json()

    records = provenance(server, target)
    assert {r["tag"] for r in records} == {"t", "u"}
    for record in records:
        assert record["repository"] == target and record["digest"] == record["source_digest"] == first
        assert record["source"] == f"{proxy.host}/{src}:a" and record["via"] == "import"
        assert record["job"] == job["id"] and record["requested_by"] == "admin"
        assert datetime.fromisoformat(record["imported_at"]) > before

    # A by-digest import of the same content records too; its tag is null.
    assert start_import(server, f"{proxy.host}/{src}@{first}", targets=[target]).status_code == 201
    assert [r["tag"] for r in provenance(server, target)][0] is None

    # --force moves the tag: the newest record names the new source digest; the history keeps the old one.
    assert start_import(server, f"{proxy.host}/{src}:b", targets=[f"{target}:t"], force=True).status_code == 201
    latest = provenance(server, target, latest="true")
    by_tag = {r["tag"]: r for r in latest}
    assert len(latest) == 3 and set(by_tag) == {"t", "u", None}
    assert by_tag["t"]["source_digest"] == second and by_tag["t"]["source"] == f"{proxy.host}/{src}:b"
    assert by_tag["u"]["source_digest"] == first
    assert [r["source_digest"] for r in provenance(server, target, tag="t")] == [second, first]
    assert len(provenance(server, target, limit=1)) == 1

    # A failed import records nothing.
    r = start_import(server, f"{proxy.host}/{unique('missing')}:1", targets=[f"{target}:t"], force=True)
    assert r.status_code == 404
    assert [r["source_digest"] for r in provenance(server, target, tag="t")] == [second, first]


def test_provenance_needs_read_access_and_a_valid_name(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src = unique("acl")
    push_image(upstream.url, src, "1")
    target = f"team/{uuid.uuid4().hex[:10]}"
    assert start_import(server, f"{proxy.host}/{src}:1", targets=[f"{target}:1"]).status_code == 201
    robot = make_robot(server, [{"repository": "team/*", "actions": ["content/read"]}])
    assert [r["tag"] for r in provenance(server, target, robot)] == ["1"]
    problem(api(server, "GET", "/provenance", robot, params={"repository": "elsewhere/x"}), 403, "DENIED")
    assert requests.get(f"{server.url}/api/v1/provenance", params={"repository": target}, timeout=TIMEOUT).status_code == 401
    problem(api(server, "GET", "/provenance"), 422, "VALIDATION_FAILED")
    problem(api(server, "GET", "/provenance", params={"repository": "Not/Valid"}), 422, "VALIDATION_FAILED")
    problem(api(server, "GET", "/provenance", params={"repository": target, "tag": "-bad"}), 422, "VALIDATION_FAILED")
    problem(api(server, "GET", "/provenance", params={"repository": target, "limit": "0"}), 422, "VALIDATION_FAILED")
    assert provenance(server, unique("never")) == []


# ---- the CLI -------------------------------------------------------------------------------------


def test_repository_show_lists_tags_digests_and_provenance(
    server: Server, upstream: DockerRegistry, proxy: UpstreamProxy, tmp_path: Path
) -> None:
    src = unique("show")
    first, _ = push_image(upstream.url, src, "1.0")
    second, _ = push_image(upstream.url, src, "2.0")
    target = unique("imp")
    assert start_import(server, f"{proxy.host}/{src}:1.0", targets=[f"{target}:stable", f"{target}:1.0"]).status_code == 201
    # A tag pushed straight to cargohold has no provenance.
    body = requests.get(f"{upstream.url}/v2/{src}/manifests/2.0", headers={"Accept": OCI_MANIFEST}, timeout=TIMEOUT).content
    assert start_import(server, f"{proxy.host}/{src}:2.0", targets=[f"{target}:2.0"]).status_code == 201
    pushed = requests.put(f"{server.url}/v2/{target}/manifests/local", data=body, auth=admin(server),
                          headers={"Content-Type": OCI_MANIFEST}, timeout=TIMEOUT)
    assert pushed.status_code == 201, pushed.text

    shown = admin_cli(server, tmp_path, "repository", "show", target)
    assert shown.returncode == 0, (shown.stdout, shown.stderr)
    lines = {line.split()[0]: line for line in shown.stdout.splitlines() if line.strip() and not line.strip().startswith("TAG")}
    assert set(lines) >= {"stable", "1.0", "2.0", "local"}, shown.stdout
    for tag in ("stable", "1.0"):
        assert first in lines[tag] and f"{proxy.host}/{src}:1.0" in lines[tag] and "admin" in lines[tag] and "import" in lines[tag]
    assert second in lines["2.0"] and f"{proxy.host}/{src}:2.0" in lines["2.0"]
    assert second in lines["local"] and "—" in lines["local"] and src not in lines["local"]

    # --force moves stable to 2.0: show names the new source digest.
    assert start_import(server, f"{proxy.host}/{src}:2.0", targets=[f"{target}:stable"], force=True).status_code == 201
    as_json = admin_cli(server, tmp_path, "repository", "show", target, "--output", "json")
    assert as_json.returncode == 0, as_json.stderr
    rows = {row["tag"]: row for row in json.loads(as_json.stdout)["tags"]}
    assert rows["stable"]["digest"] == second and rows["stable"]["provenance"]["source_digest"] == second
    assert rows["stable"]["provenance"]["source"] == f"{proxy.host}/{src}:2.0"
    assert rows["local"]["provenance"] is None and rows["1.0"]["provenance"]["source_digest"] == first

    listed = admin_cli(server, tmp_path, "repository", "list")
    assert listed.returncode == 0 and target in listed.stdout.split(), listed.stderr
    missing = admin_cli(server, tmp_path, "repository", "show", unique("nothing"))
    assert missing.returncode == 1 and "error:" in missing.stderr, (missing.stdout, missing.stderr)


def test_repository_tags_api_and_show_on_a_cache_namespace_make_no_upstream_request(
    server: Server, upstream: DockerRegistry, proxy: UpstreamProxy, tmp_path: Path
) -> None:
    """``GET /repositories/tags`` (what ``repository show`` asks) answers from the local store: on a cache namespace,
    the tags pulled so far, with no upstream request even past the rule's TTL."""
    rule = f"pc{uuid.uuid4().hex[:8]}"
    created = api(server, "POST", "/cache-rules", json={
        "name": rule, "source": f"{proxy.host}/{rule}/*", "target": f"{rule}/*", "tag_ttl_seconds": 1, "insecure": True,
    })
    assert created.status_code == 201, created.text
    pulled, _ = push_image(upstream.url, f"{rule}/app", "1")
    for tag in ("2", "3"):
        push_image(upstream.url, f"{rule}/app", tag)
    got = requests.get(f"{server.url}/v2/{rule}/app/manifests/1", auth=admin(server), headers={"Accept": OCI_MANIFEST},
                       timeout=TIMEOUT)
    assert got.status_code == 200 and got.headers["Docker-Content-Digest"] == pulled, got.text
    time.sleep(1.5)  # past the TTL: a manifest HEAD on the tag would revalidate upstream
    proxy.reset()

    answer = api(server, "GET", "/repositories/tags", params={"repository": f"{rule}/app"}).json()
    assert [(t["tag"], t["digest"], t["provenance"]) for t in answer["tags"]] == [("1", pulled, None)], answer
    assert answer["more_tags"] is False and answer["untagged_imports"] == []
    shown = admin_cli(server, tmp_path, "repository", "show", f"{rule}/app", "--output", "json")
    assert shown.returncode == 0, shown.stderr
    assert [(r["tag"], r["digest"]) for r in json.loads(shown.stdout)["tags"]] == [("1", pulled)]
    table = admin_cli(server, tmp_path, "repository", "show", f"{rule}/app")
    assert table.returncode == 0 and pulled in table.stdout, (table.stdout, table.stderr)
    assert proxy.counts() == 0, proxy.summary()


def test_repository_tags_api_access_limit_and_unknown_repository(
    server: Server, upstream: DockerRegistry, proxy: UpstreamProxy, tmp_path: Path
) -> None:
    src = unique("tags")
    digest, _ = push_image(upstream.url, src, "1")
    target = f"meta/{uuid.uuid4().hex[:10]}"
    assert start_import(server, f"{proxy.host}/{src}:1", targets=[f"{target}:a", f"{target}:b", f"{target}:c"]).status_code == 201
    assert start_import(server, f"{proxy.host}/{src}@{digest}", targets=[target]).status_code == 201
    robot = make_robot(server, [{"repository": "meta/*", "actions": ["metadata/read"]}])
    answer = api(server, "GET", "/repositories/tags", robot, params={"repository": target, "limit": 2}).json()
    assert [t["tag"] for t in answer["tags"]] == ["a", "b"] and answer["more_tags"] is True, answer
    assert all(t["digest"] == digest and t["provenance"]["source_digest"] == digest for t in answer["tags"])
    assert [r["tag"] for r in answer["untagged_imports"]] == [None]
    problem(api(server, "GET", "/repositories/tags", robot, params={"repository": "elsewhere/x"}), 403, "DENIED")
    problem(api(server, "GET", "/repositories/tags", params={"repository": unique("never")}), 404, "NOT_FOUND")
    problem(api(server, "GET", "/repositories/tags", params={"repository": "Not/Valid"}), 422, "VALIDATION_FAILED")
    problem(api(server, "GET", "/repositories/tags", params={"repository": target, "limit": "0"}), 422, "VALIDATION_FAILED")
    assert requests.get(f"{server.url}/api/v1/repositories/tags", params={"repository": target},
                        timeout=TIMEOUT).status_code == 401
    limited = admin_cli(server, tmp_path, "repository", "show", target, "--max-tags", "1")
    assert limited.returncode == 0 and "More tags not shown" in limited.stderr, (limited.stdout, limited.stderr)


# ---- jobs that outlive their worker ------------------------------------------------------------------


def age_job(server: Server, job_id: str, seconds: float) -> None:
    """Move a job's heartbeat into the past, as if ``seconds`` had gone by without one."""
    with sqlite3.connect(server.data_dir / "metadata.db", timeout=30) as db:
        (updated,) = db.execute("SELECT updated_at FROM import_jobs WHERE id = ?", (job_id,)).fetchone()
        moment = datetime.fromisoformat(str(updated))
        db.execute("UPDATE import_jobs SET updated_at = ? WHERE id = ?",
                   ((moment - timedelta(seconds=seconds)).isoformat(sep=" "), job_id))


def test_jobs_survive_a_restart_and_a_killed_import_reads_as_interrupted(
    server: Server, upstream: DockerRegistry, proxy: UpstreamProxy
) -> None:
    src = unique("restart")
    digest, _ = push_image(upstream.url, src, "1")
    target = unique("imp")
    started = start_import(server, f"{proxy.host}/{src}:1", targets=[f"{target}:1"], wait=False)
    assert started.status_code == 202, started.text
    done = wait_done(server, started.json()["id"])
    assert done["state"] == "succeeded", done

    # A stalled source: the import is running when the server is killed (every worker, at once).
    layer = os.urandom(100_000)
    push_one_layer_image(upstream.url, src, "2", layer)
    proxy.fail(("stall", 30), kind="blob", reference=digest_of(layer))
    stalled = start_import(server, f"{proxy.host}/{src}:2", targets=[f"{target}:2"], wait=False).json()
    deadline = time.monotonic() + 20
    while proxy.counts(kind="blob", reference=digest_of(layer)) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api(server, "GET", f"/imports/{stalled['id']}").json()["state"] == "running"
    server.kill()
    proxy.clear_fault()
    server.start()

    # The finished job, as it was, from whichever worker answers.
    for _ in range(4):
        again = api(server, "GET", f"/imports/{done['id']}").json()
        assert again == done
    assert provenance(server, target)[0]["source_digest"] == digest

    # The killed one: running until its heartbeat is old enough to tell, then failed — and no tag.
    assert api(server, "GET", f"/imports/{stalled['id']}").json()["state"] == "running"
    age_job(server, stalled["id"], 120)
    interrupted = api(server, "GET", f"/imports/{stalled['id']}").json()
    assert interrupted["state"] == "failed" and interrupted["error_code"] == "INTERRUPTED", interrupted
    assert interrupted["error"] == "interrupted: the server stopped while importing"
    assert requests.get(f"{server.url}/v2/{target}/manifests/2", auth=admin(server), timeout=TIMEOUT).status_code == 404
    listed = {j["id"]: j["state"] for j in api(server, "GET", "/imports", params={"limit": 1000}).json()}
    assert listed[stalled["id"]] == "failed" and listed[done["id"]] == "succeeded"
