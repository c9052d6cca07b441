"""Load ``gateway.yaml`` once into typed, frozen, validated objects.

Values come from the YAML file, then from ``PORTAL_GATEWAY__SECTION__KEY``
environment variables (parsed as YAML scalars, so ``true``, ``30`` and
``[a, b]`` keep their types). Secrets may be written as ``env:NAME`` or
``file:PATH`` and are resolved here. This is the only module that reads the
environment. Relative paths are relative to the working directory. A key
written twice in one mapping is refused (PyYAML would let the last one win).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from aiohttp import web
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    IPvAnyNetwork,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from yarl import URL

from gateway.errors import ConfigError
from gateway.namespace import overlapped

ENV_PREFIX = "PORTAL_GATEWAY__"
ADMIN_TOKEN_MIN = 16
BUNDLED_CONFIG = "gateway.yaml"

_ATTRIBUTE = re.compile(r"(person|company)\.[A-Za-z0-9_][A-Za-z0-9_.-]*")
# RFC 9110 token characters without "_" (which some upstreams read as "-": requests.underscore_headers).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^`|~0-9a-z-]+")
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


def _resolve_secret(value: Any, info: ValidationInfo) -> Any:
    """Turn ``env:NAME`` / ``file:PATH`` into the secret they point at."""
    if not isinstance(value, str):
        return value
    return resolve_secret(value, (info.context or {}).get("environ", {}))


def resolve_secret(value: str, environ: Mapping[str, str] | None = None) -> str:
    """The secret ``env:NAME`` or ``file:PATH`` points at (in ``environ``, default the process's), else ``value``.

    Raises ValueError saying what is missing."""
    environ = os.environ if environ is None else environ
    if value.startswith("env:"):
        name = value[4:]
        if name not in environ or not environ[name]:
            raise ValueError(f"environment variable {name} is not set")
        return environ[name]
    if value.startswith("file:"):
        path = Path(value[5:])
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
        if not secret:
            raise ValueError(f"secret file {path} is empty")
        return secret
    return value


class DuplicateKeyError(yaml.YAMLError):
    """One mapping names a key twice: its dotted path and the two (1-based) lines."""

    def __init__(self, path: str, first: int, second: int) -> None:
        where = f"twice on line {first}" if first == second else f"lines {first} and {second}"
        self.path, self.reason = path, f"duplicate key ({where})"
        super().__init__(f"{path}: {self.reason}")


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in any mapping, block or flow, at any depth."""

    def construct_document(self, node: yaml.Node) -> Any:
        """Name every node of the document by its dotted path before building it."""
        self._paths: dict[int, str] = {}
        self._name_mappings(node, "")
        return super().construct_document(node)

    def _name_mappings(self, node: yaml.Node, path: str) -> None:
        if id(node) in self._paths:
            return  # an alias: named where its anchor is (and a recursive one would never end)
        self._paths[id(node)] = path
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                self._name_mappings(value, f"{path}.{name}" if path else name)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._name_mappings(item, f"{path}[{index}]")

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """The mapping, once each key is known to appear in it only once."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` may be overridden by the mapping's own keys: that is its purpose
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base constructor refuses it with its own message
            if first is not None:
                prefix = self._paths.get(id(node), "")
                raise DuplicateKeyError(f"{prefix}.{key}" if prefix else str(key), first, line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _parse_http_url(value: Any) -> Any:
    """Accept an absolute http(s) URL with a host; anything else is refused."""
    if isinstance(value, URL):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a URL string")
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"must be an absolute http:// or https:// URL, got {value!r}")
    return url


Secret = Annotated[SecretStr, BeforeValidator(_resolve_secret)]
HttpURL = Annotated[URL, BeforeValidator(_parse_http_url)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, coerce_numbers_to_str=True)


class Address(_Model):
    """A listening address, written ``host:port`` in YAML."""

    host: str
    port: int = Field(ge=0, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"must be host:port, got {value!r}")
            return {"host": host.strip("[]"), "port": int(port)}
        return value

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class ListenConfig(_Model):
    """Where the gateway listens."""

    https: Address = Field(description="The HTTPS listener that serves everything.")
    http: Address | None = Field(default=None, description="Plain HTTP listener; only answers 308 to HTTPS.")
    public_https_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="The HTTPS port clients reach (behind a port mapping or a load balancer), where the HTTP "
        "listener redirects; default: the HTTPS listener's own port.",
    )
    trusted_proxies: frozenset[IPvAnyNetwork] = Field(
        default=frozenset(), description="Peers (addresses or networks) whose X-Forwarded-* headers are believed."
    )
    shutdown_grace: float = Field(
        default=10.0, ge=0, description="Seconds in-flight requests get to finish on SIGTERM."
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Processes serving the listeners, sharing them with SO_REUSEPORT; one per core is usual.",
    )
    metrics_allow: frozenset[IPvAnyNetwork] = Field(
        default=frozenset({IPv4Network("127.0.0.0/8"), IPv6Network("::1/128")}),
        description="Peers that may read /metrics; everyone else gets 404.",
    )
    allowed_hosts: frozenset[str] = Field(
        default=frozenset(),
        description="Host names served besides `domain` (loopback names too when dev_login is on); others get 421.",
    )


class RequestsConfig(_Model):
    """What a client's request may be: how slow, how big, which paths."""

    header_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a client gets for the TLS handshake and each request's headers."
    )
    body_timeout: float = Field(
        default=30.0, gt=0, description="Seconds for a body the gateway reads; a proxied body's longest pause."
    )
    max_field_size: int = Field(default=8190, ge=1024, description="Bytes in one header line.")
    max_headers: int = Field(default=100, ge=16, description="Header lines in one request.")
    max_body_size: int = Field(
        default=1024**2,
        ge=0,
        description="Bytes of a body the gateway reads itself (forms, JSON); proxied bodies stream.",
    )
    allow_encoded_slashes: bool = Field(
        default=False, description="Forward paths with %2F or %5C; refused by default (an upstream may decode them)."
    )
    underscore_headers: Literal["drop", "refuse"] = Field(
        default="drop",
        description="A header name with `_` is never forwarded: dropped (and audited), or the request refused (400).",
    )


