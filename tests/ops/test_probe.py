"""``portal-gateway probe`` end to end: the real gateway behind a real nginx on loopback acting as the CDN.

nginx terminates TLS with a trustme certificate and proxies to the gateway over TLS, in one set-up per
way a CDN goes wrong: passing everything, stripping the Intercom cookies, forwarding a decoy as the
session cookie (an unanchored cookie allow-list at the edge), serving plain HTTP, rewriting bodies.
The probe runs as the command line runs it (``cli.main``), on its own thread and event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from yarl import URL

from bench import nginx
from gateway import cli
from gateway.observe.metrics import METRICS
from gateway.ops.checks import Check
from gateway.ops.probe import (
    PROOF_WINDOW,
    SIGNATURE_HEADER,
    Canaries,
    Target,
    answer,
    check_certificate,
    check_hsts,
    check_received,
    check_redirect,
    check_set_cookie,
    check_upstream,
    judge,
    observe,
    probe_authorization,
    probe_authorization_problem,
    sign,
)
from gateway.proxy.forward import Upstream
from gateway.run.tls import CertificateInfo, server_context
from tests.conftest import (
    CANARY,
    DEVICE_COOKIE,
    DOMAIN,
    SESSION_COOKIE,
    WORKSPACE,
    CertFiles,
    Gateway,
    MakeConfig,
    RecordingUpstream,
    StartGateway,
    StartUpstream,
    config_dict,
)

ADMIN_TOKEN = "probe-admin-token-0123456789abcdef"
NGINX = Path(nginx.binary())
PROBE = "/_gateway/probe"
STARTUP_SECONDS = 10.0

needs_nginx = pytest.mark.skipif(
    not NGINX.exists(), reason=f"nginx is not installed at {NGINX}: `make test` installs it (apt-get install nginx)"
)

# What the CDN does to a request on its way to the gateway (inside nginx's ``location /``).
PASS_THROUGH = ""
STRIP_COOKIES = 'proxy_set_header Cookie "";'
# A hand-written allow-list at the edge, as in bench/nginx.py but without anchoring the names: the first
# "intercom-session-<ws>=" anywhere in the header wins, even at the end of another cookie's name.
LOOSE_ALLOW_LIST = "proxy_set_header Cookie $edge_cookie;"
LOOSE_MAPS = f"""
    map $http_cookie $edge_session {{ default ""; "~(?<c>{SESSION_COOKIE}=[^;]*)" $c; }}
    map $http_cookie $edge_device {{ default ""; "~(?<c>{DEVICE_COOKIE}=[^;]*)" $c; }}
    map "$edge_session; $edge_device" $edge_cookie {{ default "$edge_session; $edge_device"; }}"""
# An edge "fixing" the cookies it passes back, and dropping a header it does not know.
REWRITE_SET_COOKIE = "proxy_cookie_flags ~ nosecure; proxy_cookie_domain example.com $host;"
HIDE_HSTS = "proxy_hide_header Strict-Transport-Security;"
NOT_SECURE = "Secure is missing; the CDN must not rewrite cookie attributes"
# A CDN "rewriting links" in bodies: the origin's name for the public one.
REWRITE_BODIES = f"""proxy_set_header Accept-Encoding "";
            sub_filter_types application/json;
            sub_filter '{DOMAIN}' 'www.{DOMAIN}';"""


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Edge:
    """nginx in front of the gateway: its HTTPS and HTTP ports."""

    https_port: int
    http_port: int

    @property
    def url(self) -> str:
        return f"https://{DOMAIN}:{self.https_port}"

    def resolve(self) -> list[str]:
        return [f"--resolve={DOMAIN}:{port}:127.0.0.1" for port in (self.https_port, self.http_port)]


def edge_conf(folder: Path, cert_files: CertFiles, gateway: Gateway, edge: Edge, *, request: str, http: str) -> str:
    """The CDN: TLS at nginx, proxied to the gateway over verified TLS; ``http`` is the plain-HTTP server's body."""
    proxy = f"""
            proxy_pass https://127.0.0.1:{gateway.running.https_port};
            proxy_ssl_server_name on;
            proxy_ssl_name {DOMAIN};
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {cert_files.ca};
            proxy_set_header Host $host;"""
    return (
        nginx.preamble(folder, "edge")
        + f"""
worker_processes 1;
http {{
    access_log off;{LOOSE_MAPS}
    server {{
        listen 127.0.0.1:{edge.https_port} ssl;
        ssl_certificate {cert_files.cert};
        ssl_certificate_key {cert_files.key};
        location / {{{proxy}
            {request}
        }}
    }}
    server {{
        listen 127.0.0.1:{edge.http_port};
        {http.replace("{proxy}", proxy)}
    }}
}}
"""
    )


