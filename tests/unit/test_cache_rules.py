"""cache/rules.py (sources, targets, routing both ways, conflicts), cache/secrets.py (upstream passwords at rest),
and the checks cache/admin.py makes before anything is stored (no database needed for those)."""

from __future__ import annotations

import multiprocessing
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from typing import Any

import pytest
from cryptography.fernet import Fernet

from cargohold.cache.admin import (
    CacheAdmin,
    InvalidCredentialSet,
    UpstreamNotAllowed,
    host_of,
    normalize_login_server,
)
from cargohold.cache.rules import (
    CacheRule,
    InvalidRule,
    RuleConflict,
    RuleSet,
    Source,
    Target,
    normalize_registry,
)
from cargohold.cache.secrets import KEY_FILE, SecretBox, SecretKeyError, load_key
from cargohold.config import Settings

# ---- sources and targets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "registry", "path", "wildcard", "normalized"),
    [
        ("docker.io/alpine", "docker.io", "library/alpine", False, "docker.io/library/alpine"),
        ("docker.io/library/alpine", "docker.io", "library/alpine", False, "docker.io/library/alpine"),
        ("index.docker.io/library/*", "docker.io", "library", True, "docker.io/library/*"),
        ("registry-1.docker.io/bitnami/redis", "docker.io", "bitnami/redis", False, "docker.io/bitnami/redis"),
        ("registry.hub.docker.com/*", "docker.io", "", True, "docker.io/*"),
        ("docker.io/*", "docker.io", "", True, "docker.io/*"),
        ("ghcr.io/*", "ghcr.io", "", True, "ghcr.io/*"),
        ("GHCR.io/org/tool", "ghcr.io", "org/tool", False, "ghcr.io/org/tool"),
        ("ghcr.io/alpine", "ghcr.io", "alpine", False, "ghcr.io/alpine"),  # library/ is Docker Hub's alone
        ("quay.io/org/team/*", "quay.io", "org/team", True, "quay.io/org/team/*"),
        ("localhost:5001/team/*", "localhost:5001", "team", True, "localhost:5001/team/*"),
        ("localhost/x", "localhost", "x", False, "localhost/x"),
        ("127.0.0.1:5001/*", "127.0.0.1:5001", "", True, "127.0.0.1:5001/*"),
        ("[::1]:5000/lib/x", "[::1]:5000", "lib/x", False, "[::1]:5000/lib/x"),
        ("  ghcr.io/*  ", "ghcr.io", "", True, "ghcr.io/*"),
    ],
)
def test_source_parse(text: str, registry: str, path: str, wildcard: bool, normalized: str) -> None:
    source = Source.parse(text)
    assert (source.registry, source.path, source.wildcard) == (registry, path, wildcard)
    assert str(source) == normalized
    assert Source.parse(str(source)) == source  # the normalized spelling parses to the same source


@pytest.mark.parametrize(
    "text",
    [
        "",
        "alpine",  # no registry host: a bare name is not guessed to be Docker Hub
        "library/alpine",
        "docker.io",  # a registry, but no repository and no /*
        "ghcr.io/",
        "ghcr.io/Org/Tool",  # repository paths are lower case
        "ghcr.io/org//tool",
        "ghcr.io/org/*/tool",
        "ghcr.io/org/**",
        "*",
        "/*",
        "https://ghcr.io/org",
        "ghcr.io:99999999/x",
        "ghcr.io:99999/x",  # the grammar allows five digits; a port does not
        "ghcr.io:0/x",
        "[::::]:5000/x",  # brackets, but no IPv6 address in them
        "[::1]:70000/x",
        "gh_cr.io/x",
    ],
)
def test_source_parse_refuses(text: str) -> None:
    with pytest.raises(InvalidRule):
        Source.parse(text)


@pytest.mark.parametrize(
    ("text", "path", "wildcard"),
    [("hub/*", "hub", True), ("hub", "hub", False), ("team/tools/*", "team/tools", True), ("a.b/c-d", "a.b/c-d", False)],
)
def test_target_parse(text: str, path: str, wildcard: bool) -> None:
    target = Target.parse(text)
    assert (target.path, target.wildcard) == (path, wildcard)
    assert str(target) == text


