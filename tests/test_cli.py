"""The identity and portal commands as real subprocesses: ``token``, ``check``, ``serve`` refusing, ``preview``.

Each test writes the conftest configuration (secret inline, the trustme
certificate, a store in ``tmp_path``) as YAML and runs
``python -m gateway ...`` in ``tmp_path`` with an environment that holds no
gateway overrides or secrets of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import jwt
import pytest
import yaml

from gateway.cli import DEMO_NOTE
from gateway.policy.identity import Identity, JWTVerifier, Rejection, sign_token
from tests.conftest import CANARY, DOMAIN, SECRET, CertFiles, config_dict, deep_merge

REPO = Path(__file__).resolve().parents[1]
SECOND_SECRET = f"rotated-in-secret-{CANARY}-fedcba9876543210"
RUN_TIMEOUT = 30.0
PREREQUISITES = [
    "TLS certificate",
    "HTTPS listener",
    "Cookie forwarding",
    "Identity verification",
    "Dev login",
    "Messenger company updates",
    "Build",  # not a prerequisite: which build runs, compiled or pure Python (always PASS)
]
DEMO_ACCESS: dict[str, Any] = {
    "portal": {"access": {"rules": [{"attribute": "person.email", "op": "contains", "value": "example.com"}]}},
    "store": {"seed_demo": True},
}


def cli_env() -> dict[str, str]:
    """This process's environment without gateway overrides or secrets, with the repository importable."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PORTAL_GATEWAY__") and name not in ("MESSENGER_API_SECRET", "PORTAL_ADMIN_TOKEN")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def write_config(cert_files: CertFiles, tmp_path: Path, **overrides: Any) -> Path:
    """The conftest configuration with ``overrides`` merged in, as ``tmp_path/gateway.yaml``."""
    raw = deep_merge(config_dict(cert_files, tmp_path, "http://127.0.0.1:9"), overrides)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def run_in(tmp_path: Path, argv: list[str], **streams: Any) -> subprocess.CompletedProcess[str]:
    """``argv`` in ``tmp_path`` with :func:`cli_env`, run to completion; ``streams``: where its input and output go."""
    return subprocess.run(argv, cwd=tmp_path, env=cli_env(), text=True, timeout=RUN_TIMEOUT, check=False, **streams)