REDIRECT = "return 308 https://$host:{port}$request_uri;"
SERVE_PLAIN = "location / {{proxy}\n        }"

StartEdge = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def start_edge(tmp_path: Path, cert_files: CertFiles) -> AsyncIterator[StartEdge]:
    """Start nginx in front of a gateway; stopped (by its own pid) after the test."""
    processes: list[subprocess.Popen[bytes]] = []

    async def start(gateway: Gateway, *, request: str = PASS_THROUGH, plain_http: bool = False) -> Edge:
        edge = Edge(free_port(), free_port())
        folder = tmp_path / f"nginx-{len(processes)}"
        folder.mkdir()
        http = SERVE_PLAIN if plain_http else REDIRECT.format(port=edge.https_port)
        (folder / "edge.conf").write_text(edge_conf(folder, cert_files, gateway, edge, request=request, http=http))
        with (folder / "nginx.log").open("wb") as log:
            process = subprocess.Popen(  # noqa: ASYNC220 (starting it does not wait on it)
                [str(NGINX), "-p", str(folder), "-c", str(folder / "edge.conf")], stdout=log, stderr=log
            )
        processes.append(process)
        for _ in range(int(STARTUP_SECONDS / 0.05)):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", edge.http_port)):
                return edge
            if process.poll() is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"nginx did not start: {(folder / 'nginx.log').read_text()}")

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def probed(start_gateway: StartGateway) -> Gateway:
    """The gateway with an admin token, so that the probe endpoint exists."""
    return await start_gateway(admin={"token": ADMIN_TOKEN})


@pytest.fixture
def probe_config(cert_files: CertFiles, tmp_path: Path, probed: Gateway) -> Path:
    """The configuration file ops would give the probe: the gateway's own (workspace, admin.token)."""
    raw = config_dict(cert_files, tmp_path, "http://127.0.0.1:9")
    raw["admin"] = {"token": ADMIN_TOKEN}
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def run_cli(*argv: str) -> tuple[int, str]:
    """``portal-gateway ARGV`` and what it printed, on its own thread (the probe runs its own event loop)."""

    def run() -> tuple[int, str]:
        with io.StringIO() as out, contextlib.redirect_stdout(out):
            return cli.main(argv), out.getvalue()

    return await asyncio.to_thread(run)


def probe_args(config: Path, edge: Edge, cert_files: CertFiles) -> list[str]:
    """``probe`` against the edge, trusting the test CA, the domain pinned to loopback."""
    return [
        "probe",
        edge.url,
        "-c",
        str(config),
        "--ca",
        str(cert_files.ca),
        *edge.resolve(),
        f"--http-port={edge.http_port}",
    ]


async def run_probe(config: Path, edge: Edge, cert_files: CertFiles, *args: str) -> tuple[int, dict[str, Check]]:
    """``portal-gateway probe --json`` against the edge: the exit code and the checks by name."""
    code, printed = await run_cli(*probe_args(config, edge, cert_files), "--json", *args)
    checks = [Check(**item) for item in json.loads(printed)]
    return code, {check.name: check for check in checks}


def failing(checks: dict[str, Check]) -> dict[str, str]:
    return {name: check.detail for name, check in checks.items() if not check.ok}


@needs_nginx
async def test_probe_passes_every_check_through_a_cdn_that_passes_cookies_and_redirects(
    probed: Gateway, start_edge: StartEdge, probe_config: Path, cert_files: CertFiles
) -> None:
    edge = await start_edge(probed)
    code, checks = await run_probe(probe_config, edge, cert_files)
    assert failing(checks) == {}
    assert code == 0
    assert list(checks) == [
        "TLS certificate",
        "Probe answer",
        "Intercom cookies at the gateway",
        "Cookies towards upstream",
        "Upstream Set-Cookie",
        "HSTS",
        "HTTP to HTTPS",
    ]
    assert "4 of 4 decoys arrived and would be stripped" in checks["Cookies towards upstream"].detail
    assert "Domain=example.com" in checks["Upstream Set-Cookie"].detail


