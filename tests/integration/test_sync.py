"""Sync rules (``/api/v1/sync-rules``, ``cargohold sync-rule``) against a real docker-registry upstream.

The upstream is CNCF Distribution 2.8 behind the counting, fault-injecting
``UpstreamProxy``: tests count what a run spent (an unchanged tag: one HEAD, no
GET) and inject a ``429`` with ``Retry-After`` or a low ``RateLimit-Remaining``.
The server runs with auth, on SQLite and on PostgreSQL, with two workers (so
the lease decides who runs a due rule), a short scheduler poll and a 1-second
minimum interval.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web
from cachehelpers import cache_server
from importhelpers import admin, problem, proxied_upstream, unique
from importhelpers import api as admin_api
from ocihelpers import OCI_INDEX, OCI_MANIFEST, push_image
from servers import DockerRegistry, Server
from upstream_proxy import Seen, UpstreamProxy, oci_error

TIMEOUT = 120


async def _ratelimit_remaining(proxy: UpstreamProxy, seen: Seen, arg: Any) -> web.StreamResponse:
    """The upstream's answer to a HEAD, with ``RateLimit-Remaining: arg`` added (as Docker Hub sends it)."""
    request = seen.request
    assert request is not None and request.method == "HEAD"
    try:
        upstream = await proxy.open_upstream(seen)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return oci_error(502, "UNAVAILABLE", str(exc))
    try:
        headers = proxy.response_headers(upstream)
        headers["RateLimit-Limit"] = "100;w=21600"
        headers["RateLimit-Remaining"] = f"{arg};w=21600"
        response = web.StreamResponse(status=upstream.status, headers=headers)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        seen.status = upstream.status
        await response.prepare(request)
        await response.write_eof()
        return response
    finally:
        upstream.close()


async def _tag_pages(proxy: UpstreamProxy, seen: Seen, arg: Any) -> web.StreamResponse:
    """A tag list answered by the proxy: ``arg`` is ``(tags, endless)``; endless: every page links to a next one."""
    tags, endless = arg
    seen.status = 200
    headers = {}
    if endless:
        page = int(seen.query.split("page=")[1]) if "page=" in seen.query else 0
        headers["Link"] = f'<{seen.path}?page={page + 1}>; rel="next"'
    return web.json_response({"name": seen.repo, "tags": tags}, headers=headers)


upstream, proxy, _clean_proxy = proxied_upstream(
    "sync-upstream", faults={"ratelimit-remaining": _ratelimit_remaining, "tag-pages": _tag_pages}
)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with cache_server(
        tmp_path_factory.mktemp(f"sync-server-{request.param}") / "data",
        workers=2,
        backend=request.param,
        CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS="100000",
        CARGOHOLD_SYNC_POLL_SECONDS="0.5",
        CARGOHOLD_SYNC_MIN_INTERVAL_SECONDS="1",
        CARGOHOLD_SYNC_RATELIMIT_RESERVE="10",
    ) as running:
        yield running


def api(server: Server, method: str, path: str, auth: Any = None, **kwargs: Any) -> requests.Response:
    """``importhelpers.api`` with this module's longer ``TIMEOUT``: a manual run answers when it is done."""
    return admin_api(server, method, path, auth, timeout=TIMEOUT, **kwargs)