def gateway_cli(tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m gateway *args`` in ``tmp_path``, run to completion (fed ``stdin`` when given)."""
    return run_in(tmp_path, [sys.executable, "-m", "gateway", *args], input=stdin, capture_output=True)


# --- a reader that went away --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["audit", "audit.jsonl"],
        ["audit", "verify", "audit.jsonl"],
        ["token", "-c", "gateway.yaml", "--user-id", "u1"],
        ["preview", "-c", "gateway.yaml"],
        ["check", "-c", "gateway.yaml"],
    ],
)
def test_a_closed_stdout_ends_every_printing_command_quietly(
    cert_files: CertFiles, tmp_path: Path, command: list[str]
) -> None:
    write_config(cert_files, tmp_path, **DEMO_ACCESS)
    (tmp_path / "audit.jsonl").write_text("", encoding="utf-8")
    read_end, write_end = os.pipe()
    os.close(read_end)  # `... | head` after head has exited: every write to stdout meets EPIPE
    try:
        run = run_in(tmp_path, [sys.executable, "-m", "gateway", *command], stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert run.stderr == ""
    assert run.returncode == 141  # as a shell reports `yes | head`: 128 + SIGPIPE


# --- token -------------------------------------------------------------------------------------------


def test_token_is_verified_by_the_gateway_with_the_requested_lifetime(cert_files: CertFiles, tmp_path: Path) -> None:
    config = write_config(cert_files, tmp_path)
    before = time.time()
    run = gateway_cli(tmp_path, "token", "-c", str(config), "--user-id", "u1", "--email", "e", "--ttl", "30m")
    after = time.time()
    assert run.returncode == 0, run.stderr
    token = run.stdout.strip()
    assert run.stdout.count("\n") == 1
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    identity = JWTVerifier([SECRET], leeway=0, require_exp=True).verify(token, time.time())
    assert isinstance(identity, Identity), identity
    assert (identity.user_id, identity.email, identity.method) == ("u1", "e", "jwt")
    assert identity.expires_at is not None
    assert int(before) + 1800 <= identity.expires_at <= after + 1800
    # Past its lifetime (and the leeway) the same token is refused.
    late = JWTVerifier([SECRET], leeway=30, require_exp=True).verify(token, after + 1800 + 31)
    assert late == Rejection("jwt", "expired")


@pytest.mark.parametrize("given", [("--ttl", "-5m"), ("--ttl=-5m",)], ids=["apart", "joined"])
def test_token_with_a_negative_ttl_exits_2_saying_it_must_be_positive(
    cert_files: CertFiles, tmp_path: Path, given: tuple[str, ...]
) -> None:
    config = write_config(cert_files, tmp_path)
    run = gateway_cli(tmp_path, "token", "-c", str(config), "--user-id", "u1", *given)
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == "portal-gateway: --ttl: must be positive, got -5m\n"


@pytest.mark.parametrize("ttl", ["30x", "1.5h", "h"])
def test_token_with_a_bad_ttl_exits_2_saying_why(cert_files: CertFiles, tmp_path: Path, ttl: str) -> None:
    config = write_config(cert_files, tmp_path)
    run = gateway_cli(tmp_path, "token", "-c", str(config), "--user-id", "u1", f"--ttl={ttl}")
    assert run.returncode == 2
    assert run.stdout == ""
    assert "--ttl" in run.stderr
    assert "invalid TTL" in run.stderr
    assert "Traceback" not in run.stderr


def test_token_is_signed_with_the_first_of_two_secrets(cert_files: CertFiles, tmp_path: Path) -> None:
    config = write_config(cert_files, tmp_path, identity={"jwt": {"secrets": [SECOND_SECRET, SECRET]}})
    run = gateway_cli(tmp_path, "token", "-c", str(config), "--user-id", "u-rotated")
    assert run.returncode == 0, run.stderr
    token = run.stdout.strip()
    now = time.time()
    first = JWTVerifier([SECOND_SECRET], leeway=30, require_exp=True).verify(token, now)
    assert isinstance(first, Identity)
    assert first.user_id == "u-rotated"
    assert first.expires_at is not None
    assert abs(first.expires_at - (now + 3600)) < 60  # the default lifetime: 1h
    assert JWTVerifier([SECRET], leeway=30, require_exp=True).verify(token, now) == Rejection("jwt", "bad_signature")
    assert SECOND_SECRET not in run.stdout + run.stderr


# --- check -------------------------------------------------------------------------------------------


def check_lines(output: str) -> dict[str, str]:
    """Prerequisite name -> its line, for every PASS/FAIL line printed."""
    lines: dict[str, str] = {}
    for line in output.splitlines():
        verdict, _, rest = line.partition("  ")
        assert verdict in ("PASS", "FAIL"), f"not a prerequisite line: {line!r}"
        name, _, detail = rest.partition(": ")
        assert detail, f"no detail on {line!r}"
        assert name not in lines, f"{name} printed twice"
        lines[name] = line
    return lines


def test_check_passes_on_a_complete_configuration(cert_files: CertFiles, tmp_path: Path) -> None:
    config = write_config(cert_files, tmp_path, listen={"https": "127.0.0.1:8443", "http": "127.0.0.1:8080"})
    run = gateway_cli(tmp_path, "check", "-c", str(config))
    assert run.returncode == 0, run.stdout + run.stderr
    lines = check_lines(run.stdout)
    assert list(lines) == PREREQUISITES
    assert all(line.startswith("PASS") for line in lines.values()), run.stdout
    assert DOMAIN in lines["TLS certificate"]
    assert SECRET not in run.stdout + run.stderr


def test_version_and_check_say_the_editable_install_runs_pure_python(cert_files: CertFiles, tmp_path: Path) -> None:
    # The suite runs the editable install, which setup.py builds pure; tests/e2e/test_wheel.py asks the compiled one.
    expected = f"portal-gateway {metadata.version('portal-gateway')}, pure Python"
    version = gateway_cli(tmp_path, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"{expected}\n"
    check = gateway_cli(tmp_path, "check", "-c", str(write_config(cert_files, tmp_path)))
    assert check_lines(check.stdout)["Build"] == f"PASS  Build: {expected}", check.stdout


@pytest.mark.parametrize(
    ("overrides", "failing", "advice"),
    [
        ({"identity": {"enforce": False}}, "Identity verification", "set identity.enforce: true"),
        (
            {"messenger": {"prevent_company_updates": False}},
            "Messenger company updates",
            "set messenger.prevent_company_updates: true",
        ),
        ({"identity": {"dev_login": True}}, "Dev login", "set identity.dev_login: false"),
    ],
)
def test_check_fails_a_missing_prerequisite_saying_what_to_do(
    cert_files: CertFiles, tmp_path: Path, overrides: dict[str, Any], failing: str, advice: str
) -> None:
    config = write_config(cert_files, tmp_path, **overrides)
    run = gateway_cli(tmp_path, "check", "-c", str(config))
    assert run.returncode == 1, run.stdout + run.stderr
    lines = check_lines(run.stdout)
    assert list(lines) == PREREQUISITES  # every prerequisite is listed, not only the failing one
    assert [name for name, line in lines.items() if line.startswith("FAIL")] == [failing]
    assert advice in lines[failing]


# --- serve refuses with the portal on ------------------------------------------------------------------


def test_serve_refuses_to_start_the_portal_while_prerequisites_fail(cert_files: CertFiles, tmp_path: Path) -> None:
    config = write_config(
        cert_files, tmp_path, messenger={"prevent_company_updates": False}, identity={"dev_login": True}
    )
    run = gateway_cli(tmp_path, "serve", "-c", str(config))
    assert run.returncode == 1, run.stderr
    assert "listening" not in run.stderr
    failing = [line for line in run.stderr.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 2, run.stderr
    assert any(line.startswith("FAIL  Messenger company updates:") for line in failing)
    assert any(line.startswith("FAIL  Dev login:") for line in failing)
    assert "set messenger.prevent_company_updates: true" in run.stderr
    assert "portal.enabled" in run.stderr
    assert not any(line.startswith("PASS") for line in run.stderr.splitlines())


@dataclass
class Served:
    """A ``serve`` process that has logged its ``listening`` line."""

    proc: asyncio.subprocess.Process
    lines: list[str]
    https_port: int

    async def stop(self) -> tuple[int, list[str]]:
        """SIGTERM to its process group, then the exit code and every stderr line."""
        assert self.proc.stderr is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        async with asyncio.timeout(RUN_TIMEOUT):
            rest = await self.proc.stderr.read()
            code = await self.proc.wait()
        return code, self.lines + rest.decode(errors="replace").splitlines()


class Serve(Protocol):
    """The ``serve`` fixture: ``serve -c config``, or the command line ``argv`` (which runs a ``serve``)."""

    def __call__(
        self, config: Path | None, cwd: Path, *, argv: list[str] | None = None, env: dict[str, str] | None = None
    ) -> Awaitable[Served]: ...


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start ``serve -c config`` (or any command line ``argv`` that ends in a ``serve``) and wait for its
    ``listening`` line; killed after the test, with its process group, if still running."""
    procs: list[asyncio.subprocess.Process] = []

    async def start(
        config: Path | None, cwd: Path, *, argv: list[str] | None = None, env: dict[str, str] | None = None
    ) -> Served:
        proc = await asyncio.create_subprocess_exec(
            *(argv or [sys.executable, "-m", "gateway", "serve", "-c", str(config)]),
            cwd=cwd,
            env=env or cli_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a shell running the gateway is stopped with it
        )
        procs.append(proc)
        assert proc.stderr is not None
        lines: list[str] = []
        async with asyncio.timeout(RUN_TIMEOUT):
            while raw := await proc.stderr.readline():
                lines.append(raw.decode(errors="replace").rstrip("\n"))
                with contextlib.suppress(ValueError):
                    record = json.loads(lines[-1])
                    if isinstance(record, dict) and record.get("msg") == "listening":
                        return Served(proc, lines, int(record["https"]))
        raise AssertionError("serve exited without listening:\n" + "\n".join(lines))

    yield start
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def test_serve_starts_with_the_portal_off_despite_a_failing_prerequisite(
    cert_files: CertFiles, tmp_path: Path, client_ssl: ssl.SSLContext, serve: Serve
) -> None:
    config = write_config(cert_files, tmp_path, messenger={"prevent_company_updates": False}, portal={"enabled": False})
    served = await serve(config, tmp_path)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl)) as client,
        client.get(f"https://127.0.0.1:{served.https_port}/healthz") as response,
    ):
        assert response.status == 200
    code, lines = await served.stop()
    assert code == 0, "\n".join(lines)
    assert not any(line.startswith("FAIL") for line in lines)
    assert '"msg": "stopped"' in "\n".join(lines)