@needs_nginx
async def test_probe_prints_one_pass_line_per_check_with_the_token_from_a_file(
    probed: Gateway, start_edge: StartEdge, cert_files: CertFiles, tmp_path: Path
) -> None:
    raw = config_dict(cert_files, tmp_path, "http://127.0.0.1:9")  # no admin.token in this one
    config = tmp_path / "no-token.yaml"
    config.write_text(yaml.safe_dump(raw))
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    edge = await start_edge(probed)
    code, printed = await run_cli(*probe_args(config, edge, cert_files), f"--token-file={token_file}")
    assert code == 0
    lines = printed.splitlines()
    assert len(lines) == 7
    assert all(line.startswith("PASS  ") for line in lines)
    assert f"PASS  Intercom cookies at the gateway: {SESSION_COOKIE} and {DEVICE_COOKIE} arrived unchanged" in lines


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["http://help.example.com"], "give the custom domain's HTTPS URL"),
        (["https://help.example.com", "--resolve=help.example.com:443"], "--resolve: 'help.example.com:443' is not"),
        (["https://help.example.com", "--token-file=/nonexistent/token"], "--token-file: cannot read"),
        (["https://help.example.com"], "no admin token"),
    ],
)
async def test_probe_usage_errors_exit_2_saying_why(
    args: list[str], said: str, cert_files: CertFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "no-token.yaml"
    config.write_text(yaml.safe_dump(config_dict(cert_files, tmp_path, "http://127.0.0.1:9")))
    assert cli.main(["probe", *args, "-c", str(config)]) == 2
    assert said in capsys.readouterr().err


AT_GATEWAY, UPSTREAM = "Intercom cookies at the gateway", "Cookies towards upstream"


@needs_nginx
@pytest.mark.parametrize(
    ("edge_setup", "expected"),
    [
        pytest.param(
            {"request": STRIP_COOKIES},
            {
                AT_GATEWAY: f"{SESSION_COOKIE} and {DEVICE_COOKIE} did not arrive: something in front drops cookies",
                UPSTREAM: f"{DEVICE_COOKIE} would not go upstream as sent: it did not reach the gateway",
            },
            id="strips the Intercom cookies",
        ),
        pytest.param(
            {"request": LOOSE_ALLOW_LIST},
            {
                AT_GATEWAY: f"{SESSION_COOKIE} arrived with the value of decoy probe",
                UPSTREAM: f"-{SESSION_COOKIE} would go upstream as {SESSION_COOKIE}: a rule in front renames cookies",
            },
            id="forwards a decoy as the session cookie",
        ),
        pytest.param(
            {"plain_http": True},
            {"HTTP to HTTPS": "/ answered 200; redirect it with 308 to https://help.example.com:"},
            id="serves plain HTTP",
        ),
        pytest.param(
            {"request": REWRITE_SET_COOKIE},
            {"Upstream Set-Cookie": f"{NOT_SECURE}; Domain is {DOMAIN}, not example.com"},
            id="rewrites Set-Cookie",
        ),
        pytest.param(
            {"request": HIDE_HSTS},
            {"HSTS": "Strict-Transport-Security is missing; set tls.hsts_max_age and let the CDN pass it"},
            id="hides HSTS",
        ),
        pytest.param(
            {"request": REWRITE_BODIES},
            {
                "Probe answer": "signature mismatch: the answer was changed on the way",
                AT_GATEWAY: "not checked: no signed answer",
                UPSTREAM: "not checked: no signed answer",
            },
            id="rewrites bodies",
        ),
    ],
)
async def test_probe_names_what_the_cdn_in_front_gets_wrong(
    probed: Gateway,
    start_edge: StartEdge,
    probe_config: Path,
    cert_files: CertFiles,
    edge_setup: dict[str, Any],
    expected: dict[str, str],
) -> None:
    edge = await start_edge(probed, **edge_setup)
    code, checks = await run_probe(probe_config, edge, cert_files)
    assert code == 1
    failed = failing(checks)
    assert set(failed) == set(expected)  # every other hop still passes
    for name, said in expected.items():
        assert said in failed[name]


@needs_nginx
async def test_probe_with_the_wrong_token_file_is_told_the_endpoint_is_not_there(
    probed: Gateway, start_edge: StartEdge, probe_config: Path, cert_files: CertFiles, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("not-the-admin-token-0123456789\n")
    edge = await start_edge(probed)
    code, checks = await run_probe(probe_config, edge, cert_files, f"--token-file={token_file}")
    assert code == 1
    assert failing(checks)["Probe answer"].startswith(f"{PROBE} answered 404")
    assert checks["HTTP to HTTPS"].ok
    assert checks["TLS certificate"].ok


async def test_a_server_that_does_not_sign_with_the_token_cannot_pass_for_the_gateway(
    probed: Gateway, start_upstream: StartUpstream, cert_files: CertFiles
) -> None:
    """A server on loopback answering with the gateway's own answer to the very same request, signed with a key
    of its own: an old origin, a CDN's own error path, anything that is not the gateway holding the token."""
    relayed: list[bytes] = []

    async def impostor(request: web.Request) -> web.Response:
        headers = {"Authorization": request.headers["Authorization"], "Cookie": request.headers["Cookie"]}
        async with probed.client.get(probed.url.with_path(PROBE).with_query(request.query), headers=headers) as real:
            relayed.append(await real.read())
        signature = sign(b"a key of its own", relayed[-1])
        return web.json_response(body=relayed[-1], headers={SIGNATURE_HEADER: signature})

    fake = await start_upstream(ssl=server_context(cert_files.cert, cert_files.key))
    fake.on(PROBE, impostor)
    port = fake.url.port or 0
    target = Target(URL(f"https://{DOMAIN}:{port}"), free_port(), {(DOMAIN, port): "127.0.0.1"}, cert_files.ca)
    checks = await probe_directly(target)
    assert relayed  # the impostor did answer with the gateway's own words
    assert failing(checks)["Probe answer"].startswith("signature mismatch")


async def test_what_sits_in_front_never_sees_the_admin_token_and_cannot_reuse_what_it_sees(
    probed: Gateway, start_upstream: StartUpstream, cert_files: CertFiles
) -> None:
    """A CDN that keeps every request header it relays: the probe passes through it, and what it kept is a proof
    for that one nonce, which opens neither another probe nor the admin API."""
    kept: list[str] = []

    async def relay(request: web.Request) -> web.Response:
        kept.extend(f"{name}: {value}" for name, value in request.headers.items())
        headers = {"Authorization": request.headers["Authorization"], "Cookie": request.headers["Cookie"]}
        async with probed.client.get(probed.url.with_path(PROBE).with_query(request.query), headers=headers) as real:
            return web.Response(
                body=await real.read(),
                content_type="application/json",
                headers={SIGNATURE_HEADER: real.headers[SIGNATURE_HEADER]},
            )

    cdn = await start_upstream(ssl=server_context(cert_files.cert, cert_files.key))
    cdn.on(PROBE, relay)
    port = cdn.url.port or 0
    target = Target(URL(f"https://{DOMAIN}:{port}"), free_port(), {(DOMAIN, port): "127.0.0.1"}, cert_files.ca)
    checks = await probe_directly(target)
    assert checks["Probe answer"].ok, checks["Probe answer"].detail
    assert kept
    assert not any(ADMIN_TOKEN in line for line in kept)
    seen = next(line.partition(": ")[2] for line in kept if line.lower().startswith("authorization:"))
    for path, query in ((PROBE, {"nonce": "f" * 32}), ("/admin/api/companies", {})):
        url = probed.url.with_path(path).with_query(query)
        async with probed.client.get(url, headers={"Authorization": seen}) as got:
            assert got.status in (401, 404), path


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("", "missing"),
        ("Bearer " + "a" * 40, "bad_token"),
        ("Probe t=1000,proof=" + "0" * 64, "bad_token"),
        ("Probe t=1000", "bad_token"),
        (probe_authorization(b"k" * 20, "n" * 32, 1000), None),
        (probe_authorization(b"k" * 20, "n" * 32, 1000).lower(), None),
        (probe_authorization(b"k" * 20, "n" * 32, 1000 - PROOF_WINDOW), None),
        (probe_authorization(b"k" * 20, "n" * 32, 1000 + PROOF_WINDOW), None),
        (probe_authorization(b"k" * 20, "n" * 32, 1000 - PROOF_WINDOW - 1), "stale"),
        (probe_authorization(b"k" * 20, "n" * 32, 1000 + PROOF_WINDOW + 1), "stale"),
        (probe_authorization(b"k" * 20, "m" * 32, 1000), "bad_token"),
        (probe_authorization(b"j" * 20, "n" * 32, 1000), "bad_token"),
    ],
)
def test_a_probe_proof_holds_for_its_key_its_nonce_and_a_few_minutes(header: str, problem: str | None) -> None:
    assert probe_authorization_problem(header, b"k" * 20, "n" * 32, 1000.0) == problem