@pytest.mark.parametrize("text", ["", "*", "/*", "Hub/*", "hub//x", "hub/*/x", "docker.io/library/*/", "-hub"])
def test_target_parse_refuses(text: str) -> None:
    with pytest.raises(InvalidRule):
        Target.parse(text)


def test_normalize_registry() -> None:
    for alias in ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com", "Index.Docker.IO"):
        assert normalize_registry(alias) == "docker.io"
    assert normalize_registry("GHCR.IO") == "ghcr.io"


def test_build_checks_the_rule_as_a_whole() -> None:
    rule = CacheRule.build("hub", "docker.io/*", "hub/*", tag_ttl_seconds=0, dockerhub_mirror=True)
    assert (str(rule.source), str(rule.target), rule.tag_ttl_seconds, rule.dockerhub_mirror) == ("docker.io/*", "hub/*", 0, True)
    with pytest.raises(InvalidRule, match="both"):
        CacheRule.build("x", "docker.io/library/*", "hub")
    with pytest.raises(InvalidRule, match="both"):
        CacheRule.build("x", "docker.io/library/alpine", "hub/*")
    with pytest.raises(InvalidRule, match="TTL"):
        CacheRule.build("x", "ghcr.io/*", "gh/*", tag_ttl_seconds=-1)
    with pytest.raises(InvalidRule, match="Docker Hub mirror"):
        CacheRule.build("x", "ghcr.io/*", "gh/*", dockerhub_mirror=True)


# ---- routing ---------------------------------------------------------------------------------------


def rules(*specs: tuple[str, str, str]) -> RuleSet:
    return RuleSet([CacheRule.build(name, source, target) for name, source, target in specs])


def test_route_follows_docker_hub_conventions() -> None:
    hub = rules(("hub", "docker.io/*", "hub/*"))
    assert hub.route("hub/alpine").upstream_repository == "library/alpine"  # type: ignore[union-attr]
    assert hub.route("hub/library/alpine").upstream_repository == "library/alpine"  # type: ignore[union-attr]
    assert hub.route("hub/bitnami/redis").upstream_repository == "bitnami/redis"  # type: ignore[union-attr]
    assert hub.route("hub") is None  # a namespace rule covers what is below it, not the namespace itself
    assert hub.route("hubx/alpine") is None
    assert hub.route("other/alpine") is None
    gh = rules(("gh", "ghcr.io/*", "gh/*"))
    assert gh.route("gh/alpine").upstream_repository == "alpine"  # type: ignore[union-attr]
    lib = rules(("lib", "docker.io/library/*", "lib/*"))
    assert lib.route("lib/nginx").upstream_repository == "library/nginx"  # type: ignore[union-attr]


def test_route_picks_the_most_specific_target() -> None:
    ruleset = rules(
        ("hub", "docker.io/*", "hub/*"),
        ("bitnami", "ghcr.io/bitnami/*", "hub/bitnami/*"),
        ("special", "quay.io/org/special", "hub/special"),
        ("alpine-only", "docker.io/library/alpine", "alpine"),
    )
    route = ruleset.route("hub/bitnami/redis")
    assert route is not None and route.rule.name == "bitnami"
    assert (route.registry, route.upstream_repository, route.local) == ("ghcr.io", "bitnami/redis", "hub/bitnami/redis")
    route = ruleset.route("hub/special")
    assert route is not None and (route.rule.name, route.upstream_repository) == ("special", "org/special")
    route = ruleset.route("hub/special/sub")
    assert route is not None and (route.rule.name, route.upstream_repository) == ("hub", "special/sub")
    route = ruleset.route("hub/nginx")
    assert route is not None and (route.rule.name, route.upstream_repository) == ("hub", "library/nginx")
    route = ruleset.route("alpine")
    assert route is not None and (route.rule.name, route.upstream_repository) == ("alpine-only", "library/alpine")
    assert ruleset.route("alpine/x") is None
    assert not RuleSet([]) and ruleset


