"""The ``portal-gateway`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import ssl
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from tqdm import tqdm
from yarl import URL

from gateway.config import AuditConfig, GatewayConfig, load_config, resolve_secret, store_location
from gateway.errors import ConfigError, CopyRefused, IntercomError, StoreUnavailable
from gateway.intercom.connector import connected, connector_checks
from gateway.intercom.progress import TerminalProgress
from gateway.intercom.sync import SyncReport
from gateway.observe.auditchain import verify
from gateway.ops import devsetup, probe
from gateway.ops.auditreport import (
    Filter,
    parse_status,
    parse_when,
    render,
    render_verification,
    summarise,
    summary_json,
    verification_json,
)
from gateway.ops.checks import Check, run_checks
from gateway.ops.tokeninspect import inspect_token
from gateway.ops.variant import version_line
from gateway.policy.identity import Identity, JWKSKeys, parse_ttl, sign_token
from gateway.policy.rules import compile_rules
from gateway.policy.visibility import VisibilityPolicy, Visitor
from gateway.run import server, workers
from gateway.run.logs import setup_logging
from gateway.run.tls import server_context
from gateway.store.copy import REBUILT, STATEMENT_TIMEOUT, Copied, copy_store, total_rows
from gateway.store.demo import seed_if_empty
from gateway.store.importer import ImportReport, import_lines
from gateway.store.models import Contact
from gateway.store.protocol import Store, open_store

log = logging.getLogger("gateway")

EXIT_FAILED = 1
EXIT_CONFIG = 2
# What a shell reports for a command that SIGPIPE stopped (128 + 13), as for `yes | head`.
EXIT_BROKEN_PIPE = 141
DEMO_NOTE = "demo mode, would stop a real deployment"


def _say(message: str) -> None:
    print(f"portal-gateway: {message}", file=sys.stderr)


def _load(path: Path | None) -> GatewayConfig:
    """The config from ``path``, or the bundled one in demo mode (dev secrets, dev login, demo store)."""
    if path is not None:
        return load_config(path)
    defaults, generated = devsetup.dev_secrets()
    if generated:
        folder = devsetup.DEV_SECRETS_DIR
        # Claimed only where git says so: outside a checkout nothing keeps the folder out of version control.
        ignored = " (git-ignored)" if devsetup.git_ignored(folder) else ""
        _say(
            f"generated dev secrets {', '.join(generated)} into {folder}/{ignored}; "
            "set them in the environment to use your own"
        )
    return load_config(None, env_defaults={**defaults, **devsetup.DEMO_OVERRIDES})


async def _open_store(config: GatewayConfig) -> Store:
    store = await open_store(config.store)
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


def _setup(path: Path | None) -> GatewayConfig:
    """The configuration ``serve`` and ``check`` start from: the file at ``path``, or in demo mode the bundled
    one with the dev secrets and a dev certificate (each generated if missing)."""
    config = _load(path)
    if path is None:
        tls = config.tls
        if devsetup.ensure_dev_certificate(tls.cert, tls.key, config.domain):
            _say(f"generated a dev certificate for localhost, 127.0.0.1 and {config.domain} into {tls.cert.parent}/")
        ca = devsetup.dev_ca_path(tls.cert)
        if ca.exists():
            _say(f"dev CA: {ca} (trust it: curl --cacert {ca} https://localhost:{config.listen.https.port}/healthz)")
    return config


def _tls_context(config: GatewayConfig) -> ssl.SSLContext:
    """The server's TLS context from ``tls.cert`` and ``tls.key``; ConfigError when they cannot be loaded."""
    try:
        return server_context(config.tls.cert, config.tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            ("tls.cert / tls.key", f"cannot load {config.tls.cert} and {config.tls.key}: {exc}")
        ) from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway until SIGTERM."""
    if args.workers is not None and args.workers < 1:
        _say("--workers: must be at least 1")
        return EXIT_CONFIG
    config = _with_workers(_setup(args.config), args)
    failing = [check for check in run_checks(config) if not check.ok]
    if failing and config.portal.enabled:
        if args.config is not None:
            _say("the portal is enabled but prerequisites fail; fix them or set portal.enabled: false")
            for check in failing:
                print(check, file=sys.stderr)
            return EXIT_FAILED
        for check in failing:
            _say(f"{DEMO_NOTE}: {check}")
    context = _tls_context(config)
    setup_logging()
    try:
        if config.listen.workers > 1:
            # Workers opening a new (or older) store at once would race to create and migrate it: do it here.
            asyncio.run(_prepare_store(config))
            return workers.run(config, context, _reloader(args))
        server.run(config, context, _reloader(args))
    except StoreUnavailable as exc:  # the store is opened before the listeners: nothing was served
        log.error("cannot start: %s", exc)
        return EXIT_FAILED
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
        _tls_context(config)
        return config

    return reload


def cmd_check(args: argparse.Namespace) -> int:
    """Print every prerequisite; fail when any does. In demo mode (no ``-c``) the set-up is ``serve``'s, the
    lines a real deployment would fail are marked, and the exit code says whether the demo starts."""
    demo = args.config is None
    config = _setup(args.config)
    checks = run_checks(config)
    if config.intercom.enabled:
        checks += asyncio.run(_connector_checks(config))
    checks.append(Check("Build", True, version_line()))  # which build answers: compiled or pure Python
    for check in checks:
        print(f"{DEMO_NOTE}: {check}" if demo and not check.ok else check)
    if not demo:
        return 0 if all(check.ok for check in checks) else EXIT_FAILED
    _tls_context(config)  # the one failure that stops the demo too
    _say("demo mode: exit 0, as serve starts anyway; check -c FILE judges a real deployment")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """Mirror the Intercom workspace into the store once (every ticket with ``--full``); a bar on a terminal."""
    config = _load(args.config)
    if not config.intercom.enabled:
        _say("intercom.enabled is false: there is no workspace to sync (see the README's Intercom section)")
        return EXIT_CONFIG
    setup_logging()
    terminal = sys.stderr.isatty()

    async def run() -> SyncReport | None:
        store = await open_store(config.store)
        try:
            with TerminalProgress() if terminal else contextlib.nullcontext() as bar:
                async with connected(config.intercom, store, progress=bar) as connector:
                    return await connector.syncer.run(full=args.full)
        finally:
            await store.close()

    try:
        report = asyncio.run(run())
    except IntercomError as exc:
        _say(f"sync failed: {exc}")
        return EXIT_FAILED
    if report is None:
        _say("another worker or node holds the sync lease: nothing done")
        return 0
    written = ", ".join(f"{count} {kind}" for kind, count in report.written.items()) or "nothing"
    forgotten = ", ".join(f"{count} {kind}" for kind, count in report.forgotten.items())
    _say(f"synced {written}" + (f"; forgot {forgotten}" if forgotten else "") + f"; {report.skipped} skipped")
    return 0


async def _connector_checks(config: GatewayConfig) -> list[Check]:
    store = await open_store(config.store)
    try:
        return await connector_checks(config, store)
    finally:
        await store.close()


def cmd_probe(args: argparse.Namespace) -> int:
    """Probe the custom domain end to end through whatever is in front; one line per check."""
    url = URL(args.url)
    if url.scheme != "https" or not url.host:
        _say(f"{args.url}: give the custom domain's HTTPS URL, https://help.example.com")
        return EXIT_CONFIG
    config = _load(args.config)
    try:
        pinned = probe.parse_resolve(args.resolve)
    except ValueError as exc:
        _say(f"--resolve: {exc}")
        return EXIT_CONFIG
    try:
        # The same reading as a file: secret in the config (an empty or unreadable file says so).
        token = resolve_secret(f"file:{args.token_file}") if args.token_file else None
    except ValueError as exc:
        _say(f"--token-file: {exc}")
        return EXIT_CONFIG
    if token is None and config.admin.token is not None:
        token = config.admin.token.get_secret_value()
    if not token:
        _say("no admin token: set admin.token in the config (-c) or pass --token-file")
        return EXIT_CONFIG
    target = probe.Target(url.with_path("/"), args.http_port, pinned, args.ca)
    secret = token.encode("utf-8", "surrogateescape")
    canaries = probe.Canaries.fresh(config.workspace_id)
    observed = asyncio.run(probe.observe(target, secret, canaries))
    checks = probe.judge(
        observed,
        canaries,
        target=target,
        token=secret,
        cookie_domain=config.cookie_domain,
        now=datetime.now(UTC),
        min_days=args.min_days,
    )
    if args.json:
        print(json.dumps([dataclasses.asdict(check) for check in checks], indent=2))
    else:
        for check in checks:
            print(check)
    return 0 if all(check.ok for check in checks) else EXIT_FAILED


def cmd_audit(args: argparse.Namespace) -> int:
    """Summarise audit logs, or the records the filters pick."""
    now = time.time()
    try:
        where = Filter(
            user=args.user,
            since=parse_when(args.since, now) if args.since else None,
            until=parse_when(args.until, now, end=True) if args.until else None,
            cookie=args.cookie,
            decision=args.decision,
            status=parse_status(args.status) if args.status else None,
            path=args.path,
        )
    except ValueError as exc:
        _say(f"audit: {exc}")
        return EXIT_CONFIG
    try:
        with contextlib.ExitStack() as files:
            lines = itertools.chain.from_iterable(
                files.enter_context(path.open(encoding="utf-8", errors="replace")) for path in args.files
            )
            summary = summarise(lines, where)
    except OSError as exc:
        _say(f"cannot read audit log {exc.filename}: {exc.strerror}")
        return EXIT_FAILED
    print(json.dumps(summary_json(summary), indent=2) if args.json else render(summary))
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Prove the hash chains of audit files (oldest first); exit 1 at the first line out of place."""
    key = None
    if args.key is not None:
        if not args.key.startswith(("env:", "file:")):
            _say("--key: give env:NAME or file:PATH (a key on the command line shows in ps and shell history)")
            return EXIT_CONFIG
        try:
            key = resolve_secret(args.key).encode()
        except ValueError as exc:
            _say(f"--key: {exc}")
            return EXIT_CONFIG
    try:
        with contextlib.ExitStack() as files:
            opened = [(str(path), files.enter_context(path.open("rb"))) for path in args.files]
            result = verify(opened, key)
    except OSError as exc:
        _say(f"cannot read audit log {exc.filename}: {exc.strerror}")
        return EXIT_FAILED
    print(json.dumps(verification_json(result), indent=2) if args.json else render_verification(result))
    return 0 if result.ok else EXIT_FAILED


