#!/usr/bin/env python3
"""Pull-through cache: cargohold vs pulling from the upstream directly vs docker-registry in proxy mode.

One upstream docker-registry (CNCF Distribution, loopback) holds fresh images
of ``LAYERS`` random, incompressible layers of ``LAYER_MIB`` MiB each (plus a
small config). In front of it, each started fresh in a temporary directory:

* cargohold, auth on (2 workers by default), with a cache rule
  ``<upstream>/library/* → hub/*`` — and a second rule ``counted/*`` whose
  source is the counting proxy below;
* docker-registry in proxy mode (``proxy: remoteurl:``) on the upstream — and a
  second one on the counting proxy;
* a counting reverse proxy (``--counting-proxy``: this file, run as a
  separate process so that it takes no CPU from the clients' interpreter)
  that streams everything to the upstream and counts GETs per blob digest.

Every "pull" fetches the manifest, then every blob, as a client does: with
skopeo (``skopeo copy docker://… dir:…``, a real client, whose own overhead
is large on this machine) and with an aiohttp client (manifest, then the
blobs 5 at a time, bytes kept in memory and hashed after the clock stops).
cargohold is pulled with a Bearer pull token fetched beforehand (admin's
Basic credentials → ``/token``): what a client holds after ``login``;
the upstream and the proxies have no auth. Each round pushes a new image
per client, so every cold pull is cold: direct pull, then (in alternating
order) cargohold cold + warm and proxy cold + warm. The timing figures go
to the upstream directly; only the concurrency figure goes through the
counter (for both servers alike): 20 concurrent cold pulls of one fresh
image, upstream GETs per blob.

On loopback the upstream answers at memory speed, so those cold pulls are
CPU-bound. A real upstream (Docker Hub over the internet) is link-bound, and
there the question is whether the cache streams what it receives or stores
the whole blob first and then serves it. So a second copy of the proxy,
started with ``--rate``, paces the bodies it forwards to ``--throttle-mbps``
(1 Gbit/s = 125 MB/s by default) as one link shared by all its connections,
and cargohold gets a third rule ``throttled/*`` on it: per round a fresh
image is pulled directly over that link and cold through cargohold over the
same link, in alternating order (aiohttp only: skopeo's own overhead would
blur the comparison).

Every pull is checked byte for byte (manifest and every blob against their
digests); a wrong byte is a non-zero exit. The results are printed as a table
and merged into ``bench/results/latest.json`` under ``"cache"`` (other keys
kept). Everything started is stopped and the temporary directory removed at
the end; a watchdog ends the run after ``--deadline`` seconds.

Usage: ``.venv/bin/python bench/cache.py [--rounds 5] [--quick] [--throttle-mbps 1000] [--keep]``
(``make bench`` runs it after ``bench/run.py``, which rewrites the JSON file).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    DOCKER_REGISTRY, OCI_MANIFEST, RESULTS, SKOPEO, BenchError, CpuMeter, Deadline, MiB, exit_on_sigterm,
    file_sha256, fmt, kill_process, logger, machine_info, merge_results, missing_tools, payload_head,
    print_log_tail, print_table, push_random_image, put_manifest, remove_tmp, settle, sha256, skopeo_copy, spread,
    start_watchdog, stop_servers, stop_watchdog, tool_version,
)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"  # what pulling clients send (and more)
LAYERS = 5
PARALLEL = 5  # blobs a client fetches at once
CONCURRENT = 20  # cold pulls at once, for the upstream-GET count
PULL_TIMEOUT = 60.0
COLD_TARGET = 1.15
WARM_TARGET = 1 / 1.3  # bench/run.py's blob GET target (≥ 1.3× docker-registry's throughput), as a time ratio
BLOB_PATH = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>[a-z0-9]+:[a-f0-9]+)$")
MANIFEST_PATH = re.compile(r"^/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)$")


class WrongBytes(BenchError):
    """A pull returned bytes that do not match their digest: always fatal."""


log = logger("bench cache")


# ---------------------------------------------------------------- counting reverse proxy (its own process)

PACE_SLICE = 64 << 10  # bytes written per pacing step (0.5 ms at 125 MB/s)


class Link:
    """A pipe of ``rate`` bytes/s shared by every response of one proxy: a token bucket with a virtual clock.

    One bucket per proxy, not per connection: the figure models one bottleneck link (a site's internet
    connection), which every connection shares. Per connection, a client that opens more connections
    (or a cache that splits a blob into ranges) would get more bandwidth, and the comparison would measure
    connection counts, not streaming. Each ``send`` reserves the next slot on the link in call order (so
    concurrent responses take turns fairly) and sleeps until its slot ends. The bucket's depth ``burst``
    forgives the event loop's late wake-ups (up to that much), so that timer jitter does not lower the
    rate; a longer stall is lost, as on a real link.
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.free_at = 0.0  # time.monotonic() at which the bytes reserved so far have gone through

    async def send(self, size: int) -> None:
        now = time.monotonic()
        self.free_at = max(self.free_at, now - self.burst / self.rate) + size / self.rate
        if self.free_at > now:
            await asyncio.sleep(self.free_at - now)