def ok(response: requests.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json() if response.content else None


def rule_name() -> str:
    return f"r{uuid.uuid4().hex[:10]}"


def create_rule(server: Server, proxy: UpstreamProxy, src: str, target: str, **body: Any) -> dict[str, Any]:
    name = body.pop("name", rule_name())
    return ok(api(server, "POST", "/sync-rules", json={
        "name": name, "source": f"{proxy.host}/{src}", "target": target, "insecure": True, **body,
    }), 201)


def run(server: Server, name: str) -> dict[str, Any]:
    return ok(api(server, "POST", f"/sync-rules/{name}/runs"), 201)


def local_digest(server: Server, repo: str, tag: str) -> str | None:
    r = requests.head(
        f"{server.url}/v2/{repo}/manifests/{tag}", auth=admin(server), timeout=TIMEOUT,
        headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"},
    )
    return r.headers["Docker-Content-Digest"] if r.status_code == 200 else None


def reasons(run_record: dict[str, Any]) -> dict[str, str]:
    return {s["tag"]: s["reason"] for s in run_record["skipped"]}


# ---- copying what is new and moved, not what is filtered -------------------------------------------


def test_added_and_moved_tags_appear_filtered_do_not(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src, target = unique("src"), unique("mirror")
    digests = {tag: push_image(upstream.url, src, tag)[0] for tag in ("3.18", "3.19", "3.19.1", "latest", "3.20.0-rc1")}
    rule = create_rule(server, proxy, src, target, semver=">=3.19 <4")
    assert rule["source"] == f"{proxy.host}/{src}" and rule["target"] == target
    assert rule["next_run_at"] is None  # no schedule: manual runs only

    first = run(server, rule["name"])
    assert first["state"] == "succeeded", first
    assert first["trigger"] == "manual" and first["finished_at"]
    assert {c["tag"]: c["digest"] for c in first["copied"]} == {"3.19": digests["3.19"], "3.19.1": digests["3.19.1"]}
    assert all(c["previous"] is None for c in first["copied"])
    why = reasons(first)
    assert why["3.18"] == "filtered: outside semver range '>=3.19 <4'"
    assert why["latest"].startswith("filtered: not a version")
    assert why["3.20.0-rc1"].startswith("filtered")  # prereleases only when the range names one
    for tag in ("3.19", "3.19.1"):
        assert local_digest(server, target, tag) == digests[tag]
    for tag in ("3.18", "latest", "3.20.0-rc1"):
        assert local_digest(server, target, tag) is None

    # Upstream: a new tag, and 3.19 moves to another image.
    digests["3.21"] = push_image(upstream.url, src, "3.21")[0]
    old = digests["3.19"]
    digests["3.19"] = push_image(upstream.url, src, "3.19")[0]
    assert digests["3.19"] != old
    second = run(server, rule["name"])
    assert second["state"] == "succeeded", second
    copied = {c["tag"]: c for c in second["copied"]}
    assert set(copied) == {"3.19", "3.21"}
    assert copied["3.19"]["digest"] == digests["3.19"] and copied["3.19"]["previous"] == old
    assert copied["3.21"]["previous"] is None
    assert reasons(second)["3.19.1"] == "unchanged"
    assert second["counts"] == {"copied": 2, "unchanged": 1, "filtered": 3, "deferred": 0, "failed": 0}
    for tag in ("3.19", "3.19.1", "3.21"):
        assert local_digest(server, target, tag) == digests[tag]

    # Nothing changed: one tag list and one HEAD per candidate, not a single GET of a manifest or blob.
    proxy.reset()
    third = run(server, rule["name"])
    assert third["state"] == "succeeded" and third["copied"] == []
    assert proxy.counts(method="HEAD", kind="manifest", repo=src) == 3, proxy.summary()
    assert proxy.counts(method="GET", kind="manifest") == 0, proxy.summary()
    assert proxy.counts(method="GET", kind="blob") == 0, proxy.summary()
    assert proxy.counts(method="GET", kind="tags", repo=src) == 1, proxy.summary()
    assert third["requests_used"] == 4

    runs = ok(api(server, "GET", f"/sync-rules/{rule['name']}/runs"))["runs"]
    assert [r["id"] for r in runs] == [third["id"], second["id"], first["id"]]  # newest first
    one = ok(api(server, "GET", f"/sync-rules/{rule['name']}/runs/{first['id']}"))
    assert one["copied"] == first["copied"]


def test_regex_and_semver_together(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src, target = unique("src"), unique("mirror")
    for tag in ("1.2.0", "v1.3.0", "1.4.0-alpine", "2.0.0"):
        push_image(upstream.url, src, tag)
    rule = create_rule(server, proxy, src, target, tag_regex=r"[0-9.]+", semver="^1")
    record = run(server, rule["name"])
    assert [c["tag"] for c in record["copied"]] == ["1.2.0"]
    why = reasons(record)
    assert why["v1.3.0"].startswith("filtered: does not match regex")
    assert why["1.4.0-alpine"].startswith("filtered: does not match regex")
    assert why["2.0.0"] == "filtered: outside semver range '^1'"


# ---- spending upstream requests ----------------------------------------------------------------------


def test_budget_exhaustion_is_recorded_and_the_next_run_goes_on(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src, target = unique("src"), unique("mirror")
    digests = {tag: push_image(upstream.url, src, tag)[0] for tag in ("a", "b", "c", "d")}
    # 3 requests: the tag list and one HEAD fit; the copy that follows spends the rest, so each run copies one tag.
    rule = create_rule(server, proxy, src, target, request_budget=3)
    records = []
    for _ in range(4):
        records.append(run(server, rule["name"]))
    first = records[0]
    assert first["state"] == "partial" and len(first["copied"]) == 1, first
    deferred = [s["tag"] for s in first["skipped"] if s["outcome"] == "deferred"]
    assert len(deferred) == 3 and first["counts"]["deferred"] == 3
    assert "of 3 requests used" in first["skipped"][0]["reason"]
    assert first["requests_used"] >= 3
    # The next run starts with what the last one left unchecked: no tag is checked twice before all were.
    assert records[1]["copied"][0]["tag"] == deferred[0]
    copied = [c["tag"] for r in records for c in r["copied"]]
    assert sorted(copied) == ["a", "b", "c", "d"], [r["copied"] for r in records]
    for tag, digest in digests.items():
        assert local_digest(server, target, tag) == digest


def test_429_with_retry_after_stops_the_run(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src, target = unique("src"), unique("mirror")
    for tag in ("1", "2", "3"):
        push_image(upstream.url, src, tag)
    # Disabled: the scheduler leaves it alone, but its interval schedule still has a next run time to push back.
    rule = create_rule(server, proxy, src, target, interval_seconds=5, enabled=False)
    proxy.fail(("429", 30), kind="manifest", method="HEAD")
    started = time.time()
    record = run(server, rule["name"])
    assert record["state"] == "partial", record
    assert record["copied"] == []
    assert set(reasons(record).values()) == {"rate-limited (retry after 30 s)"}, record["skipped"]
    assert "rate-limited" in record["error"] and "30" in record["error"]
    assert proxy.counts(method="HEAD", kind="manifest") == 1, proxy.summary()  # stopped at the first 429, no retry
    shown = ok(api(server, "GET", f"/sync-rules/{rule['name']}"))
    assert datetime.fromisoformat(shown["next_run_at"]).timestamp() >= started + 29
    assert not shown["running"]

    proxy.clear_fault()
    again = run(server, rule["name"])
    assert again["state"] == "succeeded" and sorted(c["tag"] for c in again["copied"]) == ["1", "2", "3"]


def test_429_during_a_copy_is_not_waited_on_and_pushes_the_next_run_back(
    server: Server, upstream: DockerRegistry, proxy: UpstreamProxy
) -> None:
    src, target = unique("src"), unique("mirror")
    push_image(upstream.url, src, "1")
    rule = create_rule(server, proxy, src, target, interval_seconds=5, enabled=False)
    proxy.fail(("429", 1), kind="manifest", method="GET")  # the HEAD goes through, the copy's GET is refused
    started = time.time()
    record = run(server, rule["name"])
    assert record["state"] == "partial" and record["copied"] == [], record
    assert reasons(record)["1"].startswith("rate-limited while copying"), record["skipped"]
    assert record["error"] == "stopped: the upstream rate-limited the run (retry after 1 s)", record
    # Retry-After is not slept on inline (the importer's default would wait up to 2 s and retry).
    assert proxy.counts(method="GET", kind="manifest") == 1, proxy.summary()
    shown = ok(api(server, "GET", f"/sync-rules/{rule['name']}"))
    assert datetime.fromisoformat(shown["next_run_at"]).timestamp() >= started + 0.9


def test_listed_names_that_are_not_tags_are_dropped(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src, target = unique("src"), unique("mirror")
    digest, _ = push_image(upstream.url, src, "1")
    rule = create_rule(server, proxy, src, target, semver=">=1")
    bad = ["../x", "a b", "-x", "9" * 5000, "é"]
    proxy.fail(("tag-pages", (["1", *bad], False)), kind="tags")
    record = run(server, rule["name"])
    assert record["state"] == "succeeded" and [c["tag"] for c in record["copied"]] == ["1"], record
    assert record["copied"][0]["digest"] == digest
    dropped = {s["tag"]: s["reason"] for s in record["skipped"]}
    assert set(dropped) == {t[:140] for t in bad} and set(dropped.values()) == {"filtered: not a valid tag name"}


def test_the_tag_list_reads_at_most_half_the_budget(server: Server, proxy: UpstreamProxy) -> None:
    src, target = unique("src"), unique("mirror")
    rule = create_rule(server, proxy, src, target, request_budget=6)
    proxy.fail(("tag-pages", ([], True)), kind="tags")  # pages without end
    record = run(server, rule["name"])
    assert proxy.counts(kind="tags") == 3, proxy.summary()
    assert record["state"] == "partial" and record["requests_used"] == 3, record
    assert record["skipped"] == [{"tag": "*", "reason": "tag list cut short: read 3 pages (at most half the request budget); "
                                  "the tags on later pages were not looked at", "count": None, "outcome": "deferred"}], record


def test_listing_runs_caps_skipped_entries(server: Server, proxy: UpstreamProxy) -> None:
    src, target = unique("src"), unique("mirror")
    rule = create_rule(server, proxy, src, target, tag_regex="nothing")
    proxy.fail(("tag-pages", ([f"t{i}" for i in range(120)], False)), kind="tags")
    record = run(server, rule["name"])
    assert len(record["skipped"]) == 120 and not record["skipped_truncated"] and record["counts"]["filtered"] == 120
    listed = ok(api(server, "GET", f"/sync-rules/{rule['name']}/runs"))["runs"][0]
    assert len(listed["skipped"]) == 50 and listed["skipped_truncated"] and listed["counts"]["filtered"] == 120
    full = ok(api(server, "GET", f"/sync-rules/{rule['name']}/runs/{record['id']}"))
    assert len(full["skipped"]) == 120 and not full["skipped_truncated"]


def test_low_ratelimit_remaining_stops_the_run(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src, target = unique("src"), unique("mirror")
    for tag in ("1", "2", "3"):
        push_image(upstream.url, src, tag)
    rule = create_rule(server, proxy, src, target)
    proxy.fail(("ratelimit-remaining", 5), kind="manifest", method="HEAD")
    record = run(server, rule["name"])
    assert record["state"] == "partial"
    assert [c["tag"] for c in record["copied"]] == ["1"]  # the HEAD that reported it still counts
    assert reasons(record) == {t: "ratelimit-remaining 5 is below the reserve of 10" for t in ("2", "3")}


def test_copy_failure_is_recorded_and_the_run_goes_on(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src, target = unique("src"), unique("mirror")
    for tag in ("1", "2"):
        push_image(upstream.url, src, tag)
    rule = create_rule(server, proxy, src, target)
    proxy.fail("wrong-bytes", kind="blob", times=1)  # the first blob download is corrupt: that tag's copy fails
    record = run(server, rule["name"])
    assert record["state"] == "partial", record
    assert len(record["copied"]) == 1
    failed = [s for s in record["skipped"] if s["outcome"] == "failed"]
    assert len(failed) == 1 and "digest" in failed[0]["reason"], record["skipped"]
    assert record["counts"]["failed"] == 1
    assert local_digest(server, target, failed[0]["tag"]) is None


def test_unreachable_source_fails_the_run(server: Server) -> None:
    name = rule_name()
    ok(api(server, "POST", "/sync-rules", json={
        "name": name, "source": "127.0.0.1:9/nothing/here", "target": unique("mirror"), "insecure": True,
    }), 201)
    record = run(server, name)
    assert record["state"] == "failed" and "listing the tags" in record["error"], record


def test_run_in_background_conflict_and_delete_while_running(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src, target = unique("src"), unique("mirror")
    digest, _ = push_image(upstream.url, src, "1")
    rule = create_rule(server, proxy, src, target)
    name = rule["name"]
    proxy.fail(("stall", 2), kind="manifest", method="HEAD", times=1)  # the first HEAD hangs, then its retry works
    started = api(server, "POST", f"/sync-rules/{name}/runs", params={"wait": "false"})
    body = ok(started, 202)
    assert body["state"] == "running" and started.headers["Location"] == f"/api/v1/sync-rules/{name}/runs/{body['id']}"
    problem(api(server, "POST", f"/sync-rules/{name}/runs"), 409, "RUN_IN_PROGRESS")
    assert ok(api(server, "GET", f"/sync-rules/{name}"))["running"]
    deadline = time.time() + 30
    while time.time() < deadline:
        record = ok(api(server, "GET", f"/sync-rules/{name}/runs/{body['id']}"))
        if record["state"] != "running":
            break
        time.sleep(0.2)
    assert record["state"] == "succeeded" and [c["tag"] for c in record["copied"]] == ["1"], record
    assert local_digest(server, target, "1") == digest
    assert not ok(api(server, "GET", f"/sync-rules/{name}"))["running"]

    # Deleted while a run is under way: the run ends quietly (the last test checks the log), its log is gone.
    push_image(upstream.url, src, "2")
    proxy.fail(("stall", 2), kind="manifest", method="HEAD", times=1)
    ok(api(server, "POST", f"/sync-rules/{name}/runs", params={"wait": "false"}), 202)
    ok(api(server, "DELETE", f"/sync-rules/{name}"), 204)
    time.sleep(3)
    problem(api(server, "GET", f"/sync-rules/{name}/runs"), 404, "NOT_FOUND")


# ---- the scheduler ---------------------------------------------------------------------------------


def test_scheduled_run_happens_by_itself(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy) -> None:
    src, target = unique("src"), unique("mirror")
    digest, _ = push_image(upstream.url, src, "v1")
    rule = create_rule(server, proxy, src, target, interval_seconds=1)
    try:
        deadline = time.time() + 30
        runs: list[dict[str, Any]] = []
        while time.time() < deadline:
            runs = ok(api(server, "GET", f"/sync-rules/{rule['name']}/runs"))["runs"]
            if len([r for r in runs if r["state"] != "running"]) >= 3:
                break
            time.sleep(0.3)
        finished = [r for r in runs if r["state"] != "running"]
        assert len(finished) >= 3, runs
        assert all(r["trigger"] == "schedule" and r["state"] == "succeeded" for r in finished), finished
        assert local_digest(server, target, "v1") == digest
        # Two workers poll, the lease lets one run at a time: runs never overlap.
        ordered = sorted(finished, key=lambda r: r["id"])
        for earlier, later in zip(ordered, ordered[1:]):
            assert datetime.fromisoformat(earlier["finished_at"]) <= datetime.fromisoformat(later["started_at"]), ordered
        assert sum(len(r["copied"]) for r in finished) == 1  # copied once, then unchanged
    finally:
        ok(api(server, "DELETE", f"/sync-rules/{rule['name']}"), 204)
    problem(api(server, "GET", f"/sync-rules/{rule['name']}/runs"), 404, "NOT_FOUND")


# ---- the API's edges ---------------------------------------------------------------------------------


def test_non_admin_is_refused(server: Server, proxy: UpstreamProxy) -> None:
    user, password = f"u{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    ok(api(server, "POST", "/users", json={"name": user, "password": password}), 201)
    name = rule_name()
    create_rule(server, proxy, unique("src"), unique("mirror"), name=name)
    for method, path, body in (
        ("GET", "/sync-rules", None), ("POST", "/sync-rules", {"name": "x", "source": "docker.io/alpine", "target": "x"}),
        ("GET", f"/sync-rules/{name}", None), ("PATCH", f"/sync-rules/{name}", {"enabled": False}),
        ("DELETE", f"/sync-rules/{name}", None), ("POST", f"/sync-rules/{name}/runs", None),
        ("GET", f"/sync-rules/{name}/runs", None),
    ):
        problem(api(server, method, path, (user, password), json=body), 403, "DENIED")
    assert ok(api(server, "GET", f"/sync-rules/{name}"))["enabled"]


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        ({"tag_regex": "("}, "INVALID_TAG_FILTER", "does not compile"),
        ({"semver": ">=abc"}, "INVALID_TAG_FILTER", "not a version"),
        ({"semver": ">=3 ||"}, "INVALID_TAG_FILTER", "empty alternative"),
        ({"cron": "61 * * * *"}, "INVALID_SCHEDULE", "minute 61"),
        ({"cron": "* * *"}, "INVALID_SCHEDULE", "5 fields"),
        ({"cron": "² * * * *"}, "INVALID_SCHEDULE", "not a number"),  # str.isdigit takes it, int() does not
        ({"cron": "*/² * * * *"}, "INVALID_SCHEDULE", "positive number"),
        ({"tag_regex": "(a)\\1"}, "INVALID_TAG_FILTER", "not supported"),  # RE2: no backreferences
        ({"tag_regex": "(?!rc).*"}, "INVALID_TAG_FILTER", "not supported"),  # nor lookaround
        ({"cron": "0 0 30 2 *"}, "INVALID_SCHEDULE", "no time that exists"),
        ({"cron": "0 3 * * *", "interval_seconds": 3600}, "INVALID_SCHEDULE", "not both"),
        ({"source": "docker.io/library/*"}, "INVALID_SYNC_RULE", "one repository"),
        ({"source": "alpine"}, "INVALID_SYNC_RULE", "registry host"),
        ({"target": "Not/Valid"}, "INVALID_SYNC_RULE", "local repository name"),
        ({"credential_set": "nosuchset"}, "UNKNOWN_CREDENTIAL_SET", "does not exist"),
        ({"platforms": ["linux"]}, "VALIDATION_FAILED", "platforms"),
        ({"request_budget": 0}, "VALIDATION_FAILED", "request_budget"),
    ],
)
def test_bad_input_is_422(server: Server, proxy: UpstreamProxy, extra: dict[str, Any], code: str, words: str) -> None:
    name = rule_name()
    body = {"name": name, "source": f"{proxy.host}/x/y", "target": unique("mirror"), "insecure": True, **extra}
    detail = problem(api(server, "POST", "/sync-rules", json=body), 422, code)["detail"]
    assert words in detail, detail
    problem(api(server, "GET", f"/sync-rules/{name}"), 404, "NOT_FOUND")  # nothing half-created


def test_odd_run_ids_are_404(server: Server, proxy: UpstreamProxy) -> None:
    rule = create_rule(server, proxy, unique("src"), unique("mirror"))
    for raw in ("%C2%B2", "%D9%A3", "1%C2%B2", "0x1", "1234567890"):
        problem(api(server, "GET", f"/sync-rules/{rule['name']}/runs/{raw}"), 404, "NOT_FOUND")
    ok(api(server, "DELETE", f"/sync-rules/{rule['name']}"), 204)


def test_a_bad_regex_is_refused_on_update_too(server: Server, proxy: UpstreamProxy) -> None:
    rule = create_rule(server, proxy, unique("src"), unique("mirror"))
    body = problem(api(server, "PATCH", f"/sync-rules/{rule['name']}", json={"tag_regex": "(?<=v)1"}), 422, "INVALID_TAG_FILTER")
    assert "not supported" in body["detail"]
    problem(api(server, "PATCH", f"/sync-rules/{rule['name']}", json={"cron": "0 ３ * * *"}), 422, "INVALID_SCHEDULE")
    ok(api(server, "DELETE", f"/sync-rules/{rule['name']}"), 204)


def test_update_conflicts_and_normalization(server: Server, proxy: UpstreamProxy) -> None:
    name = rule_name()
    created = ok(api(server, "POST", "/sync-rules", json={
        "name": name, "source": "docker.io/alpine", "target": unique("mirror"), "cron": "0 3 * * *",
    }), 201)
    assert created["source"] == "docker.io/library/alpine"  # as cache rules spell it
    assert created["next_run_at"].endswith(("03:00:00Z", "03:00:00+00:00"))
    listed = ok(api(server, "GET", "/sync-rules"))["sync_rules"]
    assert {"name": name, "source": "docker.io/library/alpine", "target": created["target"]}.items() <= next(
        r for r in listed if r["name"] == name
    ).items()
    problem(api(server, "POST", "/sync-rules", json={"name": name, "source": "docker.io/alpine", "target": "x"}), 409, "ALREADY_EXISTS")
    problem(api(server, "PATCH", f"/sync-rules/{name}", json={"cron": "bad"}), 422, "INVALID_SCHEDULE")
    assert ok(api(server, "GET", f"/sync-rules/{name}"))["cron"] == "0 3 * * *"  # unchanged
    changed = ok(api(server, "PATCH", f"/sync-rules/{name}", json={"interval_seconds": 3600, "semver": "~3.19"}))
    assert changed["interval_seconds"] == 3600 and changed["cron"] is None and changed["semver"] == "~3.19"
    manual = ok(api(server, "PATCH", f"/sync-rules/{name}", json={"interval_seconds": None}))
    assert manual["interval_seconds"] is None and manual["next_run_at"] is None
    problem(api(server, "POST", "/sync-rules/nosuchrule/runs"), 404, "NOT_FOUND")
    problem(api(server, "GET", f"/sync-rules/{name}/runs/999999999"), 404, "NOT_FOUND")
    ok(api(server, "DELETE", f"/sync-rules/{name}"), 204)
    problem(api(server, "DELETE", f"/sync-rules/{name}"), 404, "NOT_FOUND")


def test_private_upstream_refused_without_the_setting(tmp_path: Path) -> None:
    strict = Server(data_dir=tmp_path / "data", auth=True, workers=1).start()
    try:
        r = requests.post(f"{strict.url}/api/v1/sync-rules", auth=("admin", strict.admin_password), timeout=TIMEOUT, json={
            "name": "local", "source": "127.0.0.1:5999/x", "target": "x", "insecure": True,
        })
        problem(r, 422, "UPSTREAM_NOT_ALLOWED")
    finally:
        strict.stop()


# ---- the CLI -------------------------------------------------------------------------------------------


def cli(server: Server, home: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_") and k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "cargohold", *args, "--registry", server.url], input=input, env=env,
        capture_output=True, text=True, timeout=TIMEOUT, check=False, stdin=None if input is not None else subprocess.DEVNULL,
    )


def test_cli(server: Server, upstream: DockerRegistry, proxy: UpstreamProxy, tmp_path: Path) -> None:
    src, target = unique("src"), unique("mirror")
    digest, _ = push_image(upstream.url, src, "1.0")
    push_image(upstream.url, src, "edge")
    name = rule_name()

    def ok_cli(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = cli(server, tmp_path, *args, input=input)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    ok_cli("login", "--username", "admin", "--password-stdin", input=server.admin_password + "\n")
    created = json.loads(ok_cli(
        "sync-rule", "create", name, "--source", f"{proxy.host}/{src}", "--target", target, "--semver", ">=1",
        "--request-budget", "50", "--platform", "linux/amd64", "--insecure", "--disabled", "--interval", "1h", "-o", "json",
    ).stdout)
    assert created["interval_seconds"] == 3600 and created["semver"] == ">=1" and created["platforms"] == ["linux/amd64"]
    assert not created["enabled"] and created["request_budget"] == 50
    listed = ok_cli("sync-rule", "list").stdout
    assert name in listed and target in listed
    assert name in [r["name"] for r in json.loads(ok_cli("sync-rule", "list", "-o", "json").stdout)]

    ran = ok_cli("sync-rule", "run", name)
    assert "succeeded" in ran.stdout and "copied  1.0" in ran.stdout
    assert "skipped edge: filtered: not a version" in " ".join(ran.stdout.split())
    assert local_digest(server, target, "1.0") == digest

    shown = ok_cli("sync-rule", "show", name).stdout
    assert "every 1h" in shown and "copied  1.0" in shown and "filtered" in shown
    as_json = json.loads(ok_cli("sync-rule", "show", name, "-o", "json").stdout)
    assert as_json["runs"][0]["copied"][0]["tag"] == "1.0"

    bad = cli(server, tmp_path, "sync-rule", "create", rule_name(), "--source", f"{proxy.host}/{src}", "--target", target,
              "--cron", "99 * * * *")
    assert bad.returncode == 1 and "minute 99" in " ".join(bad.stderr.split()), (bad.stdout, bad.stderr)

    failing = rule_name()
    ok_cli("sync-rule", "create", failing, "--source", "127.0.0.1:9/none", "--target", unique("mirror"), "--insecure")
    failed = cli(server, tmp_path, "sync-rule", "run", failing)
    assert failed.returncode == 1 and "failed" in failed.stdout + failed.stderr

    ok_cli("sync-rule", "delete", name)
    missing = cli(server, tmp_path, "sync-rule", "show", name)
    assert missing.returncode == 1


def test_a_credential_set_in_use_by_a_sync_rule_stays(server: Server, proxy: UpstreamProxy) -> None:
    """The sync rule's foreign key is checked like a cache rule's: 409 IN_USE, not a database error."""
    creds = rule_name()
    ok(api(server, "POST", "/credential-sets", json={
        "name": creds, "login_server": proxy.host, "username": "u", "password": "p",
    }), 201)
    rule = create_rule(server, proxy, "cs/app", unique("cs"), credential_set=creds, enabled=False)
    detail = problem(api(server, "DELETE", f"/credential-sets/{creds}"), 409, "IN_USE")["detail"]
    assert f"sync rule(s) {rule['name']}" in detail
    problem(api(server, "PATCH", f"/credential-sets/{creds}", json={"login_server": "ghcr.io"}), 409, "IN_USE")
    ok(api(server, "DELETE", f"/sync-rules/{rule['name']}"), 204)
    ok(api(server, "DELETE", f"/credential-sets/{creds}"), 204)


def test_targets_inside_a_cache_namespace_are_refused(server: Server, proxy: UpstreamProxy) -> None:
    """The cache would serve, revalidate and overwrite what an import or a sync rule put there."""
    namespace = unique("cached")
    cache_rule = rule_name()
    ok(api(server, "POST", "/cache-rules", json={
        "name": cache_rule, "source": f"{proxy.host}/*", "target": f"{namespace}/*", "insecure": True,
    }), 201)
    try:
        detail = problem(api(server, "POST", "/sync-rules", json={
            "name": rule_name(), "source": f"{proxy.host}/x/app", "target": f"{namespace}/app", "insecure": True,
        }), 409, "TARGET_IS_CACHE")["detail"]
        assert cache_rule in detail and f"{namespace}/app" in detail
        rule = create_rule(server, proxy, "x/app", unique("plain"), enabled=False)
        problem(api(server, "PATCH", f"/sync-rules/{rule['name']}", json={"target": f"{namespace}/b"}), 409, "TARGET_IS_CACHE")
        assert ok(api(server, "GET", f"/sync-rules/{rule['name']}"))["target"] == rule["target"]
        problem(api(server, "POST", "/imports", json={
            "source": f"{proxy.host}/x/app:1", "targets": [f"{namespace}/app:1"], "insecure": True,
        }), 409, "TARGET_IS_CACHE")
    finally:
        ok(api(server, "DELETE", f"/cache-rules/{cache_rule}"), 204)


def test_a_cache_rule_may_not_cover_a_sync_target(server: Server, proxy: UpstreamProxy) -> None:
    """The other direction of the check above: a new or moved cache target over a synced repository is a 409."""
    namespace = unique("synced")
    rule = create_rule(server, proxy, "x/app", f"{namespace}/app", enabled=False)
    detail = problem(api(server, "POST", "/cache-rules", json={
        "name": rule_name(), "source": f"{proxy.host}/*", "target": f"{namespace}/*", "insecure": True,
    }), 409, "RULE_CONFLICT")["detail"]
    assert rule["name"] in detail and f"{namespace}/app" in detail
    other = rule_name()
    ok(api(server, "POST", "/cache-rules", json={
        "name": other, "source": f"{proxy.host}/*", "target": f"{unique('elsewhere')}/*", "insecure": True,
    }), 201)
    try:
        problem(api(server, "PATCH", f"/cache-rules/{other}", json={"target": f"{namespace}/*"}), 409, "RULE_CONFLICT")
        problem(api(server, "PATCH", f"/cache-rules/{other}", json={
            "source": f"{proxy.host}/x/app", "target": f"{namespace}/app",
        }), 409, "RULE_CONFLICT")
    finally:
        ok(api(server, "DELETE", f"/cache-rules/{other}"), 204)
    ok(api(server, "DELETE", f"/sync-rules/{rule['name']}"), 204)
    created = rule_name()
    ok(api(server, "POST", "/cache-rules", json={
        "name": created, "source": f"{proxy.host}/*", "target": f"{namespace}/*", "insecure": True,
    }), 201)
    ok(api(server, "DELETE", f"/cache-rules/{created}"), 204)


def test_no_internal_errors_logged(server: Server) -> None:
    """Last in this module: nothing above made the server log a traceback."""
    log = server.log()
    assert "Traceback" not in log, log[-5000:]