def cmd_token(args: argparse.Namespace) -> int:
    """Print a JWT signed with the first configured secret."""
    config = _load(args.config)
    try:
        ttl = parse_ttl(args.ttl)
    except ValueError as exc:
        _say(f"--ttl: {exc}")
        return EXIT_CONFIG
    print(
        sign_token(
            config.identity.jwt.signing_secret,
            user_id=args.user_id,
            now=time.time(),
            ttl=ttl,
            email=args.email,
            name=args.name,
        )
    )
    return 0


def cmd_token_inspect(args: argparse.Namespace) -> int:
    """Decode a token and say whether (and why not) the gateway of this configuration accepts it."""
    config = _load(args.config).identity.jwt
    token = (_read_token() if args.token in (None, "-") else args.token).strip()
    if not token:
        _say("token inspect: no token (give it as the argument, or on stdin)")
        return EXIT_CONFIG
    jwks = asyncio.run(_fetched_jwks(config.jwks_url)) if config.jwks_url is not None else None
    inspection = inspect_token(token, config, time.time(), jwks)
    print(json.dumps(inspection.to_json(), indent=2) if args.json else inspection.render())
    return 0 if inspection.accepted else EXIT_FAILED


def _read_token() -> str:
    """The token from stdin: all of a pipe, or one line typed at a terminal (after saying what is awaited)."""
    if sys.stdin.isatty():
        # Without this line a terminal would sit silent, and waiting for end-of-file there needs Ctrl-D.
        _say("token inspect: paste the token and press Enter")
        return sys.stdin.readline()
    return sys.stdin.read()


