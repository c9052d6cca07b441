"""``token inspect``: the pure explanation on an injected clock, and a table of real failure modes, each token
also sent to the running gateway: the command's reason must be the audit record's ``identity.reason``."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from gateway.cli import main
from gateway.config import JWTConfig
from gateway.ops.tokeninspect import duration, fingerprint, inspect_token, relative, thumbprint
from tests.conftest import SECRET, CertFiles, JWKSServer, RecordingUpstream, StartGateway, config_dict, deep_merge
from tests.policy.test_identity import EC_KEY, OTHER_RSA_KEY, RSA_KEY, craft, jwk, loaded
from tests.test_cli import cli_env, gateway_cli

SECOND = "rotated-in-inspect-secret-fedcba9876543210"
WRONG = "not-our-secret-at-all-0123456789abcdef"
NOW = 1_500_000_000.0  # the pure tests' clock, far from the wall clock
ACCESS = {"portal": {"access": {"rules": [{"attribute": "person.email", "op": "contains", "value": "example.com"}]}}}
HOUR = 3600


def jwt_config(**overrides: Any) -> JWTConfig:
    return JWTConfig.model_validate({"secrets": [SECRET, SECOND], **overrides}, context={"environ": {}})


def hs256(secret: str = SECRET, *, now: float = NOW, **claims: Any) -> str:
    payload: dict[str, Any] = {
        "user_id": "u-1",
        "email": "ann@example.com",
        "iat": int(now) - 60,
        "exp": int(now) + HOUR,
    }
    payload.update(claims)
    return jwt.encode({name: value for name, value in payload.items() if value is not None}, secret, algorithm="HS256")


# --- the pure part, on an injected clock ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (45, "45 s"),
        (60, "1 min"),
        (119, "1 min"),
        (59 * 60, "59 min"),
        (2 * HOUR, "2 h"),
        (3 * 86400, "3 d"),
    ],
)
def test_duration_reads_as_people_write_it(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_relative_says_ago_in_or_now() -> None:
    assert relative(NOW - 3 * HOUR, NOW) == "3 h ago"
    assert relative(NOW + 300, NOW) == "in 5 min"
    assert relative(NOW, NOW) == "now"


def test_accepted_token_shows_its_times_in_utc_and_the_secret_by_position_and_fingerprint() -> None:
    inspection = inspect_token(hs256(SECOND), jwt_config(), NOW)
    assert inspection.accepted
    assert inspection.reason is None
    assert inspection.user_id == "u-1"
    assert [(claim.name, claim.utc, claim.relative) for claim in inspection.times] == [
        ("iat", "2017-07-14T02:39:00Z", "1 min ago"),
        ("exp", "2017-07-14T03:40:00Z", "in 60 min"),
    ]
    assert inspection.key is not None
    assert (inspection.key.kind, inspection.key.position) == ("secret", 2)
    assert inspection.key.fingerprint == fingerprint(SECOND) != fingerprint(SECRET)
    text = inspection.render()
    assert "secret #2 of identity.jwt.secrets (sha256 " + fingerprint(SECOND) + ")" in text
    assert "verdict: accepted" in text
    for shown in (text, json.dumps(inspection.to_json())):
        assert SECOND not in shown
        assert SECRET not in shown


@pytest.mark.parametrize(
    ("token", "reason", "explanation"),
    [
        (
            hs256(exp=int(NOW) - 3 * HOUR, iat=int(NOW) - 4 * HOUR),
            "expired",
            "expired 3 h ago: your app must mint a fresh token per session; leeway is 30 s",
        ),
        (
            hs256(WRONG),
            "bad_signature",
            "signed with none of the configured secrets: check you copied the Messenger API secret of this workspace",
        ),
        (hs256(user_id=None), "missing_user_id", "no user_id: sign the user's user_id, not the email"),
        (hs256(iat=int(NOW) + 600), "not_yet_valid", "not yet valid: iat/nbf is 10 min ahead of this clock"),
        (craft({"alg": "none"}, {"user_id": "u-1", "exp": NOW + 60}), "alg_not_allowed", "alg 'none' is not allowed"),
        (
            jwt.encode({"user_id": "u-1", "exp": NOW + 60}, "k" * 64, algorithm="HS512"),
            "alg_not_allowed",
            "alg 'HS512' is not",
        ),
        ("eyJhbGciOiJIUzI1NiJ9.not-a-token", "malformed", "malformed: not a JWT"),
        (hs256(exp=None), "malformed", "malformed: no exp: sign an expiry (identity.jwt.require_exp is on)"),
        (hs256(exp="tomorrow"), "malformed", "malformed: exp must be a number of seconds since 1970"),
        (hs256(aud="portal"), "wrong_audience", "aud 'portal', but identity.jwt.audience is empty: leave aud out"),
    ],
)
def test_each_refusal_names_the_audit_reason_then_the_fix(token: str, reason: str, explanation: str) -> None:
    inspection = inspect_token(token, jwt_config(), NOW)
    assert (inspection.accepted, inspection.reason) == (False, reason)
    assert inspection.explanation.startswith(explanation), inspection.explanation
    assert f"verdict: refused: {reason}" in inspection.render()


def test_a_signed_but_refused_token_still_names_the_secret_that_signed_it() -> None:
    inspection = inspect_token(hs256(SECOND, user_id=None), jwt_config(), NOW)
    assert inspection.reason == "missing_user_id"
    assert inspection.key is not None
    assert inspection.key.position == 2
    assert inspect_token(hs256(WRONG), jwt_config(), NOW).key is None


def test_leeway_comes_from_the_configuration() -> None:
    late = hs256(exp=int(NOW) - 100)
    assert inspect_token(late, jwt_config(), NOW).reason == "expired"
    assert inspect_token(late, jwt_config(leeway_seconds=120), NOW).accepted
    assert "leeway is 5 s" in inspect_token(late, jwt_config(leeway_seconds=5), NOW).explanation


async def test_jwks_keys_are_named_by_kid_and_thumbprint(idp: JWKSServer) -> None:
    jwks = await loaded(idp, jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1"))
    config = jwt_config(jwks_url=str(idp.url))
    good = jwt.encode({"user_id": "u-1", "exp": NOW + 60}, RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    inspection = inspect_token(good, config, NOW, jwks)
    assert inspection.accepted
    assert inspection.key is not None
    assert (inspection.key.kind, inspection.key.kid, inspection.key.alg) == ("jwks", "rsa-1", "RS256")
    assert inspection.key.fingerprint == thumbprint(RSA_KEY.public_key())
    assert f"JWKS key kid 'rsa-1' (RS256, thumbprint {inspection.key.fingerprint})" in inspection.render()

    unknown = jwt.encode({"user_id": "u-1", "exp": NOW + 60}, RSA_KEY, algorithm="RS256", headers={"kid": "rsa-9"})
    refused = inspect_token(unknown, config, NOW, jwks)
    assert refused.reason == "unknown_kid"
    assert refused.explanation.startswith(f"kid 'rsa-9' is not in the JWKS at {idp.url} (ec-1, rsa-1)")
    confused = jwt.encode({"user_id": "u-1", "exp": NOW + 60}, RSA_KEY, algorithm="RS256", headers={"kid": "ec-1"})
    assert inspect_token(confused, config, NOW, jwks).explanation.startswith(
        "kid 'ec-1' is a ES256 key but the token says RS256"
    )


def test_rfc_7638_thumbprint_of_the_rfc_example_key() -> None:
    # RFC 7638 §3.1: the example RSA key and its thumbprint.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMs"
        "tn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1"
        "n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    key = jwt.algorithms.RSAAlgorithm.from_jwk({"kty": "RSA", "n": n, "e": "AQAB"})
    assert thumbprint(key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


# --- the command, compared with the running gateway ------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A token made at the wall-clock ``now``, and what the gateway must do with it."""

    make: Callable[[float], str]
    reason: str | None  # the audit log's identity.reason; None: accepted
    key: str | None = None  # how the key line of the report starts