def test_route_upstream_for_mirror_requests() -> None:
    """containerd's ``?ns=docker.io`` + ``library/alpine`` (or a bare ``alpine``) → the local name."""
    ruleset = rules(
        ("hub", "docker.io/*", "hub/*"),
        ("lib", "docker.io/library/*", "lib/*"),
        ("nginx", "docker.io/library/nginx", "web/nginx"),
        ("gh", "ghcr.io/org/*", "gh/*"),
    )

    def local(registry: str, repository: str) -> tuple[str, str] | None:
        route = ruleset.route_upstream(registry, repository)
        return (route.rule.name, route.local) if route else None

    assert local("docker.io", "library/alpine") == ("lib", "lib/alpine")  # docker.io/library/* beats docker.io/*
    assert local("index.docker.io", "alpine") == ("lib", "lib/alpine")
    assert local("docker.io", "library/nginx") == ("nginx", "web/nginx")  # an exact source beats both
    assert local("docker.io", "nginx") == ("nginx", "web/nginx")
    assert local("docker.io", "bitnami/redis") == ("hub", "hub/bitnami/redis")
    assert local("ghcr.io", "org/tool") == ("gh", "gh/tool")
    assert local("ghcr.io", "other/tool") is None
    assert local("quay.io", "org/tool") is None

    # A whole-registry rule drops library/ on the way back, as route() adds it on the way out.
    hub_only = rules(("hub", "docker.io/*", "hub/*"))
    route = hub_only.route_upstream("docker.io", "alpine")
    assert route is not None and (route.local, route.upstream_repository) == ("hub/alpine", "library/alpine")
    forward = hub_only.route(route.local)
    assert forward is not None and forward.upstream_repository == "library/alpine"


def test_dockerhub_mirror_is_found() -> None:
    ruleset = RuleSet([CacheRule.build("gh", "ghcr.io/*", "gh/*"), CacheRule.build("hub", "docker.io/*", "hub/*", dockerhub_mirror=True)])
    assert ruleset.dockerhub_mirror is not None and ruleset.dockerhub_mirror.name == "hub"
    assert rules(("gh", "ghcr.io/*", "gh/*")).dockerhub_mirror is None


def test_conflicts() -> None:
    ruleset = RuleSet([CacheRule.build("hub", "docker.io/*", "hub/*", dockerhub_mirror=True)])
    with pytest.raises(RuleConflict, match="hub"):
        ruleset.check_new(CacheRule.build("other", "ghcr.io/*", "hub/*"))
    with pytest.raises(RuleConflict, match="mirror"):
        ruleset.check_new(CacheRule.build("mirror2", "docker.io/library/*", "lib/*", dockerhub_mirror=True))
    ruleset.check_new(CacheRule.build("nested", "ghcr.io/bitnami/*", "hub/bitnami/*"))  # nested targets are fine
    ruleset.check_new(CacheRule.build("exact", "docker.io/library/alpine", "hub"))  # "hub" is not "hub/*"
    # Replacing a rule by itself (an update) conflicts with nothing.
    ruleset.check_new(CacheRule.build("hub", "docker.io/library/*", "hub/*", dockerhub_mirror=True), replacing="hub")


# ---- secrets ---------------------------------------------------------------------------------------


def test_seal_and_open_round_trip(tmp_path: Path) -> None:
    box = SecretBox(load_key(tmp_path, None))
    for secret in ("dckr_pat_abc", "pässwörd with spaces", "x" * 5000, '{"type": "service_account"}'):
        sealed = box.seal(secret)
        assert secret not in sealed
        assert box.open(sealed) == secret
    assert box.seal("same") != box.seal("same")  # a fresh IV every time


def test_generated_key_file_is_private_and_reused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sealed = SecretBox(load_key(data, None)).seal("token")
    path = data / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_bytes()
    assert SecretBox(load_key(data, None)).open(sealed) == "token"  # the next start reads the same key
    assert path.read_bytes() == key


@pytest.fixture
def clean_env() -> Iterator[None]:
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("CARGOHOLD_"):
            del os.environ[name]
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_configured_key_is_used_and_no_file_is_written(tmp_path: Path, clean_env: None) -> None:
    key = Fernet.generate_key().decode()
    os.environ["CARGOHOLD_SECRET_KEY"] = key
    settings = Settings(data_dir=tmp_path)
    assert settings.secret_key == key and key not in repr(settings)
    sealed = SecretBox(load_key(settings.data_dir, settings.secret_key)).seal("token")
    assert not (tmp_path / KEY_FILE).exists()
    assert Fernet(key.encode()).decrypt(sealed.encode()) == b"token"  # replicas sharing the key can read it


