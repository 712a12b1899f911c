#!/usr/bin/env python3
"""Server-side import: ``POST /api/v1/imports`` vs ``skopeo copy --all`` between two docker-registries.

One source docker-registry (CNCF Distribution 2.8, loopback, no auth) holds a
multi-arch image: an OCI index over ``PLATFORMS`` image manifests, each with
``LAYERS`` random, incompressible layers of ``--layer-mib`` MiB and a small
config (2 × 5 × 10 MiB = 100 MiB by default). It is pushed once, over plain
HTTP. Then, for ``--rounds`` rounds, in alternating order:

* **peer**: ``skopeo copy --all docker://<source>/… docker://<target>/…`` into
  a docker-registry started fresh for the round (a new, empty data directory
  under the same temporary directory, so on the same disk);
* **cargohold**: ``POST /api/v1/imports`` (``wait: true``, ``insecure: true``,
  Basic credentials of a robot token with content/write on ``bench/*``, created
  by the admin beforehand) of the same source into a cargohold started
  fresh for the round (new data directory, SQLite, auth on, ``--workers``
  workers, ``CARGOHOLD_ALLOW_PRIVATE_UPSTREAMS=1`` so that a loopback source is
  allowed). The clock runs from the request to the ``201``.

Every target starts empty, so every round copies all 100 MiB: no "blob
already present" shortcut on either side. Before the clock starts, all
servers are up and idle and dirty pages are written back (``sync``). After it
stops, each copy is checked: the index digest, every child manifest digest and
every blob (cargohold: the stored files hashed; docker-registry: HEAD, digest
and size) must be the source's.

Memory: the peak RSS of each cargohold process during the import is its
``VmHWM`` from ``/proc/PID/status``, reset just before the request by writing
``5`` to ``/proc/PID/clear_refs`` (so it is the import's peak, not the
start-up's); the figure is the largest of them (the worker that ran the
import). A 50 ms sampler of the summed RSS of the whole process tree (parent,
workers, helpers) is reported next to it. A robot token rather than the admin's
password: cargohold checks passwords with argon2 (64 MiB of memory per check,
argon2-cffi's default) whenever a worker has not verified them within a minute,
and that login cost is not the import's. CPU seconds of cargohold and of the
source registry per import are reported too (diagnostics).

The figures are printed as a table and merged into
``bench/results/latest.json`` under ``"imports"`` (other keys kept).
Everything started is stopped and the temporary directory removed at the end;
a watchdog ends the run after ``--deadline`` seconds.

Usage: ``.venv/bin/python bench/imports.py [--rounds 5] [--layer-mib 10] [--workers 2] [--quick] [--keep]``
(``make bench`` runs it after ``bench/run.py``, which rewrites the JSON file).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    DOCKER_REGISTRY, OCI_INDEX, OCI_MANIFEST, RESULTS, SKOPEO, BenchError, Deadline, MiB, RssSampler,
    exit_on_sigterm, file_sha256, fmt, logger, machine_info, merge_results, missing_tools, payload_head,
    print_log_tail, print_table, process_role, process_tree, push_random_image, put_manifest, remove_tmp, settle,
    sha256, skopeo_copy, spread, start_watchdog, stop_servers, stop_watchdog, tool_version, tree_cpu_times,
    wait_listening,
)

PLATFORMS = (("linux", "amd64"), ("linux", "arm64"))
LAYERS = 5
SOURCE_REPO = "bench/multiarch"
TAG = "v1"
TIME_TARGET = 1.2  # cargohold's import time ≤ 1.2× skopeo copy --all's
RSS_TARGET_MIB = 150
COPY_TIMEOUT = 300.0

log = logger("bench imports")


# ---------------------------------------------------------------- the source image


@dataclass(frozen=True)
class Source:
    """What was pushed: the index, its children, every blob (digest → size)."""

    index_digest: str
    index_size: int
    children: dict[str, bytes]  # manifest digest → bytes
    blobs: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.blobs.values()) + self.index_size + sum(len(b) for b in self.children.values())


def push_source(http: Any, url: str, layer_size: int) -> Source:
    """The multi-arch image pushed into the docker-registry at ``url``: blobs (POST + PUT ?digest=), the
    platform manifests by digest, then the index by tag."""
    blobs: dict[str, int] = {}
    children: dict[str, bytes] = {}
    entries = []
    for os_name, arch in PLATFORMS:
        body, config, layers = push_random_image(http, url, SOURCE_REPO, LAYERS, layer_size, "source", (30, 120),
                                                 os_name=os_name, arch=arch)
        blobs.update(layers)
        blobs[config[0]] = config[1]
        put_manifest(http, url, SOURCE_REPO, sha256(body), body, OCI_MANIFEST, "source")
        children[sha256(body)] = body
        entries.append({"mediaType": OCI_MANIFEST, "digest": sha256(body), "size": len(body),
                        "platform": {"os": os_name, "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, indent=2).encode()
    put_manifest(http, url, SOURCE_REPO, TAG, index, OCI_INDEX, "source")
    return Source(sha256(index), len(index), children, blobs)


# ---------------------------------------------------------------- checks


def head(http: Any, url: str, what: str, auth: Any = None) -> tuple[str | None, int]:
    r = http.head(url, auth=auth, timeout=30, headers={"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"})
    if r.status_code != 200:
        raise BenchError(f"{what}: HEAD {url} gave HTTP {r.status_code}")
    return r.headers.get("Docker-Content-Digest"), int(r.headers.get("Content-Length", "-1"))


def check_registry_copy(http: Any, url: str, source: Source, label: str, auth: Any = None) -> None:
    """Index, children and blobs at ``url`` (digests and sizes via HEAD) are the source's."""
    base = f"{url}/v2/{SOURCE_REPO}"
    digest, size = head(http, f"{base}/manifests/{TAG}", label, auth)
    if (digest, size) != (source.index_digest, source.index_size):
        raise BenchError(f"{label}: the index came out as {digest} ({size} bytes), not {source.index_digest}")
    for child, body in source.children.items():
        if head(http, f"{base}/manifests/{child}", label, auth) != (child, len(body)):
            raise BenchError(f"{label}: manifest {child} is missing or different")
    for blob, blob_size in source.blobs.items():
        got = head(http, f"{base}/blobs/{blob}", label, auth)
        if got[1] != blob_size or got[0] not in (None, blob):
            raise BenchError(f"{label}: blob {blob} came out as {got}")