def rs256(key: Any, kid: str, now: float) -> str:
    claims = {"user_id": "u-1", "email": "ann@example.com", "iat": int(now), "exp": int(now) + HOUR}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


CASES = {
    "valid": Case(lambda now: hs256(now=now), None, "key:     secret #1 "),
    "rotated second secret": Case(lambda now: hs256(SECOND, now=now), None, "key:     secret #2 "),
    "jwks key": Case(lambda now: rs256(RSA_KEY, "rsa-1", now), None, "key:     JWKS key kid 'rsa-1' (RS256"),
    "expired 3 h ago": Case(lambda now: hs256(now=now - 4 * HOUR), "expired", "key:     secret #1 "),
    "expired within the leeway": Case(lambda now: hs256(iat=int(now) - 60, exp=int(now) - 10, now=now), None),
    "clock skew within the leeway": Case(lambda now: hs256(iat=int(now) + 10, now=now), None),
    "clock skew beyond the leeway": Case(lambda now: hs256(iat=int(now) + 600, now=now), "not_yet_valid"),
    "nbf in the future": Case(lambda now: hs256(nbf=int(now) + 600, now=now), "not_yet_valid"),
    "wrong secret": Case(lambda now: hs256(WRONG, now=now), "bad_signature", "key:     none"),
    "jwks key of another signer": Case(lambda now: rs256(OTHER_RSA_KEY, "rsa-1", now), "bad_signature"),
    "alg none": Case(lambda now: craft({"alg": "none"}, {"user_id": "u-1", "exp": now + 60}), "alg_not_allowed"),
    "email but no user_id": Case(lambda now: hs256(user_id=None, now=now), "missing_user_id"),
    "not a token": Case(lambda now: "eyJhbGciOiJIUzI1NiJ9.garbage", "malformed"),
    "no exp": Case(lambda now: hs256(exp=None, now=now), "malformed"),
    "kid not in the jwks": Case(lambda now: rs256(RSA_KEY, "rsa-9", now), "unknown_kid"),
    "minted for another service": Case(lambda now: hs256(aud="crm", now=now), "wrong_audience"),
}


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


