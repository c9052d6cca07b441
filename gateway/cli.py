"""The ``portal-gateway`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gateway import devsetup, server, workers
from gateway.auditreport import render, summarise
from gateway.checks import run_checks
from gateway.config import AuditConfig, GatewayConfig, load_config
from gateway.errors import ConfigError
from gateway.identity import Identity, parse_ttl, sign_token
from gateway.logs import setup_logging
from gateway.rules import compile_rules
from gateway.store import SQLiteStore
from gateway.store.demo import seed_if_empty
from gateway.store.importer import ImportReport, import_lines
from gateway.store.models import Contact
from gateway.tls import server_context
from gateway.visibility import VisibilityPolicy, Visitor

log = logging.getLogger("gateway")

EXIT_FAILED = 1
EXIT_CONFIG = 2


def _say(message: str) -> None:
    print(f"portal-gateway: {message}", file=sys.stderr)


def _load(path: Path | None) -> GatewayConfig:
    """The config from ``path``, or the bundled one in demo mode (dev secrets, dev login, demo store)."""
    if path is not None:
        return load_config(path)
    defaults, generated = devsetup.dev_secrets()
    if generated:
        _say(
            f"generated dev secrets {', '.join(generated)} into {devsetup.DEV_SECRETS_DIR}/ (git-ignored); "
            "set them in the environment to use your own"
        )
    return load_config(None, env_defaults={**defaults, **devsetup.DEMO_OVERRIDES})


async def _open_store(config: GatewayConfig) -> SQLiteStore:
    store = await SQLiteStore.open(config.store.path)
    if config.store.seed_demo:
        await seed_if_empty(store, int(time.time()))
    return store


async def _prepare_store(config: GatewayConfig) -> None:
    await (await _open_store(config)).close()


def _with_workers(config: GatewayConfig, args: argparse.Namespace) -> GatewayConfig:
    """``config`` under ``serve --workers``, which outranks listen.workers (at start and on every reload)."""
    if args.workers is None:
        return config
    return config.model_copy(update={"listen": config.listen.model_copy(update={"workers": args.workers})})


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway until SIGTERM."""
    config = _load(args.config)
    if args.workers is not None and args.workers < 1:
        _say("--workers: must be at least 1")
        return EXIT_CONFIG
    config = _with_workers(config, args)
    if args.config is None:
        tls = config.tls
        if devsetup.ensure_dev_certificate(tls.cert, tls.key, config.domain):
            _say(f"generated a dev certificate for localhost, 127.0.0.1 and {config.domain} into {tls.cert.parent}/")
        ca = devsetup.dev_ca_path(tls.cert)
        if ca.exists():
            _say(f"dev CA: {ca} (trust it: curl --cacert {ca} https://localhost:{config.listen.https.port}/healthz)")
    failing = [check for check in run_checks(config) if not check.ok]
    if failing and config.portal.enabled:
        if args.config is not None:
            _say("the portal is enabled but prerequisites fail; fix them or set portal.enabled: false")
            for check in failing:
                print(check, file=sys.stderr)
            return EXIT_FAILED
        for check in failing:
            _say(f"demo mode, would stop a real deployment: {check}")
    try:
        context = server_context(config.tls.cert, config.tls.key)
    except (OSError, ssl.SSLError) as exc:
        _say(f"tls.cert / tls.key: cannot load {config.tls.cert} and {config.tls.key}: {exc}")
        return EXIT_CONFIG
    setup_logging()
    try:
        if config.listen.workers > 1:
            # Workers opening a new (or older) store at once would race to create and migrate it: do it here.
            asyncio.run(_prepare_store(config))
            return workers.run(config, context, _reloader(args))
        server.run(config, context, _reloader(args))
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        return EXIT_FAILED
    return 0


def _reloader(args: argparse.Namespace) -> server.Reload:
    """What SIGHUP serves: the configuration read again and held to the bar ``serve`` sets; else ConfigError."""

    def reload() -> GatewayConfig:
        config = _with_workers(_load(args.config), args)
        failing = [check for check in run_checks(config) if not check.ok]
        if failing and config.portal.enabled and args.config is not None:
            raise ConfigError(*(("prerequisite", str(check)) for check in failing))
        try:
            server_context(config.tls.cert, config.tls.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                ("tls.cert / tls.key", f"cannot load {config.tls.cert} and {config.tls.key}: {exc}")
            ) from None
        return config

    return reload


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