async def _fetched_jwks(url: URL) -> JWKSKeys:
    """The keys at ``url``, fetched once (a failure is logged, and no key is held)."""
    jwks = JWKSKeys(url)
    async with aiohttp.ClientSession() as session:
        await jwks.refresh(session)
    return jwks


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
        state = "on" if visibility.enabled else "off"
        if not visibility.enabled and config.portal.visibility.conditions:
            state += " (saved conditions kept, inactive)"
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
        store = await open_store(config.store)
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


def cmd_store_copy(args: argparse.Namespace) -> int:
    """Copy every row of one store into another, empty one; verify counts and checksums."""
    source_config, destination_config = (
        store_location(spec).model_copy(update={"statement_timeout": STATEMENT_TIMEOUT})
        for spec in (args.source, args.destination)
    )

    async def run() -> Copied:
        source = await open_store(source_config)
        try:
            destination = await open_store(destination_config)
            try:
                with tqdm(total=await total_rows(source), unit=" rows", file=sys.stderr, disable=None) as bar:
                    return await copy_store(source, destination, bar.update)
            finally:
                await destination.close()
        finally:
            await source.close()

    try:
        copied = asyncio.run(run())
    except (CopyRefused, StoreUnavailable) as exc:
        _say(f"store copy: {exc}")
        return EXIT_FAILED
    for table, summary in copied.tables.items():
        rebuilt = " (rebuilt by the destination)" if table in REBUILT else ""
        print(f"{table}: {summary.rows} rows, sha256 {summary.checksum}{rebuilt}")
    print(f"change feed: newest id {copied.feed.latest}, dropped through {copied.feed.dropped_through}")
    written = sum(summary.rows for table, summary in copied.tables.items() if table not in REBUILT)
    print(f"copied {written} rows; counts and checksums match")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="portal-gateway", description="Edge gateway for a help center's customer tickets portal."
    )
    parser.add_argument("--version", action="version", version=version_line(), help="the version and the build")
    commands = parser.add_subparsers(dest="command", required=True)
    config_help = "configuration file (default: the bundled gateway.yaml with dev secrets and certificates)"

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("-c", "--config", type=Path, help=config_help)
    serve.add_argument("--workers", type=int, help="processes sharing the listeners (default: listen.workers)")
    serve.set_defaults(func=cmd_serve)

    check = commands.add_parser(
        "check",
        help="check the portal prerequisites; exit 1 if any fails (without -c: the demo's, exit 0 if the demo starts)",
    )
    check.add_argument("-c", "--config", type=Path, help=config_help)
    check.set_defaults(func=cmd_check)

    token = commands.add_parser(
        "token",
        help="sign a JWT with the first configured secret (for testing)",
        epilog="To see why a token is refused: portal-gateway token inspect TOKEN",
    )
    token.add_argument("-c", "--config", type=Path, help=config_help)
    token.add_argument("--user-id", required=True, help="the user_id claim")
    token.add_argument("--email", help="the email claim")
    token.add_argument("--name", help="the name claim")
    token.add_argument("--ttl", default="1h", help="lifetime: 90, 45s, 30m, 1h, 2d (default: %(default)s)")
    token.set_defaults(func=cmd_token)

    inspect = commands.add_parser(
        "token inspect", help="decode a JWT and say whether the gateway accepts it, and if not why; exit 1 if not"
    )
    inspect.add_argument("-c", "--config", type=Path, help=config_help)
    inspect.add_argument("--json", action="store_true", help="print JSON, for scripts")
    inspect.add_argument("token", nargs="?", help="the JWT; '-' or nothing: read it from stdin")
    inspect.set_defaults(func=cmd_token_inspect)

    preview = commands.add_parser("preview", help="the contacts the access rules or visibility conditions match")
    preview.add_argument("-c", "--config", type=Path, help=config_help)
    preview.add_argument("--rules", choices=("access", "visibility"), default="access")
    preview.add_argument("--limit", type=int, default=10, help="how many matching contacts to list")
    preview.set_defaults(func=cmd_preview)

    sync = commands.add_parser("sync", help="mirror the Intercom workspace's tickets, contacts and companies")
    sync.add_argument("-c", "--config", type=Path, help=config_help)
    sync.add_argument("--full", action="store_true", help="read every ticket and forget what Intercom deleted")
    sync.set_defaults(func=cmd_sync)

    load = commands.add_parser("import", help="load companies, contacts, ticket states and tickets from JSON lines")
    load.add_argument("-c", "--config", type=Path, help=config_help)
    load.add_argument("file", type=Path, help="JSON lines file (format: gateway/store/importer.py)")
    load.add_argument("--strict", action="store_true", help="refuse the whole file at the first bad line")
    load.set_defaults(func=cmd_import)

    copy = commands.add_parser(
        "store copy", help="copy every row of one store into another, empty one (sqlite to postgres or back)"
    )
    copy.add_argument("--from", dest="source", required=True, metavar="STORE", help="sqlite:PATH or postgres:DSN")
    copy.add_argument("--to", dest="destination", required=True, metavar="STORE", help="sqlite:PATH or postgres:DSN")
    copy.set_defaults(func=cmd_store_copy)

    check_probe = commands.add_parser(
        "probe", help="check cookie forwarding, HTTPS and the certificate through the CDN in front; exit 1 on a failure"
    )
    check_probe.add_argument("url", help="the custom domain's HTTPS URL, e.g. https://help.example.com")
    check_probe.add_argument("-c", "--config", type=Path, help=config_help + "; gives the workspace and admin.token")
    check_probe.add_argument("--token-file", type=Path, help="a file holding the admin token (default: admin.token)")
    check_probe.add_argument("--ca", type=Path, help="also trust this CA (PEM), e.g. certs/dev-ca.pem")
    check_probe.add_argument(
        "--resolve", action="append", default=[], metavar="HOST:PORT:ADDR", help="connect to ADDR for HOST:PORT (curl)"
    )
    check_probe.add_argument("--http-port", type=int, default=80, help="the plain-HTTP port (default: %(default)s)")
    check_probe.add_argument(
        "--min-days", type=int, default=14, help="fail when the certificate has fewer days left (default: %(default)s)"
    )
    check_probe.add_argument("--json", action="store_true", help="the checks as JSON")
    check_probe.set_defaults(func=cmd_probe)

    audit = commands.add_parser("audit", help="summarise audit logs, or the records the filters pick")
    audit.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        default=[AuditConfig().path],
        help="audit logs, e.g. rotated then current (default: %(default)s)",
    )
    audit.add_argument("--user", help="only this user_id's requests (the verified identity)")
    audit.add_argument("--since", help="from this time on: 2026-05-01, 2026-05-01T10:00Z, or ago: 7d, 12h, 30m")
    audit.add_argument("--until", help="before this time (a date alone: to the end of that day)")
    audit.add_argument("--cookie", metavar="NAME", help="only requests where this cookie was received, sent or set")
    audit.add_argument("--decision", choices=("allow", "deny"), help="only this access decision")
    audit.add_argument("--status", help="only this status (403) or class (4xx)")
    audit.add_argument("--path", help="only paths under this prefix, by whole segments (/tickets)")
    audit.add_argument("--json", action="store_true", help="print JSON, for scripts")
    audit.set_defaults(func=cmd_audit)

    chain = commands.add_parser(
        "audit verify", help="prove the audit log's hash chains; exit 1 if a line is out of place"
    )
    chain.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audit files, oldest (rotated) first")
    chain.add_argument("--key", help="the audit.chain_key, as env:NAME or file:PATH: check every line's MAC too")
    chain.add_argument("--json", action="store_true", help="print JSON, for scripts")
    chain.set_defaults(func=cmd_audit_verify)
    return parser


# Sub-commands of commands that also run on their own (``token --user-id``, ``audit FILE``): argparse cannot
# mix optional sub-parsers with a positional, so ``token inspect`` is read as the one command "token inspect".
NESTED_COMMANDS = frozenset({"token inspect", "audit verify", "store copy"})
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
    argv = _attach_dashed_values(sys.argv[1:] if argv is None else argv)
    if " ".join(argv[:2]) in NESTED_COMMANDS:
        argv = [" ".join(argv[:2]), *argv[2:]]
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # inside the try: a reader that went away is seen here, not at interpreter exit
    except ConfigError as exc:
        for line in str(exc).splitlines():
            _say(f"config error: {line}")
        return EXIT_CONFIG
    except BrokenPipeError:
        # `portal-gateway audit | head`: the reader has all it wanted. End quietly, and point stdout at
        # devnull so the interpreter's own flush at exit does not report the closed pipe either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code
