"""The gateway beside what ops would build instead, measured in one run on loopback.

    make bench                     # or: .venv/bin/python -m bench [--seconds 10] [--no-portal] [--profile]

Installs nginx and wrk from Debian when missing, makes a throwaway CA and
certificate (trustme), starts a static nginx upstream, and drives the same
request (two allowed cookies, three stripped ones, a valid JWT cookie, a
portal path) with wrk (one thread, 50 kept-alive connections, TLS) through:

  a  the upstream directly (plain HTTP)
  b  nginx terminating TLS, a ``map`` forwarding the two cookies
  c  b plus ``auth_request`` to a minimal aiohttp JWT verifier
  d  the gateway's full path: TLS, token verification, an access rule,
     cookie filtering, audit log, metrics (one process, then one per core)
  e  a minimal aiohttp proxy that only filters cookies

and prints req/s, p50/p99 latency, memory (idle, peak under load, with 5,000
idle keep-alive connections), the ratios against c, b and e, and the targets.
Only 127.0.0.1 is ever a target.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import trustme
import yaml

from bench import nginx
from bench.load import PeakRSS, WrkResult, rss_with_idle_connections, tree_cpu, tree_rss, wrk
from bench.profile import Profile, difference, report, sample
from gateway.policy.identity import sign_token

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
WORKSPACE = "bench"
SECRET = "bench-secret-0123456789abcdef0123456789"
PATH = "/tickets/42"  # a portal path: in proxy mode the gateway checks identity and access, then forwards
CONNECTIONS = 50
IDLE_CONNECTIONS = 5000
STARTUP_SECONDS = 30.0
CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class Target:
    """One row: where to send the load and which processes are doing the work."""

    key: str
    label: str
    url: str
    pids: list[int]
    auth: bool  # whether a request without the JWT must be refused


@dataclass(frozen=True)
class Row:
    """A measured row."""

    target: Target
    result: WrkResult
    idle: list[int]
    peak: int
    with_idle: int
    cpu_us: float
    """CPU (user and system) of the row's processes per request of the measured run, in µs."""