def test_bad_and_wrong_keys(tmp_path: Path) -> None:
    with pytest.raises(SecretKeyError, match="CARGOHOLD_SECRET_KEY"):
        load_key(tmp_path, "not-a-fernet-key")
    sealed = SecretBox(load_key(tmp_path, None)).seal("token")
    other = SecretBox(load_key(tmp_path, Fernet.generate_key().decode()))
    with pytest.raises(SecretKeyError, match="secret key"):
        other.open(sealed)
    with pytest.raises(SecretKeyError):
        other.open("garbage")


# ---- what cache/admin.py checks before storing -------------------------------------------------------


@pytest.mark.parametrize(
    ("registry", "host"),
    [("ghcr.io", "ghcr.io"), ("localhost:5001", "localhost"), ("[::1]:5000", "::1"), ("[fe80::1]", "fe80::1"), ("10.0.0.1", "10.0.0.1")],
)
def test_host_of(registry: str, host: str) -> None:
    assert host_of(registry) == host


def test_login_server_normalized_like_a_source() -> None:
    assert normalize_login_server("index.docker.io") == "docker.io"
    assert normalize_login_server(" GHCR.io ") == "ghcr.io"
    assert normalize_login_server("localhost:5001") == "localhost:5001"
    for bad in ("https://ghcr.io", "ghcr.io/org", "ghcr", "", "gh cr.io", "a" * 300 + ".io"):
        with pytest.raises(InvalidCredentialSet):
            normalize_login_server(bad)


def admin(allow_private: bool) -> CacheAdmin:
    settings = Settings(data_dir=Path("/nonexistent"), allow_private_upstreams=allow_private)
    return CacheAdmin(None, None, settings)  # type: ignore[arg-type]  # the upstream check needs neither store nor key


@pytest.mark.parametrize(
    "source", ["127.0.0.1:5001/*", "localhost:5001/*", "10.1.2.3/x/*", "[::1]:5000/*", "192.168.1.1/lib/x", "127.1/*"]
)
async def test_private_upstreams_refused_unless_allowed(source: str) -> None:
    rule = CacheRule.build("r", source, "t/*" if source.endswith("*") else "t")
    with pytest.raises(UpstreamNotAllowed, match="allow_private_upstreams"):
        await admin(False)._check_upstream(rule)
    await admin(True)._check_upstream(rule)


async def test_metadata_service_refused_even_when_private_allowed() -> None:
    rule = CacheRule.build("r", "169.254.169.254/*", "t/*")
    with pytest.raises(UpstreamNotAllowed, match="never allowed"):
        await admin(True)._check_upstream(rule)


async def test_unresolvable_and_public_upstreams_accepted() -> None:
    await admin(False)._check_upstream(CacheRule.build("r", "no-such-host.invalid/*", "t/*"))
    await admin(False)._check_upstream(CacheRule.build("r", "8.8.8.8/*", "t/*"))
    await admin(False)._check_upstream(CacheRule.build("r", "[2001:4860:4860::8888]:443/*", "t/*"))


def _race_for_key(data: str, barrier: Any, keys: Any) -> None:
    barrier.wait()
    try:
        keys.put(SecretBox(load_key(Path(data), None)).seal("x"))
    except Exception as exc:  # noqa: BLE001 - the point: a loser must not fail
        keys.put(f"error: {type(exc).__name__}: {exc}")


def test_workers_racing_for_the_first_key_all_get_the_same_complete_key(tmp_path: Path) -> None:
    """Workers start together on a fresh data directory: each one must end up with the one key on disk."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(15):
        data = tmp_path / f"data{round_}"
        data.mkdir()
        barrier, keys = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_race_for_key, args=(str(data), barrier, keys)) for _ in range(8)]
        for p in procs:
            p.start()
        sealed = [keys.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        box = SecretBox(load_key(data, None))
        for s in sealed:
            assert not s.startswith("error:"), s
            assert box.open(s) == "x"
        assert [p.name for p in data.iterdir()] == [KEY_FILE]
