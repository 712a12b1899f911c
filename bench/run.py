#!/usr/bin/env python3
"""cargohold vs docker-registry (CNCF Distribution), side by side in one run, on loopback.

Both servers are started fresh in a temporary directory and driven by the same
clients: curl streaming from a file for pushes, an in-process socket client
that discards into one reusable buffer for blob GETs, wrk for manifests. A bare
``os.sendfile`` server (``bench/sendfile_server.py``) goes through the same blob
GETs as the machine's ceiling. A second cargohold with auth on serves the same
manifest to the same wrk run with a Bearer token (and with Basic credentials,
for reference), so the cost of authorization shows as a ratio auth-on/auth-off.
Figures are printed as tables with the ratios, the targets and PASS/MISS, and
written as JSON to ``bench/results/latest.json``. Every server is stopped and the temporary
directory (generated blobs included) removed at the end, whatever happens.

Usage: ``.venv/bin/python bench/run.py [--blob-mib 512] [--duration 10] [--quick]``
(``make bench`` runs it with the defaults). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode, urljoin, urlsplit

import psutil
import requests
from common import (
    DOCKER_REGISTRY, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, RESULTS, ROOT, BenchError, CpuMeter, MiB, RssSampler,
    exit_on_sigterm, fmt, kill_process, logger, machine_info, missing_tools, payload_head, print_log_tail,
    print_table, process_role, process_tree, push_blob, put_manifest, remove_tmp, settle, sha256, stop_servers,
    tool_version, tree_cpu_times, tree_rss, wait_listening, write_json,
)
from servers import DockerRegistry, Server, free_port

MB = 1_000_000
GB = 1_000_000_000
CURL = shutil.which("curl") or "/usr/bin/curl"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
# What curl prints after each transfer: status, bytes down, bytes up, seconds.
CURL_OUT = "%{http_code} %{size_download} %{size_upload} %{time_total}"
PARALLEL = 4
SEQUENTIAL = 4
CEILING = "bare sendfile server"
AUTH_ON = "cargohold, auth on"
BENCH_REPO = "bench/manifest"


# ---------------------------------------------------------------- servers under test


@dataclass
class Target:
    """One server under test: its base URL and its process tree (for CPU and RSS)."""

    label: str
    url: str
    pid: int
    monolithic_post: bool  # cargohold takes a whole blob in one POST ?digest=; Distribution 2.8 does not
    http: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.http.trust_env = False  # loopback only, never through a proxy

    def processes(self) -> list[psutil.Process]:
        """The server's process and every descendant (cargohold: parent, workers, multiprocessing helper)."""
        return process_tree(self.pid)

    def role(self, proc: psutil.Process) -> str:
        return process_role(proc, self.pid, tracker="multiprocessing resource tracker")

    def cpu_seconds(self) -> tuple[float, float, set[int]]:
        """utime and stime summed over every live process of the server, and which pids were counted."""
        times = tree_cpu_times(self.pid)
        return sum(u for u, _ in times.values()), sum(s for _, s in times.values()), set(times)

    def rss(self) -> tuple[int, dict[int, int]]:
        per = tree_rss(self.pid)
        return sum(per.values()), per

    def cpu_meter(self) -> CpuMeter:
        """A CPU meter over the server's tree that fails if a process comes or goes during the measurement."""
        return CpuMeter(self.pid, self.label, check_tree=True)

    def memory_detail(self) -> list[dict[str, Any]]:
        """RSS, PSS and USS per process (reads smaps: too slow for the 50 ms sampler, fine once)."""
        out = []
        for p in self.processes():
            try:
                m = p.memory_full_info()
            except psutil.Error:
                continue
            out.append({"pid": p.pid, "role": self.role(p), "rss_mib": m.rss / MiB, "pss_mib": m.pss / MiB, "uss_mib": m.uss / MiB})
        return out


# ---------------------------------------------------------------- clients


def curl(*args: str, timeout: float) -> list[str]:
    return [CURL, "-sS", "--noproxy", "*", "--max-time", f"{timeout:.0f}", "-o", "/dev/null", "-w", CURL_OUT, *args]


def run_clients(commands: list[list[str]], timeout: float) -> tuple[float, list[str]]:
    """Start every command at once; wall seconds until the last one finished, and their outputs."""
    procs: list[subprocess.Popen[str]] = []
    deadline = time.monotonic() + timeout
    t0 = time.perf_counter()
    try:
        for cmd in commands:
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = []
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if p.returncode != 0:
                raise BenchError(f"{Path(cmd[0]).name} failed ({p.returncode}): {err.strip() or out.strip()}")
            outputs.append(out)
        return time.perf_counter() - t0, outputs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def check_transfer(output: str, status: int, down: int = -1, up: int = -1) -> None:
    code, size_down, size_up, _ = output.split()
    if int(code) != status or (down >= 0 and int(size_down) != down) or (up >= 0 and int(size_up) != up):
        raise BenchError(f"unexpected transfer: HTTP {code}, {size_down} bytes down, {size_up} up (wanted {status}, {down}, {up})")


