"""What the three benchmarks (``run.py``, ``cache.py``, ``imports.py``) share.

Each benchmark starts servers, measures their process trees, pushes test images to a registry, prints a
table and writes its figures to ``bench/results/latest.json``. The logic for those steps lives here once,
so that a fix (a race in the RSS sampler, an atomic write of the results) reaches every benchmark, and so
that their figures are measured the same way and stay comparable. What only one benchmark does stays in
its own script.

Importing this module also puts ``tests/`` on ``sys.path``, so that ``from servers import …`` works in
the scripts (``tests/servers.py`` starts cargohold and docker-registry for the test suite as well).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode, urljoin, urlsplit

import psutil

if TYPE_CHECKING:
    import argparse

    import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

RESULTS = ROOT / "bench" / "results" / "latest.json"  # every benchmark's default --output
MiB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"
DOCKER_REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


class BenchError(RuntimeError):
    """A failed step: the benchmark prints it, shows the server's log and exits 1 (not a traceback)."""


class Deadline(BaseException):
    """Raised by the watchdog (SIGALRM): not an Exception, so that no handler swallows it."""


# ---------------------------------------------------------------- running a benchmark


def logger(name: str) -> Callable[[str], None]:
    """A ``log(message)`` that prints ``[name HH:MM:SS] message`` to stderr, so progress never mixes with the table."""

    def log(message: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return log


def missing_tools(prog: str, tools: Iterable[str]) -> bool:
    """Say which external tool is missing (and how to get it) before anything starts; True if one is."""
    for tool in tools:
        if not Path(tool).exists():
            print(f"{prog}: {tool} is missing; `make system-deps` installs it", file=sys.stderr)
            return True
    return False


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``sys.exit(143)``, so that the benchmark's ``finally`` still stops every server."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def start_watchdog(seconds: float, what: str) -> None:
    """Raise ``Deadline`` after ``seconds``: a hung server or client ends the run instead of blocking ``make bench``."""

    def on_alarm(*_: object) -> None:
        raise Deadline(f"the {what} did not finish in {seconds:.0f} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(seconds))


def stop_watchdog() -> None:
    """Cancel ``start_watchdog``'s alarm, so that it cannot fire while the servers are being stopped."""
    signal.alarm(0)


class Stoppable(Protocol):
    def stop(self) -> Any: ...


def stop_servers(prog: str, servers: Iterable[Stoppable | None]) -> None:
    """Stop every server that was started; one that fails to stop is reported and the others are still stopped."""
    for server in servers:
        if server is not None:
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                print(f"{prog}: stopping a server failed: {exc}", file=sys.stderr)


def kill_process(proc: subprocess.Popen[str] | None) -> None:
    """Kill and reap a helper process (a proxy, a bare sendfile server) if it is still running."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def print_log_tail(label: str, log_text: str) -> None:
    """The last lines of a server's log on stderr: after a failure, the server's side of the story."""
    if log_text.strip():
        print(f"--- {label} log (last lines) ---\n{log_text[-3000:]}", file=sys.stderr)


def remove_tmp(tmp: Path, keep: bool, log: Callable[[str], None]) -> None:
    """Remove the run's temporary directory (generated blobs, server data), unless ``--keep`` asked to inspect it."""
    if keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def settle(pause: float = 0.2) -> None:
    """Write back dirty pages left by the previous step, so that one step's writes are not the next one's I/O."""
    os.sync()
    time.sleep(pause)


# ---------------------------------------------------------------- process trees (CPU, memory, sockets)


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and every descendant (cargohold: parent, workers, multiprocessing helper); [] once it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def process_role(proc: psutil.Process, root_pid: int, tracker: str = "resource tracker") -> str:
    """What a process of a server's tree is, for the per-process memory figures ("main", "worker", …)."""
    if proc.pid == root_pid:
        return "main"
    try:
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return "gone"
    if "resource_tracker" in cmdline:
        return tracker
    return "worker" if "multiprocessing" in cmdline else Path(proc.name()).name


def tree_cpu_times(pid: int) -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds of every live process of the tree, by pid: a server's cost includes its workers."""
    out: dict[int, tuple[float, float]] = {}
    for p in process_tree(pid):
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        out[p.pid] = (t.user, t.system)
    return out


def tree_rss(pid: int) -> dict[int, int]:
    """RSS in bytes of every live process of the tree, by pid (cheap enough for a 50 ms sampler)."""
    out: dict[int, int] = {}
    for p in process_tree(pid):
        try:
            out[p.pid] = p.memory_info().rss
        except psutil.Error:
            continue
    return out


class CpuMeter:
    """CPU seconds a process tree spends between ``with`` entry and exit.

    With ``check_tree``, a process that came or went in between fails the measurement loudly: its CPU time
    would be missing from (or wrongly added to) the figure.
    """

    def __init__(self, pid: int, label: str = "", check_tree: bool = False) -> None:
        self.pid, self.label, self.check_tree = pid, label, check_tree
        self.seconds = self.user = self.system = 0.0

    def _now(self) -> tuple[float, float, set[int]]:
        times = tree_cpu_times(self.pid)
        return sum(u for u, _ in times.values()), sum(s for _, s in times.values()), set(times)

    def __enter__(self) -> CpuMeter:
        self._user, self._system, self._pids = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        user, system, pids = self._now()
        if self.check_tree and pids != self._pids and exc[0] is None:
            raise BenchError(f"{self.label}: server processes changed during a CPU measurement: {self._pids} -> {pids}")
        self.user, self.system = user - self._user, system - self._system
        self.seconds = self.user + self.system


class RssSampler(threading.Thread):
    """Sum of RSS over a process tree, sampled every ``interval`` seconds; keeps the peak and who held it.

    Sampling, because the peak of the sum is not the sum of each process's peak (``VmHWM``).
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.peak_per_process: dict[int, int] = {}
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            per = tree_rss(self.pid)
            total = sum(per.values())
            self.samples += 1
            if total > self.peak:
                self.peak = total
                self.peak_per_process = per
            self._stop_event.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        self.join()


def wait_listening(pid: int, port: int, count: int, label: str, timeout: float = 60) -> None:
    """Wait until ``count`` processes of the tree listen on ``port``.

    ``Server.start`` returns as soon as one worker answers; a worker still starting would leave every
    connection of the next measurement to the other one (SO_REUSEPORT only spreads over bound sockets).
    """
    deadline = time.monotonic() + timeout
    while True:
        listening = 0
        for p in process_tree(pid):
            try:
                conns = p.net_connections(kind="tcp")
            except psutil.Error:
                continue
            listening += any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)
        if listening >= count:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{label}: only {listening} of {count} processes listen on port {port} after {timeout:.0f} s")
        time.sleep(0.1)


# ---------------------------------------------------------------- images and blobs


def sha256(data: bytes) -> str:
    """The OCI digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """The OCI digest of a file, read in 4 MiB chunks (blobs can be larger than memory should hold)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def push_blob(http: requests.Session, url: str, repo: str, data: bytes, label: str,
              timeouts: tuple[float, float] = (10, 10)) -> str:
    """POST then PUT ?digest= with the body, which every registry supports (setup only, never measured); the digest.

    ``timeouts``: (opening the upload, sending the body).
    """
    digest = sha256(data)
    r = http.post(f"{url}/v2/{repo}/blobs/uploads/", timeout=timeouts[0])
    if r.status_code != 202:
        raise BenchError(f"{label}: opening an upload gave HTTP {r.status_code}: {r.text[:200]}")
    location = urljoin(f"{url}/", r.headers["Location"])
    sep = "&" if urlsplit(location).query else "?"
    r = http.put(f"{location}{sep}{urlencode({'digest': digest})}", data=data,
                 headers={"Content-Type": "application/octet-stream"}, timeout=timeouts[1])
    if r.status_code != 201:
        raise BenchError(f"{label}: finishing an upload gave HTTP {r.status_code}: {r.text[:200]}")
    return digest


def put_manifest(http: requests.Session, url: str, repo: str, reference: str, body: bytes, media_type: str, label: str,
                 timeout: float = 30) -> None:
    """PUT a manifest (or index) by tag or digest; anything but 201 is an error."""
    r = http.put(f"{url}/v2/{repo}/manifests/{reference}", data=body, headers={"Content-Type": media_type}, timeout=timeout)
    if r.status_code != 201:
        raise BenchError(f"{label}: manifest PUT gave HTTP {r.status_code}: {r.text[:200]}")


def push_random_image(http: requests.Session, url: str, repo: str, layers: int, layer_size: int, label: str,
                      timeouts: tuple[float, float], os_name: str = "linux", arch: str = "amd64"
                      ) -> tuple[bytes, tuple[str, int], list[tuple[str, int]]]:
    """Push ``layers`` random layers (incompressible, so that no layer of the stack can shrink them) and a small
    config; the OCI image manifest over them (not pushed: the caller picks tag or digest), the config's
    (digest, size) and the layers' (digest, size)."""
    pushed = []
    for _ in range(layers):
        data = os.urandom(layer_size)
        pushed.append((push_blob(http, url, repo, data, label, timeouts), len(data)))
        del data
    config = json.dumps({"architecture": arch, "os": os_name, "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [d for d, _ in pushed]}}).encode()
    config_digest = push_blob(http, url, repo, config, label, timeouts)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, s in pushed],
    }, indent=2).encode()
    return manifest, (config_digest, len(config)), pushed


def skopeo_copy(args: list[str], timeout: float, label: str) -> tuple[float, str]:
    """Run ``skopeo copy ARGS`` without proxy variables (loopback only); wall seconds and its stderr."""
    cmd = [SKOPEO, "copy", *args]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{label}skopeo copy did not finish in {timeout:.0f} s") from None
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise BenchError(f"{label}skopeo copy failed ({p.returncode}): {p.stderr.strip()[-800:]}")
    return wall, p.stderr


# ---------------------------------------------------------------- report


def fmt(value: float | None) -> str:
    """A figure with as many digits as matter at its size ("-" when there is none)."""
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def print_table(header: tuple[str, ...], cells: list[tuple[str, ...]], right: set[int]) -> None:
    """Aligned columns (the ``right`` ones right-aligned: numbers) under a header and a rule of dashes."""
    table = [header, *cells]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for n, row in enumerate(table):
        lines.append("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    print("\n".join(lines), flush=True)


def spread(values: list[float]) -> dict[str, Any]:
    """Median, range and every round's value: the JSON keeps the rounds, so the noise can be judged later."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}


def tool_version(tool: str, first_line: bool = False) -> str:
    """``TOOL --version`` (whole output stripped, or its first line), recorded next to the figures."""
    out = subprocess.run([tool, "--version"], check=False, capture_output=True, text=True).stdout
    return out.split("\n")[0] if first_line else out.strip()


def payload_head(started: float, args: argparse.Namespace, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The first keys of every benchmark's JSON: when, how long, and with which options (paths as strings)."""
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": time.monotonic() - started,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in exclude},
    }


def machine_info(**extra: Any) -> dict[str, Any]:
    """CPUs, kernel and Python of the machine, then ``extra`` (how busy it was): figures mean little without them."""
    return {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(), **extra}


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON through a temporary file and a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def merge_results(path: Path, key: str, payload: dict[str, Any]) -> None:
    """Put ``payload`` under ``key`` of the JSON file at ``path``, keeping its other keys (the other benchmarks')."""
    try:
        merged = json.loads(path.read_text())
        if not isinstance(merged, dict):
            merged = {}
    except (FileNotFoundError, ValueError):
        merged = {}
    merged[key] = payload
    write_json(path, merged)