class TLSConfig(_Model):
    """The certificate for the custom domain."""

    cert: Path = Field(description="PEM certificate chain for the custom domain.")
    key: Path = Field(description="PEM private key of the certificate.")
    hsts_max_age: int = Field(default=31536000, ge=0, description="Strict-Transport-Security max-age in seconds.")


class UpstreamConfig(_Model):
    """The hosted help center the gateway proxies to."""

    url: HttpURL = Field(description="Base URL of the hosted help center.")
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to establish an upstream connection.")
    read_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for each upstream read, and for the whole response head."
    )
    pass_headers: frozenset[str] = Field(
        default=frozenset(),
        description="Request headers upstream (and the Messenger API) may receive beyond the standard ones; "
        "all others are dropped and audited.",
    )

    @field_validator("pass_headers")
    @classmethod
    def _passable(cls, value: frozenset[str]) -> frozenset[str]:
        names = frozenset(name.lower() for name in value)
        for name in sorted(names):
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a header name (letters, digits and -, no _)")
            # SECURITY: the gateway alone writes these; passing a client's would let it claim an identity.
            if name in ("host", "cookie") or name.startswith(("x-portal-", "x-forwarded-")):
                raise ValueError(f"{name} is the gateway's own to send")
        return names


class CookieForwardingConfig(_Model):
    """The cookie allow-list towards upstream."""

    enabled: bool = Field(default=True, description="Forward the two Intercom cookies; every other cookie is stripped.")
    cookie_domain: str | None = Field(
        default=None, description="Domain= written on upstream Set-Cookies; default: the parent of `domain`."
    )