@dataclass(frozen=True)
class Blob:
    path: Path
    digest: str
    size: int


def push_command(target: Target, repo: str, blob: Blob, timeout: float) -> list[str]:
    """The curl that streams ``blob`` from its file: one POST ?digest= (cargohold), else POST then PUT ?digest= (Distribution).

    For Distribution the session-opening POST is made here, so call this inside the timed window.
    """
    # -T streams the file with a Content-Length. curl would append the file's name to a URL path ending in "/"
    # (as ".../blobs/uploads/?digest=" does), so the path and query go in --request-target instead.
    common = ["-H", "Content-Type: application/octet-stream", "-H", "Expect:", "-T", str(blob.path)]
    if target.monolithic_post:
        path = f"/v2/{repo}/blobs/uploads/?{urlencode({'digest': blob.digest})}"
        return curl("-X", "POST", *common, "--request-target", path, f"{target.url}/", timeout=timeout)
    r = target.http.post(f"{target.url}/v2/{repo}/blobs/uploads/", timeout=10)
    if r.status_code != 202:
        raise BenchError(f"{target.label}: opening an upload gave HTTP {r.status_code}: {r.text[:200]}")
    location = urlsplit(urljoin(f"{target.url}/", r.headers["Location"]))
    digest = urlencode({"digest": blob.digest})
    path = f"{location.path}?{location.query}&{digest}" if location.query else f"{location.path}?{digest}"
    return curl("-X", "PUT", *common, "--request-target", path, f"{target.url}/", timeout=timeout)


