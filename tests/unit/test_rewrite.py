"""Reference rewriting (``transfer/rewrite.py``) and client mirror configuration, as pure functions: no server."""

from __future__ import annotations

import json
import textwrap

import pytest

from cargohold.cache.rules import CacheRule, RuleSet
from cargohold.cli.client_config import (
    containerd_hosts,
    docker_daemon,
    endpoint,
    podman_registries,
)
from cargohold.cli.rewrite import unified_diff
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
