"""The portal prerequisites: one line each, pass or fail, and what to do about a failure."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.config import GatewayConfig
from gateway.run.tls import inspect_certificate


@dataclass(frozen=True)
class Check:
    """One prerequisite's verdict."""

    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def _certificate(config: GatewayConfig, now: datetime) -> Iterator[Check]:
    name = "TLS certificate"
    tls = config.tls
    missing = [str(path) for path in (tls.cert, tls.key) if not path.is_file()]
    if missing:
        yield Check(
            name,
            False,
            f"{', '.join(missing)} not found; install a certificate and key for {config.domain} (certs/README.md)",
        )
        return
    try:
        info = inspect_certificate(tls.cert, tls.key)
    except (ValueError, TypeError, OSError) as exc:
        yield Check(
            name, False, f"{tls.cert} or {tls.key} is not a PEM certificate and unencrypted key ({exc}); replace them"
        )
        return
    problems = []
    if not info.key_matches:
        problems.append(f"{tls.key} is not the key of {tls.cert}; install the key the certificate was issued for")
    if info.not_after <= now:
        problems.append(f"expired on {info.not_after:%Y-%m-%d}; renew it")
    elif info.not_before > now:
        problems.append(f"not valid before {info.not_before:%Y-%m-%d}; check the clock or install the current one")
    if not info.names_host(config.domain):
        problems.append(
            f"does not name {config.domain} (names: {', '.join(info.names) or 'none'}); issue one that does"
        )
    if problems:
        yield Check(name, False, "; ".join(problems))
    else:
        yield Check(name, True, f"{tls.cert} names {config.domain}, valid until {info.not_after:%Y-%m-%d}")


def _https_listener(config: GatewayConfig, now: datetime) -> Iterator[Check]:
    listen = config.listen
    if listen.http is not None and listen.http.port == listen.https.port != 0 and listen.http.host == listen.https.host:
        yield Check(
            "HTTPS listener", False, f"listen.http and listen.https are both {listen.https}; give HTTP its own port"
        )
    else:
        redirect = f", HTTP on {listen.http} redirects to it" if listen.http else ""
        yield Check("HTTPS listener", True, f"https://{config.domain} served on {listen.https}{redirect}")


def _cookie_forwarding(config: GatewayConfig, now: datetime) -> Iterator[Check]:
    name = "Cookie forwarding"
    if not config.cookie_forwarding.enabled:
        yield Check(
            name, False, "off; set cookie_forwarding.enabled: true so the Messenger session reaches the help center"
        )
    else:
        cookies = ", ".join(sorted(config.allowed_cookies))
        yield Check(name, True, f"on for workspace {config.workspace_id} ({cookies})")


def _identity(config: GatewayConfig, now: datetime) -> Iterator[Check]:
    name = "Identity verification"
    identity = config.identity
    if not identity.enforce:
        yield Check(name, False, "off; set identity.enforce: true so only signed-in visitors reach the portal")
    else:
        count = len(identity.jwt.secrets)
        hmac = ", legacy user_hash accepted" if identity.hmac.enabled else ""
        yield Check(name, True, f"enforced, JWT with {count} secret{'s' if count > 1 else ''}{hmac}")
    if identity.dev_login:
        yield Check("Dev login", False, "on; set identity.dev_login: false: anyone could sign in as anyone")
    else:
        yield Check("Dev login", True, "off")


def _company_updates(config: GatewayConfig, now: datetime) -> Iterator[Check]:
    name = "Messenger company updates"
    messenger = config.messenger
    if messenger.prevent_company_updates:
        yield Check(name, True, f"prevented ({messenger.company_update_action} company changes in user_data)")
    else:
        yield Check(
            name, False, "allowed; set messenger.prevent_company_updates: true so visitors cannot join companies"
        )


PREREQUISITES: tuple[Callable[[GatewayConfig, datetime], Iterator[Check]], ...] = (
    _certificate,
    _https_listener,
    _cookie_forwarding,
    _identity,
    _company_updates,
)


def run_checks(config: GatewayConfig, now: datetime | None = None) -> list[Check]:
    """Every prerequisite's verdict, in order."""
    now = now or datetime.now(UTC)
    return [check for prerequisite in PREREQUISITES for check in prerequisite(config, now)]
