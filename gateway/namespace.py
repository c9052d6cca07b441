"""The gateway's URL space in one table: which parts it answers itself, and what each stage does with them.

Portal, JSON API and its description, admin API, Messenger, health, metrics,
static files, probe, dev login, sign-in/out, home, and the proxied rest: the
table with each namespace's properties is drawn in README's Development section
(tests/test_namespace.py keeps the drawing true).

Route registration takes its paths from here, and each stage reads one
property: the access stage ``identity`` (on the broadest reading of the path,
:func:`decision_path`), the catch-all proxy ``reserved`` (on a reading broader
still, gateway/edge/paths.py), the Host check ``any_host``, the error pages
``json_errors`` and the identity stage ``visitor_token`` (on the path as aiohttp
decoded it, case and all). A path belongs to the namespace that names it
exactly, else to the one with the longest prefix holding it, else to ``rest``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

from aiohttp import web

API_PREFIX = "/api/v1"
API_DESCRIPTION_PATH = API_PREFIX + "/openapi.json"
ADMIN_PREFIX = "/admin/api"
MESSENGER_PREFIX = "/messenger/web"
HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
METRICS_PATH = "/metrics"
STATIC_PREFIX = "/_gateway/static"
BRAND_PREFIX = "/_gateway/brand"  # help_center.brand: its stylesheet, logo and icon (routes/brand.py)
FAVICON_PATH = "/favicon.ico"
PROBE_PATH = "/_gateway/probe"  # the end-to-end probe's endpoint (routes/probe.py), behind the admin token too
DEV_LOGIN_PATH = "/dev/login"
SIGN_IN_PATH = "/signin"
SIGN_OUT_PATH = "/signout"
HOME_PATH = "/"
INTERCOM_WEBHOOKS_PATH = "/intercom/webhooks"  # Intercom's deliveries (routes/intercom.py), signed, never proxied


def decision_path(path: str) -> str:
    """The decoded ``path`` as the broadest upstream may read it, for the access decision only:
    lower case, ``;`` parameters and trailing dots and spaces dropped, empty segments merged."""
    segments = (segment.split(";")[0].rstrip(". ").lower() for segment in path.split("/"))
    return "/" + "/".join(segment for segment in segments if segment)


@dataclass(frozen=True)
class Namespace:
    """One part of the URL space, with what the stages do on it."""

    name: str
    paths: frozenset[str] = frozenset()
    """Paths it holds exactly."""
    prefix: str | None = None
    """A path it holds together with everything below it."""
    identity: bool = False
    """The access stage lets in only a verified visitor who meets the access rules."""
    json_errors: bool = False
    """Errors are answered as JSON whatever the client accepts."""
    reserved: bool = False
    """No spelling of it reaches the help center through the catch-all proxy."""
    any_host: bool = False
    """Answered for any Host (probes address a pod by IP), so it must answer nothing built from the Host."""
    visitor_token: bool = True
    """The identity stage reads a visitor's credentials here (False: the admin token is the credential)."""

    def holds(self, path: str) -> bool:
        """Whether ``path`` is one of its exact paths or under its prefix (not which namespace wins)."""
        if path in self.paths:
            return True
        return self.prefix is not None and (path == self.prefix or path.startswith(self.prefix + "/"))

    def folded(self) -> Namespace:
        """The same namespace with its paths in :func:`decision_path`'s reading."""
        prefix = decision_path(self.prefix) if self.prefix is not None else None
        return dataclasses.replace(self, paths=frozenset(map(decision_path, self.paths)), prefix=prefix)