async def test_serve_exits_0_on_sigterm_sent_as_soon_as_it_says_listening(
    cert_files: CertFiles, tmp_path: Path, serve: Serve
) -> None:
    config = write_config(cert_files, tmp_path, portal={"enabled": False})
    served = await serve(config, tmp_path)
    code, lines = await served.stop()
    assert code == 0, "\n".join(lines)


# --- demo mode ---------------------------------------------------------------------------------------


def demo_env() -> dict[str, str]:
    """``cli_env()`` with the bundled file's listeners on free ports."""
    return {**cli_env(), "PORTAL_GATEWAY__LISTEN__HTTPS": "127.0.0.1:0", "PORTAL_GATEWAY__LISTEN__HTTP": "127.0.0.1:0"}


async def test_check_without_a_config_judges_the_demo_serve_runs(tmp_path: Path, serve: Serve) -> None:
    run = gateway_cli(tmp_path, "check")
    assert run.returncode == 0, run.stdout + run.stderr
    printed = run.stdout.splitlines()
    marked = [line.removeprefix(f"{DEMO_NOTE}: ") for line in printed if line.startswith(f"{DEMO_NOTE}: ")]
    lines = check_lines("\n".join(line.removeprefix(f"{DEMO_NOTE}: ") for line in printed))
    assert list(lines) == PREREQUISITES
    # Exactly the failing lines are marked; the dev secrets and certificate were found as serve finds them.
    assert marked == [line for line in lines.values() if line.startswith("FAIL")] == [lines["Dev login"]]
    assert lines["TLS certificate"].startswith(f"PASS  TLS certificate: certs/dev-cert.pem names {DOMAIN}")
    assert lines["Identity verification"].startswith("PASS")
    assert "generated a dev certificate" in run.stderr
    assert "demo mode: exit 0" in run.stderr
    assert sorted(path.name for path in (tmp_path / "dev-secrets").iterdir()) == [
        "MESSENGER_API_SECRET",
        "PORTAL_ADMIN_TOKEN",
    ]

    # serve in demo mode starts from what check made, generates nothing, and excuses the same lines.
    served = await serve(None, tmp_path, argv=[sys.executable, "-m", "gateway", "serve"], env=demo_env())
    assert not any("generated" in line for line in served.lines), served.lines
    excused = [line.removeprefix("portal-gateway: ") for line in served.lines if DEMO_NOTE in line]
    assert excused == [f"{DEMO_NOTE}: {line}" for line in marked]
    code, lines_out = await served.stop()
    assert code == 0, "\n".join(lines_out)