class JWTConfig(_Model):
    """Identity verification with JSON Web Tokens."""

    secrets: list[Secret] = Field(description="Messenger API secrets; the first signs, all verify (rotation).")
    cookie: str = Field(default="portal-jwt", description="Cookie carrying the portal JWT.")
    leeway_seconds: int = Field(default=30, ge=0, description="Clock skew allowed on exp and nbf.")
    require_exp: bool = Field(default=True, description="Refuse tokens without an expiry.")
    jwks_url: HttpURL | None = Field(default=None, description="Optional JWKS for RS256/ES256 tokens.")
    audience: frozenset[str] = Field(
        default=frozenset(),
        description="The aud values accepted; a token must name one. Empty: a token naming any audience is refused.",
    )

    @field_validator("secrets")
    @classmethod
    def _at_least_one(cls, value: list[SecretStr]) -> list[SecretStr]:
        if not value:
            raise ValueError("at least one secret is required")
        return value

    @property
    def signing_secret(self) -> str:
        """The secret that signs (the first: the others only verify, during a rotation), as its value."""
        return self.secrets[0].get_secret_value()


class HMACConfig(_Model):
    """Legacy identity verification: user_hash = hex HMAC-SHA256(secret, user_id)."""

    enabled: bool = Field(default=False, description="Accept the legacy user_hash cookies.")
    user_id_cookie: str = Field(default="portal-user-id", description="Cookie carrying the user id.")
    user_hash_cookie: str = Field(default="portal-user-hash", description="Cookie carrying the user hash.")


class IdentityConfig(_Model):
    """Who the visitor is."""

    enforce: bool = Field(default=True, description="No valid identity, no portal.")
    jwt: JWTConfig
    hmac: HMACConfig = HMACConfig()
    login_url: HttpURL | None = Field(default=None, description="Where unauthenticated visitors are sent.")
    dev_login: bool = Field(default=False, description="Demo only: /dev/login signs a token for any store contact.")


class MessengerBootConfig(_Model):
    """The portal's "Send us a message" button booting Intercom's Messenger on the ticket page."""

    enabled: bool | None = Field(
        default=None,
        description="Boot the Messenger; null (the default): exactly when intercom.enabled, whose tickets' "
        "conversations are the workspace's own (imported or demo ones would open nothing in the Messenger).",
    )
    script_url: HttpURL | None = Field(
        default=None,
        description="The Messenger's script; default: Intercom's https://widget.intercom.io/widget/<workspace_id>.",
    )
    token_ttl: int = Field(
        default=600,
        ge=60,
        le=3600,
        description="Seconds the intercom_user_jwt the page carries stays valid; past it the button follows its link.",
    )


class MessengerConfig(_Model):
    """The Messenger API proxy, and the Messenger boot on the portal's ticket page."""

    upstream: HttpURL = Field(description="Where Messenger API calls are forwarded.")
    prevent_company_updates: bool = Field(default=True, description="Block company changes in user_data.")
    company_update_action: Literal["strip", "reject"] = Field(
        default="strip", description="strip the field or reject the call."
    )
    max_body_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=16 * 1024**2,
        description="Largest Messenger request body read for the policy; a bigger one gets a 400.",
    )
    boot: MessengerBootConfig = MessengerBootConfig()


Operator = Literal[
    "equals",
    "not_equals",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "exists",
    "not_exists",
    "greater_than",
    "less_than",
    "in",
]
RuleValue = str | int | float | bool | list[str | int | float | bool] | None


class Condition(_Model):
    """One audience condition: ``attribute op value``."""

    attribute: str = Field(description="person.<field> or company.<field>.")
    op: Operator
    value: RuleValue = None

    @field_validator("attribute")
    @classmethod
    def _qualified(cls, value: str) -> str:
        if not _ATTRIBUTE.fullmatch(value):
            raise ValueError(f"must be person.<field> or company.<field>, got {value!r}")
        return value


def _rule_kind(value: Any) -> str:
    """A mapping with ``rules`` or ``match`` is a group; anything else a condition."""
    if isinstance(value, dict):
        return "group" if {"rules", "match"} & value.keys() else "condition"
    return "group" if isinstance(value, RuleGroup) else "condition"


Rule = Annotated[
    Annotated["Condition", Tag("condition")] | Annotated["RuleGroup", Tag("group")],
    Discriminator(_rule_kind),
]