def cmd_token(args: argparse.Namespace) -> int:
    """Print a JWT signed with the first configured secret."""
    config = _load(args.config)
    try:
        ttl = parse_ttl(args.ttl)
    except ValueError as exc:
        _say(f"--ttl: {exc}")
        return EXIT_CONFIG
    secret = config.identity.jwt.secrets[0].get_secret_value()
    print(sign_token(secret, user_id=args.user_id, now=time.time(), ttl=ttl, email=args.email, name=args.name))
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    """Print how many contacts the access rules (or visibility conditions) match, and the first of them."""
    config = _load(args.config)

    async def contacts() -> list[Contact]:
        store = await _open_store(config)
        try:
            return await store.contacts()
        finally:
            await store.close()

    people = asyncio.run(contacts())
    if args.rules == "access":
        policy = compile_rules(config.portal.access, "portal.access")
        matched = [c for c in people if policy(_visitor(c).facts()).allowed]
        print(f"{len(matched)} of {len(people)} contacts may open the portal (portal.access)")
    else:
        visibility = VisibilityPolicy(config.portal.visibility)
        matched = [c for c in people if visibility.decide(_visitor(c)).restricted]
        state = "on" if visibility.enabled else "off (saved conditions kept, inactive)"
        print(f"{len(matched)} of {len(people)} contacts see only the tickets they created (portal.visibility {state})")
    for contact in matched[: args.limit]:
        companies = ", ".join(company.name for company in contact.companies) or "no company"
        print(
            f"  {contact.name or '(no name)'} <{contact.email or 'no email'}> user_id={contact.user_id} ({companies})"
        )
    if len(matched) > args.limit:
        print(f"  ... and {len(matched) - args.limit} more")
    return 0


def _visitor(contact: Contact) -> Visitor:
    """A contact seen as if they had signed in with a token carrying only their user id."""
    return Visitor(Identity(user_id=contact.user_id or "", method="jwt"), contact)


def cmd_import(args: argparse.Namespace) -> int:
    """Load JSON lines into the store; report each refused line."""
    config = _load(args.config)

    async def run() -> ImportReport:
        store = await SQLiteStore.open(config.store.path)
        try:
            with args.file.open(encoding="utf-8") as lines:
                return await import_lines(store, lines, strict=args.strict)
        finally:
            await store.close()

    try:
        report = asyncio.run(run())
    except OSError as exc:
        _say(f"cannot read {args.file}: {exc.strerror}")
        return EXIT_FAILED
    for number, reason in report.errors:
        _say(f"{args.file}:{number}: {reason}")
    if args.strict and report.errors:
        _say("nothing imported (--strict)")
    else:
        print(f"imported {report.written} lines" + (f", refused {len(report.errors)}" if report.errors else ""))
    return EXIT_FAILED if report.errors else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="portal-gateway", description="Edge gateway for a help center's customer tickets portal."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    config_help = "configuration file (default: the bundled gateway.yaml with dev secrets and certificates)"

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("-c", "--config", type=Path, help=config_help)
    serve.add_argument("--workers", type=int, help="processes sharing the listeners (default: listen.workers)")
    serve.set_defaults(func=cmd_serve)

    check = commands.add_parser("check", help="check the portal prerequisites; exit 1 if any fails")
    check.add_argument("-c", "--config", type=Path, help=config_help)
    check.set_defaults(func=cmd_check)

    token = commands.add_parser("token", help="sign a JWT with the first configured secret (for testing)")
    token.add_argument("-c", "--config", type=Path, help=config_help)
    token.add_argument("--user-id", required=True, help="the user_id claim")
    token.add_argument("--email", help="the email claim")
    token.add_argument("--name", help="the name claim")
    token.add_argument("--ttl", default="1h", help="lifetime: 90, 45s, 30m, 1h, 2d (default: %(default)s)")
    token.set_defaults(func=cmd_token)

    preview = commands.add_parser("preview", help="the contacts the access rules or visibility conditions match")
    preview.add_argument("-c", "--config", type=Path, help=config_help)
    preview.add_argument("--rules", choices=("access", "visibility"), default="access")
    preview.add_argument("--limit", type=int, default=10, help="how many matching contacts to list")
    preview.set_defaults(func=cmd_preview)

    load = commands.add_parser("import", help="load companies, contacts, ticket states and tickets from JSON lines")
    load.add_argument("-c", "--config", type=Path, help=config_help)
    load.add_argument("file", type=Path, help="JSON lines file (format: gateway/store/importer.py)")
    load.add_argument("--strict", action="store_true", help="refuse the whole file at the first bad line")
    load.set_defaults(func=cmd_import)

    audit = commands.add_parser("audit", help="summarise an audit log")
    audit.add_argument(
        "file", nargs="?", type=Path, default=AuditConfig().path, help="audit log (default: %(default)s)"
    )
    audit.set_defaults(func=cmd_audit)
    return parser


# Options whose value may start with a dash: ``--ttl -5m`` is a (wrong) lifetime, not an unknown option.
_DASHED_VALUES = frozenset({"--ttl"})


def _attach_dashed_values(argv: Sequence[str]) -> list[str]:
    """``--ttl -5m`` as ``--ttl=-5m``: argparse reads a value like ``-5m`` as an option and would only say
    "expected one argument", where the value itself can be told what is wrong with it."""
    attached: list[str] = []
    for arg in argv:
        if attached and attached[-1] in _DASHED_VALUES and arg[:1] == "-" and arg[1:2].isdigit():
            attached[-1] = f"{attached[-1]}={arg}"
        else:
            attached.append(arg)
    return attached


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``portal-gateway`` and ``python -m gateway``."""
    args = build_parser().parse_args(_attach_dashed_values(sys.argv[1:] if argv is None else argv))
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            _say(f"config error: {line}")
        return EXIT_CONFIG
    return code
