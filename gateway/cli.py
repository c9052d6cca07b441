"""The ``portal-gateway`` command line."""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import devsetup, server
from gateway.auditreport import render, summarise
from gateway.checks import run_checks
from gateway.config import AuditConfig, GatewayConfig, load_config
from gateway.errors import ConfigError
from gateway.logs import setup_logging
from gateway.tls import server_context

log = logging.getLogger("gateway")

EXIT_FAILED = 1
EXIT_CONFIG = 2


def _say(message: str) -> None:
    print(f"portal-gateway: {message}", file=sys.stderr)


def _load(path: Path | None) -> GatewayConfig:
    """The config from ``path``, or the bundled one with dev secrets (generated on first use)."""
    if path is not None:
        return load_config(path)
    defaults, generated = devsetup.dev_secrets()
    if generated:
        _say(
            f"generated dev secrets {', '.join(generated)} into {devsetup.DEV_SECRETS_DIR}/ (git-ignored); "
            "set them in the environment to use your own"
        )
    return load_config(None, env_defaults=defaults)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway until SIGTERM."""
    config = _load(args.config)
    if args.config is None:
        tls = config.tls
        if devsetup.ensure_dev_certificate(tls.cert, tls.key, config.domain):
            _say(f"generated a dev certificate for localhost, 127.0.0.1 and {config.domain} into {tls.cert.parent}/")
        ca = devsetup.dev_ca_path(tls.cert)
        if ca.exists():
            _say(f"dev CA: {ca} (trust it: curl --cacert {ca} https://localhost:{config.listen.https.port}/healthz)")
    try:
        context = server_context(config.tls.cert, config.tls.key)
    except (OSError, ssl.SSLError) as exc:
        _say(f"tls.cert / tls.key: cannot load {config.tls.cert} and {config.tls.key}: {exc}")
        return EXIT_CONFIG
    setup_logging()
    try:
        server.run(config, context)
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        return EXIT_FAILED
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Print every prerequisite; fail when any does."""
    checks = run_checks(_load(args.config))
    for check in checks:
        print(check)
    return 0 if all(check.ok for check in checks) else EXIT_FAILED


def cmd_audit(args: argparse.Namespace) -> int:
    """Summarise an audit log."""
    try:
        with args.file.open(encoding="utf-8", errors="replace") as lines:
            print(render(summarise(lines)))
    except OSError as exc:
        _say(f"cannot read audit log {args.file}: {exc.strerror}")
        return EXIT_FAILED
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="portal-gateway", description="Edge gateway for a help center's customer tickets portal."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    config_help = "configuration file (default: the bundled gateway.yaml with dev secrets and certificates)"

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("-c", "--config", type=Path, help=config_help)
    serve.set_defaults(func=cmd_serve)

    check = commands.add_parser("check", help="check the portal prerequisites; exit 1 if any fails")
    check.add_argument("-c", "--config", type=Path, help=config_help)
    check.set_defaults(func=cmd_check)

    audit = commands.add_parser("audit", help="summarise an audit log")
    audit.add_argument(
        "file", nargs="?", type=Path, default=AuditConfig().path, help="audit log (default: %(default)s)"
    )
    audit.set_defaults(func=cmd_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``portal-gateway`` and ``python -m gateway``."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            _say(f"config error: {line}")
        return EXIT_CONFIG
    return code