class RuleGroup(_Model):
    """Conditions combined with all/any; groups nest."""

    match: Literal["all", "any"] = "all"
    rules: list[Rule] = Field(default_factory=list)


class VisibilityConfig(_Model):
    """Who is restricted to the tickets they created."""

    enabled: bool = False
    conditions: list[Rule] = Field(default_factory=list)


class EventsConfig(_Model):
    """The portal's live updates: ``GET <portal.path>/events``, one event stream per open page."""

    enabled: bool = Field(default=True, description="Serve the event stream; off: pages update on reload only.")
    heartbeat: float = Field(default=15.0, gt=0, description="Seconds between comment lines on a quiet stream.")
    recheck: float = Field(
        default=60.0, gt=0, description="Seconds between checks of a stream's visitor's access without a change."
    )
    per_visitor: int = Field(default=8, ge=1, description="Open streams one visitor may hold in one worker (429).")
    max_streams: int = Field(default=10_000, ge=1, description="Open streams one worker serves in all (503).")
    retry_after: int = Field(default=10, ge=1, description="Seconds a refused stream is told to wait (Retry-After).")
    max_buffered: int = Field(
        default=262_144, ge=1_024, description="Bytes a stream's connection may hold unsent; past it the stream ends."
    )


class PortalConfig(_Model):
    """The customer tickets portal."""

    enabled: bool = True
    mode: Literal["render", "proxy"] = "render"
    path: str = Field(default="/tickets", pattern=r"^/[A-Za-z0-9/_-]*[A-Za-z0-9_-]$")
    access: RuleGroup = RuleGroup()
    visibility: VisibilityConfig = VisibilityConfig()
    preview_column: bool = True
    page_size: int = Field(default=25, ge=1, le=200)
    events: EventsConfig = EventsConfig()

    @property
    def live(self) -> bool:
        """Whether the gateway serves the live pages' event stream: the portal rendered here, events on."""
        return self.enabled and self.mode == "render" and self.events.enabled

    @field_validator("path")
    @classmethod
    def _clear_of_the_gateways_paths(cls, value: str) -> str:
        # SECURITY: a portal over /admin/api or /healthz (say) would change who may reach them.
        if (namespace := overlapped(value)) is not None:
            raise ValueError(f"{value} overlaps the gateway's own {namespace.name} paths")
        return value


Section = Literal["tickets_portal", "articles"]
SECTIONS: tuple[Section, ...] = ("tickets_portal", "articles")


_HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
MIN_CONTRAST = 4.5  # WCAG 2 AA for body-size text
IMAGE_TYPES = {
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
}


def contrast_with_white(colour: str) -> float:
    """The WCAG 2 contrast ratio of white text on ``colour`` (``#rrggbb``)."""

    def channel(value: int) -> float:
        srgb = value / 255
        return srgb / 12.92 if srgb <= 0.04045 else ((srgb + 0.055) / 1.055) ** 2.4

    red, green, blue = (channel(int(colour[i : i + 2], 16)) for i in (1, 3, 5))
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    return 1.05 / (luminance + 0.05)


def _image_file(value: Path | None) -> Path | None:
    """A brand image the gateway serves itself: a readable file of a type browsers show as an image."""
    if value is None:
        return None
    if value.suffix.lower() not in IMAGE_TYPES:
        raise ValueError(f"{value}: must be one of {', '.join(sorted(IMAGE_TYPES))}")
    if not value.is_file():
        raise ValueError(f"{value}: no such file")
    return value