async def inspect_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``portal-gateway token inspect ARGS`` in this process (off the loop, which serves the gateway)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["token", "inspect", *args])
    return code, capsys.readouterr().out


async def test_inspect_and_the_running_gateway_agree_on_every_failure_mode(
    start_gateway: StartGateway,
    idp: JWKSServer,
    cert_files: CertFiles,
    tmp_path: Path,
    upstream: RecordingUpstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    idp.document = {"keys": [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1")]}
    overrides = {**ACCESS, "identity": {"jwt": {"secrets": [SECRET, SECOND], "jwks_url": str(idp.url)}}}
    gateway = await start_gateway(**overrides)
    config = write_config(
        tmp_path / "inspect.yaml", deep_merge(config_dict(cert_files, tmp_path, str(upstream.url)), overrides)
    )
    assert len(CASES) >= 15
    for name, case in CASES.items():
        token = case.make(time.time())
        code, out = await inspect_cli(capsys, "-c", str(config), token)
        async with gateway.client.get(gateway.url / "api/v1/me", headers={"Authorization": f"Bearer {token}"}) as got:
            status = got.status
            identity = (await gateway.audit_for(got.headers["X-Request-Id"]))["identity"]
        verdict = "verdict: accepted" if case.reason is None else f"verdict: refused: {case.reason}"
        assert verdict in out.splitlines(), f"{name}: {out}"
        assert identity["reason"] == case.reason, f"{name}: the gateway audited {identity}, inspect said:\n{out}"
        assert (status, code) == ((200, 0) if case.reason is None else (401, 1)), f"{name}: {status}, exit {code}"
        assert identity["result"] == ("verified" if case.reason is None else "rejected"), name
        if case.key is not None:
            assert any(line.startswith(case.key) for line in out.splitlines()), f"{name}: {out}"
        assert SECRET not in out
        assert SECOND not in out


async def test_json_output_for_scripts(
    idp: JWKSServer, cert_files: CertFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "inspect.yaml", config_dict(cert_files, tmp_path, "http://127.0.0.1:9"))
    code, out = await inspect_cli(capsys, "-c", str(config), "--json", hs256(now=time.time() - 4 * HOUR))
    assert code == 1
    report = json.loads(out)
    assert (report["accepted"], report["reason"]) == (False, "expired")
    assert report["explanation"].startswith("expired 3 h ago: ")
    assert report["key"] == {"kind": "secret", "position": 1, "fingerprint": fingerprint(SECRET)}
    assert set(report["times"]) == {"iat", "exp"}
    assert report["claims"]["user_id"] == "u-1"


def test_both_forms_of_the_token_command_as_processes(cert_files: CertFiles, tmp_path: Path) -> None:
    """``token --user-id`` signs as before; its token piped to ``token inspect`` (stdin, ``-``) is accepted."""
    config = str(write_config(tmp_path / "gateway.yaml", config_dict(cert_files, tmp_path, "http://127.0.0.1:9")))
    signed = gateway_cli(tmp_path, "token", "-c", config, "--user-id", "u-7", "--email", "g@example.com", "--ttl", "2h")
    assert signed.returncode == 0, signed.stderr
    token = signed.stdout.strip()
    for args, stdin in ((["token", "inspect", "-c", config], token), (["token", "inspect", "-c", config, "-"], token)):
        run = gateway_cli(tmp_path, *args, stdin=stdin + "\n")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "why:     the gateway accepts it: user_id u-7, expires in 119 min" in run.stdout
    refused = gateway_cli(tmp_path, "token", "inspect", "-c", config, token[:-4] + "AAAA")
    assert refused.returncode == 1
    assert "verdict: refused: bad_signature" in refused.stdout
    empty = gateway_cli(tmp_path, "token", "inspect", "-c", config, stdin="")
    assert empty.returncode == 2
    assert "no token" in empty.stderr
    assert SECRET not in signed.stderr + refused.stdout + refused.stderr


def test_at_a_terminal_it_asks_for_the_token_and_reads_one_line(cert_files: CertFiles, tmp_path: Path) -> None:
    """Run in a real pseudo-terminal: the prompt shows before anything is typed, and Enter (not Ctrl-D) ends it."""
    config = str(write_config(tmp_path / "gateway.yaml", config_dict(cert_files, tmp_path, "http://127.0.0.1:9")))
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "token", "inspect", "-c", config],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=terminal,
        cwd=tmp_path,
        env=cli_env(),
    )
    os.close(terminal)
    try:
        shown = b""
        while b"press Enter" not in shown:
            ready, _, _ = select.select([controller], [], [], 30)
            assert ready, f"no prompt at the terminal: {shown!r}"
            shown += os.read(controller, 1024)
        assert shown.startswith(b"portal-gateway: token inspect: paste the token and press Enter"), shown
        os.write(controller, hs256(now=time.time()).encode() + b"\n")
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
        os.close(controller)
    assert process.returncode == 0, out
    assert b"verdict: accepted" in out


@pytest.mark.parametrize(
    ("aud", "explanation"),
    [
        (None, "no aud: identity.jwt.audience requires one of help-center, portal"),
        ("crm", "aud 'crm' names none of identity.jwt.audience (help-center, portal): a token minted for elsewhere"),
    ],
)
def test_a_configured_audience_is_named_in_the_explanation(aud: str | None, explanation: str) -> None:
    config = jwt_config(audience=["portal", "help-center"])
    token = hs256(now=NOW) if aud is None else hs256(aud=aud, now=NOW)
    inspection = inspect_token(token, config, NOW)
    assert (inspection.reason, inspection.explanation) == ("wrong_audience", explanation)
    assert inspect_token(hs256(aud=["x", "portal"], now=NOW), config, NOW).accepted