def counting_proxy(port: int, upstream: str, rate: float | None = None) -> None:
    """Stream every request to ``upstream``; count GETs per blob digest and per manifest. ``/__counts`` reports.

    With ``rate`` (bytes/s) the response bodies are paced through one ``Link`` for the whole proxy
    (the headers, the requests and ``/__counts`` are not)."""
    from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

    blob_gets: Counter[str] = Counter()
    manifest_gets: Counter[str] = Counter()
    other: Counter[str] = Counter()
    state = {"active": 0, "last": time.monotonic()}
    link = Link(rate, burst=max(4 * PACE_SLICE, rate * 0.005)) if rate else None  # ≥ 5 ms of traffic
    hop = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization", "host"}

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/__counts":
            return web.json_response({"blob_gets": blob_gets, "manifest_gets": manifest_gets, "other": other,
                                      "active": state["active"], "idle_s": time.monotonic() - state["last"]})
        state["active"] += 1
        try:
            if request.method == "GET" and (m := BLOB_PATH.match(request.path)):
                blob_gets[m["digest"]] += 1
            elif request.method == "GET" and (m := MANIFEST_PATH.match(request.path)):
                manifest_gets[f"{m['repo']}:{m['ref']}"] += 1
            else:
                other[f"{request.method} {re.sub(r'[a-f0-9]{64}', '…', request.path)}"] += 1
            # A list, not a dict: clients repeat headers (Go sends one Accept line per media type).
            headers = [(k, v) for k, v in request.headers.items() if k.lower() not in hop]
            body = await request.read() if request.can_read_body else None
            async with http.request(request.method, upstream + request.path_qs, headers=headers, data=body,
                                    allow_redirects=False) as up:
                response = web.StreamResponse(status=up.status, reason=up.reason)
                for k, v in up.headers.items():
                    if k.lower() not in hop:
                        response.headers.add(k, v)
                await response.prepare(request)
                if request.method != "HEAD":
                    async for chunk in up.content.iter_any():
                        if link is None:
                            await response.write(chunk)
                            continue
                        view = memoryview(chunk)
                        for start in range(0, len(view), PACE_SLICE):
                            piece = view[start:start + PACE_SLICE]
                            await link.send(len(piece))
                            await response.write(piece)
                await response.write_eof()
                return response
        finally:
            state["active"] -= 1
            state["last"] = time.monotonic()

    async def main() -> None:
        nonlocal http
        http = ClientSession(connector=TCPConnector(limit=0), timeout=ClientTimeout(total=None, sock_read=60),
                             auto_decompress=False, trust_env=False, skip_auto_headers=("Accept-Encoding", "User-Agent"))
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    http: Any = None
    asyncio.run(main())


# ---------------------------------------------------------------- servers


def free_port() -> int:
    from servers import free_port as fp

    return fp()