class BrandConfig(_Model):
    """How the gateway's own pages look: the name, the logo, the primary colour and the icon."""

    name: str = Field(default="Help Center", min_length=1, max_length=60, description="Shown in the header and titles.")
    logo: str | None = Field(
        default=None, description="file:PATH served by the gateway, or a /path on this domain; null: the name only."
    )
    primary_color: str = Field(default="#0b57d0", description="#rrggbb behind white text: links, buttons, focus.")
    favicon: Path | None = Field(default=None, description="An icon file; null: the gateway's own.")

    @field_validator("logo")
    @classmethod
    def _logo(cls, value: str | None) -> str | None:
        if value is None or (value.startswith("/") and not value.startswith("//")):
            return value
        if value.startswith("file:"):
            _image_file(Path(value[5:]))
            return value
        # SECURITY: the pages' Content-Security-Policy allows images from this origin only (img-src 'self').
        raise ValueError(
            f"{value}: must be file:PATH or a /path on this domain (the pages' CSP blocks images of other sites)"
        )

    @field_validator("favicon")
    @classmethod
    def _favicon(cls, value: Path | None) -> Path | None:
        return _image_file(value)

    @field_validator("primary_color")
    @classmethod
    def _readable(cls, value: str) -> str:
        if not _HEX_COLOUR.fullmatch(value):
            raise ValueError(f"{value!r}: must be a colour written #rrggbb")
        ratio = contrast_with_white(value)
        if ratio < MIN_CONTRAST:
            # Floored, not rounded: 4.46 must not read as the 4.5 it fails.
            raise ValueError(
                f"{value} has contrast {int(ratio * 10) / 10}:1 against white text; need at least {MIN_CONTRAST}:1"
            )
        return value.lower()

    @property
    def logo_file(self) -> Path | None:
        """The logo's file when the gateway serves it."""
        return Path(self.logo[5:]) if self.logo and self.logo.startswith("file:") else None


class HelpCenterConfig(_Model):
    """The Help Center home page and the look of the gateway's pages."""

    sections: tuple[Section, ...] = Field(default=SECTIONS, description="Home page cards, in order.")
    brand: BrandConfig = BrandConfig()

    @field_validator("sections")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a section is listed twice")
        return value


StoreBackend = Literal["sqlite", "postgres"]
"""The store backends that exist (``gateway/store/protocol.py: open_store`` opens each)."""


class StoreConfig(_Model):
    """Where portal data lives."""

    backend: StoreBackend = "sqlite"
    path: Path = Path("data/portal.db")
    seed_demo: bool = Field(default=False, description="Fill an empty store with the demo data at start.")
    busy_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait for another process's lock before answering 503."
    )
    change_retention: int = Field(
        default=10_000,
        ge=100,
        description="Changes the feed keeps for live pages to resume from; a page further behind reloads.",
    )
    change_poll: float = Field(
        default=0.15,
        gt=0,
        le=5,
        description="Seconds between each worker's cheap checks for new changes (how soon live pages learn).",
    )
    dsn: Secret | None = Field(
        default=None,
        description="postgres: the libpq URL, postgresql://... (env:/file:); several hosts with"
        " target_session_attrs=read-write find the primary.",
    )
    pool_size: int = Field(default=10, ge=1, le=100, description="postgres: connections kept open, at most.")
    statement_timeout: float = Field(
        default=5.0, gt=0, description="postgres: seconds one statement (or a wait for a connection) may take."
    )
    migration_wait: float = Field(
        default=600.0,
        gt=0,
        description="postgres: seconds a starting node waits for another node's migration before it gives up.",
    )

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> StoreConfig:
        if self.backend == "postgres" and self.dsn is None:
            raise ValueError("backend postgres needs dsn (env:NAME or file:PATH)")
        # asyncpg reads only the URL form; a key=value string would fail at connect as "cannot be reached".
        if self.dsn is not None and not self.dsn.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("dsn must be a postgresql:// URL (a libpq key=value string is not read)")
        return self


class AdminConfig(_Model):
    """The admin API."""

    token: Secret | None = Field(default=None, description="Bearer token for /admin/api; unset disables the admin API.")

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # SECURITY: a short bearer token could be guessed; the admin API changes who sees which tickets.
        if value is not None and len(value.get_secret_value()) < ADMIN_TOKEN_MIN:
            raise ValueError(f"must be at least {ADMIN_TOKEN_MIN} characters")
        return value


class AuditConfig(_Model):
    """The audit log."""

    path: Path = Field(default=Path("logs/audit.jsonl"), description="JSON lines file, reopened on SIGHUP.")
    chain_key: Secret | None = Field(
        default=None, description="HMAC key for each line's MAC (env:/file:), held by the security team."
    )


