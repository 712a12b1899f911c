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
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

MiB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"
DOCKER_REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
PLATFORMS = (("linux", "amd64"), ("linux", "arm64"))
LAYERS = 5
SOURCE_REPO = "bench/multiarch"
TAG = "v1"
TIME_TARGET = 1.2  # cargohold's import time ≤ 1.2× skopeo copy --all's
RSS_TARGET_MIB = 150
COPY_TIMEOUT = 300.0


class BenchError(RuntimeError):
    pass


class Deadline(BaseException):
    """Raised by the watchdog (SIGALRM): not an Exception, so that no handler swallows it."""


def log(message: str) -> None:
    print(f"[bench imports {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


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

    def push_blob(data: bytes) -> str:
        digest = sha256(data)
        r = http.post(f"{url}/v2/{SOURCE_REPO}/blobs/uploads/", timeout=30)
        if r.status_code != 202:
            raise BenchError(f"source: opening an upload gave HTTP {r.status_code}: {r.text[:200]}")
        location = r.headers["Location"]
        location = location if location.startswith("http") else url + location
        r = http.put(f"{location}{'&' if '?' in location else '?'}digest={digest}", data=data,
                     headers={"Content-Type": "application/octet-stream"}, timeout=120)
        if r.status_code != 201:
            raise BenchError(f"source: finishing an upload gave HTTP {r.status_code}: {r.text[:200]}")
        return digest

    def push_manifest(body: bytes, reference: str, media_type: str) -> None:
        r = http.put(f"{url}/v2/{SOURCE_REPO}/manifests/{reference}", data=body, headers={"Content-Type": media_type},
                     timeout=30)
        if r.status_code != 201:
            raise BenchError(f"source: manifest PUT gave HTTP {r.status_code}: {r.text[:200]}")

    blobs: dict[str, int] = {}
    children: dict[str, bytes] = {}
    entries = []
    for os_name, arch in PLATFORMS:
        layers = []
        for _ in range(LAYERS):
            data = os.urandom(layer_size)
            layers.append({"mediaType": OCI_LAYER, "digest": push_blob(data), "size": len(data)})
            blobs[layers[-1]["digest"]] = len(data)
            del data
        config = json.dumps({"architecture": arch, "os": os_name, "config": {"Cmd": ["/bin/sh"]},
                             "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layers]}}).encode()
        blobs[push_blob(config)] = len(config)
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
                           "layers": layers}, indent=2).encode()
        push_manifest(body, sha256(body), OCI_MANIFEST)
        children[sha256(body)] = body
        entries.append({"mediaType": OCI_MANIFEST, "digest": sha256(body), "size": len(body),
                        "platform": {"os": os_name, "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, indent=2).encode()
    push_manifest(index, TAG, OCI_INDEX)
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
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(4 * MiB):
                h.update(chunk)
        if "sha256:" + h.hexdigest() != blob or path.stat().st_size != size:
            raise BenchError(f"cargohold: {path} holds {path.stat().st_size} bytes hashing to sha256:{h.hexdigest()}, "
                             f"not {blob} ({size} bytes): WRONG BYTES")


# ---------------------------------------------------------------- measurement helpers


def tree(pid: int) -> list[Any]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def role(proc: Any, root_pid: int) -> str:
    if proc.pid == root_pid:
        return "main"
    try:
        cmdline = " ".join(proc.cmdline())
    except Exception:
        return "gone"
    if "resource_tracker" in cmdline:
        return "resource tracker"
    return "worker" if "multiprocessing" in cmdline else Path(proc.name()).name


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
    out: dict[int, float] = {}
    for p in tree(pid):
        try:
            t = p.cpu_times()
        except Exception:
            continue
        out[p.pid] = t.user + t.system
    return out


class RssSampler(threading.Thread):
    """The summed RSS of a process tree, sampled every ``interval`` seconds; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            total = 0
            for p in tree(self.pid):
                try:
                    total += p.memory_info().rss
                except Exception:
                    continue
            self.peak = max(self.peak, total)
            self._stop_event.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        self.join()


def settle() -> None:
    """Write back dirty pages (the previous round's writes) so that they are not this round's I/O."""
    os.sync()
    time.sleep(0.2)


def wait_listening(pid: int, port: int, count: int, timeout: float = 60) -> None:
    """Until ``count`` processes of the tree listen on ``port`` (``Server.start`` returns after the first)."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        listening = 0
        for p in tree(pid):
            try:
                conns = p.net_connections(kind="tcp")
            except psutil.Error:
                continue
            listening += any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)
        if listening >= count:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"cargohold: only {listening} of {count} processes listen on port {port}")
        time.sleep(0.1)


def spread(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}


# ---------------------------------------------------------------- one copy each


def copy_skopeo(source_host: str, target_host: str) -> tuple[float, str]:
    """``skopeo copy --all`` from the source to the target registry (plain http both); wall seconds, stderr."""
    cmd = [SKOPEO, "copy", "--all", "--preserve-digests", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{source_host}/{SOURCE_REPO}:{TAG}", f"docker://{target_host}/{SOURCE_REPO}:{TAG}"]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=COPY_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        raise BenchError(f"skopeo copy did not finish in {COPY_TIMEOUT:.0f} s") from None
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise BenchError(f"skopeo copy failed ({p.returncode}): {p.stderr.strip()[-800:]}")
    return wall, p.stderr


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


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def print_table(rows: list[Row]) -> None:
    header = ("figure", "unit", "cargohold", "skopeo", "ratio", "range", "target", "result")
    table = [header] + [
        (r.figure, r.unit, fmt(r.ours), fmt(r.peer), "-" if r.ratio is None else f"{r.ratio:.2f}×", r.detail, r.target,
         "-" if r.verdict is None else ("met" if r.verdict else "NOT MET"))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = {2, 3, 4}
    for n, row in enumerate(table):
        print("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=None, help="rounds per side, median reported (default 5; 2 with --quick)")
    p.add_argument("--layer-mib", type=int, default=None,
                   help=f"size of each of the {len(PLATFORMS)}×{LAYERS} layers in MiB (default 10; 2 with --quick)")
    p.add_argument("--workers", type=int, default=2, help="cargohold worker processes (default 2, the server's default)")
    p.add_argument("--quick", action="store_true", help="smoke run: small layers, 2 rounds")
    p.add_argument("--deadline", type=float, default=300, help="abort the run after this many seconds (default 300)")
    p.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "latest.json",
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
    for tool in (DOCKER_REGISTRY, SKOPEO):
        if not Path(tool).exists():
            print(f"bench imports: {tool} is missing; `make system-deps` installs it", file=sys.stderr)
            return 2

    import psutil
    import requests
    from servers import DockerRegistry, Server

    def on_alarm(*_: object) -> None:
        raise Deadline(f"the import bench did not finish in {args.deadline:.0f} s")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the servers
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.deadline))
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
                    wait_listening(server.proc.pid, server.port, args.workers)
                    workers_before = {p.pid for p in tree(server.proc.pid)}
                    # Warm every worker (credential cache, first-request imports): the request under the clock
                    # is the import, nothing else.
                    for _ in range(4 * args.workers):
                        with requests.Session() as one:
                            one.trust_env = False
                            one.get(f"{server.url}/api/v1/me", auth=robot, timeout=30, headers={"Connection": "close"})
                    settle()
                    if {p.pid for p in tree(server.proc.pid)} == workers_before and "exited with" not in server.log():
                        break
                    # A worker died and was restarted while starting: measure on settled workers, and say so.
                    restarts.append({"round": n + 1, "log": [line for line in server.log().splitlines() if "exited with" in line][-3:]})
                    log(f"  round {n + 1}: a cargohold worker was restarted before the import; waiting for it")
                else:
                    raise BenchError("cargohold: workers keep dying at start-up; see the log")
                procs = tree(server.proc.pid)
                deaths = server.log().count("exited with")
                pids = [p.pid for p in procs]
                roles = {p.pid: role(p, server.proc.pid) for p in procs}
                before_rss = {pid: status_kib(pid, "VmRSS") for pid in pids}
                reset_peaks(pids)
                src0, own0 = cpu_seconds(source_registry.proc.pid), cpu_seconds(server.proc.pid)  # type: ignore[union-attr]
                with RssSampler(server.proc.pid) as sampler:
                    wall, job = import_cargohold(http, server.url, robot, source_registry.host)  # type: ignore[union-attr]
                src1, own1 = cpu_seconds(source_registry.proc.pid), cpu_seconds(server.proc.pid)  # type: ignore[union-attr]
                peaks = {pid: status_kib(pid, "VmHWM") for pid in pids}
                if set(tree(server.proc.pid)) != set(procs) or server.log().count("exited with") != deaths:
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
        print_table(rows)
        judged = [r for r in rows if r.verdict is not None]
        print(f"{sum(bool(r.verdict) for r in judged)} met, {sum(not r.verdict for r in judged)} not met; "
              f"CPU {busy_before:.0f}% busy before the run, {busy_after:.0f}% after")
        if max(busy_before, busy_after) > 10:
            print("warning: the machine was not idle; these figures are noisy")
        for r in restarts:
            print(f"warning: round {r['round']}: a cargohold worker died at start-up and was restarted (before the "
                  f"measurement): {' | '.join(r['log'])[:300]}")

        payload = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "elapsed_s": time.monotonic() - started,
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "conditions": f"source: docker-registry, no auth, loopback; peer: skopeo copy --all into a fresh docker-registry; "
                          f"cargohold: fresh server per round ({args.workers} workers, auth on, SQLite), POST /api/v1/imports "
                          "wait=true with a robot token's Basic credentials (no argon2 check); every target empty; sync before each copy",
            "image": {"index_digest": source.index_digest, "platforms": [f"{o}/{a}" for o, a in PLATFORMS],
                      "layers_per_platform": LAYERS, "layer_bytes": layer_size, "total_bytes": source.total},
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                        "cpu_busy_percent_before": busy_before, "cpu_busy_percent_after": busy_after},
            "versions": {
                "docker-registry": subprocess.run([DOCKER_REGISTRY, "--version"], check=False, capture_output=True, text=True).stdout.strip(),
                "skopeo": subprocess.run([SKOPEO, "--version"], check=False, capture_output=True, text=True).stdout.strip(),
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
        args.output.parent.mkdir(parents=True, exist_ok=True)
        try:
            merged = json.loads(args.output.read_text())
            if not isinstance(merged, dict):
                merged = {}
        except (FileNotFoundError, ValueError):
            merged = {}
        merged["imports"] = payload
        tmp_out = args.output.with_name(args.output.name + ".tmp")
        tmp_out.write_text(json.dumps(merged, indent=2) + "\n")
        os.replace(tmp_out, args.output)
        log(f"results merged into {args.output} under \"imports\" ({time.monotonic() - started:.0f} s in all)")
        return 0
    except (BenchError, Deadline) as exc:
        print(f"bench imports: {exc}", file=sys.stderr)
        if last_cargohold is not None and last_cargohold.log().strip():
            print(f"--- cargohold log (last lines) ---\n{last_cargohold.log()[-3000:]}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        for server in [*running, source_registry]:
            if server is not None:
                try:
                    server.stop()
                except Exception as exc:  # keep stopping the others
                    print(f"bench imports: stopping a server failed: {exc}", file=sys.stderr)
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