def start_proxy(upstream: str, rate: float | None = None) -> tuple[subprocess.Popen[str], str]:
    """This file as a counting proxy (``--counting-proxy``, paced with ``--rate``) in front of ``upstream``:
    its process once it listens, and its URL. A separate process, so that its CPU is not the clients'."""
    port = free_port()
    cmd = [sys.executable, __file__, "--counting-proxy", str(port), upstream, *(["--rate", str(rate)] if rate else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise BenchError(f"the counting proxy ({' '.join(cmd[2:])}) did not start")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------- images


@dataclass(frozen=True)
class Image:
    repo: str  # upstream repository, "library/<name>"
    tag: str
    manifest: bytes
    digest: str
    blobs: tuple[tuple[str, int], ...]  # (digest, size): config first, then the layers

    @property
    def name(self) -> str:
        return self.repo.split("/", 1)[1]

    @property
    def total(self) -> int:
        return sum(size for _, size in self.blobs)


def push_image(http: Any, upstream: str, repo: str, tag: str, layer_size: int) -> Image:
    """Random layers (incompressible) and a small config, pushed with POST + PUT ?digest=, then the OCI manifest by tag."""
    manifest, config, layers = push_random_image(http, upstream, repo, LAYERS, layer_size, "upstream", (30, 60))
    put_manifest(http, upstream, repo, tag, manifest, OCI_MANIFEST, "upstream")
    return Image(repo, tag, manifest, sha256(manifest), (config, *layers))


# ---------------------------------------------------------------- clients


@dataclass(frozen=True)
class Place:
    """Where to pull an image from: base URL, how the upstream's ``library/<name>`` is called there, credentials."""

    label: str
    url: str
    prefix: str  # "library" (upstream, docker-registry proxy) or the cache rule's target ("hub", "counted")
    token: Callable[[list[str]], str] | None = None  # repositories → Bearer token (cargohold)

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def repo(self, image: Image) -> str:
        return f"{self.prefix}/{image.name}"


def check_manifest(place: Place, image: Image, body: bytes) -> None:
    if body != image.manifest:
        raise WrongBytes(f"{place.label}: the manifest of {image.repo}:{image.tag} came back different "
                         f"({len(body)} bytes, {sha256(body)}; expected {image.digest})")


async def _pull(place: Place, image: Image, token: str | None, keep: bool) -> tuple[float, dict[str, Any]]:
    """Manifest, then every blob ``PARALLEL`` at a time; wall seconds. Bytes checked after the clock stops (``keep``)
    or hashed as they arrive (not ``keep``: for many pulls at once, whose bytes would not fit in memory)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    repo = place.repo(image)
    got: dict[str, list[bytes]] = {}
    hashed: dict[str, tuple[str, int]] = {}
    limit = asyncio.Semaphore(PARALLEL)
    timeout = aiohttp.ClientTimeout(total=PULL_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False, trust_env=False,
                                     connector=aiohttp.TCPConnector(limit=PARALLEL + 1)) as http:

        async def blob(digest: str) -> None:
            async with limit, http.get(f"{place.url}/v2/{repo}/blobs/{digest}", headers=headers) as r:
                if r.status != 200:
                    raise BenchError(f"{place.label}: GET blob {repo}@{digest} gave HTTP {r.status}: {(await r.text())[:200]}")
                if keep:
                    chunks = got[digest] = []
                    async for chunk in r.content.iter_any():
                        chunks.append(chunk)
                else:
                    h, n = hashlib.sha256(), 0
                    async for chunk in r.content.iter_any():
                        h.update(chunk)
                        n += len(chunk)
                    hashed[digest] = ("sha256:" + h.hexdigest(), n)

        t0 = time.perf_counter()
        async with http.get(f"{place.url}/v2/{repo}/manifests/{image.tag}", headers={**headers, "Accept": ACCEPT}) as r:
            if r.status != 200:
                raise BenchError(f"{place.label}: GET manifest {repo}:{image.tag} gave HTTP {r.status}: {(await r.text())[:200]}")
            body = await r.read()
            cache = r.headers.get("X-Cache")
        check_manifest(place, image, body)
        await asyncio.gather(*(blob(d) for d, _ in image.blobs))
        wall = time.perf_counter() - t0
    for digest, size in image.blobs:
        if keep:
            h = hashlib.sha256()
            n = 0
            for chunk in got.pop(digest):
                h.update(chunk)
                n += len(chunk)
            actual = ("sha256:" + h.hexdigest(), n)
        else:
            actual = hashed[digest]
        if actual != (digest, size):
            raise WrongBytes(f"{place.label}: blob {repo}@{digest} came back as {actual[1]} bytes hashing to {actual[0]} "
                             f"(expected {size} bytes): WRONG BYTES")
    return wall, {"manifest_x_cache": cache}


def pull_aiohttp(place: Place, image: Image) -> float:
    token = place.token([place.repo(image)]) if place.token else None
    wall, _ = asyncio.run(_pull(place, image, token, keep=True))
    return wall


def pull_many(place: Place, image: Image, count: int) -> tuple[float, list[str]]:
    """``count`` pulls of one image at once (one event loop): wall seconds until the last one ended, and the
    errors of those that failed (an HTTP error is reported, not fatal: docker-registry's proxy mode has races;
    wrong bytes are fatal)."""
    token = place.token([place.repo(image)]) if place.token else None

    async def all_at_once() -> tuple[float, list[BaseException | Any]]:
        t0 = time.perf_counter()
        outcomes = await asyncio.gather(*(_pull(place, image, token, keep=False) for _ in range(count)), return_exceptions=True)
        return time.perf_counter() - t0, outcomes

    wall, outcomes = asyncio.run(all_at_once())
    for outcome in outcomes:
        if isinstance(outcome, WrongBytes) or (isinstance(outcome, BaseException) and not isinstance(outcome, Exception)):
            raise outcome
    return wall, [f"{type(o).__name__}: {o}"[:300] for o in outcomes if isinstance(o, BaseException)]


def pull_skopeo(place: Place, image: Image, out: Path) -> float:
    """``skopeo copy docker://… dir:out`` (timed), then every file checked against its digest (not timed)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["--quiet", "--src-tls-verify=false"]
    if place.token:
        cmd += ["--src-registry-token", place.token([place.repo(image)])]
    cmd += [f"docker://{place.host}/{place.repo(image)}:{image.tag}", f"dir:{out}"]
    wall, _ = skopeo_copy(cmd, PULL_TIMEOUT, f"{place.label}: ")
    check_manifest(place, image, (out / "manifest.json").read_bytes())
    for digest, size in image.blobs:
        path = out / digest.split(":", 1)[1]
        got = file_sha256(path)
        if got != digest or path.stat().st_size != size:
            raise WrongBytes(f"{place.label}: skopeo wrote {path.stat().st_size} bytes hashing to {got} "
                             f"for {digest} ({size} bytes): WRONG BYTES")
    shutil.rmtree(out, ignore_errors=True)
    return wall


# ---------------------------------------------------------------- measurement helpers


def prime_rules(url: str, prefix: str, token: str) -> None:
    """Make every cargohold worker load the cache rules before anything is measured.

    Works around a race in ``CacheService.rules()``: a worker marks the new rule generation as
    seen *before* its reload from the database finishes, so requests that arrive meanwhile
    are routed with the old (here: empty) rule set and answer 404 BLOB_UNKNOWN. Concurrent
    probes on fresh connections reach every worker; a routed probe of a digest the upstream
    lacks says "has no blob", an unrouted one "blob unknown to registry".
    """
    from concurrent.futures import ThreadPoolExecutor

    import requests

    probe = f"{url}/v2/{prefix}/prime/blobs/sha256:{'0' * 64}"

    def one(_: int) -> str:
        with requests.Session() as http:
            http.trust_env = False
            r = http.get(probe, headers={"Authorization": f"Bearer {token}", "Connection": "close"}, timeout=30)
            return f"{r.status_code} {r.text}"

    clean = 0
    with ThreadPoolExecutor(8) as pool:
        for _ in range(20):
            answers = list(pool.map(one, range(16)))
            clean = clean + 1 if all("has no blob" in a for a in answers) else 0
            if clean == 2:
                return
    raise BenchError(f"cargohold: {prefix}/* is still not routed to the upstream by every worker: {answers[:2]}")


def wait_quiet(counter_url: str, http: Any, timeout: float = 30) -> dict[str, Any]:
    """The counter's figures once no request is in flight and none came for 1 s (a proxy may still be filling)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = http.get(f"{counter_url}/__counts", timeout=5).json()
        if counts["active"] == 0 and counts["idle_s"] >= 1.0:
            return counts
        if time.monotonic() > deadline:
            raise BenchError(f"the counting proxy still had {counts['active']} requests in flight after {timeout:.0f} s")
        time.sleep(0.2)


# ---------------------------------------------------------------- report


@dataclass
class Row:
    figure: str
    unit: str
    ours: float
    peer: float
    peer_label: str
    ratio: float
    target: str
    verdict: bool | None
    ours_spread: str = ""
    ratio_spread: str = ""


def print_rows(rows: list[Row]) -> None:
    header = ("figure", "unit", "cargohold", "peer", "peer is", "ratio", "ratio range", "target", "result")
    print_table(header, [
        (r.figure, r.unit, fmt(r.ours) + (f" ({r.ours_spread})" if r.ours_spread else ""), fmt(r.peer), r.peer_label,
         f"{r.ratio:.2f}×", r.ratio_spread, r.target, "-" if r.verdict is None else ("met" if r.verdict else "NOT MET"))
        for r in rows
    ], right={2, 3, 5})


def paired(ours: list[float], peer: list[float]) -> tuple[float, str]:
    """Median of the per-round ratios (each round's two pulls ran back to back) and their range."""
    ratios = [a / b for a, b in zip(ours, peer)]
    return statistics.median(ratios), f"{min(ratios):.2f}–{max(ratios):.2f}"


def timing_row(figure: str, ours: list[float], peer: list[float], peer_label: str, target: float | None) -> Row:
    ratio, ratio_spread = paired(ours, peer)
    return Row(figure, "s", statistics.median(ours), statistics.median(peer), peer_label, ratio,
               "" if target is None else f"≤ {target:.2f}×", None if target is None else ratio <= target,
               f"{min(ours):.3f}–{max(ours):.3f}", ratio_spread)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=None, help="rounds of cold/warm pulls, median reported (default 5; 3 with --quick)")
    p.add_argument("--layer-mib", type=int, default=20, help="size of each of the 5 layers in MiB (default 20)")
    p.add_argument("--concurrent", type=int, default=CONCURRENT, help="cold pulls at once for the upstream-GET count (default 20)")
    p.add_argument("--workers", type=int, default=2, help="cargohold worker processes (default 2, the server's default)")
    p.add_argument("--no-skopeo", action="store_true", help="only the aiohttp client")
    p.add_argument("--quick", action="store_true", help="fewer rounds")
    p.add_argument("--throttle-mbps", type=float, default=1000,
                   help="rate of the throttled upstream link in Mbit/s, for the throttled cold pull (default 1000)")
    p.add_argument("--deadline", type=float, default=240, help="abort the run after this many seconds (default 240)")
    p.add_argument("--output", type=Path, default=RESULTS,
                   help="JSON results file; the figures go under its \"cache\" key, other keys are kept")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (servers' data and logs)")
    p.add_argument("--counting-proxy", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, default=None, help=argparse.SUPPRESS)  # with --counting-proxy: bytes/s
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    if args.rounds < 1 or args.layer_mib < 1 or args.concurrent < 1 or args.throttle_mbps <= 0:
        p.error("--rounds, --layer-mib, --concurrent and --throttle-mbps must be positive")
    if args.rate is not None and args.rate <= 0:
        p.error("--rate must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.counting_proxy:
        counting_proxy(int(args.counting_proxy[0]), args.counting_proxy[1], args.rate)
        return 0
    clients = ["aiohttp"] if args.no_skopeo else ["aiohttp", "skopeo"]
    if missing_tools("bench cache", (DOCKER_REGISTRY, *([SKOPEO] if "skopeo" in clients else []))):
        return 2

    import psutil
    import requests
    from servers import DockerRegistry, Server

    exit_on_sigterm()
    start_watchdog(args.deadline, "cache bench")
    tmp = Path(tempfile.mkdtemp(prefix="cargohold-bench-cache-"))
    layer_size = args.layer_mib * MiB
    started = time.monotonic()
    upstream: DockerRegistry | None = None
    cargohold: Server | None = None
    proxies: list[DockerRegistry] = []
    helpers: list[subprocess.Popen[str]] = []  # the counting proxies
    http = requests.Session()
    http.trust_env = False
    try:
        images_needed = args.rounds * (len(clients) + 1) + 1
        if shutil.disk_usage(tmp).free < 5 * images_needed * LAYERS * layer_size:
            raise BenchError(f"not enough free space in {tmp}")
        busy_before = psutil.cpu_percent(interval=0.5)
        log("starting the upstream docker-registry, the counting proxy, the throttled one, cargohold and two docker-registry proxies")
        upstream = DockerRegistry(root=tmp / "upstream").start()
        link_rate = args.throttle_mbps * 1e6 / 8  # bytes/s
        counter, counter_url = start_proxy(upstream.url)
        helpers.append(counter)
        throttle, throttle_url = start_proxy(upstream.url, link_rate)
        helpers.append(throttle)
        cargohold = Server(data_dir=tmp / "cargohold" / "data", workers=args.workers, auth=True,
                           extra_env={"CARGOHOLD_ALLOW_PRIVATE_UPSTREAMS": "1"}).start()
        proxy = DockerRegistry(tmp / "proxy", proxy_remote=upstream.url).start()
        proxies.append(proxy)
        proxy_counted = DockerRegistry(tmp / "proxy-counted", proxy_remote=counter_url).start()
        proxies.append(proxy_counted)
        assert cargohold.proc is not None and upstream.proc is not None
        admin = ("admin", cargohold.admin_password)
        for name, host in (("hub", upstream.host), ("counted", counter_url.removeprefix("http://")),
                           ("throttled", throttle_url.removeprefix("http://"))):
            r = http.post(f"{cargohold.url}/api/v1/cache-rules", auth=admin, timeout=10,
                          json={"name": name, "source": f"{host}/library/*", "target": f"{name}/*", "insecure": True})
            if r.status_code != 201:
                raise BenchError(f"cargohold: creating cache rule {name} gave HTTP {r.status_code}: {r.text[:300]}")

        def token(repos: list[str]) -> str:
            r = http.get(f"{cargohold.url}/token", auth=admin, timeout=30,
                         params=[("service", "cargohold"), *(("scope", f"repository:{n}:pull") for n in repos)])
            if r.status_code != 200 or not r.json().get("token"):
                raise BenchError(f"cargohold: GET /token gave HTTP {r.status_code}: {r.text[:200]}")
            return str(r.json()["token"])

        direct = Place("upstream docker-registry (direct)", upstream.url, "library")
        cached = Place("cargohold", cargohold.url, "hub", token)
        counted = Place("cargohold via counter", cargohold.url, "counted", token)
        dr_proxy = Place("docker-registry proxy", proxy.url, "library")
        dr_counted = Place("docker-registry proxy via counter", proxy_counted.url, "library")
        thr_direct = Place("upstream over the throttled link (direct)", throttle_url, "library")
        thr_cached = Place("cargohold over the throttled link", cargohold.url, "throttled", token)
        r = http.get(f"{cargohold.url}/v2/hub/x/manifests/latest", timeout=10)
        if r.status_code != 401:
            raise BenchError(f"cargohold: an anonymous GET gave HTTP {r.status_code}, not 401: is auth on?")
        for prefix in ("hub", "counted", "throttled"):
            prime_rules(cargohold.url, prefix, token([f"{prefix}/prime"]))

        # ---- figures 1-3a: cold and warm pulls, per client, per round
        times: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}

        errors: list[dict[str, str]] = []

        def timed(client: str, key: str, place: Place, image: Image) -> Image:
            """One timed pull (two on an HTTP error); the image pulled (a fresh one when a cold pull had to be redone)."""
            for attempt in (1, 2):
                settle(0.1)
                with CpuMeter(cargohold.proc.pid) as ch_cpu, CpuMeter(upstream.proc.pid) as up_cpu:  # type: ignore[union-attr]
                    try:
                        if client == "skopeo":
                            wall = pull_skopeo(place, image, tmp / "out")
                        else:
                            wall = pull_aiohttp(place, image)
                        break
                    except WrongBytes:
                        raise
                    except BenchError as exc:
                        # An HTTP error is a bug worth seeing, not a reason to lose the run: reported, and pulled
                        # again once; a cold pull with a fresh image, since the failed one may have cached some blobs.
                        errors.append({"client": client, "pull": key, "image": image.repo, "error": str(exc)[:500]})
                        log(f"  {client:7} {key:14} FAILED, pulling again: {str(exc)[:300]}")
                        if attempt == 2:
                            raise
                        if key.endswith(" cold"):
                            image = push_image(http, upstream.url, f"{image.repo}-retry", image.tag, layer_size)  # type: ignore[union-attr]
            times.setdefault((client, key), []).append(wall)
            cpu.setdefault((client, key), []).append(ch_cpu.seconds)
            cpu.setdefault((client, key + " (upstream CPU)"), []).append(up_cpu.seconds)
            log(f"  {client:7} {key:14} {wall:.3f} s  (cargohold CPU {ch_cpu.seconds:.2f} s, upstream CPU {up_cpu.seconds:.2f} s)")
            return image

        for n in range(args.rounds):
            for client in clients:
                image = push_image(http, upstream.url, f"library/{client}-{n}", "v1", layer_size)
                log(f"round {n + 1}/{args.rounds}, {client}: {image.repo}:{image.tag}, {image.total / MiB:.0f} MiB in {len(image.blobs)} blobs")
                timed(client, "direct", direct, image)
                pairs = [(cached, "cargohold"), (dr_proxy, "proxy")]
                for place, key in pairs if n % 2 == 0 else pairs[::-1]:
                    pulled = timed(client, f"{key} cold", place, image)
                    timed(client, f"{key} warm", place, pulled)

        # ---- figure 3b: upstream GETs per blob for CONCURRENT cold pulls of one fresh image, through the counter
        image = push_image(http, upstream.url, "library/concurrent", "v1", layer_size)
        concurrency: dict[str, Any] = {}
        for place, key in ((counted, "cargohold"), (dr_counted, "proxy")):
            before = wait_quiet(counter_url, http)
            settle(0.1)
            log(f"{args.concurrent} concurrent cold pulls of {image.repo}:{image.tag} through {place.label}")
            wall, failures = pull_many(place, image, args.concurrent)
            after = wait_quiet(counter_url, http)
            gets = {d: after["blob_gets"].get(d, 0) - before["blob_gets"].get(d, 0) for d, _ in image.blobs}
            manifests = sum(v - before["manifest_gets"].get(k, 0) for k, v in after["manifest_gets"].items()
                            if k.endswith("/concurrent:v1") or k.startswith("library/concurrent:"))
            if min(gets.values()) < 1 and len(failures) < args.concurrent:
                raise BenchError(f"{place.label}: the counter saw no upstream GET for some blob: {gets}: is it in the path?")
            concurrency[key] = {"wall_s": wall, "failed_pulls": len(failures), "failures": failures[:5], "blob_gets": gets, "max_gets_per_blob": max(gets.values()),
                                "mean_gets_per_blob": statistics.mean(gets.values()), "manifest_gets": manifests,
                                "other_requests": {k: v - before["other"].get(k, 0) for k, v in after["other"].items()
                                                   if v - before["other"].get(k, 0)}}
            log(f"  {wall:.2f} s; upstream GETs per blob {sorted(gets.values())}, manifest GETs {manifests}, "
                f"{len(failures)} of {args.concurrent} pulls failed" + (f" (first: {failures[0]})" if failures else ""))

        # ---- figure 4: cold pull over a throttled upstream link, cargohold vs directly over the same link
        thr_before = wait_quiet(throttle_url, http)
        thr_images: list[Image] = []
        for n in range(args.rounds):
            image = push_image(http, upstream.url, f"library/throttled-{n}", "v1", layer_size)
            log(f"throttled link ({args.throttle_mbps:g} Mbit/s), round {n + 1}/{args.rounds}: {image.repo}:{image.tag}, "
                f"{image.total / MiB:.0f} MiB in {len(image.blobs)} blobs")
            pairs = [(thr_direct, "throttled direct"), (thr_cached, "throttled cold")]
            for place, key in pairs if n % 2 == 0 else pairs[::-1]:
                pulled = timed("aiohttp", key, place, image)
                if pulled is not image:
                    thr_images.append(pulled)
            thr_images.append(image)
        thr_after = wait_quiet(throttle_url, http)
        # Each blob crosses the link once per direct pull and once for cargohold's fill: 2 GETs per blob per image.
        thr_gets = [thr_after["blob_gets"].get(d, 0) - thr_before["blob_gets"].get(d, 0)
                    for image in thr_images for d, _ in image.blobs]
        thr_total = thr_images[0].total
        thr_speed = {key: thr_total / statistics.median(times[("aiohttp", key)]) / 1e6
                     for key in ("throttled direct", "throttled cold")}
        throttled = {
            "link_rate_bytes_per_s": link_rate, "link_mbit_per_s": args.throttle_mbps,
            "pacing": "response bodies only, one token bucket for the whole proxy (one link shared by all connections), "
                      f"{PACE_SLICE // 1024} KiB steps, depth max(256 KiB, 5 ms of traffic)",
            "direct_MB_per_s": thr_speed["throttled direct"], "cargohold_cold_MB_per_s": thr_speed["throttled cold"],
            "upstream_blob_gets_per_blob": {"min": min(thr_gets), "max": max(thr_gets), "expected": 2},
        }
        log(f"  over the link: direct {thr_speed['throttled direct']:.0f} MB/s, cargohold cold "
            f"{thr_speed['throttled cold']:.0f} MB/s (link {link_rate / 1e6:.0f} MB/s); upstream GETs per blob "
            f"{min(thr_gets)}–{max(thr_gets)} (2 expected: direct + cargohold's fill)")
        busy_after = psutil.cpu_percent(interval=0.5)

        # ---- report
        rows: list[Row] = []
        mib = LAYERS * args.layer_mib
        for client in clients:
            t = {k: v for (c, k), v in times.items() if c == client}
            what = "aiohttp, 5 blobs at a time" if client == "aiohttp" else "skopeo copy to dir:"
            rows.append(timing_row(f"cold pull {mib} MiB ({what}) vs direct", t["cargohold cold"], t["direct"],
                                   "direct", COLD_TARGET))
            rows.append(timing_row("  warm pull vs direct", t["cargohold warm"], t["direct"], "direct",
                                   WARM_TARGET if client == "aiohttp" else None))
            rows.append(timing_row("  warm pull vs docker-registry proxy warm", t["cargohold warm"], t["proxy warm"],
                                   "proxy warm", WARM_TARGET if client == "aiohttp" else None))
            rows.append(timing_row("  cold pull vs docker-registry proxy cold", t["cargohold cold"], t["proxy cold"],
                                   "proxy cold", None))
            rows.append(timing_row("  (docker-registry proxy cold vs direct)", t["proxy cold"], t["direct"], "direct", None))
        t = {k: v for (c, k), v in times.items() if c == "aiohttp"}
        rows.append(timing_row(f"cold pull {mib} MiB over a throttled upstream ({args.throttle_mbps:g} Mbit/s) vs direct "
                               "over the same link", t["throttled cold"], t["throttled direct"], "direct, throttled",
                               COLD_TARGET))
        ch, px = concurrency["cargohold"], concurrency["proxy"]
        rows.append(Row(f"upstream GETs per blob, {args.concurrent} concurrent cold pulls (max)", "GETs",
                        ch["max_gets_per_blob"], px["max_gets_per_blob"], "proxy", ch["max_gets_per_blob"] / px["max_gets_per_blob"],
                        "cargohold = 1", ch["max_gets_per_blob"] == 1 and min(ch["blob_gets"].values()) == 1))
        rows.append(Row("  failed pulls (HTTP errors) among them", "pulls", ch["failed_pulls"], px["failed_pulls"], "proxy",
                        ch["failed_pulls"] / max(px["failed_pulls"], 1), "cargohold = 0", ch["failed_pulls"] == 0))
        rows.append(Row("  upstream manifest GETs for the tag", "GETs", ch["manifest_gets"], px["manifest_gets"], "proxy",
                        ch["manifest_gets"] / max(px["manifest_gets"], 1), "", None))
        rows.append(Row(f"  wall time of the {args.concurrent} pulls (through the counter)", "s", ch["wall_s"], px["wall_s"],
                        "proxy", ch["wall_s"] / px["wall_s"], "", None))

        print()
        print(f"pull-through cache: cargohold ({args.workers} workers, auth on, Bearer pull token) vs the same pull from "
              f"the upstream docker-registry directly and through docker-registry in proxy mode; {LAYERS} random layers of "
              f"{args.layer_mib} MiB, loopback, {os.cpu_count()} CPUs; median of {args.rounds} rounds (range in "
              f"parentheses), ratio = median of the per-round ratios")
        print_rows(rows)
        judged = [r for r in rows if r.verdict is not None]
        print(f"{sum(bool(r.verdict) for r in judged)} met, {sum(not r.verdict for r in judged)} not met; "
              f"CPU {busy_before:.0f}% busy before the run, {busy_after:.0f}% after")
        print(f"throttled link: {link_rate / 1e6:.0f} MB/s nominal, one token bucket for all connections of the proxy; "
              f"direct pulls got {thr_speed['throttled direct']:.0f} MB/s, cargohold's cold pulls "
              f"{thr_speed['throttled cold']:.0f} MB/s (median); upstream GETs per blob {min(thr_gets)}–{max(thr_gets)} "
              "(2 expected)")
        if thr_speed["throttled direct"] < 0.8 * link_rate / 1e6:
            print("warning: the direct pulls reached less than 80% of the throttled link's rate: something other than "
                  "the link (the machine's CPU, the proxy) limited them, so that figure is not the link-bound case")
        cold = cpu[("aiohttp", "cargohold cold")]
        warm = cpu[("aiohttp", "cargohold warm")]
        print(f"cargohold CPU per aiohttp pull: cold {statistics.median(cold):.2f} s, warm {statistics.median(warm):.2f} s (median)")
        for e in errors:
            print(f"warning: {e['client']} {e['pull']} of {e['image']} failed once (pulled again): {e['error'][:300]}")

        payload = {
            **payload_head(started, args, exclude=("counting_proxy", "rate")),
            "conditions": f"cargohold {args.workers} workers, auth on, Bearer pull token fetched before each pull; "
                          "upstream and docker-registry proxies without auth; loopback",
            "machine": machine_info(cpu_busy_percent_before=busy_before, cpu_busy_percent_after=busy_after),
            "versions": {
                "docker-registry": tool_version(DOCKER_REGISTRY),
                "skopeo": tool_version(SKOPEO) if "skopeo" in clients else None,
            },
            "figures": [
                {"figure": r.figure.strip(), "unit": r.unit, "cargohold": r.ours, "peer": r.peer, "peer_is": r.peer_label,
                 "ratio": r.ratio, "ratio_range": r.ratio_spread, "target": r.target,
                 "result": None if r.verdict is None else ("met" if r.verdict else "not met")}
                for r in rows
            ],
            "pulls_s": {f"{c}: {k}": spread(v) for (c, k), v in times.items()},
            "cargohold_cpu_s": {f"{c}: {k}": spread(v) for (c, k), v in cpu.items()},
            "concurrent": concurrency,
            "throttled": throttled,
            "failed_pulls_retried": errors,
        }
        merge_results(args.output, "cache", payload)
        log(f"results merged into {args.output} under \"cache\" ({time.monotonic() - started:.0f} s in all)")
        return 0
    except (BenchError, Deadline) as exc:
        print(f"bench cache: {exc}", file=sys.stderr)
        if cargohold is not None:
            print_log_tail("cargohold", cargohold.log())
        return 1
    finally:
        stop_watchdog()
        for helper in helpers:
            kill_process(helper)
        stop_servers("bench cache", (cargohold, *proxies, upstream))
        remove_tmp(tmp, args.keep, log)


if __name__ == "__main__":
    sys.exit(main())