async def probe_directly(target: Target, canaries: Canaries | None = None) -> dict[str, Check]:
    """The probe's own two steps, observe and judge, without the command line around them."""
    canaries = canaries or Canaries.fresh(WORKSPACE)
    token = ADMIN_TOKEN.encode()
    observed = await observe(target, token, canaries)
    checks = judge(
        observed, canaries, target=target, token=token, cookie_domain="example.com", now=datetime.now(UTC), min_days=14
    )
    return {check.name: check for check in checks}


def direct_target(gateway: Gateway, cert_files: CertFiles) -> Target:
    """The gateway itself, with nothing in front."""
    https, http = gateway.running.https_port, gateway.running.http_port or 0
    pinned = {(DOMAIN, https): "127.0.0.1", (DOMAIN, http): "127.0.0.1"}
    return Target(URL(f"https://{DOMAIN}:{https}"), http, pinned, cert_files.ca)


async def test_the_probe_is_one_audit_record_with_cookie_names_never_values(
    probed: Gateway, upstream: RecordingUpstream, cert_files: CertFiles
) -> None:
    fresh = Canaries.fresh(WORKSPACE)
    canaries = dataclasses.replace(
        fresh,
        intercom=tuple((name, f"{CANARY}{value}") for name, value in fresh.intercom),
        decoys=tuple((name, f"{CANARY}{value}") for name, value in fresh.decoys),
    )
    checks = await probe_directly(direct_target(probed, cert_files), canaries)
    assert failing(checks) == {}  # the gateway alone passes every check, its own HTTP redirect included
    async with probed.client.get(probed.url.with_path("/healthz")) as later:
        await probed.audit_for(later.headers["X-Request-Id"])  # records are written in order
    records = [record for record in probed.audit_records() if record["path"] == PROBE]
    assert len(records) == 1
    record = records[0]
    assert record["identity"] == {"method": "admin_token", "user_id": None, "result": "verified", "reason": None}
    assert record["cookies"]["received"] == [name for name, _ in (fresh.decoys[0], fresh.intercom[0])] + [
        name for name, _ in (fresh.decoys[1], fresh.decoys[2], fresh.intercom[1], fresh.decoys[3])
    ]
    assert record["cookies"]["forwarded"] == record["cookies"]["stripped"] == []
    assert record["upstream"] == {"url": None, "status": None, "error": None}
    assert CANARY not in probed.config.audit.path.read_text()
    assert upstream.requests == []
    # The bearer token is the admin's, not a visitor's JWT that failed: counted once, as the admin API counts it.
    registry = probed.running.app[METRICS].registry
    counted = "gateway_identity_results_total"
    assert registry.get_sample_value(counted, {"method": "admin_token", "result": "verified", "reason": ""}) == 1
    assert registry.get_sample_value(counted, {"method": "jwt", "result": "rejected", "reason": "malformed"}) is None


