"""``cargohold client-config containerd|docker|podman``: mirror configuration for container clients, from the cache rules.

- **containerd**: one ``hosts.toml`` per upstream registry
  (``/etc/containerd/certs.d/<registry>/hosts.toml``). containerd adds
  ``?ns=<registry>`` to mirror requests and cargohold routes them to the
  rule on that registry, so the mirror host needs no path.
- **docker**: ``daemon.json`` ``registry-mirrors``. The Docker daemon only
  mirrors Docker Hub, and cargohold answers those requests with the rule
  marked ``--dockerhub-mirror``; without one this exits 1 and says why.
- **podman** (and buildah, skopeo, CRI-O): ``registries.conf`` entries, one
  ``[[registry]]`` per rule whose ``[[registry.mirror]]`` location carries the
  rule's local namespace (``HOST/hub`` for ``docker.io/library``).

``--host`` (alias ``--registry-host``) is the address clients reach cargohold
at; by default the ``--registry`` URL's. A bare ``--host HOST:PORT`` takes its
scheme from the ``--registry`` URL: a plain-HTTP cargohold is reached over plain
HTTP at whatever address, and a client told ``https://`` would fail its TLS
handshake there. An ``http://`` host is written as such (containerd's
``[host."http://…"]``), or marked insecure (docker, podman); an explicit
``https://HOST`` (a TLS proxy in front of a plain-HTTP cargohold) wins.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Annotated

import typer

from ..cache.rules import CacheRule, RuleSet
from ..oci.reference import DOCKER_HUB
from ..transfer.rewrite import bare_host, rules_from_api
from .access import RegistryOpt, _registry, err, fail, session
from .client import DEFAULT_REGISTRY, _items


class ClientKind(str, Enum):
    containerd = "containerd"
    docker = "docker"
    podman = "podman"


def endpoint(host: str, default_scheme: str = "https") -> tuple[str, str]:
    """``http://10.0.0.5:5000`` → (``http``, ``10.0.0.5:5000``); no scheme means ``default_scheme``."""
    scheme = host.split("://", 1)[0].lower() if "://" in host else default_scheme
    return scheme, bare_host(host)


def upstream_server(rule: CacheRule) -> str:
    registry = rule.source.registry
    scheme = "http" if rule.insecure else "https"
    return f"{scheme}://registry-1.docker.io" if registry == DOCKER_HUB else f"{scheme}://{registry}"


def containerd_hosts(rules: RuleSet, scheme: str, host: str) -> str:
    """One ``hosts.toml`` per source registry, each headed by a comment naming its path."""
    blocks = []
    seen: dict[str, CacheRule] = {}
    for rule in rules.rules:
        seen.setdefault(rule.source.registry, rule)
    for registry, rule in sorted(seen.items()):
        directory = registry if registry != DOCKER_HUB else "docker.io"
        blocks.append(
            f"# /etc/containerd/certs.d/{directory}/hosts.toml\n"
            f'server = "{upstream_server(rule)}"\n\n'
            f'[host."{scheme}://{host}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        )
    return "\n".join(blocks)


def docker_daemon(rules: RuleSet, scheme: str, host: str) -> str | None:
    """``daemon.json`` with ``registry-mirrors``; None when no rule is the Docker Hub mirror."""
    if rules.dockerhub_mirror is None:
        return None
    config: dict[str, list[str]] = {"registry-mirrors": [f"{scheme}://{host}"]}
    if scheme == "http":
        config["insecure-registries"] = [host]
    return json.dumps(config, indent=2) + "\n"


def podman_registries(rules: RuleSet, scheme: str, host: str) -> str:
    """``registries.conf`` entries: each rule's source prefix, mirrored at ``HOST/<target>``."""
    blocks = ["# /etc/containers/registries.conf.d/cargohold.conf\n"]
    seen: set[str] = set()
    for rule in sorted(rules.rules, key=lambda r: str(r.source)):
        source = rule.source
        prefix = f"{source.registry}/{source.path}" if source.path else source.registry
        if prefix in seen:
            continue  # podman allows one entry per prefix: the first rule wins
        seen.add(prefix)
        lines = [f"# cache rule {rule.name}: {source} -> {rule.target}", "[[registry]]", f'prefix = "{prefix}"', f'location = "{prefix}"']
        if rule.insecure:
            lines.append("insecure = true")
        lines += ["", "[[registry.mirror]]", f'location = "{host}/{rule.target.path}"']
        if scheme == "http":
            lines.append("insecure = true")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def client_config(
    client: Annotated[ClientKind, typer.Argument(case_sensitive=False, help="containerd, docker or podman")],
    host: Annotated[
        str | None,
        typer.Option("--host", "--registry-host", help="HOST[:PORT] (or http://HOST:PORT) clients reach cargohold at; default: --registry's"),
    ] = None,
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Print mirror configuration for a container client, from the current cache rules."""
    registry_scheme, _ = endpoint(_registry(registry))
    scheme, address = endpoint(host or _registry(registry), default_scheme=registry_scheme)
    if not address or "/" in address:
        raise typer.BadParameter(f"{host!r} is not a HOST[:PORT]", param_hint="--host")
    with session(registry) as api:
        rules, warnings = rules_from_api(_items(api.get("/api/v1/cache-rules"), "cache_rules"))
    for warning in warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}")
    if not rules:
        raise fail("there are no cache rules yet: create one with `cargohold cache-rule create`")
    if client is ClientKind.containerd:
        text = containerd_hosts(rules, scheme, address)
    elif client is ClientKind.podman:
        text = podman_registries(rules, scheme, address)
    else:
        found = docker_daemon(rules, scheme, address)
        if found is None:
            raise fail(
                "the Docker daemon only mirrors Docker Hub, and no cache rule is the Docker Hub mirror: "
                "mark a docker.io rule with `cargohold cache-rule update NAME --dockerhub-mirror`"
            )
        text = found
    sys.stdout.write(text)
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add ``cargohold client-config`` to the top-level app."""
    app.command("client-config")(client_config)