def test_check_without_a_config_exits_2_when_the_demo_certificate_cannot_be_loaded(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    for name in ("dev-cert.pem", "dev-key.pem"):
        (tmp_path / "certs" / name).write_text("not PEM\n", encoding="utf-8")
    run = gateway_cli(tmp_path, "check")
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"{DEMO_NOTE}: FAIL  TLS certificate: certs/dev-cert.pem or certs/dev-key.pem is not a PEM" in run.stdout
    assert "config error: tls.cert / tls.key: cannot load certs/dev-cert.pem and certs/dev-key.pem" in run.stderr


def readme_block(containing: str) -> str:
    """The one ``sh`` code block of the README that contains ``containing``."""
    blocks: list[str] = re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.DOTALL)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, found
    return found[0]


async def test_the_readme_recipe_serves_a_real_config_with_the_dev_secrets(tmp_path: Path, serve: Serve) -> None:
    assert gateway_cli(tmp_path, "check").returncode == 0  # demo mode made the dev secrets and certificate
    bundled = (REPO / "gateway.yaml").read_text(encoding="utf-8")
    mine = bundled.replace("https: 127.0.0.1:8443", "https: 127.0.0.1:0").replace("http: 127.0.0.1:8080", "http: null")
    assert mine.count(": 127.0.0.1:0") == mine.count("http: null") == 1
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "my.yaml").write_text(mine, encoding="utf-8")
    # The checkout the reader runs it in: its .venv (this one) beside gateway.yaml; the PATH is left as it is.
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    assert (tmp_path / ".venv" / "bin" / "portal-gateway").exists()

    argv = ["bash", "-c", readme_block("serve -c local/my.yaml")]
    served = await serve(None, tmp_path, argv=argv, env=cli_env())
    assert not any(DEMO_NOTE in line for line in served.lines), served.lines  # a real deployment: nothing excused
    secrets = tmp_path / "dev-secrets"
    admin_token = (secrets / "PORTAL_ADMIN_TOKEN").read_text(encoding="utf-8").strip()
    jwt_secret = (secrets / "MESSENGER_API_SECRET").read_text(encoding="utf-8").strip()
    context = ssl.create_default_context(cafile=str(tmp_path / "certs" / "dev-ca.pem"))
    url = f"https://127.0.0.1:{served.https_port}"

    async def status(path: str, token: str) -> int:
        async with (
            aiohttp.ClientSession(headers={"Host": DOMAIN}) as client,
            client.get(
                url + path, ssl=context, server_hostname=DOMAIN, headers={"Authorization": f"Bearer {token}"}
            ) as response,
        ):
            return response.status

    now = time.time()
    assert await status("/admin/api/tickets", admin_token) == 200
    assert await status("/admin/api/tickets", "x" * len(admin_token)) == 401
    visitor = sign_token(jwt_secret, user_id="u-new", now=now, ttl=60, email="new@example.com", name=None)
    stranger = sign_token("another-secret-" * 3, user_id="u-new", now=now, ttl=60, email="new@example.com", name=None)
    assert await status("/api/v1/me", visitor) == 200
    assert await status("/api/v1/me", stranger) == 401
    # The README's way in without a login page: its token command, verbatim, signs what the gateway accepts.
    signing = readme_block("token -c local/my.yaml").split("\ncurl ")[0]
    signed = await asyncio.to_thread(run_in, tmp_path, ["bash", "-c", f'{signing}\necho "$TOKEN"'], capture_output=True)
    assert signed.returncode == 0, signed.stderr
    assert signed.stderr == "", signed.stderr
    assert await status("/api/v1/me", signed.stdout.strip()) == 200
    await served.stop()