IntercomRegion = Literal["us", "eu", "au"]
"""The regions Intercom hosts workspaces in."""
INTERCOM_API_URLS: Mapping[IntercomRegion, str] = {
    "us": "https://api.intercom.io",
    "eu": "https://api.eu.intercom.io",
    "au": "https://api.au.intercom.io",
}
"""The REST API's base URL in each region (Intercom's "Regional hosting" page)."""
INTERCOM_WIDGET_URL = "https://widget.intercom.io/widget"
"""Where the Messenger's script is loaded from, ``/<app_id>`` after it, in every region (Intercom's install snippet)."""
INTERCOM_VERSION = "2.16"
"""The ``Intercom-Version`` header sent on every call: the API version the connector is written and tested against."""


class IntercomConfig(_Model):
    """The Intercom connector: the portal's tickets, contacts and companies read from the workspace's REST API."""

    enabled: bool = Field(default=False, description="Sync from Intercom; off: the store holds only what is imported.")
    access_token: Secret | None = Field(default=None, description="The app's access token (env:/file:).")
    region: IntercomRegion = Field(default="us", description="Where the workspace is hosted: us, eu or au.")
    api_url: HttpURL | None = Field(default=None, description="The REST API's base URL; default: the region's.")
    sync_interval: float = Field(default=300.0, gt=0, description="Seconds between background syncs in serve.")
    webhook_secret: Secret | None = Field(
        default=None, description="The app's client secret, that signs webhook deliveries; unset refuses them all."
    )
    admin_id: str | None = Field(default=None, description="The Intercom admin who performs joins.")

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> IntercomConfig:
        # A connector switched on without its credentials would fail on its first call: refuse it at load.
        if self.enabled:
            missing = [name for name in ("access_token", "admin_id") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"enabled needs {' and '.join(missing)}")
        return self

    @property
    def base_url(self) -> URL:
        """The REST API's base URL: ``api_url`` when set, else the region's."""
        return self.api_url or URL(INTERCOM_API_URLS[self.region])


class GatewayConfig(_Model):
    """The whole gateway configuration."""

    workspace_id: str = Field(pattern=r"^[A-Za-z0-9_]+$", description="Names the intercom-session-<id> cookies.")
    domain: str = Field(description="The Help Center custom domain, e.g. help.example.com.")
    listen: ListenConfig
    requests: RequestsConfig = RequestsConfig()
    tls: TLSConfig
    upstream: UpstreamConfig
    cookie_forwarding: CookieForwardingConfig = CookieForwardingConfig()
    identity: IdentityConfig
    messenger: MessengerConfig
    portal: PortalConfig = PortalConfig()
    help_center: HelpCenterConfig = HelpCenterConfig()
    store: StoreConfig = StoreConfig()
    admin: AdminConfig = AdminConfig()
    audit: AuditConfig = AuditConfig()
    intercom: IntercomConfig = IntercomConfig()

    @field_validator("domain")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not _HOSTNAME.fullmatch(value):
            raise ValueError(f"must be a lower-case host name without scheme or port, got {value!r}")
        return value

    @property
    def allowed_cookies(self) -> frozenset[str]:
        """The only cookie names that may reach upstream."""
        if not self.cookie_forwarding.enabled:
            return frozenset()
        return frozenset(intercom_cookies(self.workspace_id))

    @property
    def messenger_boots(self) -> bool:
        """Whether the ticket page boots the Messenger: ``messenger.boot.enabled``, unset: the connector's switch."""
        enabled = self.messenger.boot.enabled
        return self.intercom.enabled if enabled is None else enabled

    @property
    def messenger_script_url(self) -> URL:
        """The Messenger's script: ``messenger.boot.script_url``, else Intercom's for this workspace (any region)."""
        return self.messenger.boot.script_url or URL(INTERCOM_WIDGET_URL) / self.workspace_id

    @property
    def cookie_domain(self) -> str:
        """The Domain attribute for cookies set through the gateway."""
        if self.cookie_forwarding.cookie_domain:
            return self.cookie_forwarding.cookie_domain
        labels = self.domain.split(".")
        return ".".join(labels[1:]) if len(labels) > 2 else self.domain