def _without_request_id(page: str, request_id: str) -> str:
    return page.replace(request_id, "<request id>")


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer not-the-admin-token-0123456789",
        f"Basic {ADMIN_TOKEN}",
        "Bearer ",
        f"Bearer {ADMIN_TOKEN}",
        probe_authorization(ADMIN_TOKEN.encode(), "1" * 32, time.time()),
        probe_authorization(b"not-the-admin-token-0123456789", "0" * 32, time.time()),
        probe_authorization(ADMIN_TOKEN.encode(), "0" * 32, time.time() - PROOF_WINDOW - 60),
    ],
    ids=["no token", "wrong token", "not a bearer", "empty", "the token", "another nonce", "another key", "stale"],
)
async def test_the_probe_endpoint_is_the_gateways_own_404_without_the_admin_token(
    probed: Gateway, upstream: RecordingUpstream, authorization: str | None
) -> None:
    # The gateway's own 404 for a path it keeps from upstream (another spelling of the admin API).
    async with probed.client.get(probed.url.with_path("/ADMIN/API/probe")) as kept:
        page = _without_request_id(await kept.text(), kept.headers["X-Request-Id"])
    headers = {"Cookie": f"{SESSION_COOKIE}=s; {DEVICE_COOKIE}=d"}
    if authorization is not None:
        headers["Authorization"] = authorization
    url = probed.url.with_path(PROBE).with_query(nonce="0" * 32)
    async with probed.client.get(url, headers=headers) as response:
        assert response.status == 404
        assert _without_request_id(await response.text(), response.headers["X-Request-Id"]) == page
        assert SIGNATURE_HEADER not in response.headers
        assert "Set-Cookie" not in response.headers
        record = await probed.audit_for(response.headers["X-Request-Id"])
    assert record["identity"]["method"] == "admin_token"
    assert record["identity"]["result"] == "rejected"
    # Every request's audit names the cookies that came (names only); nothing is forwarded or reported back.
    assert record["cookies"]["received"] == [SESSION_COOKIE, DEVICE_COOKIE]
    assert record["cookies"]["forwarded"] == []
    assert upstream.requests == []