# --- preview -------------------------------------------------------------------------------------------


def test_preview_access_counts_the_demo_contacts_the_rules_let_in(cert_files: CertFiles, tmp_path: Path) -> None:
    config = write_config(cert_files, tmp_path, **DEMO_ACCESS)
    run = gateway_cli(tmp_path, "preview", "-c", str(config), "--rules", "access")
    assert run.returncode == 0, run.stderr
    header, *listed = run.stdout.splitlines()
    assert header.startswith("11 of 12 contacts may open the portal")
    assert listed[0] == "  Ann Archer <ann@acme.example.com> user_id=u-ann (Acme Corp)"
    assert listed[1] == "  Ben Baxter <ben@acme.example.com> user_id=u-ben (Acme Corp, Globex)"
    assert len(listed) == 11  # the first ten, then how many more
    assert listed[-1] == "  ... and 1 more"

    everyone = gateway_cli(tmp_path, "preview", "-c", str(config), "--rules", "access", "--limit", "20")
    assert everyone.returncode == 0, everyone.stderr
    user_ids = [line.split("user_id=")[1].split()[0] for line in everyone.stdout.splitlines()[1:]]
    assert len(user_ids) == 11
    assert "u-kim" not in user_ids  # kim@freelance.example.net
    assert "u-lee" in user_ids


