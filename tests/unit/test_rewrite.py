"""Reference rewriting (``transfer/rewrite.py``) and client mirror configuration, as pure functions: no server."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
import typer

from cargohold.cache.rules import CacheRule, RuleSet
from cargohold.cli.client_config import (
    containerd_hosts,
    docker_daemon,
    endpoint,
    podman_registries,
)
from cargohold.cli.rewrite import addresses, unified_diff
from cargohold.oci.reference import Reference
from cargohold.transfer.rewrite import (
    PinError,
    PrefixMap,
    Rewriter,
    expand,
    kind_of,
    rewrite_dockerfile,
    rewrite_text,
    rewrite_yaml,
    rules_from_api,
    sync_rules_from_api,
)

HOST = "reg.example.com:5000"
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
RULES = RuleSet([
    CacheRule.build("hub", "docker.io/library/*", "hub/*", dockerhub_mirror=True),
    CacheRule.build("bitnami", "docker.io/bitnami/*", "bitnami/*"),
    CacheRule.build("gh", "ghcr.io/*", "gh/*"),
    CacheRule.build("k8s", "registry.k8s.io/*", "k8s/*"),
])


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


class Pins:
    """A stand-in for the registry: every tag resolves to ``A`` unless listed in ``missing``."""

    def __init__(self, missing: tuple[str, ...] = ()) -> None:
        self.asked: list[str] = []
        self.missing = missing

    def __call__(self, ref: Reference) -> str:
        self.asked.append(f"{ref.registry}/{ref.repository}:{ref.identifier}")
        if ref.repository in self.missing:
            raise PinError("no such manifest")
        return A


def rw(pin: Pins | None = None, maps: tuple[str, ...] = ()) -> Rewriter:
    return Rewriter(HOST, RULES, [PrefixMap.parse(m) for m in maps], pin=pin)


# ---- Dockerfiles -----------------------------------------------------------------------------------------

DOCKERFILE = dedent(f"""
    # syntax=docker/dockerfile:1
    ARG GO_IMAGE="golang:1.22"
    ARG BASE=alpine:3.20 OTHER=1
    ARG PY
    FROM --platform=$BUILDPLATFORM ${{GO_IMAGE}} AS build
    COPY --from=docker.io/library/busybox:1.36 /bin/busybox /bin/
    RUN go build -o /out ./...

    FROM build AS test
    RUN go test ./...

    # the runtime image
    from $BASE as final
    COPY --from=build /out /usr/bin/app
    COPY --from=0 /etc/passwd /etc/passwd
    FROM ghcr.io/org/tool:v1@{B} AS tool
    FROM python:${{PY:-3.12}}-slim
    FROM {HOST}/team/base:1
    FROM scratch
    FROM gcr.io/distroless/static:nonroot
    """)


def test_dockerfile_rewrites_from_copy_from_and_arg_defaults() -> None:
    result = rewrite_dockerfile(DOCKERFILE, rw())
    assert result.text == dedent(f"""
        # syntax=docker/dockerfile:1
        ARG GO_IMAGE="{HOST}/hub/golang:1.22"
        ARG BASE={HOST}/hub/alpine:3.20 OTHER=1
        ARG PY
        FROM --platform=$BUILDPLATFORM ${{GO_IMAGE}} AS build
        COPY --from={HOST}/hub/busybox:1.36 /bin/busybox /bin/
        RUN go build -o /out ./...

        FROM build AS test
        RUN go test ./...

        # the runtime image
        from $BASE as final
        COPY --from=build /out /usr/bin/app
        COPY --from=0 /etc/passwd /etc/passwd
        FROM {HOST}/gh/org/tool:v1@{B} AS tool
        FROM {HOST}/hub/python:${{PY:-3.12}}-slim
        FROM {HOST}/team/base:1
        FROM scratch
        FROM gcr.io/distroless/static:nonroot
        """)
    by_status = {(f.line, f.status) for f in result.findings}
    assert (18, "private") in by_status
    assert (20, "public") in by_status
    assert (2, "rewritten") in by_status and (3, "rewritten") in by_status  # the ARG lines, not the FROM lines
    assert not any(f.text in ("build", "scratch", "0") for f in result.findings)


def test_dockerfile_pin_keeps_tag_and_existing_digests() -> None:
    pins = Pins()
    result = rewrite_dockerfile(DOCKERFILE, rw(pins))
    lines = result.text.splitlines()
    assert lines[1] == f'ARG GO_IMAGE="{HOST}/hub/golang:1.22@{A}"'
    assert lines[2] == f"ARG BASE={HOST}/hub/alpine:3.20@{A} OTHER=1"
    assert lines[5].startswith(f"COPY --from={HOST}/hub/busybox:1.36@{A} ")
    assert lines[15] == f"FROM {HOST}/gh/org/tool:v1@{B} AS tool"  # already pinned: its digest stays, no request
    assert lines[16] == f"FROM {HOST}/hub/python:${{PY:-3.12}}-slim"  # a variable tag cannot be pinned
    assert sorted(pins.asked) == sorted([f"{HOST}/hub/golang:1.22", f"{HOST}/hub/alpine:3.20", f"{HOST}/hub/busybox:1.36"])
    note = next(f for f in result.findings if f.line == 17).note
    assert "not pinned" in note


def test_dockerfile_untagged_pins_latest_and_failures_are_reported() -> None:
    pins = Pins(missing=("hub/nosuch",))
    result = rewrite_dockerfile("FROM nginx\nFROM nosuch:1\n", rw(pins))
    assert result.text == f"FROM {HOST}/hub/nginx@{A}\nFROM {HOST}/hub/nosuch:1\n"
    assert f"{HOST}/hub/nginx:latest" in pins.asked
    [error] = result.errors
    assert error.line == 2 and "no such manifest" in error.note


def test_dockerfile_variable_in_name_and_unset_arg_are_left_alone() -> None:
    text = "ARG REG=docker.io\nARG IMAGE\nFROM ${REG}/library/alpine:3.20\nFROM $IMAGE\n"
    result = rewrite_dockerfile(text, rw())
    assert result.text == text
    first, second = result.findings
    assert first.status == "skipped" and first.reference is not None and first.public  # still public for --check
    assert second.status == "skipped" and "no ARG default" in second.note


def test_dockerfile_arg_after_from_is_not_global_and_stage_alias_is_not_an_image() -> None:
    text = "FROM alpine:3.20 AS base\nARG BASE=busybox\nFROM base\nFROM BASE\n"
    assert rewrite_dockerfile(text, rw()).text == f"FROM {HOST}/hub/alpine:3.20 AS base\nARG BASE=busybox\nFROM base\nFROM BASE\n"


def test_dockerfile_crlf_and_missing_final_newline_survive() -> None:
    assert rewrite_dockerfile("FROM alpine\r\nRUN true", rw()).text == f"FROM {HOST}/hub/alpine\r\nRUN true"


# ---- Kubernetes and compose ---------------------------------------------------------------------------------

K8S = dedent(f"""
    # a deployment
    apiVersion: apps/v1
    kind: Deployment
    spec:
      template:
        spec:
          initContainers:
          - {{name: init, image: busybox:1.36}}
          containers:
            - name: web
              image: nginx:1.25   # the web server
            - image: "ghcr.io/org/app:v2"
              name: app
            - name: private
              image: '{HOST}/team/api:7'
            - name: pinned
              image: registry.k8s.io/pause:3.9@{B}
            - name: elsewhere
              image: quay.io/prometheus/node-exporter:v1.8.0
            - name: templated
              image: "{{{{ .Values.image }}}}"
    ---
    kind: Pod
    spec:
      containers:
      - image: docker.io/library/redis
        name: redis
    """)


def test_kubernetes_image_keys_at_any_depth_quoting_and_comments_kept() -> None:
    result = rewrite_yaml(K8S, rw())
    assert result.text == dedent(f"""
        # a deployment
        apiVersion: apps/v1
        kind: Deployment
        spec:
          template:
            spec:
              initContainers:
              - {{name: init, image: {HOST}/hub/busybox:1.36}}
              containers:
                - name: web
                  image: {HOST}/hub/nginx:1.25   # the web server
                - image: "{HOST}/gh/org/app:v2"
                  name: app
                - name: private
                  image: '{HOST}/team/api:7'
                - name: pinned
                  image: {HOST}/k8s/pause:3.9@{B}
                - name: elsewhere
                  image: quay.io/prometheus/node-exporter:v1.8.0
                - name: templated
                  image: "{{{{ .Values.image }}}}"
        ---
        kind: Pod
        spec:
          containers:
          - image: {HOST}/hub/redis
            name: redis
        """)
    statuses = {f.text: f.status for f in result.findings}
    assert statuses[f"{HOST}/team/api:7"] == "private"
    assert statuses["quay.io/prometheus/node-exporter:v1.8.0"] == "public"


def test_map_applies_before_rules() -> None:
    text = "image: quay.io/prometheus/node-exporter:v1.8.0\nother:\n  image: docker.io/library/alpine:3.20\n"
    result = rewrite_yaml(text, rw(maps=("quay.io/prometheus=prom", "docker.io/library=mirror")))
    assert result.text == f"image: {HOST}/prom/node-exporter:v1.8.0\nother:\n  image: {HOST}/mirror/alpine:3.20\n"


COMPOSE = dedent("""
    services:
      db:
        image: "postgres:16"    # keep me
        environment:
          POSTGRES_PASSWORD: example
      cache:
        image: redis:${REDIS_VERSION:-7}
      app:
        build: .
        image: ${APP_IMAGE}
    """)


def test_compose_with_variables() -> None:
    pins = Pins()
    result = rewrite_yaml(COMPOSE, rw(pins))
    assert result.text == dedent(f"""
        services:
          db:
            image: "{HOST}/hub/postgres:16@{A}"    # keep me
            environment:
              POSTGRES_PASSWORD: example
          cache:
            image: {HOST}/hub/redis:${{REDIS_VERSION:-7}}
          app:
            build: .
            image: ${{APP_IMAGE}}
        """)
    assert pins.asked == [f"{HOST}/hub/postgres:16"]


# ---- Helm values --------------------------------------------------------------------------------------------------

VALUES = dedent("""
    image:
      repository: nginx
      tag: "1.25"
      pullPolicy: IfNotPresent
    bitnami:
      image:
        registry: docker.io
        repository: bitnami/redis
        tag: 7.2.4   # chart default
        digest: ""
    sidecars:
      - name: a
        image:
          repository: ghcr.io/org/sidecar
          tag: v1
      - repository: alpine
        tag: "3.19"
      - repository: alpine
        tag: "3.20"
    noTag:
      image:
        repository: busybox
    chart:
      repository: https://charts.example.com
    git:
      repository: my-repo
    """)


def test_helm_values_without_pin() -> None:
    result = rewrite_yaml(VALUES, rw())
    assert result.text == dedent(f"""
        image:
          repository: {HOST}/hub/nginx
          tag: "1.25"
          pullPolicy: IfNotPresent
        bitnami:
          image:
            registry: {HOST}
            repository: bitnami/redis
            tag: 7.2.4   # chart default
            digest: ""
        sidecars:
          - name: a
            image:
              repository: {HOST}/gh/org/sidecar
              tag: v1
          - repository: {HOST}/hub/alpine
            tag: "3.19"
          - repository: {HOST}/hub/alpine
            tag: "3.20"
        noTag:
          image:
            repository: {HOST}/hub/busybox
        chart:
          repository: https://charts.example.com
        git:
          repository: my-repo
        """)


def test_helm_values_pinned_into_digest_or_tag() -> None:
    pins = Pins()
    result = rewrite_yaml(VALUES, rw(pins))
    lines = result.text.splitlines()
    assert lines[2] == f'  tag: "1.25@{A}"'
    assert lines[8] == "    tag: 7.2.4   # chart default"  # the digest sibling takes the digest
    assert lines[9] == f'    digest: "{A}"'
    assert lines[14] == f"      tag: v1@{A}"
    assert lines[16] == f'    tag: "3.19@{A}"' and lines[18] == f'    tag: "3.20@{A}"'
    assert f"{HOST}/hub/alpine:3.19" in pins.asked and f"{HOST}/hub/alpine:3.20" in pins.asked
    assert f"{HOST}/bitnami/redis:7.2.4" in pins.asked
    busybox = next(f for f in result.findings if f.text == "busybox")
    assert "not pinned" in busybox.note  # no tag: sibling: the chart's appVersion decides


def test_helm_already_pinned_digest_kept() -> None:
    text = f"image:\n  registry: docker.io\n  repository: bitnami/redis\n  tag: 7.2.4\n  digest: {B}\n"
    pins = Pins()
    result = rewrite_yaml(text, rw(pins))
    assert result.text == f"image:\n  registry: {HOST}\n  repository: bitnami/redis\n  tag: 7.2.4\n  digest: {B}\n"
    assert pins.asked == []


# ---- plumbing -------------------------------------------------------------------------------------------------------


def test_kind_of_and_dispatch() -> None:
    assert kind_of("Dockerfile", "") == "dockerfile"
    assert kind_of("build/app.Dockerfile", "") == "dockerfile"
    assert kind_of("Containerfile", "") == "dockerfile"
    assert kind_of("deploy.yaml", "FROM x") == "yaml"
    assert kind_of("mystery", "# hi\nFROM alpine\n") == "dockerfile"
    assert rewrite_text("x.yml", "image: alpine\n", rw()).text == f"image: {HOST}/hub/alpine\n"


@pytest.mark.parametrize(("value", "env", "expected"), [
    ("$A", {"A": "x"}, "x"), ("${A}:1", {"A": "x"}, "x:1"), ("${A:-d}", {"A": ""}, "d"), ("${A-d}", {"A": ""}, ""),
    ("${A:+w}", {"A": "x"}, "w"), ("${A+w}", {}, ""), ("$UNSET", {}, ""),
])
def test_expand(value: str, env: dict[str, str | None], expected: str) -> None:
    assert expand(value, env) == expected


def test_prefix_map_parsing() -> None:
    assert PrefixMap.parse("docker.io/library=hub") == PrefixMap("docker.io", "library", "hub")
    assert PrefixMap.parse("index.docker.io/nginx=web/") == PrefixMap("docker.io", "library/nginx", "web")
    assert PrefixMap.parse("ghcr.io=gh").local(Reference.parse("ghcr.io/a/b:1")) == "gh/a/b"
    for bad in ("docker.io/library", "library=hub", "docker.io/library=Hub!", "=hub"):
        with pytest.raises(ValueError):
            PrefixMap.parse(bad)


def test_rules_from_api_skips_bad_rules() -> None:
    rules, warnings = rules_from_api([
        {"name": "hub", "source": "docker.io/library/*", "target": "hub/*", "dockerhub_mirror": True},
        {"name": "bad", "source": "nonsense", "target": "x/*"},
    ])
    assert [r.name for r in rules.rules] == ["hub"] and rules.dockerhub_mirror is not None
    assert len(warnings) == 1 and "bad" in warnings[0]


def test_unified_diff() -> None:
    diff = unified_diff("Dockerfile", "FROM alpine\nRUN x", f"FROM {HOST}/hub/alpine\nRUN x")
    assert diff.startswith("--- a/Dockerfile\n+++ b/Dockerfile\n")
    assert f"-FROM alpine\n+FROM {HOST}/hub/alpine\n" in diff


# ---- sync rules as a source of local names ---------------------------------------------------------------------------

SYNC = [
    {"name": "alpine", "source": "docker.io/alpine", "target": "base/alpine", "tag_regex": "^3\\."},
    {"name": "static-b", "source": "gcr.io/distroless/static", "target": "mirror/static"},
    {"name": "static-a", "source": "gcr.io/distroless/static", "target": "base/static"},
]


def test_sync_rules_from_api_normalizes_sources_and_skips_bad_ones() -> None:
    sync, warnings = sync_rules_from_api([
        *SYNC,
        {"name": "wild", "source": "ghcr.io/*", "target": "gh/*"},
        {"name": "nohost", "source": "alpine", "target": "x"},
        {"name": "badtarget", "source": "ghcr.io/a/b", "target": "Not A Name"},
        {"name": "missing"},
    ])
    assert [(s.name, s.registry, s.repository, s.target) for s in sync] == [
        ("alpine", "docker.io", "library/alpine", "base/alpine"),
        ("static-b", "gcr.io", "distroless/static", "mirror/static"),
        ("static-a", "gcr.io", "distroless/static", "base/static"),
    ]
    assert [w.split("'")[1] for w in warnings] == ["wild", "nohost", "badtarget", "missing"]


def test_precedence_map_then_sync_then_cache_rule() -> None:
    sync, _ = sync_rules_from_api(SYNC)
    exact = RuleSet([*RULES.rules, CacheRule.build("alp", "docker.io/library/alpine", "cached/alpine")])
    rewriter = Rewriter(HOST, exact, [PrefixMap.parse("docker.io/library/alpine=mine/alpine")], sync=sync)
    assert rewriter.mapping(Reference.parse("alpine:3.20")).via == "--map docker.io/library/alpine=mine/alpine"  # type: ignore[union-attr]
    rewriter = Rewriter(HOST, exact, sync=sync)
    for text in ("alpine:3.20", "docker.io/library/alpine", "index.docker.io/alpine:edge"):
        found = rewriter.mapping(Reference.parse(text))
        assert found is not None and (found.local, found.via) == ("base/alpine", "sync rule alpine"), text
    # a cache rule still serves what no sync rule copies
    assert rewriter.mapping(Reference.parse("busybox:1.36")).via == "cache rule hub"  # type: ignore[union-attr]
    assert rewriter.mapping(Reference.parse("docker.io/library/alpine-extra:1")).local == "hub/alpine-extra"  # type: ignore[union-attr]
    # two sync rules from one source: the first by name, the other named in the note
    found = rewriter.mapping(Reference.parse("gcr.io/distroless/static:nonroot"))
    assert found is not None and found.local == "base/static" and "static-b (→ mirror/static)" in found.note


def test_sync_rule_target_is_pinned_by_its_local_tag() -> None:
    sync, _ = sync_rules_from_api(SYNC)
    pins = Pins()
    result = rewrite_dockerfile("FROM alpine:3.20\nFROM alpine@" + B + "\n", Rewriter(HOST, RULES, pin=pins, sync=sync))
    assert result.text == f"FROM {HOST}/base/alpine:3.20@{A}\nFROM {HOST}/base/alpine@{B}\n"
    assert pins.asked == [f"{HOST}/base/alpine:3.20"]  # the local repository's tag; an already pinned digest is kept
    assert [f.via for f in result.findings] == ["sync rule alpine", "sync rule alpine"]


def test_dockerfile_default_word_and_arg_default_are_both_rewritten() -> None:
    text = "ARG BASE=alpine:3.20\nFROM ${BASE:-busybox:1.36} AS a\nFROM ${BASE} AS b\nFROM ${NONE:-a}\nFROM ${NONE-scratch}\n"
    result = rewrite_dockerfile(text, rw(Pins()))
    assert result.text == (f"ARG BASE={HOST}/hub/alpine:3.20@{A}\nFROM ${{BASE:-{HOST}/hub/busybox:1.36@{A}}} AS a\n"
                           "FROM ${BASE} AS b\nFROM ${NONE:-a}\nFROM ${NONE-scratch}\n")
    assert [f.text for f in result.findings if f.status == "rewritten"] == ["busybox:1.36", "alpine:3.20"]  # the ARG once


def test_dockerfile_empty_arg_default_is_no_finding() -> None:
    text = "ARG BASE=\nFROM ${BASE-alpine:3.20} AS a\nFROM ${BASE:-busybox:1.36} AS b\nFROM ${BASE}\n"
    result = rewrite_dockerfile(text, rw())
    assert result.text == f"ARG BASE=\nFROM ${{BASE-{HOST}/hub/alpine:3.20}} AS a\nFROM ${{BASE:-{HOST}/hub/busybox:1.36}} AS b\nFROM ${{BASE}}\n"
    assert all(f.text for f in result.findings), result.findings
    assert [(f.text, f.status) for f in result.findings] == [
        ("alpine:3.20", "rewritten"), ("busybox:1.36", "rewritten"), ("${BASE}", "skipped")]
    assert result.findings[-1].note == "$BASE's ARG default is empty"
    assert not result.errors


# ---- fixtures: tests/data/rewrite/<case>/{input,expected,pinned} -----------------------------------------------------

DATA = Path(__file__).resolve().parents[1] / "data" / "rewrite"
CASES = sorted(p.name for p in DATA.iterdir() if (p / "input").is_dir())


def fixture_pin(ref: Reference) -> str:
    """A stable stand-in digest per local NAME:TAG, so that the expected files can hold it."""
    return "sha256:" + hashlib.sha256(f"{ref.repository}:{ref.identifier}".encode()).hexdigest()


def fixture_rewriter(case: str, pin: bool) -> Rewriter:
    base = json.loads((DATA / "rules.json").read_text())
    extra = json.loads((DATA / case / "case.json").read_text()) if (DATA / case / "case.json").exists() else {}
    rules, warnings = rules_from_api([*base["cache_rules"], *extra.get("cache_rules", [])])
    sync, _ = sync_rules_from_api(extra.get("sync_rules", []))
    assert not warnings
    return Rewriter(base["host"], rules, [PrefixMap.parse(m) for m in base["maps"]],
                    pin=fixture_pin if pin else None, sync=sync)


def test_fixture_set_covers_the_tricky_cases() -> None:
    assert {"dockerfile-multistage", "dockerfile-args", "dockerfile-pinned-private", "compose", "k8s-deployment",
            "helm-values", "sync-rules"} <= set(CASES)


@pytest.mark.parametrize("pinned", [False, True], ids=["plain", "pinned"])
@pytest.mark.parametrize("case", CASES)
def test_fixture_case(case: str, pinned: bool) -> None:
    inputs = sorted((DATA / case / "input").iterdir())
    assert inputs
    for source in inputs:
        expected = (DATA / case / ("pinned" if pinned else "expected") / source.name).read_text()
        result = rewrite_text(source.name, source.read_text(), fixture_rewriter(case, pinned))
        assert not result.errors
        assert result.text == expected, f"{case}/{source.name}"
        # the output is a fixed point: rewriting it again changes nothing, and nothing public is left with a rule
        again = rewrite_text(source.name, expected, fixture_rewriter(case, pinned))
        assert again.text == expected
        assert not [f for f in again.findings if f.status == "rewritten" and f.reference and f.reference.registry != "registry.example.com"]


# ---- the CLI's two addresses -----------------------------------------------------------------------------------------


def test_addresses_registry_is_the_server_url_and_host_is_what_is_written() -> None:
    # --registry is the cargohold URL, as everywhere; the host written defaults to its host and port
    assert addresses("http://127.0.0.1:5000", None, None) == ("127.0.0.1:5000", "http://127.0.0.1:5000")
    assert addresses("HTTPS://Reg.Example.com/", None, None) == ("reg.example.com", "https://reg.example.com")
    # --host names what is written (a load balancer's name); the server stays --registry
    assert addresses("http://127.0.0.1:5000", None, "lb.example.com") == ("lb.example.com", "http://127.0.0.1:5000")
    assert addresses("http://127.0.0.1:5000", None, "Reg.Example.com:443") == ("reg.example.com:443", "http://127.0.0.1:5000")
    # --server, the old hidden name of --registry, still names the server
    assert addresses("http://127.0.0.1:5000", "https://s:8443", None) == ("s:8443", "https://s:8443")
    # a bare HOST for --registry (its old meaning here) is a usage error that names --host
    with pytest.raises(typer.BadParameter) as caught:
        addresses("reg.example.com", None, None)
    assert caught.value.param_hint == "--registry" and "--host" in str(caught.value)
    for registry, server, host in (("http://h/path", None, None), ("ftp://h:1", None, None),
                                   ("http://h", "reg.example.com:5000", None), ("http://h", None, "h/x"), ("http://h", None, "")):
        with pytest.raises(typer.BadParameter):
            addresses(registry, server, host)


# ---- client configuration --------------------------------------------------------------------------------------------


def test_containerd_hosts_toml() -> None:
    assert containerd_hosts(RULES, "https", "cargohold.example.com") == dedent("""
        # /etc/containerd/certs.d/docker.io/hosts.toml
        server = "https://registry-1.docker.io"

        [host."https://cargohold.example.com"]
          capabilities = ["pull", "resolve"]

        # /etc/containerd/certs.d/ghcr.io/hosts.toml
        server = "https://ghcr.io"

        [host."https://cargohold.example.com"]
          capabilities = ["pull", "resolve"]

        # /etc/containerd/certs.d/registry.k8s.io/hosts.toml
        server = "https://registry.k8s.io"

        [host."https://cargohold.example.com"]
          capabilities = ["pull", "resolve"]
        """)


def test_docker_daemon_json() -> None:
    assert json.loads(docker_daemon(RULES, "https", "c.example.com") or "") == {"registry-mirrors": ["https://c.example.com"]}
    assert json.loads(docker_daemon(RULES, "http", "10.0.0.5:5000") or "") == {
        "registry-mirrors": ["http://10.0.0.5:5000"], "insecure-registries": ["10.0.0.5:5000"],
    }
    assert docker_daemon(RuleSet([CacheRule.build("gh", "ghcr.io/*", "gh/*")]), "https", "c") is None


def test_podman_registries_conf() -> None:
    rules = RuleSet([
        CacheRule.build("hub", "docker.io/library/*", "hub/*"),
        CacheRule.build("gh", "ghcr.io/*", "gh/*"),
        CacheRule.build("one", "quay.io/org/app", "mirrors/app", insecure=True),
    ])
    assert podman_registries(rules, "http", "10.0.0.5:5000") == dedent("""
        # /etc/containers/registries.conf.d/cargohold.conf

        # cache rule hub: docker.io/library/* -> hub/*
        [[registry]]
        prefix = "docker.io/library"
        location = "docker.io/library"

        [[registry.mirror]]
        location = "10.0.0.5:5000/hub"
        insecure = true

        # cache rule gh: ghcr.io/* -> gh/*
        [[registry]]
        prefix = "ghcr.io"
        location = "ghcr.io"

        [[registry.mirror]]
        location = "10.0.0.5:5000/gh"
        insecure = true

        # cache rule one: quay.io/org/app -> mirrors/app
        [[registry]]
        prefix = "quay.io/org/app"
        location = "quay.io/org/app"
        insecure = true

        [[registry.mirror]]
        location = "10.0.0.5:5000/mirrors/app"
        insecure = true
        """)


def test_endpoint() -> None:
    assert endpoint("cargohold.example.com") == ("https", "cargohold.example.com")
    assert endpoint("http://127.0.0.1:5000/") == ("http", "127.0.0.1:5000")
    assert endpoint("10.0.0.5:5000", default_scheme="http") == ("http", "10.0.0.5:5000")
    assert endpoint("https://10.0.0.5", default_scheme="http") == ("https", "10.0.0.5")