API = Namespace("api", prefix=API_PREFIX, identity=True, json_errors=True)
API_DESCRIPTION = Namespace("api_description", paths=frozenset({API_DESCRIPTION_PATH}), json_errors=True)
ADMIN = Namespace("admin", prefix=ADMIN_PREFIX, json_errors=True, reserved=True, visitor_token=False)
MESSENGER = Namespace("messenger", prefix=MESSENGER_PREFIX, json_errors=True, reserved=True)
# Probes and scrapers address a pod or container by IP (a kubelet, Prometheus' service discovery), so the health
# checks and /metrics answer any Host; /metrics still answers only `listen.metrics_allow`'s peers.
HEALTH = Namespace("health", paths=frozenset({HEALTHZ_PATH, READYZ_PATH}), any_host=True)
METRICS = Namespace("metrics", paths=frozenset({METRICS_PATH}), any_host=True)
STATIC = Namespace("static", paths=frozenset({FAVICON_PATH}), prefix=STATIC_PREFIX)
BRAND = Namespace("brand", prefix=BRAND_PREFIX)
PROBE = Namespace("probe", paths=frozenset({PROBE_PATH}), visitor_token=False)
DEV_LOGIN = Namespace("dev_login", paths=frozenset({DEV_LOGIN_PATH}))
SIGN_IN = Namespace("sign_in", paths=frozenset({SIGN_IN_PATH, SIGN_OUT_PATH}))
HOME = Namespace("home", paths=frozenset({HOME_PATH}))
# The signature is the credential; no visitor's token is read, and no spelling of the path reaches the help center.
INTERCOM_WEBHOOKS = Namespace(
    "intercom_webhooks", prefix=INTERCOM_WEBHOOKS_PATH, json_errors=True, reserved=True, visitor_token=False
)
REST = Namespace("rest")
FIXED = (
    API,
    API_DESCRIPTION,
    ADMIN,
    MESSENGER,
    HEALTH,
    METRICS,
    STATIC,
    BRAND,
    PROBE,
    DEV_LOGIN,
    SIGN_IN,
    HOME,
    INTERCOM_WEBHOOKS,
)
RESERVED_PREFIXES = tuple(namespace.prefix for namespace in FIXED if namespace.reserved and namespace.prefix)


@dataclass(frozen=True)
class NamespaceTable:
    """Every namespace, the portal's included; ``rest`` is what none of them holds."""

    namespaces: tuple[Namespace, ...]

    @classmethod
    def for_portal(cls, portal_path: str) -> NamespaceTable:
        """The table with the portal at ``portal_path`` (which the config keeps clear of :func:`overlapped`)."""
        return cls((_portal(portal_path), _events(portal_path), *FIXED))

    def of(self, path: str) -> Namespace:
        """The namespace ``path`` belongs to, read exactly as given."""
        return _owner(self.namespaces, path)

    def decided(self, path: str) -> Namespace:
        """The namespace ``path`` belongs to on the broadest reading (:func:`decision_path`), for access."""
        return _owner(self._folded, decision_path(path))

    def guarded(self, path: str) -> str | None:
        """The name of the namespace a decoded ``path`` lies in on the broadest reading, when the gateway
        guards what passes there: the access rules (portal, JSON API) or reserved (admin API, Messenger)."""
        namespace = self.decided(path)
        return namespace.name if namespace.identity or namespace.reserved else None

    @cached_property
    def _folded(self) -> tuple[Namespace, ...]:
        return tuple(namespace.folded() for namespace in self.namespaces)


def _portal(path: str) -> Namespace:
    return Namespace("portal", prefix=path, identity=True)


EVENTS_SUFFIX = "/events"


def _events(portal_path: str) -> Namespace:
    # The live pages' event stream (routes/events.py): the portal's visitors, but a script reads it, so a
    # refusal (401, 429, 503) is JSON, never a sign-in redirect an EventSource would follow in vain.
    return Namespace("events", paths=frozenset({portal_path + EVENTS_SUFFIX}), identity=True, json_errors=True)


def overlapped(portal_path: str) -> Namespace | None:
    """The namespace a portal at ``portal_path`` would overlap on the broadest reading (either holding the
    other's paths), or None: such a portal would take the gateway's own paths, or lose its own to them."""
    portal = _portal(portal_path).folded()
    for namespace in FIXED:
        folded = namespace.folded()
        claimed = {*folded.paths, *filter(None, [folded.prefix])}
        if any(map(portal.holds, claimed)) or folded.holds(portal.prefix or ""):
            return namespace
    return None


def _owner(namespaces: tuple[Namespace, ...], path: str) -> Namespace:
    """Exact paths first, then the longest prefix, then ``rest``."""
    for namespace in namespaces:
        if path in namespace.paths:
            return namespace
    holding = [namespace for namespace in namespaces if namespace.prefix is not None and namespace.holds(path)]
    return max(holding, key=lambda namespace: len(namespace.prefix or ""), default=REST)


NAMESPACES = web.AppKey("namespaces", NamespaceTable)