def install_tools() -> None:
    """nginx and wrk from Debian when missing (as root, or through sudo)."""
    missing = [
        tool for tool in ("nginx", "wrk") if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print(f"installing {', '.join(missing)} from Debian ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def raise_file_limit() -> None:
    """Room for 5,000 idle connections on each side (inherited by every server started here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 30_000) if hard != resource.RLIM_INFINITY else 30_000
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < 2 * IDLE_CONNECTIONS + 1000:
        raise SystemExit(f"open-file limit {wanted} is too low for {IDLE_CONNECTIONS} idle connections")


class Processes:
    """Servers started for the run; each is stopped (SIGTERM, then SIGKILL) by its own pid when the run ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``command``, its output going to ``<folder>/<name>.log``."""
        log = (self.folder / f"{name}.log").open("wb")
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.folder
        )
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """Stop one server and wait for it."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        """Stop every server still running, newest first."""
        for process in reversed(self.started):
            self.stop(process)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, headers: dict[str, str]) -> None:
    """Poll ``url`` until it answers 200, failing early with the server's log when it died."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if get(url, headers)[0] == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready after {STARTUP_SECONDS} s:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


def get(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """One GET on a fresh connection: status and body (TLS unverified: our throwaway certificate, on loopback)."""
    scheme, _, rest = url.partition("://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    connection: http.client.HTTPConnection
    if scheme == "https":
        context = ssl._create_unverified_context()  # noqa: S323 -- our own certificate on 127.0.0.1
        connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    else:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", "/" + path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", errors="replace")
    finally:
        connection.close()


def check(target: Target, cookies: dict[str, str], forwarded: str, jwt_cookie: str) -> None:
    """Before measuring: the row forwards exactly the two cookies, and (with auth) refuses a visitor without a JWT."""
    base = target.url.removesuffix(PATH)
    status, body = get(base + nginx.COOKIE_ECHO, cookies)
    if status != 200 or body != forwarded:
        raise RuntimeError(f"row {target.key}: upstream saw cookies {body!r} (HTTP {status}), expected {forwarded!r}")
    if target.auth:
        without = {"Cookie": cookies["Cookie"].replace(jwt_cookie, "").rstrip("; ")}
        status, _ = get(target.url, without)
        if status == 200:
            raise RuntimeError(f"row {target.key}: a request without a token was let through")


def measure(target: Target, headers: dict[str, str], seconds: float, request: bytes) -> Row:
    """Warm up, then one measured wrk run with peak RSS sampled, then RSS with 5,000 idle connections."""
    idle = tree_rss(target.pids)
    wrk(target.url, headers, seconds=min(3.0, seconds), connections=CONNECTIONS)
    cpu = tree_cpu(target.pids)
    with PeakRSS(target.pids) as peak:
        result = wrk(target.url, headers, seconds=seconds, connections=CONNECTIONS)
    cpu_us = (tree_cpu(target.pids) - cpu) / (result.rate * seconds) * 1e6
    scheme, _, rest = target.url.partition("://")
    port = int(rest.partition("/")[0].partition(":")[2])
    with_idle = rss_with_idle_connections(
        HOST, port, tls=scheme == "https", request=request, count=IDLE_CONNECTIONS, pids=target.pids
    )
    return Row(target, result, idle, peak.peak, with_idle, cpu_us)


def write_certificate(folder: Path, ca: trustme.CA) -> None:
    """A certificate of ``ca`` for the loopback gateway, as ``folder``'s cert.pem and key.pem (``gateway_config``'s)."""
    leaf = ca.issue_cert(HOST, "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "key.pem"))


def gateway_config(folder: Path, port: int, upstream_port: int, **sections: object) -> Path:
    """The gateway's YAML for the run: proxy-mode portal behind an email-domain rule, audit on, metrics on;
    ``sections`` replace these top-level sections."""
    path = folder / "gateway.yaml"
    config = {
        "workspace_id": WORKSPACE,
        "domain": "localhost",
        "listen": {"https": f"{HOST}:{port}", "shutdown_grace": 2},
        "tls": {"cert": str(folder / "cert.pem"), "key": str(folder / "key.pem")},
        "upstream": {"url": f"http://{HOST}:{upstream_port}"},
        "identity": {"jwt": {"secrets": ["env:BENCH_JWT_SECRET"]}, "login_url": "https://app.example.com/login"},
        "messenger": {"upstream": f"http://{HOST}:{upstream_port}"},
        "portal": {
            "mode": "proxy",
            "access": {"rules": [{"attribute": "person.email_domain", "op": "equals", "value": "example.com"}]},
        },
        "store": {"path": str(folder / "portal.db")},
        "audit": {"path": str(folder / "audit.jsonl")},
        # An idle kept-alive connection lives as long as row e's (aiohttp's 75 s keep-alive): with the default
        # 10 s the gateway closed thousands of the 5,000 idle ones before "+5k idle" was read on a loaded machine.
        "requests": {"header_timeout": 75},
        **sections,
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _mb(size: float) -> str:
    return f"{size / 1e6:,.0f}"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: the cores are shared, and every figure moves with them."""
    return " ".join(f"{figure:.2f}" for figure in os.getloadavg())


def print_table(rows: list[Row], seconds: float, load_before: str) -> None:
    """The figures, the ratios and the targets (issue 19's), ready to paste."""
    print()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {CORES} cores, {platform_line()}; wrk -t1 -c{CONNECTIONS} "
        f"-d{seconds:g}s, TLS except row a; load average {load_before} before, {load_average()} after"
    )
    print(
        f"{'row':<4}{'what':<46}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'fail':>6}"
        f"{'idle MB':>12}{'load MB':>9}{'+5k idle MB':>13}{'CPU µs/req':>12}"
    )
    for row in rows:
        r = row.result
        idle = f"{_mb(sum(row.idle))}" + (f" ({_mb(max(row.idle))}/p)" if len(row.idle) > 1 else "")
        print(
            f"{row.target.key:<4}{row.target.label:<46}{r.rate:>9,.0f}{r.p50_ms:>8.2f}{r.p99_ms:>8.2f}{r.failures:>6}"
            f"{idle:>12}{_mb(row.peak):>9}{_mb(row.with_idle - sum(row.idle)):>13}{row.cpu_us:>12.0f}"
        )
    by_key = {row.target.key: row for row in rows}
    gateway, single = by_key[f"d{CORES}"], by_key["d1"]
    print()
    for name, mine, other in (("d/c", gateway, "c"), ("d/b", gateway, "b"), ("d1/e", single, "e")):
        theirs = by_key[other].result
        print(
            f"{name:<5} req/s {mine.result.rate / theirs.rate:5.2f}   p99 {mine.result.p99_ms / theirs.p99_ms:5.2f}"
            f"   CPU/req {mine.cpu_us / by_key[other].cpu_us:5.2f}   ({mine.target.key} against {other})"
        )
    c = by_key["c"].result
    idle_max = max(max(row.idle) for row in (gateway, single))
    connections = max(row.with_idle - sum(row.idle) for row in (gateway, single))
    e_connections = by_key["e"].with_idle - sum(by_key["e"].idle)  # the aiohttp floor for the same 5,000
    print()
    rate_c, p99_c = gateway.result.rate / c.rate, gateway.result.p99_ms / c.p99_ms
    rate_e = single.result.rate / by_key["e"].result.rate
    for ok, text in (
        (rate_c >= 1.0, f"gateway, workers = cores: req/s >= 1.0 x c ({rate_c:.2f})"),
        (p99_c <= 2.0, f"gateway, workers = cores: p99 <= 2 x c's ({p99_c:.2f})"),
        (rate_e >= 0.85, f"gateway, one process: req/s >= 0.85 x e ({rate_e:.2f})"),
        (idle_max <= 100 * 1e6, f"RSS <= 100 MB per idle gateway process ({idle_max / 1e6:.0f} MB)"),
        (
            connections <= 1.1 * e_connections,
            f"5,000 idle connections add <= 1.1 x e's ({connections / 1e6:.0f} MB, "
            f"{connections / e_connections:.2f} x e's {e_connections / 1e6:.0f} MB)",
        ),
    ):
        print(f"{'met ' if ok else 'MISSED'}  {text}")


def platform_line() -> str:
    """The CPU model and the Python, for the figures' heading."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return f"{model}, Python {sys.version.split()[0]}"


def run(seconds: float, *, portal: bool, profile: bool) -> None:
    """Start everything, check each row, measure each row, print the table; stop everything."""
    install_tools()
    raise_file_limit()
    load_before = load_average()
    folder = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    ca = trustme.CA()
    write_certificate(folder, ca)
    token = sign_token(SECRET, user_id="u1", email="u1@example.com", name="Bench User", now=time.time(), ttl=4 * 3600)
    session, device = f"intercom-session-{WORKSPACE}=s3ss10n", f"intercom-device-id-{WORKSPACE}=d3v1c3"
    jwt_cookie = f"portal-jwt={token}"
    cookie = f"_ga=GA1.2.3.4; {session}; tracking=abc123; {device}; intercom-session-otherws=x; {jwt_cookie}"
    headers = {"Cookie": cookie}
    request = f"GET {PATH} HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\n\r\n".encode()
    ports = {name: free_port() for name in ("upstream", "b", "c", "verifier", "d", "e")}
    env = {**os.environ, "BENCH_JWT_SECRET": SECRET, "PYTHONPATH": str(REPO)}
    python = sys.executable
    processes = Processes(folder)
    profiled: Profile | str = ""
    minimal: Profile | str = ""
    try:
        (folder / "upstream.conf").write_text(nginx.upstream_conf(folder, ports["upstream"]))
        (folder / "edge.conf").write_text(
            nginx.edge_conf(
                folder,
                proxy_port=ports["b"],
                auth_port=ports["c"],
                upstream_port=ports["upstream"],
                verifier_port=ports["verifier"],
                workspace=WORKSPACE,
            )
        )
        nginx_binary = nginx.binary()
        forwarded = f"{session}; {device}"
        rows: list[Row] = []

        def serve(name: str, command: list[str], ready: str) -> subprocess.Popen[bytes]:
            process = processes.start(name, command, env)
            wait_ready(ready, process, folder / f"{name}.log", headers)
            return process

        def row(target: Target) -> None:
            check(target, headers, forwarded if target.key != "a" else cookie, jwt_cookie)
            print(f"measuring {target.key}: {target.label} ...", flush=True)
            rows.append(measure(target, headers, seconds, request))

        upstream_url = f"http://{HOST}:{ports['upstream']}"
        upstream_command = [nginx_binary, "-p", str(folder), "-c", str(folder / "upstream.conf")]
        upstream = serve("upstream", upstream_command, upstream_url + PATH)
        row(Target("a", "upstream directly (nginx static, HTTP)", upstream_url + PATH, [upstream.pid], auth=False))

        edge_command = [nginx_binary, "-p", str(folder), "-c", str(folder / "edge.conf")]
        url = f"https://{HOST}:{ports['b']}{PATH}"
        edge = serve("edge", edge_command, url)
        row(Target("b", "nginx TLS proxy, cookie map", url, [edge.pid], auth=False))
        processes.stop(edge)  # a fresh nginx for c: b's 5,000 connections leave its memory grown

        verifier = processes.start("verifier", [python, "-m", "bench.verifier", str(ports["verifier"])], env)
        url = f"https://{HOST}:{ports['c']}{PATH}"
        edge = serve("edge-auth", edge_command, url)
        row(Target("c", "nginx + auth_request -> aiohttp JWT verifier", url, [edge.pid, verifier.pid], auth=True))
        processes.stop(edge)
        processes.stop(verifier)

        config = gateway_config(folder, ports["d"], ports["upstream"])
        url = f"https://{HOST}:{ports['d']}{PATH}"
        for workers in sorted({1, CORES}):
            command = [python, "-m", "gateway", "serve", "-c", str(config), "--workers", str(workers)]
            gateway = serve(f"gateway-{workers}", command, url)
            label = "gateway, full path, 1 process" if workers == 1 else f"gateway, full path, {workers} workers"
            row(Target(f"d{workers}", label, url, [gateway.pid], auth=True))
            if profile and workers == 1:
                print("profiling d1 ...", flush=True)
                profiled = sample(gateway.pid, url, headers, seconds, folder / "profile-d1.txt")
            processes.stop(gateway)

        url = f"https://{HOST}:{ports['e']}{PATH}"
        proxy_args = [str(ports["e"]), upstream_url, str(folder / "cert.pem"), str(folder / "key.pem"), WORKSPACE]
        proxy = serve("minimal-proxy", [python, "-m", "bench.minimal_proxy", *proxy_args], url)
        row(Target("e", "minimal aiohttp proxy, cookie filter only", url, [proxy.pid], auth=False))
        if profile:
            print("profiling e ...", flush=True)
            minimal = sample(proxy.pid, url, headers, seconds, folder / "profile-e.txt")
    finally:
        processes.stop_all()
    print_table(rows, seconds, load_before)
    for found in (profiled, minimal):
        if isinstance(found, str) and found:
            print(found)
    if isinstance(profiled, Profile):
        print(report(profiled))
        if isinstance(minimal, Profile):
            print(difference(profiled, minimal))
    print("\nthe gateway's own stages, in-process (bench/bench_pipeline.py):", flush=True)
    subprocess.run([python, "-m", "bench.bench_pipeline"], check=True, env=env, cwd=REPO)
    if portal:
        print("\nportal figures (bench/bench_portal.py):", flush=True)
        subprocess.run([python, str(REPO / "bench" / "bench_portal.py")], check=True, env=env)
    shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured wrk run (default 10)")
    parser.add_argument("--no-portal", action="store_true", help="skip the portal list/search figures")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile the one-process gateway and row e with py-spy, and print what d1 runs beyond e",
    )
    args = parser.parse_args(argv)
    run(args.seconds, portal=not args.no_portal, profile=args.profile)