@pytest.mark.parametrize(
    ("enabled", "expected"),
    [
        (True, "4 of 12 contacts see only the tickets they created (portal.visibility on)"),
        (False, "0 of 12 contacts see only the tickets they created (portal.visibility off"),
    ],
)
def test_preview_visibility_counts_the_restricted_contacts(
    cert_files: CertFiles, tmp_path: Path, enabled: bool, expected: str
) -> None:
    visibility = {
        "enabled": enabled,
        "conditions": [{"attribute": "company.company_id", "op": "equals", "value": "globex"}],
    }
    config = write_config(cert_files, tmp_path, store={"seed_demo": True}, portal={"visibility": visibility})
    run = gateway_cli(tmp_path, "preview", "-c", str(config), "--rules", "visibility")
    assert run.returncode == 0, run.stderr
    header, *listed = run.stdout.splitlines()
    assert header.startswith(expected), header
    if enabled:
        user_ids = [line.split("user_id=")[1].split()[0] for line in listed]
        assert user_ids == ["u-ben", "u-cho", "u-dev", "u-jon"]  # the globex members, by name
    else:
        assert listed == []


def test_preview_visibility_says_off_plainly_without_conditions(cert_files: CertFiles, tmp_path: Path) -> None:
    visibility = {"enabled": False, "conditions": []}
    config = write_config(cert_files, tmp_path, store={"seed_demo": True}, portal={"visibility": visibility})
    run = gateway_cli(tmp_path, "preview", "-c", str(config), "--rules", "visibility")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "0 of 12 contacts see only the tickets they created (portal.visibility off)"


def test_serve_refuses_fewer_than_one_worker(cert_files: CertFiles, tmp_path: Path) -> None:
    run = gateway_cli(tmp_path, "serve", "-c", str(write_config(cert_files, tmp_path)), "--workers", "0")
    assert run.returncode == 2, run.stderr
    assert "portal-gateway: --workers: must be at least 1" in run.stderr
    assert "listening" not in run.stderr


# --- first run -----------------------------------------------------------------------------------


def first_run_message(folder: Path) -> str:
    """What a command without ``-c`` says when it generates the dev secrets in ``folder``."""
    run = gateway_cli(folder, "token", "--user-id", "u1")
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if "generated dev secrets" in line]
    assert len(lines) == 1, run.stderr
    return lines[0]


def git_init(folder: Path, ignore: str | None = None) -> None:
    """Make ``folder`` a git work tree whose .gitignore holds ``ignore``."""
    subprocess.run(["git", "init", "--quiet", str(folder)], check=True, capture_output=True, timeout=RUN_TIMEOUT)
    if ignore is not None:
        (folder / ".gitignore").write_text(ignore + "\n", encoding="utf-8")


def test_first_run_says_the_dev_secrets_are_git_ignored_where_git_confirms_it(tmp_path: Path) -> None:
    git_init(tmp_path, ignore="dev-secrets/")
    assert "into dev-secrets/ (git-ignored);" in first_run_message(tmp_path)


@pytest.mark.parametrize("checkout", [False, True], ids=["not a checkout", "a checkout that tracks it"])
def test_first_run_claims_no_git_ignore_that_git_does_not_confirm(tmp_path: Path, checkout: bool) -> None:
    if checkout:
        git_init(tmp_path, ignore="logs/")
    message = first_run_message(tmp_path)
    assert "into dev-secrets/;" in message
    assert "git-ignored" not in message