def check_cargohold_files(data_dir: Path, source: Source) -> None:
    """Every blob of the source is a file in cargohold's store whose bytes hash to its name."""
    for blob, size in source.blobs.items():
        algorithm, _, hexpart = blob.partition(":")
        path = data_dir / "blobs" / algorithm / hexpart[:2] / hexpart
        if not path.is_file():
            found = list((data_dir / "blobs").glob(f"**/{hexpart}"))
            if not found:
                raise BenchError(f"cargohold: blob {blob} is not in {data_dir / 'blobs'}")
            path = found[0]
        digest = file_sha256(path)
        if digest != blob or path.stat().st_size != size:
            raise BenchError(f"cargohold: {path} holds {path.stat().st_size} bytes hashing to {digest}, "
                             f"not {blob} ({size} bytes): WRONG BYTES")


# ---------------------------------------------------------------- measurement helpers


def status_kib(pid: int, field: str) -> int:
    """A ``VmHWM``/``VmRSS``-style line of ``/proc/PID/status``, in KiB (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def reset_peaks(pids: list[int]) -> None:
    """Reset each process's VmHWM to its current RSS (``clear_refs`` 5, Linux ≥ 4.0)."""
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError as exc:
            raise BenchError(f"cannot reset the peak RSS of process {pid} (/proc/{pid}/clear_refs): {exc}") from None


def cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every process of the tree, by pid: the importing worker is the one that used most."""
    return {p: user + system for p, (user, system) in tree_cpu_times(pid).items()}


# ---------------------------------------------------------------- one copy each


def copy_skopeo(source_host: str, target_host: str) -> tuple[float, str]:
    """``skopeo copy --all`` from the source to the target registry (plain http both); wall seconds, stderr."""
    return skopeo_copy(["--all", "--preserve-digests", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                        f"docker://{source_host}/{SOURCE_REPO}:{TAG}", f"docker://{target_host}/{SOURCE_REPO}:{TAG}"],
                       COPY_TIMEOUT, "")


def make_robot(http: Any, url: str, admin: tuple[str, str]) -> tuple[str, str]:
    """A robot token with content/read+write on ``bench/*`` (a scope map, then the token): Basic credentials
    that cargohold checks with a fast keyed hash. A password is checked with argon2, whose default cost
    (64 MiB of memory) would show in the peak RSS of a worker that has not seen the password for a minute:
    the login's memory, not the import's (the README says so)."""
    name = f"bench{os.getpid()}"
    r = http.post(f"{url}/api/v1/scope-maps", auth=admin, timeout=30, json={
        "name": name, "rules": [{"repository": "bench/*", "actions": ["content/read", "content/write"]}]})
    if r.status_code != 201:
        raise BenchError(f"cargohold: POST /api/v1/scope-maps gave HTTP {r.status_code}: {r.text[:300]}")
    r = http.post(f"{url}/api/v1/tokens", auth=admin, timeout=30, json={"name": name, "scope_maps": [name]})
    if r.status_code != 201:
        raise BenchError(f"cargohold: POST /api/v1/tokens gave HTTP {r.status_code}: {r.text[:300]}")
    return str(r.json()["name"]), str(r.json()["token"])


def import_cargohold(http: Any, url: str, auth: tuple[str, str], source_host: str) -> tuple[float, dict[str, Any]]:
    """``POST /api/v1/imports`` with ``wait: true``; wall seconds until the answer, and the job."""
    body = {"source": f"{source_host}/{SOURCE_REPO}:{TAG}", "targets": [f"{SOURCE_REPO}:{TAG}"], "insecure": True}
    t0 = time.perf_counter()
    r = http.post(f"{url}/api/v1/imports", json=body, auth=auth, timeout=COPY_TIMEOUT)
    wall = time.perf_counter() - t0
    if r.status_code != 201:
        raise BenchError(f"cargohold: POST /api/v1/imports gave HTTP {r.status_code}: {r.text[:800]}")
    return wall, r.json()


# ---------------------------------------------------------------- report


@dataclass
class Row:
    figure: str
    unit: str
    ours: float
    peer: float | None
    ratio: float | None
    target: str
    verdict: bool | None
    detail: str = ""


def print_rows(rows: list[Row]) -> None:
    header = ("figure", "unit", "cargohold", "skopeo", "ratio", "range", "target", "result")
    print_table(header, [
        (r.figure, r.unit, fmt(r.ours), fmt(r.peer), "-" if r.ratio is None else f"{r.ratio:.2f}×", r.detail, r.target,
         "-" if r.verdict is None else ("met" if r.verdict else "NOT MET"))
        for r in rows
    ], right={2, 3, 4})


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=None, help="rounds per side, median reported (default 5; 2 with --quick)")
    p.add_argument("--layer-mib", type=int, default=None,
                   help=f"size of each of the {len(PLATFORMS)}×{LAYERS} layers in MiB (default 10; 2 with --quick)")
    p.add_argument("--workers", type=int, default=2, help="cargohold worker processes (default 2, the server's default)")
    p.add_argument("--quick", action="store_true", help="smoke run: small layers, 2 rounds")
    p.add_argument("--deadline", type=float, default=300, help="abort the run after this many seconds (default 300)")
    p.add_argument("--output", type=Path, default=RESULTS,
                   help="JSON results file; the figures go under its \"imports\" key, other keys are kept")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (servers' data and logs)")
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if args.layer_mib is None:
        args.layer_mib = 2 if args.quick else 10
    if args.rounds < 1 or args.layer_mib < 1 or args.workers < 1:
        p.error("--rounds, --layer-mib and --workers must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if missing_tools("bench imports", (DOCKER_REGISTRY, SKOPEO)):
        return 2

    import psutil
    import requests
    from servers import DockerRegistry, Server

    exit_on_sigterm()
    start_watchdog(args.deadline, "import bench")
    tmp = Path(tempfile.mkdtemp(prefix="cargohold-bench-imports-"))
    layer_size = args.layer_mib * MiB
    started = time.monotonic()
    source_registry: DockerRegistry | None = None
    running: list[Any] = []  # the current round's target (a DockerRegistry or a Server)
    last_cargohold: Server | None = None
    http = requests.Session()
    http.trust_env = False
    try:
        total_layers = len(PLATFORMS) * LAYERS * layer_size
        if shutil.disk_usage(tmp).free < 3 * total_layers + 2 * total_layers * args.rounds:
            raise BenchError(f"not enough free space in {tmp}")
        busy_before = psutil.cpu_percent(interval=0.5)
        log("starting the source docker-registry")
        source_registry = DockerRegistry(root=tmp / "source").start()
        assert source_registry.proc is not None
        source = push_source(http, source_registry.url, layer_size)
        log(f"pushed {source_registry.host}/{SOURCE_REPO}:{TAG}: an index over {len(PLATFORMS)} platforms × {LAYERS} "
            f"layers of {args.layer_mib} MiB, {source.total / MiB:.1f} MiB in {len(source.blobs)} blobs, {source.index_digest}")

        times: dict[str, list[float]] = {"skopeo": [], "cargohold": []}
        cpu: dict[str, list[float]] = {"skopeo: source registry": [], "cargohold: source registry": [],
                                       "cargohold: server": [], "skopeo: target registry": []}
        hwm_mib: list[float] = []  # per round: the largest VmHWM of a cargohold process during the import
        sampled_mib: list[float] = []  # per round: the peak of the summed RSS of the tree, sampled
        per_process: list[dict[str, Any]] = []
        baseline_mib: list[float] = []
        fetched: list[int] = []
        restarts: list[dict[str, Any]] = []  # cargohold workers that died at start-up (before any measurement)

        def run_skopeo(n: int) -> None:
            target = DockerRegistry(root=tmp / f"peer-{n}").start()
            running.append(target)
            try:
                assert target.proc is not None
                settle()
                src0, dst0 = cpu_seconds(source_registry.proc.pid), cpu_seconds(target.proc.pid)  # type: ignore[union-attr]
                wall, _ = copy_skopeo(source_registry.host, target.host)  # type: ignore[union-attr]
                src1, dst1 = cpu_seconds(source_registry.proc.pid), cpu_seconds(target.proc.pid)  # type: ignore[union-attr]
                check_registry_copy(http, target.url, source, "skopeo's copy")
                times["skopeo"].append(wall)
                cpu["skopeo: source registry"].append(sum(src1.values()) - sum(src0.values()))
                cpu["skopeo: target registry"].append(sum(dst1.values()) - sum(dst0.values()))
                log(f"  round {n + 1}: skopeo copy --all     {wall:.3f} s  (source CPU {cpu['skopeo: source registry'][-1]:.2f} s, "
                    f"target docker-registry CPU {cpu['skopeo: target registry'][-1]:.2f} s)")
            finally:
                target.stop()
                running.remove(target)
                shutil.rmtree(target.root, ignore_errors=True)

        def run_cargohold(n: int) -> None:
            nonlocal last_cargohold
            server = Server(data_dir=tmp / f"cargohold-{n}" / "data", workers=args.workers, auth=True,
                            extra_env={"CARGOHOLD_ALLOW_PRIVATE_UPSTREAMS": "1"}).start()
            running.append(server)
            last_cargohold = server
            try:
                assert server.proc is not None
                robot = make_robot(http, server.url, ("admin", server.admin_password))
                for attempt in range(3):
                    wait_listening(server.proc.pid, server.port, args.workers, "cargohold")
                    workers_before = {p.pid for p in process_tree(server.proc.pid)}
                    # Warm every worker (credential cache, first-request imports): the request under the clock
                    # is the import, nothing else.
                    for _ in range(4 * args.workers):
                        with requests.Session() as one:
                            one.trust_env = False
                            one.get(f"{server.url}/api/v1/me", auth=robot, timeout=30, headers={"Connection": "close"})
                    settle()
                    if {p.pid for p in process_tree(server.proc.pid)} == workers_before and "exited with" not in server.log():
                        break
                    # A worker died and was restarted while starting: measure on settled workers, and say so.
                    restarts.append({"round": n + 1, "log": [line for line in server.log().splitlines() if "exited with" in line][-3:]})
                    log(f"  round {n + 1}: a cargohold worker was restarted before the import; waiting for it")
                else:
                    raise BenchError("cargohold: workers keep dying at start-up; see the log")
                procs = process_tree(server.proc.pid)
                deaths = server.log().count("exited with")
                pids = [p.pid for p in procs]
                roles = {p.pid: process_role(p, server.proc.pid) for p in procs}
                before_rss = {pid: status_kib(pid, "VmRSS") for pid in pids}
                reset_peaks(pids)
                src0, own0 = cpu_seconds(source_registry.proc.pid), cpu_seconds(server.proc.pid)  # type: ignore[union-attr]
                with RssSampler(server.proc.pid) as sampler:
                    wall, job = import_cargohold(http, server.url, robot, source_registry.host)  # type: ignore[union-attr]
                src1, own1 = cpu_seconds(source_registry.proc.pid), cpu_seconds(server.proc.pid)  # type: ignore[union-attr]
                peaks = {pid: status_kib(pid, "VmHWM") for pid in pids}
                if set(process_tree(server.proc.pid)) != set(procs) or server.log().count("exited with") != deaths:
                    raise BenchError("cargohold: a worker died during the import; see the log")
                if job.get("source_digest") != source.index_digest or job.get("state") != "succeeded":
                    raise BenchError(f"cargohold: the import answered {job}")
                check_registry_copy(http, server.url, source, "cargohold's import", robot)
                check_cargohold_files(server.data_dir, source)
                times["cargohold"].append(wall)
                used = {pid: own1.get(pid, 0.0) - own0.get(pid, 0.0) for pid in pids}
                importer = max(used, key=lambda pid: used[pid])
                cpu["cargohold: server"].append(sum(used.values()))
                cpu["cargohold: source registry"].append(sum(src1.values()) - sum(src0.values()))
                hwm_mib.append(max(peaks.values()) / 1024)
                sampled_mib.append(sampler.peak / MiB)
                baseline_mib.append(before_rss[importer] / 1024)
                fetched.append(int(job.get("bytes_done") or 0))
                per_process.append({f"{pid} {roles[pid]}{' (ran the import)' if pid == importer else ''}":
                                    {"rss_before_mib": before_rss[pid] / 1024, "vmhwm_mib": peaks[pid] / 1024,
                                     "cpu_s": used[pid]} for pid in pids})
                log(f"  round {n + 1}: cargohold import      {wall:.3f} s  (cargohold CPU {cpu['cargohold: server'][-1]:.2f} s, "
                    f"source CPU {cpu['cargohold: source registry'][-1]:.2f} s; importing worker RSS "
                    f"{before_rss[importer] / 1024:.0f} MiB before, peak {peaks[importer] / 1024:.0f} MiB; tree sum peak "
                    f"{sampler.peak / MiB:.0f} MiB)")
            finally:
                server.stop()
                running.remove(server)

        for n in range(args.rounds):
            order = [run_skopeo, run_cargohold] if n % 2 == 0 else [run_cargohold, run_skopeo]
            for step in order:
                step(n)
            if n + 1 < args.rounds:
                shutil.rmtree(tmp / f"cargohold-{n}", ignore_errors=True)
        busy_after = psutil.cpu_percent(interval=0.5)

        # ---- report
        ratios = [a / b for a, b in zip(times["cargohold"], times["skopeo"])]
        ratio_median_of_medians = statistics.median(times["cargohold"]) / statistics.median(times["skopeo"])
        mb = source.total / 1e6
        rows = [
            Row(f"import {source.total / MiB:.0f} MiB index ({len(PLATFORMS)} platforms × {LAYERS} layers) into an empty target",
                "s", statistics.median(times["cargohold"]), statistics.median(times["skopeo"]), ratio_median_of_medians,
                f"≤ {TIME_TARGET:.1f}×", ratio_median_of_medians <= TIME_TARGET,
                f"{min(ratios):.2f}–{max(ratios):.2f}"),
            Row("  throughput", "MB/s", mb / statistics.median(times["cargohold"]), mb / statistics.median(times["skopeo"]),
                statistics.median(times["skopeo"]) / statistics.median(times["cargohold"]), "", None),
            Row("peak RSS of the importing worker (VmHWM during the import)", "MiB", max(hwm_mib), None, None,
                f"≤ {RSS_TARGET_MIB}", max(hwm_mib) <= RSS_TARGET_MIB, f"{min(hwm_mib):.0f}–{max(hwm_mib):.0f}"),
            Row("  its RSS just before the import", "MiB", statistics.median(baseline_mib), None, None, "", None),
            Row("  peak of the summed RSS of all cargohold processes (50 ms samples)", "MiB", max(sampled_mib), None, None,
                "", None),
            Row("cargohold CPU per import (all processes)", "s", statistics.median(cpu["cargohold: server"]), None, None, "", None),
            Row("source registry CPU per copy", "s", statistics.median(cpu["cargohold: source registry"]),
                statistics.median(cpu["skopeo: source registry"]), None, "", None),
        ]
        print()
        print(f"server-side import: cargohold POST /api/v1/imports (wait, {args.workers} workers, auth on, robot token, SQLite) vs "
              f"skopeo copy --all, both from one docker-registry into a fresh, empty target (cargohold / docker-registry) "
              f"per round; loopback, {os.cpu_count()} CPUs; median of {args.rounds} rounds, alternating order; ratio = "
              "median cargohold time / median skopeo time (range: per-round ratios)")
        print_rows(rows)
        judged = [r for r in rows if r.verdict is not None]
        print(f"{sum(bool(r.verdict) for r in judged)} met, {sum(not r.verdict for r in judged)} not met; "
              f"CPU {busy_before:.0f}% busy before the run, {busy_after:.0f}% after")
        if max(busy_before, busy_after) > 10:
            print("warning: the machine was not idle; these figures are noisy")
        for r in restarts:
            print(f"warning: round {r['round']}: a cargohold worker died at start-up and was restarted (before the "
                  f"measurement): {' | '.join(r['log'])[:300]}")

        payload = {
            **payload_head(started, args),
            "conditions": f"source: docker-registry, no auth, loopback; peer: skopeo copy --all into a fresh docker-registry; "
                          f"cargohold: fresh server per round ({args.workers} workers, auth on, SQLite), POST /api/v1/imports "
                          "wait=true with a robot token's Basic credentials (no argon2 check); every target empty; sync before each copy",
            "image": {"index_digest": source.index_digest, "platforms": [f"{o}/{a}" for o, a in PLATFORMS],
                      "layers_per_platform": LAYERS, "layer_bytes": layer_size, "total_bytes": source.total},
            "machine": machine_info(cpu_busy_percent_before=busy_before, cpu_busy_percent_after=busy_after),
            "versions": {
                "docker-registry": tool_version(DOCKER_REGISTRY),
                "skopeo": tool_version(SKOPEO),
            },
            "figures": [
                {"figure": r.figure.strip(), "unit": r.unit, "cargohold": r.ours, "peer": r.peer,
                 "peer_is": None if r.peer is None else "skopeo copy --all", "ratio": r.ratio, "range": r.detail,
                 "target": r.target, "result": None if r.verdict is None else ("met" if r.verdict else "not met")}
                for r in rows
            ],
            "copy_s": {k: spread(v) for k, v in times.items()},
            "per_round_ratio": ratios,
            "cpu_s": {k: spread(v) for k, v in cpu.items() if v},
            "memory": {"how": "VmHWM of each cargohold process, reset (clear_refs 5) just before the import; "
                              "and the summed VmRSS of the process tree sampled every 50 ms",
                       "importing_worker_peak_mib": spread(hwm_mib), "tree_sum_sampled_peak_mib": spread(sampled_mib),
                       "importing_worker_rss_before_mib": spread(baseline_mib), "per_process": per_process},
            "cargohold_fetched_bytes": fetched,
            "cargohold_worker_restarts_before_measuring": restarts,
        }
        merge_results(args.output, "imports", payload)
        log(f"results merged into {args.output} under \"imports\" ({time.monotonic() - started:.0f} s in all)")
        return 0
    except (BenchError, Deadline) as exc:
        print(f"bench imports: {exc}", file=sys.stderr)
        if last_cargohold is not None:
            print_log_tail("cargohold", last_cargohold.log())
        return 1
    finally:
        stop_watchdog()
        stop_servers("bench imports", [*running, source_registry])
        remove_tmp(tmp, args.keep, log)


if __name__ == "__main__":
    sys.exit(main())