def intercom_cookies(workspace_id: str) -> tuple[str, str]:
    """The two Intercom cookies of a workspace: the session's name and the device id's."""
    return f"intercom-session-{workspace_id}", f"intercom-device-id-{workspace_id}"


RuleGroup.model_rebuild()


CONFIG = web.AppKey("config", GatewayConfig)


def bundled_config_path() -> Path:
    """The ``gateway.yaml`` shipped with the package, used when no file is given."""
    return Path(str(resources.files("gateway") / BUNDLED_CONFIG))


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    env_defaults: Mapping[str, str] | None = None,
) -> GatewayConfig:
    """Read, override and validate the configuration; raise ConfigError naming each bad key."""
    source = path or bundled_config_path()
    env = {**(env_defaults or {}), **(os.environ if environ is None else environ)}
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(("", f"cannot read config file {source}: {exc.strerror}")) from None
    try:
        raw = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except DuplicateKeyError as exc:
        raise ConfigError((exc.path, exc.reason)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else str(source)
        raise ConfigError(("", f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})")) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(("", f"{source}: the top level must be a mapping of sections"))
    overridden = _apply_env_overrides(raw, env)
    try:
        return GatewayConfig.model_validate(raw, context={"environ": env})
    except ValidationError as exc:
        raise ConfigError(*(_problem(error, overridden) for error in exc.errors())) from None


def store_location(spec: str, environ: Mapping[str, str] | None = None) -> StoreConfig:
    """The store ``sqlite:PATH`` or ``postgres:DSN`` names (``store copy``); the DSN may be ``env:``/``file:``."""
    backend, _, where = spec.partition(":")
    if backend not in ("sqlite", "postgres") or not where:
        raise ConfigError(
            ("", f"{spec!r}: a store is sqlite:PATH or postgres:DSN (the DSN may be env:NAME or file:PATH)")
        )
    raw = {"backend": backend, "path" if backend == "sqlite" else "dsn": where}
    try:
        return StoreConfig.model_validate(raw, context={"environ": os.environ if environ is None else environ})
    except ValidationError as exc:
        raise ConfigError(
            *((backend, str(error["msg"]).removeprefix("Value error, ")) for error in exc.errors())
        ) from None


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Write PORTAL_GATEWAY__A__B=value into raw[a][b]; return dotted path -> variable name."""
    overridden: dict[str, str] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [key.lower() for key in name[len(ENV_PREFIX) :].split("__")]
        if not all(keys):
            raise ConfigError((name, "empty key in environment override"))
        node = raw
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError((".".join(keys[: depth + 1]), f"is not a section, cannot apply {name}"))
            node = child
        node[keys[-1]] = _env_value(name, env[name])
        overridden[".".join(keys)] = name
    return overridden


def _env_value(name: str, text: str) -> Any:
    """An override's value: YAML scalars and lists keep their types; anything YAML reads as
    nothing (a comment, say) or cannot read stays the literal string."""
    try:
        value = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except DuplicateKeyError as exc:
        raise ConfigError((name, str(exc))) from None
    except yaml.YAMLError:
        return text
    if value is None and text.strip() not in ("", "~", "null", "Null", "NULL"):
        return text
    return value


def _related(path: str, key: str) -> bool:
    """Whether an error at ``path`` may come from an override of ``key`` (the same key, above or below it)."""
    return any(a == b or a.startswith((b + ".", b + "[")) for a, b in ((path, key), (key, path)))


def _problem(error: Mapping[str, Any], overridden: Mapping[str, str]) -> tuple[str, str]:
    """One pydantic error as (dotted path, reason)."""
    path = ""
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("condition", "group"):
            continue  # the rule union's branch tags are not keys of the file
        else:
            path += f".{part}" if path else str(part)
    reason = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        reason = "unknown key"
    elif error["type"] == "missing":
        reason = "is required"
    source = next((var for key, var in overridden.items() if _related(path, key)), None)
    if source:
        reason += f" (set by {source})"
    return path, reason