async def test_without_an_admin_token_configured_the_probe_endpoint_does_not_exist(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway()
    url = gateway.url.with_path(PROBE).with_query(nonce="0" * 32)
    for method in ("GET", "POST"):
        headers = {"Authorization": probe_authorization(ADMIN_TOKEN.encode(), "0" * 32, time.time())}
        async with gateway.client.request(method, url, headers=headers) as response:
            assert response.status == 404
    assert upstream.requests == []


async def test_the_probe_endpoint_refuses_a_missing_nonce_to_the_token_holder(probed: Gateway) -> None:
    headers = {"Authorization": probe_authorization(ADMIN_TOKEN.encode(), "replayed", time.time())}
    async with probed.client.get(probed.url.with_path(PROBE).with_query(nonce="replayed"), headers=headers) as response:
        assert response.status == 400
        assert "nonce" in await response.text()


async def test_the_probe_endpoint_refuses_a_nonce_followed_by_a_newline(probed: Gateway) -> None:
    nonce = "0" * 32 + "\n"  # a regex's "$" matches before a final newline: the whole nonce must be hex
    headers = {"Authorization": probe_authorization(ADMIN_TOKEN.encode(), nonce, time.time())}
    async with probed.client.get(probed.url.with_path(PROBE).with_query(nonce=nonce), headers=headers) as response:
        assert response.status == 400
        assert "nonce" in await response.text()


# --- the checks on their own: what each one says about a hop gone wrong -------------------------------------


def test_a_cdn_injecting_a_cookie_under_an_intercom_name_fails_the_upstream_check(make_config: MakeConfig) -> None:
    config = make_config()
    canaries = Canaries.fresh(WORKSPACE)
    injected = [canaries.cookie_header(), f"{SESSION_COOKIE}=set-by-the-edge"]
    result = answer(injected, canaries.nonce, Upstream.from_config(config, config.upstream.url), workspace_id=WORKSPACE)
    check = check_upstream(canaries, result)
    assert not check.ok
    assert f"{SESSION_COOKIE} would also go upstream with a value the probe never sent" in check.detail
    # Of two cookies of one name the gateway reads the last: here the edge's.
    assert f"{SESSION_COOKIE} arrived changed" in check_received(canaries, result).detail


def test_a_probe_for_another_workspace_is_told_its_cookies_would_be_stripped(
    make_config: MakeConfig,
) -> None:
    config = make_config()
    canaries = Canaries.fresh("otherws")
    result = answer(
        [canaries.cookie_header()],
        canaries.nonce,
        Upstream.from_config(config, config.upstream.url),
        workspace_id=WORKSPACE,
    )
    check = check_upstream(canaries, result)
    assert not check.ok
    assert (
        f"intercom-session-otherws would be stripped: the gateway forwards only {DEVICE_COOKIE}, {SESSION_COOKIE}"
        in check.detail
    )


NOW = datetime(2026, 12, 6, tzinfo=UTC)


def certificate(days: int, names: tuple[str, ...] = (DOMAIN,)) -> CertificateInfo:
    return CertificateInfo(names, NOW - timedelta(days=30), NOW + timedelta(days=days), key_matches=True)


@pytest.mark.parametrize(
    ("info", "ok", "said"),
    [
        (certificate(90), True, "valid until 2027-03-06 (90 days)"),
        (certificate(10), False, "10 days left, under 14; renew it"),
        (certificate(-2), False, "expired, under 14; renew it"),
        (certificate(90, ("*.example.com",)), True, "names help.example.com"),
        (certificate(90, ("www.example.com",)), False, "does not name help.example.com (names: www.example.com)"),
        ("no trusted TLS connection to help.example.com:443 (SSLCertVerificationError)", False, "from a CA"),
    ],
)
def test_certificate_check(info: CertificateInfo | str, ok: bool, said: str) -> None:
    check = check_certificate(info, DOMAIN, NOW, 14)
    assert check.ok is ok
    assert said in check.detail


@pytest.mark.parametrize(
    ("value", "ok"),
    [("max-age=31536000; includeSubDomains", True), ('max-age="600"', True), ("max-age=0", False), (None, False)],
)
def test_hsts_check(value: str | None, ok: bool) -> None:
    assert check_hsts(value).ok is ok


HTTPS = URL(f"https://{DOMAIN}")
HTTP = URL(f"http://{DOMAIN}/")


@pytest.mark.parametrize(
    ("status", "location", "ok"),
    [
        (308, f"https://{DOMAIN}/", True),
        (301, f"https://{DOMAIN}/", True),
        (302, f"https://{DOMAIN}/", False),
        (308, "https://elsewhere.example.net/", False),
        (308, f"http://{DOMAIN}/", False),
        (200, None, False),
    ],
)
def test_redirect_check(status: int, location: str | None, ok: bool) -> None:
    assert check_redirect(status, location, None, HTTP, HTTPS).ok is ok


NONCE = "ab" * 16
GOOD = f"{SESSION_COOKIE}=probe-{NONCE}; Domain=example.com; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure"


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ([GOOD.removesuffix("; Secure")], "Secure is missing"),
        (
            [GOOD.replace("Domain=example.com", "Domain=help.example.com")],
            "Domain is help.example.com, not example.com",
        ),
        ([GOOD.replace(f"probe-{NONCE}", "probe-other")], "another value"),
        (["other=1; Secure"], f"no Set-Cookie for {SESSION_COOKIE} came back"),
    ],
)
def test_set_cookie_check_fails_what_a_cdn_changes(headers: list[str], said: str) -> None:
    check = check_set_cookie(headers, SESSION_COOKIE, NONCE, "example.com", None)
    assert not check.ok
    assert said in check.detail
    assert check_set_cookie([GOOD], SESSION_COOKIE, NONCE, "example.com", None).ok


