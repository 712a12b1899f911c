#!/usr/bin/env python3
"""Login latency of a legitimate client, idle and during a wrong-password flood: cargohold vs docker-registry.

Both servers run in the same run on loopback: cargohold with auth on (its
defaults: 2 workers, argon2id, the login throttle, the argon2 gate) and
docker-registry (CNCF Distribution) with htpasswd auth (bcrypt, as
``htpasswd -B`` writes it). A "login" is what a client does to prove a
password: ``GET /token`` with Basic credentials on cargohold, ``GET /v2/``
with Basic credentials on docker-registry (it has no token service with
htpasswd). Every login uses a user that has not logged in before, so each one
costs a real password check (cargohold remembers a verified password for a
minute).

The flood is ``--flood`` requests with wrong passwords, released at once by a
barrier, from ``--flood-clients`` loopback addresses (127.0.10.x), each sending
no more than the login throttle allows, so that every flood request is
checked and none is turned away unchecked: the worst case for the gate, not
the easy one. While it runs, the legitimate client (127.0.0.1) logs in
``--samples`` times, one after the other; only logins that started before the
flood's last answer count as "during the flood".

Usage: ``.venv/bin/python bench/login_flood.py [--samples 20] [--flood 150] [--quick]``
(``make bench`` runs it with the defaults). Results go under ``login_flood`` in
``bench/results/latest.json``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from common import (
    DOCKER_REGISTRY, RESULTS, BenchError, Deadline, exit_on_sigterm, fmt, logger, machine_info, merge_results,
    missing_tools, payload_head, print_log_tail, print_table, remove_tmp, start_watchdog, stop_servers, stop_watchdog,
    tool_version,
)
from authhelpers import SourceAddress, provision
from servers import DockerRegistry, Server

HTPASSWD = "/usr/bin/htpasswd"
THROTTLE = 10  # cargohold's default login_throttle_attempts: each flood client stays within it
log = logger("login_flood")


@dataclass
class Side:
    """One server under test and how a login is done against it."""

    label: str
    url: str
    path: str  # the request that checks a password
    ok: int  # its answer for the right password

    def login(self, session: requests.Session, user: str, password: str) -> tuple[float, int]:
        t0 = time.perf_counter()
        r = session.get(f"{self.url}{self.path}", auth=(user, password), timeout=120)
        return time.perf_counter() - t0, r.status_code


def session_from(address: str) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.mount("http://", SourceAddress(address))
    return s


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    return {"p50_ms": statistics.median(ms), "p95_ms": percentile(ms, 0.95), "max_ms": max(ms), "n": len(ms), "samples_ms": ms}


def idle(side: Side, users: list[tuple[str, str]]) -> list[float]:
    session = session_from("127.0.0.1")
    out = []
    for user, password in users:
        seconds, status = side.login(session, user, password)
        if status != side.ok:
            raise BenchError(f"{side.label}: an idle login gave HTTP {status}, not {side.ok}")
        out.append(seconds)
    return out


def flood(side: Side, users: list[tuple[str, str]], args: argparse.Namespace) -> dict[str, Any]:
    """Release the flood, log in meanwhile; latencies of the logins that started while the flood was unanswered."""
    per_client = -(-args.flood // args.flood_clients)
    if per_client > THROTTLE:
        raise BenchError(f"--flood / --flood-clients must be at most {THROTTLE} (the login throttle) per client")
    sessions = [session_from(f"127.0.10.{1 + i // per_client}") for i in range(args.flood)]
    barrier = threading.Barrier(args.flood + 1)
    statuses: list[int] = []
    done = threading.Event()
    finished_at = [0.0]

    def attack(i: int) -> None:
        barrier.wait(timeout=60)
        try:
            r = sessions[i].get(f"{side.url}{side.path}", auth=(f"nobody-{i}", f"wrong-password-{i}"), timeout=300)
            statuses.append(r.status_code)
        except requests.RequestException:
            statuses.append(-1)

    pool = ThreadPoolExecutor(args.flood)
    futures = [pool.submit(attack, i) for i in range(args.flood)]

    def watch() -> None:
        for f in futures:
            f.result()
        finished_at[0] = time.perf_counter()
        done.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    barrier.wait(timeout=60)
    started = time.perf_counter()
    session = session_from("127.0.0.1")
    during: list[float] = []
    for user, password in users:
        if done.is_set():
            break
        seconds, status = side.login(session, user, password)
        if status != side.ok:
            raise BenchError(f"{side.label}: a login during the flood gave HTTP {status}, not {side.ok}")
        during.append(seconds)
    done.wait(timeout=600)
    pool.shutdown()
    if not during:
        raise BenchError(f"{side.label}: the flood was answered before the first login finished; raise --flood")
    counts = {str(s): statuses.count(s) for s in sorted(set(statuses))}
    return {"latencies": during, "flood_seconds": finished_at[0] - started, "flood_statuses": counts}


def htpasswd_file(path: Path, users: list[tuple[str, str]], cost: int) -> None:
    lines = []
    for user, password in users:
        p = subprocess.run([HTPASSWD, "-Bbn", "-C", str(cost), user, password], check=True, capture_output=True, text=True)
        lines.append(p.stdout.strip())
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=None, help="legitimate logins per phase (default 20; 8 with --quick)")
    p.add_argument("--flood", type=int, default=150, help="wrong-password requests released at once (default 150)")
    p.add_argument("--flood-clients", type=int, default=15, help="source addresses of the flood (default 15)")
    p.add_argument("--bcrypt-cost", type=int, default=5, help="htpasswd -B cost for docker-registry (default 5, htpasswd's own)")
    p.add_argument("--workers", type=int, default=2, help="cargohold worker processes (default 2, the server's default)")
    p.add_argument("--quick", action="store_true", help="smoke run: fewer samples")
    p.add_argument("--deadline", type=float, default=600, help="abort the run after this many seconds (default 600)")
    p.add_argument("--output", type=Path, default=RESULTS, help="JSON results file (merged under login_flood)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (servers' data and logs)")
    args = p.parse_args(argv)
    if args.samples is None:
        args.samples = 8 if args.quick else 20
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if missing_tools("login_flood", [DOCKER_REGISTRY, HTPASSWD]):
        return 1
    exit_on_sigterm()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="cargohold-login-flood-"))
    cargohold: Server | None = None
    registry: DockerRegistry | None = None
    try:
        start_watchdog(args.deadline, "login flood benchmark")
        names = [f"dev{i:03d}" for i in range(2 * args.samples)]
        passwords = {name: f"correct-horse-{name}-battery" for name in names}
        users = [(n, passwords[n]) for n in names]
        idle_users, flood_users = users[: args.samples], users[args.samples :]

        log(f"starting cargohold (auth on, {args.workers} workers) and docker-registry (htpasswd, bcrypt cost {args.bcrypt_cost})")
        cargohold = Server(data_dir=tmp / "cargohold" / "data", workers=args.workers, auth=True).start()
        provision(cargohold, users={n: {"scope_maps": [], "password": passwords[n]} for n in names})
        htpasswd = tmp / "htpasswd"
        htpasswd_file(htpasswd, users, args.bcrypt_cost)
        registry = DockerRegistry(root=tmp / "docker-registry", htpasswd=htpasswd).start()

        sides = [
            Side("cargohold", cargohold.url, "/token?service=cargohold", 200),
            Side("docker-registry", registry.url, "/v2/", 200),
        ]
        results: dict[str, Any] = {}
        for side in sides:
            log(f"{side.label}: {args.samples} idle logins")
            quiet = idle(side, idle_users)
            log(f"{side.label}: logins during a {args.flood}-request wrong-password flood from {args.flood_clients} clients")
            loud = flood(side, flood_users, args)
            results[side.label] = {
                "idle": summary(quiet),
                "flood": summary(loud["latencies"]),
                "flood_seconds": loud["flood_seconds"],
                "flood_statuses": loud["flood_statuses"],
            }
        stop_watchdog()

        ours, theirs = results["cargohold"], results["docker-registry"]
        rows = []
        for phase in ("idle", "flood"):
            for key in ("p50_ms", "p95_ms"):
                a, b = ours[phase][key], theirs[phase][key]
                rows.append((f"login {key[:3]} {phase}", fmt(a), fmt(b), f"{a / b:.2f}" if b else "-"))
        for label, side in (("cargohold", ours), ("docker-registry", theirs)):
            slowdown = side["flood"]["p50_ms"] / side["idle"]["p50_ms"]
            rows.append((f"{label}: flood p50 / idle p50", "", "", f"{slowdown:.2f}"))
        print(f"\nLogin latency of a legitimate client, idle and during {args.flood} parallel wrong-password logins "
              f"({args.flood_clients} clients); ms")
        print_table(("figure", "cargohold", "docker-registry", "ratio"), rows, {1, 2, 3})
        print(f"flood answered in {fmt(ours['flood_seconds'])} s (cargohold, {ours['flood_statuses']}) and "
              f"{fmt(theirs['flood_seconds'])} s (docker-registry, {theirs['flood_statuses']}); logins counted during it: "
              f"{ours['flood']['n']} and {theirs['flood']['n']}")

        payload = {
            **payload_head(started, args),
            "machine": machine_info(),
            "docker_registry": tool_version(DOCKER_REGISTRY, first_line=True),
            "results": results,
        }
        merge_results(args.output, "login_flood", payload)
        log(f"wrote {args.output} (login_flood)")
        return 0
    except (BenchError, Deadline) as exc:
        print(f"login_flood: {exc}", file=sys.stderr)
        if cargohold is not None:
            print_log_tail("cargohold", cargohold.log())
        return 1
    finally:
        stop_watchdog()
        stop_servers("login_flood", [cargohold, registry])
        remove_tmp(tmp, args.keep, log)


if __name__ == "__main__":
    sys.exit(main())