class BlobGet(threading.Thread):
    """One blob GET over a raw socket: the body is read into one reusable 1 MiB buffer and discarded.

    A client that costs almost nothing per byte (no copy out of the buffer, no file write, no interpreter
    start-up inside the timed window), so that the figure is the server's and not the client's; curl -o
    /dev/null costs several times more CPU per byte on this machine. Threads release the GIL in
    ``recv_into``, so several run in parallel. The timed window is connect → last byte.
    """

    BUFFER = 1 << 20

    def __init__(self, target: Target, repo: str, blob: Blob, timeout: float, start_gate: threading.Barrier | None = None) -> None:
        super().__init__(daemon=True)
        self.target, self.path, self.blob, self.timeout, self.gate = target, f"/v2/{repo}/blobs/{blob.digest}", blob, timeout, start_gate
        self.received = 0
        self.seconds = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.gate is not None:
                self.gate.wait(timeout=30)
            self._get()
        except BaseException as exc:  # reported by ``check``
            self.error = exc

    def _get(self) -> None:
        host, port = urlsplit(self.target.url).hostname, urlsplit(self.target.url).port
        assert host and port
        buf = bytearray(self.BUFFER)
        view = memoryview(buf)
        t0 = time.perf_counter()
        with socket.create_connection((host, port), timeout=self.timeout) as sock:
            sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                if len(head) > 65536:
                    raise BenchError("response head too long")
                n = sock.recv_into(view, 16384)
                if not n:
                    raise BenchError(f"connection closed inside the response head: {head[:200]!r}")
                head += bytes(view[:n])
            raw, _, body = head.partition(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            if status != 200:
                raise BenchError(f"{self.target.label}: GET {self.path} gave HTTP {status}")
            if headers.get("docker-content-digest", self.blob.digest) != self.blob.digest:
                raise BenchError(f"{self.target.label}: GET {self.path} named digest {headers['docker-content-digest']}")
            length = int(headers["content-length"])
            got = len(body)
            while got < length:
                n = sock.recv_into(view, min(self.BUFFER, length - got))
                if not n:
                    break
                got += n
        self.seconds = time.perf_counter() - t0
        self.received = got

    def check(self) -> None:
        if self.is_alive():
            raise BenchError(f"{self.target.label}: GET {self.path} did not finish in {self.timeout:.0f} s")
        if self.error is not None:
            raise self.error if isinstance(self.error, BenchError) else BenchError(f"{self.target.label}: GET failed: {self.error!r}")
        if self.received != self.blob.size:
            raise BenchError(f"{self.target.label}: GET {self.path} returned {self.received} of {self.blob.size} bytes")


def run_gets(target: Target, repos: list[str], blobs: list[Blob], timeout: float) -> float:
    """GET every blob at once (one thread each, released together); wall seconds until the last byte."""
    gate = threading.Barrier(len(blobs) + 1)
    clients = [BlobGet(target, repo, b, timeout, gate) for repo, b in zip(repos, blobs)]
    for c in clients:
        c.start()
    gate.wait(timeout=30)
    t0 = time.perf_counter()
    for c in clients:
        c.join(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
    wall = time.perf_counter() - t0
    for c in clients:
        c.check()
    return wall


def make_manifest(target: Target, repo: str, tag: str) -> tuple[str, int]:
    """A realistic ~1.5 KiB OCI image manifest (config + 4 layers + annotations), pushed by tag; (digest, size)."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(bytes([i])).hexdigest()}" for i in range(4)]},
        }
    ).encode()
    layers = []
    for i in range(4):
        data = f"bench layer {i} ".encode() * 64
        layers.append({"mediaType": OCI_LAYER, "digest": push_blob(target.http, target.url, repo, data, target.label), "size": len(data)})
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": push_blob(target.http, target.url, repo, config, target.label), "size": len(config)},
            "layers": layers,
            "annotations": {
                "org.opencontainers.image.created": "2024-01-01T00:00:00Z",
                "org.opencontainers.image.source": "https://example.invalid/cargohold/bench",
                "org.opencontainers.image.description": "manifest used by bench/run.py for the manifest GET figure",
            },
        },
        indent=3,
    ).encode()
    put_manifest(target.http, target.url, repo, tag, manifest, OCI_MANIFEST, target.label, timeout=10)
    digest = sha256(manifest)
    r = target.http.get(f"{target.url}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}, timeout=10)
    if r.status_code != 200 or r.content != manifest:
        raise BenchError(f"{target.label}: manifest GET by tag gave HTTP {r.status_code} and {len(r.content)} bytes")
    return digest, len(manifest)


def basic_authorization(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def bearer_token(target: Target, repo: str, basic: str) -> str:
    """A pull token for ``repo`` from the Docker token service, as a client gets one after a 401 challenge."""
    r = target.http.get(
        f"{target.url}/token", params={"service": "cargohold", "scope": f"repository:{repo}:pull"},
        headers={"Authorization": basic}, timeout=10,
    )
    if r.status_code != 200:
        raise BenchError(f"{target.label}: GET /token gave HTTP {r.status_code}: {r.text[:200]}")
    body = r.json()
    if "pull" not in body.get("scope", "") or not body.get("token"):
        raise BenchError(f"{target.label}: the token service did not grant pull on {repo}: {body.get('scope')!r}")
    return str(body["token"])


# ---------------------------------------------------------------- measurements


def transfer_timeout(size: int) -> float:
    return 60 + size / (20 * MB)  # generous: never slower than 20 MB/s on loopback, but bounded


def _figures(total: int, wall: float, cpu: CpuMeter) -> dict[str, float]:
    return {
        "bytes": total,
        "seconds": wall,
        "mb_per_s": total / MB / wall,
        "cpu_s": cpu.seconds,
        "cpu_user_s": cpu.user,
        "cpu_system_s": cpu.system,
        "cpu_s_per_gb": cpu.seconds / (total / GB),
    }


def measure_pushes(target: Target, repo: str, blobs: list[Blob], parallel: bool) -> dict[str, float]:
    """Push every blob (sequentially, or all at once) to ``repo/<i>``; throughput over the summed/wall time."""
    settle()
    total = sum(b.size for b in blobs)
    timeout = transfer_timeout(total)
    with target.cpu_meter() as cpu:
        if parallel:
            t0 = time.perf_counter()
            cmds = [push_command(target, f"{repo}/{i}", b, timeout) for i, b in enumerate(blobs)]
            _, outs = run_clients(cmds, timeout)
            wall = time.perf_counter() - t0
            for out, b in zip(outs, blobs):
                check_transfer(out, 201, up=b.size)
        else:
            wall = 0.0
            for i, b in enumerate(blobs):
                t0 = time.perf_counter()
                _, (out,) = run_clients([push_command(target, f"{repo}/{i}", b, timeout)], timeout)
                wall += time.perf_counter() - t0
                check_transfer(out, 201, up=b.size)
    return _figures(total, wall, cpu)


def measure_gets(target: Target, repo_of: Callable[[int], str], blobs: list[Blob], parallel: bool) -> dict[str, float]:
    """GET every blob (sequentially, or all at once); throughput over the summed/wall time."""
    settle()
    total = sum(b.size for b in blobs)
    timeout = transfer_timeout(total)
    with target.cpu_meter() as cpu:
        if parallel:
            wall = run_gets(target, [repo_of(i) for i in range(len(blobs))], blobs, timeout)
        else:
            wall = sum(run_gets(target, [repo_of(i)], [b], timeout) for i, b in enumerate(blobs))
    return _figures(total, wall, cpu)


def combine_rounds(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """Throughput is the median round's; CPU per GB is over all rounds together."""
    total = sum(r["bytes"] for r in rounds)
    cpu = sum(r["cpu_s"] for r in rounds)
    return {
        "mb_per_s": statistics.median(r["mb_per_s"] for r in rounds),
        "mb_per_s_rounds": [r["mb_per_s"] for r in rounds],
        "bytes": total,
        "cpu_s": cpu,
        "cpu_user_s": sum(r["cpu_user_s"] for r in rounds),
        "cpu_system_s": sum(r["cpu_system_s"] for r in rounds),
        "cpu_s_per_gb": cpu / (total / GB),
    }


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNIT[unit]


def measure_manifests(
    target: Target, repo: str, tag: str, size: int, duration: float, connections: int, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    url = f"{target.url}/v2/{repo}/manifests/{tag}"
    extra = {"Accept": OCI_MANIFEST, **(headers or {})}
    # Check the request wrk will repeat once, so a refused credential is an error here and not a fast stream of 401s.
    with requests.Session() as http:  # only the headers wrk will send, none of the setup's credentials
        http.trust_env = False
        r = http.get(url, headers=extra, timeout=10)
    if r.status_code != 200 or len(r.content) != size:
        raise BenchError(f"{target.label}: manifest GET with {sorted(extra)} gave HTTP {r.status_code}: {r.text[:200]}")
    base = [WRK, "--latency", "--timeout", "10s", *(arg for k, v in extra.items() for arg in ("-H", f"{k}: {v}"))]
    # Warm-up, not measured: fills cargohold's per-worker caches (manifests; with auth on, checked credentials),
    # opens Distribution's files once. As many connections as the measured run, so that every worker gets some:
    # with 4, SO_REUSEPORT can hand them all to one worker, and the other one's first burst of Basic-auth requests
    # then runs one argon2 check per request, stalling it for 1-2 s inside the measurement (p99 1.1 s seen).
    threads = min(connections, max(1, os.cpu_count() or 1))
    subprocess.run([*base, f"-t{threads}", f"-c{connections}", "-d2s", url], capture_output=True, timeout=30, check=True)
    with target.cpu_meter() as cpu:
        out = subprocess.run(
            [*base, f"-t{threads}", f"-c{connections}", f"-d{duration:.0f}s", url],
            capture_output=True, text=True, timeout=duration + 60, check=True,
        ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    count = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", out)
    if not (rps and p50 and p99 and count):
        raise BenchError(f"cannot parse wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(g) for g in socket.groups()) if socket else 0)
    requests_done = int(count.group(1))
    return {
        "requests": requests_done,
        "req_per_s": float(rps.group(1)),
        "p50_ms": _ms(*p50.groups()),
        "p99_ms": _ms(*p99.groups()),
        "errors": errors,
        "manifest_bytes": size,
        "cpu_s": cpu.seconds,
        "cpu_us_per_request": cpu.seconds / max(requests_done, 1) * 1e6,
        "wrk": out,
    }


def measure_memory(target: Target, repo: str, blobs: list[Blob]) -> dict[str, Any]:
    idle, _ = target.rss()
    idle_detail = target.memory_detail()
    with RssSampler(target.pid) as sampler:
        push = measure_pushes(target, repo, blobs, parallel=True)
        pull = measure_gets(target, lambda i: f"{repo}/{i}", blobs, parallel=True)
    roles = {p.pid: target.role(p) for p in target.processes()}
    return {
        "idle_rss_mib": idle / MiB,
        "idle_detail": idle_detail,
        "peak_rss_mib": sampler.peak / MiB,
        "peak_rss_per_process_mib": {f"{pid} {roles.get(pid, '?')}": rss / MiB for pid, rss in sampler.peak_per_process.items()},
        "after_detail": target.memory_detail(),
        "samples": sampler.samples,
        "parallel_push": push,
        "parallel_pull": pull,
    }


# ---------------------------------------------------------------- report


@dataclass
class Row:
    figure: str
    unit: str
    cargohold: float
    registry: float
    target: str
    verdict: bool | None  # None: reported for reference, no target

    @property
    def ratio(self) -> float:
        return self.cargohold / self.registry if self.registry else float("inf")


def build_rows(r: dict[str, Any], args: argparse.Namespace) -> list[Row]:
    ch, dr = r["cargohold"], r["docker-registry"]
    mib = args.blob_mib
    rows: list[Row] = []

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("inf")

    for kind, label in (("get_sequential", f"{SEQUENTIAL} sequential"), ("get_parallel", f"{PARALLEL} parallel")):
        label += f", median of {args.rounds}" if args.rounds > 1 else ""
        a, b = ch[kind]["mb_per_s"], dr[kind]["mb_per_s"]
        rows.append(Row(f"blob GET {mib} MiB, {label}", "MB/s", a, b, "ratio ≥ 1.3", ratio(a, b) >= 1.3))
    def get_cpu_per_gb(side: dict[str, Any]) -> float:
        gets = (side["get_sequential"], side["get_parallel"])
        return sum(g["cpu_s"] for g in gets) / (sum(g["bytes"] for g in gets) / GB)

    cpu_ch, cpu_dr = get_cpu_per_gb(ch), get_cpu_per_gb(dr)
    r["cargohold"]["get_cpu_s_per_gb"], r["docker-registry"]["get_cpu_s_per_gb"] = cpu_ch, cpu_dr
    rows.append(Row("blob GET server CPU per GB served", "CPU-s/GB", cpu_ch, cpu_dr, "cargohold ≤ 0.3", cpu_ch <= 0.3))

    m_ch, m_dr = ch["manifest"], dr["manifest"]
    ok = m_ch["req_per_s"] >= 5000 and ratio(m_ch["req_per_s"], m_dr["req_per_s"]) >= 5 and m_ch["errors"] == 0
    rows.append(Row(f"manifest GET by tag, {args.connections} conns, {args.duration:.0f} s", "req/s",
                    m_ch["req_per_s"], m_dr["req_per_s"], "ratio ≥ 5 and ≥ 5000", ok))
    rows.append(Row("manifest GET p99 latency", "ms", m_ch["p99_ms"], m_dr["p99_ms"], "cargohold ≤ 20", m_ch["p99_ms"] <= 20))
    rows.append(Row("manifest GET server CPU per request", "CPU-µs", m_ch["cpu_us_per_request"], m_dr["cpu_us_per_request"], "", None))

    a, b = ch["push_sequential"]["mb_per_s"], dr["push_sequential"]["mb_per_s"]
    rows.append(Row(f"monolithic push {mib} MiB, {SEQUENTIAL} sequential", "MB/s", a, b, "ratio ≥ 1.5", ratio(a, b) >= 1.5))
    rows.append(Row("push server CPU per GB received", "CPU-s/GB",
                    ch["push_sequential"]["cpu_s_per_gb"], dr["push_sequential"]["cpu_s_per_gb"], "", None))

    mem_ch, mem_dr = ch["memory"], dr["memory"]
    rows.append(Row(f"peak RSS, {PARALLEL}×{mib} MiB push then pull", "MiB",
                    mem_ch["peak_rss_mib"], mem_dr["peak_rss_mib"], "cargohold ≤ 250", mem_ch["peak_rss_mib"] <= 250))
    rows.append(Row("idle RSS before that", "MiB", mem_ch["idle_rss_mib"], mem_dr["idle_rss_mib"], "", None))
    pss = [sum(p["pss_mib"] for p in m["idle_detail"]) for m in (mem_ch, mem_dr)]
    rows.append(Row("idle PSS (shared pages counted once)", "MiB", pss[0], pss[1], "", None))
    rows.append(Row(f"  {PARALLEL} parallel pushes (same phase)", "MB/s",
                    mem_ch["parallel_push"]["mb_per_s"], mem_dr["parallel_push"]["mb_per_s"], "", None))
    rows.append(Row(f"  {PARALLEL} parallel pulls (same phase)", "MB/s",
                    mem_ch["parallel_pull"]["mb_per_s"], mem_dr["parallel_pull"]["mb_per_s"], "", None))
    return rows


def build_auth_rows(off: dict[str, Any], on: dict[str, Any], args: argparse.Namespace) -> list[Row]:
    """Auth on (``cargohold`` column) against auth off (``registry`` column): the same manifest, the same wrk run."""
    bearer, basic = on["manifest_bearer"], on["manifest_basic"]
    ratio = bearer["req_per_s"] / off["req_per_s"] if off["req_per_s"] else 0.0
    ok = ratio >= 0.80 and bearer["errors"] == 0
    return [
        Row(f"manifest GET by tag, Bearer token, {args.connections} conns, {args.duration:.0f} s", "req/s",
            bearer["req_per_s"], off["req_per_s"], "ratio ≥ 0.80", ok),
        Row("  p99 latency, Bearer token", "ms", bearer["p99_ms"], off["p99_ms"], "", None),
        Row("  server CPU per request, Bearer token", "CPU-µs", bearer["cpu_us_per_request"], off["cpu_us_per_request"], "", None),
        Row("manifest GET by tag, Basic credentials (reference)", "req/s", basic["req_per_s"], off["req_per_s"], "", None),
        Row("  p99 latency, Basic credentials", "ms", basic["p99_ms"], off["p99_ms"], "", None),
        Row("  server CPU per request, Basic credentials", "CPU-µs", basic["cpu_us_per_request"], off["cpu_us_per_request"], "", None),
    ]


def reference_cpu(reference: dict[str, Any]) -> float:
    gets = reference.values()
    return sum(g["cpu_s"] for g in gets) / (sum(g["bytes"] for g in gets) / GB)


MAIN_HEADER = ("figure", "unit", "cargohold", "docker-registry", "ch/dr", "target", "result")
AUTH_HEADER = ("figure", "unit", "auth on", "auth off", "on/off", "target", "result")


def print_rows(rows: list[Row], header: tuple[str, ...] = MAIN_HEADER) -> None:
    print_table(header, [
        (r.figure, r.unit, fmt(r.cargohold), fmt(r.registry), f"{r.ratio:.2f}×", r.target,
         "-" if r.verdict is None else ("PASS" if r.verdict else "MISS"))
        for r in rows
    ], right={2, 3, 4})


# ---------------------------------------------------------------- main


def make_blobs(directory: Path, count: int, size: int) -> list[Blob]:
    """``count`` distinct random files of ``size`` bytes (random, so no layer of the stack can compress them)."""
    blobs = []
    chunk = 4 * MiB
    for i in range(count):
        path = directory / f"blob-{i}"
        h = hashlib.sha256()
        with open(path, "wb") as f:
            left = size
            while left:
                data = os.urandom(min(chunk, left))
                h.update(data)
                f.write(data)
                left -= len(data)
        blobs.append(Blob(path, f"sha256:{h.hexdigest()}", size))
    return blobs


def machine_busy(seconds: float = 1.0) -> float:
    """Percent of all CPUs busy over ``seconds``: anything else running makes every figure noisier."""
    return psutil.cpu_percent(interval=seconds)


class Noise:
    """CPU time spent during each measurement by anything that is neither a server under test nor this
    process and its clients (curl, wrk): other programs, and kernel threads such as writeback.

    Expressed as a percentage of the machine's capacity over the step (wall time × CPUs). Interrupt and
    softirq time are left out, since loopback traffic is processed there on behalf of the clients and
    servers.
    """

    def __init__(self, targets: list[Target]) -> None:
        self.targets = targets
        self.steps: list[dict[str, Any]] = []

    def _ours(self) -> float:
        own = os.times()
        total = own.user + own.system + own.children_user + own.children_system
        for t in self.targets:
            user, system, _ = t.cpu_seconds()
            total += user + system
        return total

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        busy, ours, t0 = self._busy(), self._ours(), time.perf_counter()
        yield
        wall = time.perf_counter() - t0
        foreign = (self._busy() - busy) - (self._ours() - ours)
        self.steps.append({"step": label, "seconds": wall, "foreign_cpu_percent": max(0.0, foreign) / (wall * (os.cpu_count() or 1)) * 100})

    def overall(self) -> float:
        wall = sum(s["seconds"] for s in self.steps)
        return sum(s["foreign_cpu_percent"] * s["seconds"] for s in self.steps) / wall if wall else 0.0


log = logger("bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blob-mib", type=int, default=None, help="size of each large blob in MiB (default 512; 16 with --quick)")
    p.add_argument("--duration", type=float, default=None, help="seconds of wrk per server for manifests (default 10; 2 with --quick)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections for manifests (default 32)")
    p.add_argument("--rounds", type=int, default=None, help="rounds of blob GETs, median reported (default 3; 1 with --quick)")
    p.add_argument("--workers", type=int, default=2, help="cargohold worker processes (default 2, the server's default)")
    p.add_argument("--quick", action="store_true", help="fast smoke run: small blobs, short manifest run")
    p.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs, data) for inspection")
    args = p.parse_args(argv)
    if args.blob_mib is None:
        args.blob_mib = 16 if args.quick else 512
    if args.duration is None:
        args.duration = 2.0 if args.quick else 10.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.blob_mib < 1 or args.duration < 1 or args.connections < 1 or args.rounds < 1:
        p.error("--blob-mib, --duration, --connections and --rounds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if missing_tools("bench", (CURL, WRK, DOCKER_REGISTRY)):
        return 2
    exit_on_sigterm()
    size = args.blob_mib * MiB
    tmp = Path(tempfile.mkdtemp(prefix="cargohold-bench-"))
    cargohold: Server | None = None
    cargohold_auth: Server | None = None
    registry: DockerRegistry | None = None
    ceiling_proc: subprocess.Popen[str] | None = None
    started = time.monotonic()
    try:
        if shutil.disk_usage(tmp).free < 6 * PARALLEL * size:
            raise BenchError(f"not enough free space in {tmp} for {PARALLEL} blobs of {args.blob_mib} MiB on two servers")
        busy_before = machine_busy()
        log(f"generating {PARALLEL} random blobs of {args.blob_mib} MiB in {tmp}")
        blobs = make_blobs(tmp, PARALLEL, size)

        log("starting cargohold, cargohold with auth on, and docker-registry")
        cargohold = Server(data_dir=tmp / "cargohold" / "data", workers=args.workers).start()
        cargohold_auth = Server(data_dir=tmp / "cargohold-auth" / "data", workers=args.workers, auth=True).start()
        registry = DockerRegistry(root=tmp / "docker-registry").start()
        assert cargohold.proc is not None and cargohold_auth.proc is not None and registry.proc is not None
        wait_listening(cargohold.proc.pid, cargohold.port, args.workers, "cargohold")
        auth_target = Target(AUTH_ON, cargohold_auth.url, cargohold_auth.proc.pid, monolithic_post=True)
        wait_listening(auth_target.pid, cargohold_auth.port, args.workers, auth_target.label)
        basic = basic_authorization("admin", cargohold_auth.admin_password)
        auth_target.http.headers["Authorization"] = basic  # setup requests (pushes) only; wrk gets its own header
        targets = [
            Target("cargohold", cargohold.url, cargohold.proc.pid, monolithic_post=True),
            Target("docker-registry", registry.url, registry.proc.pid, monolithic_post=False),
        ]
        results: dict[str, Any] = {t.label: {} for t in targets}
        ceiling_port = free_port()
        ceiling_proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "sendfile_server.py"), str(ceiling_port), *(f"{b.digest}={b.path}" for b in blobs)],
            stdout=subprocess.PIPE, text=True,
        )
        assert ceiling_proc.stdout is not None
        if ceiling_proc.stdout.readline().strip() != "ready":
            raise BenchError("the bare sendfile server did not start")
        ceiling = Target(CEILING, f"http://127.0.0.1:{ceiling_port}", ceiling_proc.pid, monolithic_post=False)
        noise = Noise([*targets, auth_target, ceiling])

        for t in targets:
            digest, msize = make_manifest(t, BENCH_REPO, "latest")
            results[t.label]["manifest_digest"] = digest
        auth_results: dict[str, Any] = {}
        auth_results["manifest_digest"], _ = make_manifest(auth_target, BENCH_REPO, "latest")
        if auth_results["manifest_digest"] != results["cargohold"]["manifest_digest"]:
            raise BenchError("the auth-on server got a different manifest than the auth-off one")
        with requests.Session() as http:
            http.trust_env = False
            anonymous = http.get(f"{auth_target.url}/v2/{BENCH_REPO}/manifests/latest", timeout=10)
        if anonymous.status_code != 401:
            raise BenchError(f"{AUTH_ON}: an anonymous manifest GET gave HTTP {anonymous.status_code}, not 401: is auth on?")
        log(f"manifest pushed to all three ({msize} bytes)")

        # Each step runs on both servers back to back, so both see the same machine state.
        for t in targets:
            log(f"{t.label}: {SEQUENTIAL} sequential monolithic pushes of {args.blob_mib} MiB")
            with noise.step(f"{t.label}: sequential pushes"):
                results[t.label]["push_sequential"] = measure_pushes(t, "bench/push", blobs, parallel=False)
        # The bare sendfile server goes through the same GET rounds: the machine's ceiling, for reference.
        get_targets = [*targets, ceiling]
        rounds: dict[tuple[str, bool], list[dict[str, float]]] = {(t.label, p): [] for t in get_targets for p in (False, True)}
        for n in range(args.rounds):
            # Alternate which server goes first, so that neither always follows the other's traffic.
            for parallel in (False, True):
                for t in (get_targets if n % 2 == 0 else get_targets[::-1]):
                    log(f"{t.label}: {PARALLEL if parallel else SEQUENTIAL} {'parallel' if parallel else 'sequential'} "
                        f"blob GETs, round {n + 1}/{args.rounds}")
                    with noise.step(f"{t.label}: {'parallel' if parallel else 'sequential'} GETs, round {n + 1}"):
                        rounds[(t.label, parallel)].append(measure_gets(t, lambda i: f"bench/push/{i}", blobs, parallel=parallel))
        reference = {
            "get_sequential": combine_rounds(rounds[(CEILING, False)]),
            "get_parallel": combine_rounds(rounds[(CEILING, True)]),
        }
        for t in targets:
            results[t.label]["get_sequential"] = combine_rounds(rounds[(t.label, False)])
            results[t.label]["get_parallel"] = combine_rounds(rounds[(t.label, True)])
        for t in targets:
            log(f"{t.label}: manifest GET by tag, {args.connections} connections, {args.duration:.0f} s")
            with noise.step(f"{t.label}: manifest GETs"):
                results[t.label]["manifest"] = measure_manifests(t, BENCH_REPO, "latest", msize, args.duration, args.connections)
            if t.label != "cargohold":
                continue
            # Right after cargohold with auth off, on the same machine state: the same wrk run with credentials.
            # The token is fetched now, well inside its lifetime (auth_token_ttl_seconds, 300 s by default).
            token = bearer_token(auth_target, BENCH_REPO, basic)
            for kind, header in (("bearer", f"Bearer {token}"), ("basic", basic)):
                log(f"{AUTH_ON}: manifest GET by tag with {kind.capitalize()} auth, {args.connections} connections, "
                    f"{args.duration:.0f} s")
                with noise.step(f"{AUTH_ON}: manifest GETs, {kind}"):
                    auth_results[f"manifest_{kind}"] = measure_manifests(
                        auth_target, BENCH_REPO, "latest", msize, args.duration, args.connections, headers={"Authorization": header}
                    )
        cargohold_auth.stop()  # not needed for the rest: the blob and memory figures are auth-off
        for t in targets:
            log(f"{t.label}: peak RSS over {PARALLEL} parallel pushes then {PARALLEL} parallel pulls")
            with noise.step(f"{t.label}: memory phase"):
                results[t.label]["memory"] = measure_memory(t, "bench/memory", blobs)

        busy_after = machine_busy()  # both servers idle now: whatever runs is someone else
        rows = build_rows(results, args)
        auth_rows = build_auth_rows(results["cargohold"]["manifest"], auth_results, args)
        print()
        print(f"cargohold ({args.workers} workers) vs docker-registry, {args.blob_mib} MiB blobs, on 127.0.0.1, "
              f"{os.cpu_count()} CPUs; MB = 10^6 bytes, GB = 10^9 bytes")
        print_rows(rows)
        seq, par = reference["get_sequential"]["mb_per_s"], reference["get_parallel"]["mb_per_s"]
        print(f"reference, same client and blobs: a bare os.sendfile server (bench/sendfile_server.py) gave {fmt(seq)} MB/s "
              f"sequential, {fmt(par)} MB/s parallel at {fmt(reference_cpu(reference))} CPU-s/GB; cargohold reached "
              f"{results['cargohold']['get_sequential']['mb_per_s'] / seq:.0%} / {results['cargohold']['get_parallel']['mb_per_s'] / par:.0%} of that, "
              f"docker-registry {results['docker-registry']['get_sequential']['mb_per_s'] / seq:.0%} / "
              f"{results['docker-registry']['get_parallel']['mb_per_s'] / par:.0%}")
        print()
        print(f"cargohold with auth on (a second server, {args.workers} workers, same manifest, wrk sending an Authorization "
              f"header) vs the auth-off cargohold above; the token is a pull token from GET /token")
        print_rows(auth_rows, AUTH_HEADER)
        print()
        judged = [*rows, *auth_rows]
        misses = [r.figure for r in judged if r.verdict is False]
        print(f"{sum(r.verdict is True for r in judged)} PASS, {len(misses)} MISS" + (" (quick run: sizes too small to judge)" if args.quick else ""))
        noisy = [st for st in noise.steps if st["foreign_cpu_percent"] > 10]
        print(f"other activity on the machine: {noise.overall():.1f}% of its CPU capacity during the measurements "
              f"(CPU {busy_before:.0f}% busy just before the run, {busy_after:.0f}% just after it with the servers idle)")
        if noisy or max(busy_before, busy_after) > 10:
            print("warning: the machine was not idle; other processes competed for the CPUs and these figures are noisy"
                  + "".join(f"\n  {st['step']}: {st['foreign_cpu_percent']:.0f}% of the CPUs went to others" for st in noisy[:8])
                  + (f"\n  … and {len(noisy) - 8} more steps (see the JSON)" if len(noisy) > 8 else ""))
        manifest_runs = [(label, results[label]["manifest"]) for label in results]
        manifest_runs += [(f"{AUTH_ON} ({kind})", auth_results[f"manifest_{kind}"]) for kind in ("bearer", "basic")]
        for label, run in manifest_runs:
            if run["errors"]:
                print(f"warning: {label} answered {run['errors']} manifest requests with errors or socket failures")

        payload = {
            **payload_head(started, args),
            "machine": machine_info(memory_mib=psutil.virtual_memory().total // MiB,
                                    cpu_busy_percent_before=busy_before, cpu_busy_percent_after=busy_after,
                                    loadavg=os.getloadavg()),
            "versions": {
                "docker-registry": tool_version(DOCKER_REGISTRY),
                "curl": tool_version(CURL, first_line=True),
            },
            "figures": [
                {"figure": r.figure, "unit": r.unit, "cargohold": r.cargohold, "docker-registry": r.registry,
                 "ratio": r.ratio, "target": r.target, "result": None if r.verdict is None else ("PASS" if r.verdict else "MISS")}
                for r in rows
            ],
            "auth_figures": [
                {"figure": r.figure, "unit": r.unit, "auth_on": r.cargohold, "auth_off": r.registry, "ratio": r.ratio,
                 "target": r.target, "result": None if r.verdict is None else ("PASS" if r.verdict else "MISS")}
                for r in auth_rows
            ],
            "reference_sendfile_server": reference,
            "other_activity": {"overall_cpu_percent": noise.overall(), "steps": noise.steps},
            "raw": {**results, AUTH_ON: auth_results},
        }
        write_json(args.output, payload)
        log(f"results written to {args.output} ({time.monotonic() - started:.0f} s in all)")
        return 0
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        for label, server in (("cargohold", cargohold), (AUTH_ON, cargohold_auth)):
            if server is not None:
                print_log_tail(label, server.log())
        return 1
    finally:
        kill_process(ceiling_proc)
        stop_servers("bench", (cargohold, cargohold_auth, registry))
        remove_tmp(tmp, args.keep, log)


if __name__ == "__main__":
    sys.exit(main())