async def test_decoy_names_stay_the_same_from_run_to_run_so_the_audit_table_does_not_grow(
    probed: Gateway, cert_files: CertFiles
) -> None:
    first, second = Canaries.fresh(WORKSPACE), Canaries.fresh(WORKSPACE)
    assert [name for name, _ in first.decoys] == [name for name, _ in second.decoys]
    assert not {value for _, value in first.decoys} & {value for _, value in second.decoys}  # values stay random
    for canaries in (first, second):
        assert failing(await probe_directly(direct_target(probed, cert_files), canaries)) == {}
    async with probed.client.get(probed.url.with_path("/healthz")) as later:
        await probed.audit_for(later.headers["X-Request-Id"])  # records are written in order
    received = [record["cookies"]["received"] for record in probed.audit_records() if record["path"] == PROBE]
    assert len(received) == 2
    assert received[0] == received[1]


async def test_an_unreachable_host_is_said_once_not_diagnosed_as_missing_headers(cert_files: CertFiles) -> None:
    port = free_port()  # nothing listens there
    target = Target(URL(f"https://{DOMAIN}:{port}"), free_port(), {(DOMAIN, port): "127.0.0.1"}, cert_files.ca)
    checks = failing(await probe_directly(target))
    assert checks["Probe answer"].startswith(f"https://{DOMAIN}:{port}{PROBE} unreachable (")
    for name in ("Intercom cookies at the gateway", "Cookies towards upstream", "Upstream Set-Cookie", "HSTS"):
        assert checks[name] == f"not checked: https://{DOMAIN}:{port} unreachable", name
    assert "Strict-Transport-Security" not in json.dumps(checks)
