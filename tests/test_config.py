"""Configuration: loading, validation errors naming the key, env overrides, secrets, the CLI's answers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from yarl import URL

from gateway.config import Address, GatewayConfig, contrast_with_white, load_config
from gateway.errors import ConfigError
from tests.conftest import DOMAIN, CertFiles, config_dict, deep_merge

REPO = Path(__file__).resolve().parents[1]
BUNDLED_ENV = {"MESSENGER_API_SECRET": "x", "PORTAL_ADMIN_TOKEN": "admin-token-0123456789"}
SECRET_CANARY = "s3cr3t-CANARY-9f2c"

# A complete, valid configuration that refers to no file.
BASE: dict[str, Any] = {
    "workspace_id": "ws1a2b3c",
    "domain": "help.example.com",
    "listen": {"https": "127.0.0.1:8443"},
    "tls": {"cert": "certs/cert.pem", "key": "certs/key.pem"},
    "upstream": {"url": "http://127.0.0.1:9000", "read_timeout": 30},
    "identity": {"jwt": {"secrets": ["s3cret"]}},
    "messenger": {"upstream": "http://127.0.0.1:9001"},
}


def write(path: Path, data: dict[str, Any] | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def load(
    tmp_path: Path, overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None
) -> GatewayConfig:
    path = write(tmp_path / "gateway.yaml", deep_merge(BASE, overrides or {}))
    return load_config(path, environ=environ or {})


def config_error(
    tmp_path: Path, overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None
) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, overrides, environ)
    return caught.value


def with_tmp(value: Any, tmp_path: Path) -> Any:
    """``value`` with ``{tmp}`` in its strings replaced by the test's folder."""
    if isinstance(value, dict):
        return {key: with_tmp(item, tmp_path) for key, item in value.items()}
    if isinstance(value, list):
        return [with_tmp(item, tmp_path) for item in value]
    return value.replace("{tmp}", str(tmp_path)) if isinstance(value, str) else value


# --- the bundled file -------------------------------------------------------------------------


def test_bundled_gateway_yaml_loads() -> None:
    config = load_config(REPO / "gateway.yaml", environ=BUNDLED_ENV)
    assert config.workspace_id == "ws1a2b3c"
    assert config.domain == "help.example.com"
    assert config.upstream.url == URL("http://127.0.0.1:9000")
    assert [secret.get_secret_value() for secret in config.identity.jwt.secrets] == ["x"]
    assert config.admin.token is not None
    assert config.admin.token.get_secret_value() == "admin-token-0123456789"
    assert str(config.listen.https) == "127.0.0.1:8443"
    assert config.portal.access.rules
    # The file in the repository is the one embedded in the package.
    assert load_config(None, environ=BUNDLED_ENV) == config


def test_bundled_gateway_yaml_without_secrets_names_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(REPO / "gateway.yaml", environ={})
    lines = str(caught.value).splitlines()
    assert "identity.jwt.secrets[0]: environment variable MESSENGER_API_SECRET is not set" in lines
    assert "admin.token: environment variable PORTAL_ADMIN_TOKEN is not set" in lines
    assert len(lines) == 2


def test_base_config_is_valid(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert config.identity.jwt.secrets[0].get_secret_value() == "s3cret"
    assert config.admin.token is None


# Where the bundled file deliberately writes something other than the model's default, and why; its comment
# on that line says "default: ...".
DELIBERATE: dict[str, str] = {
    "listen.http": "the demo's redirect listener, to show the 308",
    "identity.login_url": "an example sign-in page to replace",
    "portal.access.rules": "the demo's audience (no rule lets no one in)",
    "admin.token": "a secret, read from the environment",
}
LEAF_MODELS: tuple[type[BaseModel], ...] = (Address,)  # written as one host:port string


def model_fields(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo]:
    """Every leaf field of ``model`` by dotted path, sections walked into."""
    fields: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel) and kind not in LEAF_MODELS:
            fields |= model_fields(kind, f"{prefix}{name}.")
        else:
            fields[prefix + name] = field
    return fields


def yaml_keys(node: yaml.Node, sections: set[str], prefix: str = "") -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """Every key the file writes, by dotted path, walking into the values that are sections of the models."""
    keys: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    assert isinstance(node, yaml.MappingNode)
    for key, value in node.value:
        path = prefix + key.value
        keys[path] = (key, value)
        if path in sections:
            keys |= yaml_keys(value, sections, path + ".")
    return keys


def bundled_keys() -> tuple[str, dict[str, tuple[yaml.Node, yaml.Node]], set[str]]:
    """The bundled file's text, its keys, and the section paths of the models."""
    text = (REPO / "gateway.yaml").read_text(encoding="utf-8")
    leaves = model_fields(GatewayConfig)
    sections = {path.rpartition(".")[0] for path in leaves} | {
        ".".join(path.split(".")[:depth]) for path in leaves for depth in range(1, path.count(".") + 1)
    }
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    assert root is not None
    return text, yaml_keys(root, sections), sections


def attribute(config: BaseModel, path: str) -> Any:
    value: Any = config
    for name in path.split("."):
        value = getattr(value, name)
    return value


def test_bundled_gateway_yaml_writes_every_key_with_its_default() -> None:
    text, keys, sections = bundled_keys()
    fields = model_fields(GatewayConfig)
    assert sorted(set(fields) - set(keys)) == [], "keys of the models missing from gateway.yaml"
    assert sorted(set(keys) - set(fields) - sections) == [], "keys in gateway.yaml that no model has"
    config = load_config(REPO / "gateway.yaml", environ=BUNDLED_ENV)
    differing = {
        path
        for path, field in fields.items()
        if not field.is_required() and attribute(config, path) != field.get_default(call_default_factory=True)
    }
    assert sorted(differing ^ set(DELIBERATE)) == [], "keys whose value is not the default, or DELIBERATE is stale"
    lines = text.splitlines()
    for path in DELIBERATE:
        assert "default: " in lines[keys[path][0].start_mark.line].partition("#")[2], path


def test_every_key_line_of_the_bundled_gateway_yaml_carries_a_comment() -> None:
    text, keys, _ = bundled_keys()
    lines = text.splitlines()
    for path, (key, value) in keys.items():
        line = lines[key.start_mark.line]
        # The comment follows the value when the value ends on the key's line, else the colon.
        end = value.end_mark.column if value.end_mark.line == key.start_mark.line else key.end_mark.column
        assert re.match(r"^:?\s+#\s*\S", line[end:]), f"line {key.start_mark.line + 1} ({path}) has no comment"


def test_the_bundled_gateway_yaml_leaves_demo_mode_off() -> None:
    """A real deployment copying the file must not get the dev login or the demo data: only demo mode turns them on."""
    config = load_config(REPO / "gateway.yaml", environ=BUNDLED_ENV)
    assert (config.identity.dev_login, config.store.seed_demo) == (False, False)


# --- bad files --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "path", "reason"),
    [
        pytest.param({"bogus": 1}, "bogus", "unknown key", id="unknown-top-level-key"),
        pytest.param({"upstream": {"timeout": 3}}, "upstream.timeout", "unknown key", id="unknown-nested-key"),
        pytest.param(
            {"identity": {"jwt": {"secret": "x"}}}, "identity.jwt.secret", "unknown key", id="unknown-deep-key"
        ),
        pytest.param({"upstream": {"url": "not a url"}}, "upstream.url", "http:// or https://", id="url-not-a-url"),
        pytest.param({"upstream": {"url": "ftp://example.com/"}}, "upstream.url", "http:// or https://", id="url-ftp"),
        pytest.param({"upstream": {"url": "http://"}}, "upstream.url", "http:// or https://", id="url-without-host"),
        pytest.param(
            {"upstream": {"read_timeout": -1}}, "upstream.read_timeout", "greater than 0", id="negative-timeout"
        ),
        pytest.param({"listen": {"https": "8443"}}, "listen.https", "must be host:port", id="listen-not-host-port"),
        pytest.param(
            {"listen": {"https": "localhost:http"}}, "listen.https", "must be host:port", id="listen-port-name"
        ),
        pytest.param({"listen": {"https": "127.0.0.1:70000"}}, "listen.https.port", "65535", id="listen-port-too-big"),
        pytest.param({"listen": {"workers": 0}}, "listen.workers", "greater than or equal to 1", id="workers-zero"),
        pytest.param(
            {"upstream": {"pass_headers": ["X_Tenant"]}}, "upstream.pass_headers", "no _", id="pass-header-underscore"
        ),
        pytest.param(
            {"upstream": {"pass_headers": ["X-Tenant: 1"]}},
            "upstream.pass_headers",
            "not a header name",
            id="pass-colon",
        ),
        pytest.param(
            {"upstream": {"pass_headers": ["X-Portal-User-Id"]}},
            "upstream.pass_headers",
            "the gateway's own",
            id="pass-header-portal",
        ),
        pytest.param(
            {"upstream": {"pass_headers": ["X-Forwarded-Port"]}},
            "upstream.pass_headers",
            "the gateway's own",
            id="pass-header-forwarded",
        ),
        pytest.param(
            {"upstream": {"pass_headers": ["Cookie"]}}, "upstream.pass_headers", "the gateway's own", id="pass-cookie"
        ),
        pytest.param(
            {"requests": {"underscore_headers": "pass"}}, "requests.underscore_headers", "drop", id="underscores-pass"
        ),
        pytest.param({"workspace_id": "ws 1"}, "workspace_id", "pattern", id="workspace-id-with-space"),
        pytest.param({"domain": "https://help.example.com"}, "domain", "without scheme or port", id="domain-scheme"),
        pytest.param({"domain": "help.example.com:443"}, "domain", "without scheme or port", id="domain-port"),
        pytest.param({"domain": "Help.Example.com"}, "domain", "lower-case", id="domain-upper-case"),
        pytest.param({"domain": "help.example.com\n"}, "domain", "lower-case host name", id="domain-then-newline"),
        pytest.param(
            {"identity": {"jwt": {"secrets": []}}},
            "identity.jwt.secrets",
            "at least one secret is required",
            id="no-secrets",
        ),
        pytest.param(
            {"identity": {"jwt": {"secrets": ["env:MISSING"]}}},
            "identity.jwt.secrets[0]",
            "environment variable MISSING is not set",
            id="secret-env-missing",
        ),
        pytest.param(
            {"identity": {"jwt": {"secrets": ["s3cret", "env:EMPTY"]}}},
            "identity.jwt.secrets[1]",
            "environment variable EMPTY is not set",
            id="secret-env-empty",
        ),
        pytest.param(
            {"identity": {"jwt": {"secrets": ["file:/nonexistent"]}}},
            "identity.jwt.secrets[0]",
            "cannot read secret file /nonexistent",
            id="secret-file-missing",
        ),
        pytest.param(
            {"identity": {"jwt": {"secrets": ["file:{tmp}/empty-secret"]}}},
            "identity.jwt.secrets[0]",
            "secret file {tmp}/empty-secret is empty",
            id="secret-file-empty",
        ),
        pytest.param(
            {"admin": {"token": "env:NO_TOKEN"}}, "admin.token", "environment variable NO_TOKEN", id="admin-token-env"
        ),
        pytest.param(
            {"admin": {"token": "short-token"}}, "admin.token", "at least 16 characters", id="admin-token-short"
        ),
        pytest.param(
            {"messenger": {"max_body_bytes": 10}},
            "messenger.max_body_bytes",
            "greater than or equal to 1024",
            id="body-limit",
        ),
        pytest.param({"portal": {"mode": "static"}}, "portal.mode", "'render' or 'proxy'", id="portal-mode"),
        pytest.param(
            {"portal": {"access": {"rules": [{"attribute": "person.email", "op": "like", "value": "x"}]}}},
            "portal.access.rules[0].op",
            "'equals'",
            id="rule-op",
        ),
        pytest.param(
            {"portal": {"access": {"rules": [{"attribute": "email", "op": "equals", "value": "x"}]}}},
            "portal.access.rules[0].attribute",
            "person.<field> or company.<field>",
            id="rule-attribute",
        ),
        pytest.param(
            {"portal": {"access": {"rules": [{"attribute": "person.email\n", "op": "equals", "value": "x"}]}}},
            "portal.access.rules[0].attribute",
            "person.<field> or company.<field>",
            id="rule-attribute-then-newline",
        ),
        pytest.param(
            {"portal": {"access": {"rules": [{"match": "any", "rules": [{"attribute": "company.x", "op": "nope"}]}]}}},
            "portal.access.rules[0].rules[0].op",
            "'equals'",
            id="nested-rule-op",
        ),
        pytest.param(
            {"portal": {"visibility": {"enabled": True, "conditions": [{"attribute": "user.role", "op": "exists"}]}}},
            "portal.visibility.conditions[0].attribute",
            "person.<field> or company.<field>",
            id="visibility-attribute",
        ),
        pytest.param(
            {"help_center": {"sections": ["articles", "articles"]}},
            "help_center.sections",
            "a section is listed twice",
            id="duplicate-section",
        ),
        pytest.param(
            {"help_center": {"brand": {"primary_color": "#ffd700"}}},
            "help_center.brand.primary_color",
            "#ffd700 has contrast 1.4:1 against white text; need at least 4.5:1",
            id="brand-colour-unreadable",
        ),
        pytest.param(
            # 4.48:1, which rounding would show as the 4.5 it fails
            {"help_center": {"brand": {"primary_color": "#777777"}}},
            "help_center.brand.primary_color",
            "#777777 has contrast 4.4:1 against white text",
            id="brand-colour-just-below",
        ),
        pytest.param(
            {"help_center": {"brand": {"primary_color": "blue"}}},
            "help_center.brand.primary_color",
            "'blue': must be a colour written #rrggbb",
            id="brand-colour-name",
        ),
        pytest.param(
            {"help_center": {"brand": {"logo": "https://cdn.example.com/logo.svg"}}},
            "help_center.brand.logo",
            "must be file:PATH or a /path on this domain (the pages' CSP blocks images of other sites)",
            id="brand-logo-other-site",
        ),
        pytest.param(
            {"help_center": {"brand": {"logo": "file:{tmp}/missing.svg"}}},
            "help_center.brand.logo",
            "{tmp}/missing.svg: no such file",
            id="brand-logo-missing",
        ),
        pytest.param(
            {"help_center": {"brand": {"favicon": "{tmp}/gateway.yaml"}}},
            "help_center.brand.favicon",
            "gateway.yaml: must be one of .ico, .jpeg, .jpg, .png, .svg, .webp",
            id="brand-favicon-not-an-image",
        ),
        pytest.param(
            {"help_center": {"brand": {"primary_color": "#1f2937\n"}}},
            "help_center.brand.primary_color",
            "must be a colour written #rrggbb",
            id="brand-colour-then-newline",
        ),
        pytest.param({"portal": {"page_size": 0}}, "portal.page_size", "greater than or equal to 1", id="page-size-0"),
        pytest.param({"store": {"migration_wait": 0}}, "store.migration_wait", "greater than 0", id="migration-wait-0"),
        pytest.param(
            {"listen": {"trusted_proxies": ["not-an-ip"]}},
            "listen.trusted_proxies[0]",
            "not a valid IPv4 or IPv6 network",
            id="trusted-proxy",
        ),
        pytest.param({"messenger": {"company_update_action": "drop"}}, "messenger.company_update_action", "'strip'"),
        pytest.param({"intercom": {"enabled": True}}, "intercom", "enabled needs access_token and admin_id"),
        pytest.param(
            {"intercom": {"enabled": True, "access_token": "t"}}, "intercom", "enabled needs admin_id", id="no-admin"
        ),
        pytest.param({"intercom": {"region": "ca"}}, "intercom.region", "'us', 'eu' or 'au'"),
    ],
)
def test_bad_config_names_the_key_in_one_line(
    tmp_path: Path, overrides: dict[str, Any], path: str, reason: str
) -> None:
    (tmp_path / "empty-secret").write_text("\n")
    error = config_error(tmp_path, with_tmp(overrides, tmp_path), environ={"EMPTY": ""})
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    given_reason = message.removeprefix(f"{path}: ")
    assert given_reason.strip()
    assert with_tmp(reason, tmp_path) in given_reason
    assert error.problems == ((path, given_reason),)


@pytest.mark.parametrize("section", ["workspace_id", "domain", "listen", "tls", "upstream", "identity", "messenger"])
def test_missing_required_key(tmp_path: Path, section: str) -> None:
    path = write(tmp_path / "gateway.yaml", {key: value for key, value in BASE.items() if key != section})
    with pytest.raises(ConfigError, match=rf"^{section}: is required$"):
        load_config(path, environ={})


def test_every_bad_key_is_reported_one_line_each(tmp_path: Path) -> None:
    error = config_error(
        tmp_path, {"bogus": 1, "upstream": {"url": "ftp://x"}, "portal": {"page_size": 0, "mode": "static"}}
    )
    lines = str(error).splitlines()
    assert sorted(line.partition(": ")[0] for line in lines) == [
        "bogus",
        "portal.mode",
        "portal.page_size",
        "upstream.url",
    ]


def test_empty_file_lists_every_required_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path / "gateway.yaml", ""), environ={})
    assert str(caught.value).splitlines() == [
        f"{key}: is required"
        for key in ("workspace_id", "domain", "listen", "tls", "upstream", "identity", "messenger")
    ]


def test_yaml_syntax_error_reports_file_line_column(tmp_path: Path) -> None:
    path = write(tmp_path / "gateway.yaml", "workspace_id: ws1a2b3c\ndomain: help: example.com\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:2:13: not valid YAML (")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "domain: a.example.com\ndomain: b.example.com\n", "domain: duplicate key (lines 1 and 2)", id="top"
        ),
        pytest.param(
            "store:\n  busy_timeout: 5\n  path: x.db\n  busy_timeout: 9\n",
            "store.busy_timeout: duplicate key (lines 2 and 4)",
            id="nested",
        ),
        pytest.param(
            "portal:\n  access:\n    rules:\n      - {attribute: person.email, op: exists}\n"
            "      - {attribute: person.email, op: exists, attribute: company.name}\n",
            "portal.access.rules[1].attribute: duplicate key (twice on line 5)",
            id="flow-mapping-in-a-list",
        ),
        pytest.param(
            "identity:\n  jwt: {cookie: a,\n        cookie: b}\n",
            "identity.jwt.cookie: duplicate key (lines 2 and 3)",
            id="flow-mapping-over-lines",
        ),
        pytest.param(
            "listen:\n  workers: 1\nlisten:\n  workers: 2\n", "listen: duplicate key (lines 1 and 3)", id="section"
        ),
    ],
)
def test_a_duplicate_key_is_refused_with_both_lines(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path / "gateway.yaml", text), environ={})
    assert str(caught.value) == message


def test_a_merge_key_overridden_by_its_mapping_is_not_a_duplicate(tmp_path: Path) -> None:
    text = yaml.safe_dump({key: value for key, value in BASE.items() if key != "upstream"}) + (
        "upstream:\n  <<: {url: 'http://127.0.0.1:9000', connect_timeout: 2, read_timeout: 3}\n  read_timeout: 7\n"
    )
    config = load_config(write(tmp_path / "gateway.yaml", text), environ={})
    assert (config.upstream.connect_timeout, config.upstream.read_timeout) == (2, 7)


def test_a_duplicate_key_in_an_env_override_names_the_variable(tmp_path: Path) -> None:
    error = config_error(tmp_path, environ={"PORTAL_GATEWAY__PORTAL__ACCESS": "{match: any, match: all}"})
    assert str(error) == "PORTAL_GATEWAY__PORTAL__ACCESS: match: duplicate key (twice on line 1)"


@pytest.mark.parametrize("text", ["- workspace_id\n- domain\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "gateway.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value) == f"{path}: the top level must be a mapping of sections"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value) == f"cannot read config file {path}: No such file or directory"


# --- environment overrides --------------------------------------------------------------------


def test_env_overrides_are_typed_via_yaml(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        environ={
            "PORTAL_GATEWAY__UPSTREAM__READ_TIMEOUT": "12",
            "PORTAL_GATEWAY__UPSTREAM__URL": "https://intercom.help/acme",
            "PORTAL_GATEWAY__PORTAL__PAGE_SIZE": "50",
            "PORTAL_GATEWAY__PORTAL__ENABLED": "false",
            "PORTAL_GATEWAY__HELP_CENTER__SECTIONS": "[articles]",
            "PORTAL_GATEWAY__LISTEN__TRUSTED_PROXIES": "[10.0.0.0/8, 192.168.1.1]",
            "PORTAL_GATEWAY__COOKIE_FORWARDING__ENABLED": "false",
            "PORTAL_GATEWAY__WORKSPACE_ID": "abc_123",
            "PORTAL_GATEWAY_NOT_AN_OVERRIDE": "ignored",
        },
    )
    assert config.upstream.read_timeout == 12.0
    assert config.upstream.url == URL("https://intercom.help/acme")
    assert config.portal.page_size == 50
    assert config.portal.enabled is False
    assert config.help_center.sections == ("articles",)
    assert config.listen.trusted_proxies == frozenset({ip_network("10.0.0.0/8"), ip_network("192.168.1.1/32")})
    assert config.cookie_forwarding.enabled is False
    assert config.workspace_id == "abc_123"
    # Keys the environment did not name keep their file values.
    assert config.domain == "help.example.com"
    assert config.upstream.connect_timeout == 5.0
    assert config.identity.jwt.secrets[0].get_secret_value() == "s3cret"


def test_nested_env_override(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        environ={
            "PORTAL_GATEWAY__IDENTITY__JWT__LEEWAY_SECONDS": "5",
            "PORTAL_GATEWAY__IDENTITY__HMAC__ENABLED": "true",
        },
    )
    assert config.identity.jwt.leeway_seconds == 5
    assert config.identity.hmac.enabled is True
    assert config.identity.jwt.secrets[0].get_secret_value() == "s3cret"


def test_env_override_of_secret_reference(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        environ={
            "PORTAL_GATEWAY__IDENTITY__JWT__SECRETS": "[env:NEW_SECRET, env:OLD_SECRET]",
            "NEW_SECRET": "new",
            "OLD_SECRET": "old",
        },
    )
    assert [secret.get_secret_value() for secret in config.identity.jwt.secrets] == ["new", "old"]


@pytest.mark.parametrize(
    ("name", "value", "path", "reason"),
    [
        ("PORTAL_GATEWAY__PORTAL__PAGE_SIZE", "0", "portal.page_size", "greater than or equal to 1"),
        ("PORTAL_GATEWAY__UPSTREAM__URL", "ftp://example.com", "upstream.url", "http:// or https://"),
        ("PORTAL_GATEWAY__UPSTREAM__BOGUS", "1", "upstream.bogus", "unknown key"),
        ("PORTAL_GATEWAY__LISTEN__TRUSTED_PROXIES", "[nope]", "listen.trusted_proxies[0]", "IPv4 or IPv6 network"),
        ("PORTAL_GATEWAY__IDENTITY__JWT__SECRETS", "[]", "identity.jwt.secrets", "at least one secret is required"),
    ],
)
def test_env_override_error_names_the_variable(tmp_path: Path, name: str, value: str, path: str, reason: str) -> None:
    message = str(config_error(tmp_path, environ={name: value}))
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert reason in message
    assert message.endswith(f"(set by {name})")


def test_error_in_file_value_does_not_blame_an_unrelated_override(tmp_path: Path) -> None:
    message = str(
        config_error(tmp_path, {"portal": {"page_size": 0}}, environ={"PORTAL_GATEWAY__PORTAL__MODE": "proxy"})
    )
    assert message == "portal.page_size: Input should be greater than or equal to 1"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("PORTAL_GATEWAY__DOMAIN__X", "domain: is not a section, cannot apply PORTAL_GATEWAY__DOMAIN__X"),
        (
            "PORTAL_GATEWAY__HELP_CENTER__SECTIONS__X",
            "help_center.sections: is not a section, cannot apply PORTAL_GATEWAY__HELP_CENTER__SECTIONS__X",
        ),
        (
            "PORTAL_GATEWAY__UPSTREAM____URL",
            "PORTAL_GATEWAY__UPSTREAM____URL: empty key in environment override",
        ),
    ],
)
def test_unusable_env_override_fails_clearly(tmp_path: Path, name: str, message: str) -> None:
    overrides = {"help_center": {"sections": ["articles"]}}
    assert str(config_error(tmp_path, overrides, environ={name: "1"})) == message


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("PORTAL_GATEWAY__HELP_CENTER__SECTIONS__X", "help_center.sections"),
        ("PORTAL_GATEWAY__PORTAL__ACCESS__RULES__X", "portal.access.rules"),
    ],
)
def test_env_override_below_a_key_the_file_lacks_names_the_variable(tmp_path: Path, name: str, path: str) -> None:
    # The file has no help_center / portal section: only the override can have made the key invalid.
    message = str(config_error(tmp_path, environ={name: "1"}))
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert name in message, message


def test_explicit_environ_replaces_the_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTAL_GATEWAY__PORTAL__PAGE_SIZE", "7")
    assert load(tmp_path, environ={}).portal.page_size == 25
    path = write(tmp_path / "gateway.yaml", BASE)
    assert load_config(path).portal.page_size == 7


def test_environ_wins_over_env_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "gateway.yaml", deep_merge(BASE, {"identity": {"jwt": {"secrets": ["env:SIGNING"]}}}))
    config = load_config(path, environ={"SIGNING": "real"}, env_defaults={"SIGNING": "dev"})
    assert config.identity.jwt.secrets[0].get_secret_value() == "real"
    config = load_config(path, environ={}, env_defaults={"SIGNING": "dev"})
    assert config.identity.jwt.secrets[0].get_secret_value() == "dev"


# --- secrets ----------------------------------------------------------------------------------


def test_secret_references_resolve(tmp_path: Path) -> None:
    secret_file = tmp_path / "jwt-secret"
    secret_file.write_text(f"  {SECRET_CANARY}-file\n")
    config = load(
        tmp_path,
        {
            "identity": {"jwt": {"secrets": [f"file:{secret_file}", "env:OLD_SECRET", "inline-secret"]}},
            "admin": {"token": "env:ADMIN"},
        },
        environ={"OLD_SECRET": f"{SECRET_CANARY}-env", "ADMIN": f"{SECRET_CANARY}-admin"},
    )
    assert [secret.get_secret_value() for secret in config.identity.jwt.secrets] == [
        f"{SECRET_CANARY}-file",
        f"{SECRET_CANARY}-env",
        "inline-secret",
    ]
    # The first secret signs (token command, dev login, CSRF key); the rest only verify during a rotation.
    assert config.identity.jwt.signing_secret == f"{SECRET_CANARY}-file"
    assert config.admin.token is not None
    assert config.admin.token.get_secret_value() == f"{SECRET_CANARY}-admin"


def test_secrets_never_show_in_repr_or_str(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {"identity": {"jwt": {"secrets": ["env:JWT"]}}, "admin": {"token": "env:ADMIN"}},
        environ={"JWT": f"{SECRET_CANARY}-jwt", "ADMIN": f"{SECRET_CANARY}-admin"},
    )
    shown = [
        repr(config),
        str(config),
        f"{config}",
        repr(config.identity),
        str(config.identity.jwt),
        repr(config.admin),
        config.model_dump_json(),
        str(config.model_dump(mode="json")),
        str(config.model_dump()),
    ]
    for text in shown:
        assert SECRET_CANARY not in text
    assert config.identity.jwt.secrets[0].get_secret_value() == f"{SECRET_CANARY}-jwt"


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load(tmp_path)
    with pytest.raises(ValidationError):
        config.domain = "evil.example.net"  # type: ignore[misc]


# --- derived properties -----------------------------------------------------------------------


def test_allowed_cookies(tmp_path: Path) -> None:
    assert load(tmp_path).allowed_cookies == frozenset({"intercom-session-ws1a2b3c", "intercom-device-id-ws1a2b3c"})
    assert load(tmp_path, {"workspace_id": "abc9"}).allowed_cookies == frozenset(
        {"intercom-session-abc9", "intercom-device-id-abc9"}
    )


def test_cookie_forwarding_disabled_allows_no_cookie(tmp_path: Path) -> None:
    assert load(tmp_path, {"cookie_forwarding": {"enabled": False}}).allowed_cookies == frozenset()


@pytest.mark.parametrize(
    ("domain", "explicit", "expected"),
    [
        ("help.example.com", None, "example.com"),
        ("a.b.example.com", None, "b.example.com"),
        ("example.com", None, "example.com"),
        ("localhost", None, "localhost"),
        ("help.example.com", "help.example.com", "help.example.com"),
        ("support.help.example.com", "example.com", "example.com"),
    ],
)
def test_cookie_domain(tmp_path: Path, domain: str, explicit: str | None, expected: str) -> None:
    overrides: dict[str, Any] = {"domain": domain}
    if explicit is not None:
        overrides["cookie_forwarding"] = {"cookie_domain": explicit}
    assert load(tmp_path, overrides).cookie_domain == expected


# --- the command line -------------------------------------------------------------------------

CONFIG_ERROR_LINE = re.compile(r"^portal-gateway: config error: (?P<path>[a-z_][a-z0-9_.\[\]]*): (?P<reason>\S.*)$")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m gateway ARGS`` in ``cwd`` with no gateway settings inherited from this process."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PORTAL_GATEWAY__") and key not in ("MESSENGER_API_SECRET", "PORTAL_ADMIN_TOKEN")
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("command", ["serve", "check"])
def test_cli_config_error_exit_2_one_line_per_key(tmp_path: Path, command: str) -> None:
    bad = write(
        tmp_path / "bad.yaml",
        deep_merge(
            BASE,
            {
                "bogus": 1,
                "upstream": {"url": "ftp://example.com"},
                "identity": {"jwt": {"secrets": []}},
                "portal": {"page_size": 0},
            },
        ),
    )
    result = run_cli(command, "-c", str(bad), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    matches = [CONFIG_ERROR_LINE.match(line) for line in lines]
    assert all(matches), lines
    assert sorted(match["path"] for match in matches if match) == [
        "bogus",
        "identity.jwt.secrets",
        "portal.page_size",
        "upstream.url",
    ]
    assert "portal-gateway: config error: identity.jwt.secrets: at least one secret is required" in lines


def test_cli_yaml_error_exit_2(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "domain: [unclosed\n")
    result = run_cli("check", "-c", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert re.fullmatch(
        rf"portal-gateway: config error: {re.escape(str(bad))}:\d+:\d+: not valid YAML \(.*\)\n", result.stderr
    )


def good_config(cert_files: CertFiles, tmp_path: Path) -> dict[str, Any]:
    """The shared test config, with distinct listener ports as a deployment has them."""
    return deep_merge(
        config_dict(cert_files, tmp_path, "http://127.0.0.1:9"),
        {"listen": {"https": "127.0.0.1:8443", "http": "127.0.0.1:8080"}},
    )


def check_lines(tmp_path: Path, config: dict[str, Any]) -> tuple[int, list[str]]:
    result = run_cli("check", "-c", str(write(tmp_path / "good.yaml", config)), cwd=tmp_path)
    assert "Traceback" not in result.stderr
    assert result.stderr == ""
    return result.returncode, result.stdout.splitlines()


def test_check_passes_with_a_valid_certificate(cert_files: CertFiles, tmp_path: Path) -> None:
    code, lines = check_lines(tmp_path, good_config(cert_files, tmp_path))
    assert code == 0, lines
    assert lines
    assert all(line.startswith("PASS") for line in lines), lines
    names = [line.removeprefix("PASS").strip().partition(":")[0] for line in lines]
    assert {"TLS certificate", "HTTPS listener", "Cookie forwarding"} <= set(names)
    assert any(DOMAIN in line for line in lines if "TLS certificate" in line)


def write_leaf(leaf: trustme.LeafCert, folder: Path, stem: str) -> tuple[Path, Path]:
    cert, key = folder / f"{stem}-cert.pem", folder / f"{stem}-key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def _naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)


def wrong_name(ca: trustme.CA, tmp_path: Path, cert_files: CertFiles) -> dict[str, Any]:
    cert, key = write_leaf(ca.issue_cert("other.example.org"), tmp_path, "other")
    return {"tls": {"cert": str(cert), "key": str(key)}}


def expired(ca: trustme.CA, tmp_path: Path, cert_files: CertFiles) -> dict[str, Any]:
    now = datetime.now(UTC)
    leaf = ca.issue_cert(DOMAIN, not_before=_naive(now - timedelta(days=30)), not_after=_naive(now - timedelta(days=1)))
    cert, key = write_leaf(leaf, tmp_path, "expired")
    return {"tls": {"cert": str(cert), "key": str(key)}}


def not_yet_valid(ca: trustme.CA, tmp_path: Path, cert_files: CertFiles) -> dict[str, Any]:
    now = datetime.now(UTC)
    leaf = ca.issue_cert(
        DOMAIN, not_before=_naive(now + timedelta(days=10)), not_after=_naive(now + timedelta(days=40))
    )
    cert, key = write_leaf(leaf, tmp_path, "future")
    return {"tls": {"cert": str(cert), "key": str(key)}}


def key_mismatch(ca: trustme.CA, tmp_path: Path, cert_files: CertFiles) -> dict[str, Any]:
    _, other_key = write_leaf(ca.issue_cert(DOMAIN), tmp_path, "other")
    return {"tls": {"cert": str(cert_files.cert), "key": str(other_key)}}


def missing_files(ca: trustme.CA, tmp_path: Path, cert_files: CertFiles) -> dict[str, Any]:
    return {"tls": {"cert": str(tmp_path / "missing-cert.pem"), "key": str(tmp_path / "missing-key.pem")}}


def not_pem(ca: trustme.CA, tmp_path: Path, cert_files: CertFiles) -> dict[str, Any]:
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    return {"tls": {"cert": str(tmp_path / "garbage.pem"), "key": str(cert_files.key)}}


def cookies_off(ca: trustme.CA, tmp_path: Path, cert_files: CertFiles) -> dict[str, Any]:
    return {"cookie_forwarding": {"enabled": False}}


def identity_not_enforced(ca: trustme.CA, tmp_path: Path, cert_files: CertFiles) -> dict[str, Any]:
    return {"identity": {"enforce": False}}


def company_updates_allowed(ca: trustme.CA, tmp_path: Path, cert_files: CertFiles) -> dict[str, Any]:
    return {"messenger": {"prevent_company_updates": False}}


Variant = Callable[[trustme.CA, Path, CertFiles], dict[str, Any]]
# What a FAIL line tells the operator to do: one of these words, outside the file paths it names.
ACTION = re.compile(
    r"\b(install|issue|renew|replace|set|use|give|enable|turn on|wait|check|fix|correct|point|generate|obtain|get"
    r"|configure|add|remove|change)\b",
    re.IGNORECASE,
)


@pytest.mark.parametrize(
    ("variant", "failing", "says"),
    [
        pytest.param(wrong_name, "TLS certificate", "does not name help.example.com", id="wrong-name"),
        pytest.param(expired, "TLS certificate", "expired on", id="expired"),
        pytest.param(not_yet_valid, "TLS certificate", "not valid before", id="not-yet-valid"),
        pytest.param(key_mismatch, "TLS certificate", "is not the key of", id="key-mismatch"),
        pytest.param(missing_files, "TLS certificate", "missing-cert.pem", id="missing-files"),
        pytest.param(not_pem, "TLS certificate", "garbage.pem", id="not-pem"),
        pytest.param(cookies_off, "Cookie forwarding", "cookie_forwarding.enabled", id="cookie-forwarding-off"),
        # DESIGN.md, Prerequisites: identity verification enforced; Messenger company updates prevented.
        pytest.param(identity_not_enforced, "Identity", "identity.enforce", id="identity-not-enforced"),
        pytest.param(
            company_updates_allowed,
            "Messenger",
            "messenger.prevent_company_updates",
            id="company-updates-allowed",
        ),
    ],
)
def test_check_fails_and_says_what_to_do(
    ca: trustme.CA, cert_files: CertFiles, tmp_path: Path, variant: Variant, failing: str, says: str
) -> None:
    config = deep_merge(good_config(cert_files, tmp_path), variant(ca, tmp_path, cert_files))
    code, lines = check_lines(tmp_path, config)
    assert code == 1, lines
    failed = [line for line in lines if line.startswith("FAIL")]
    assert len(failed) == 1, lines
    line = failed[0]
    assert line.removeprefix("FAIL").strip().startswith(failing), line
    assert says in line, line
    assert all(other.startswith("PASS") for other in lines if other != line), lines
    detail = re.sub(r"\S*/\S*", "", line.partition(":")[2])
    assert ACTION.search(detail), f"the FAIL line does not say what to do: {line}"


def test_serve_refuses_to_start_when_a_prerequisite_fails(cert_files: CertFiles, tmp_path: Path) -> None:
    config = deep_merge(good_config(cert_files, tmp_path), {"cookie_forwarding": {"enabled": False}})
    result = run_cli("serve", "-c", str(write(tmp_path / "gateway.yaml", config)), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1, result.stderr
    assert failed[0].startswith("FAIL  Cookie forwarding: off; set cookie_forwarding.enabled: true")


@pytest.mark.parametrize(
    ("colour", "ratio"),
    [("#ffffff", 1.0), ("#000000", 21.0), ("#0000ff", 8.59), ("#767676", 4.54), ("#ffd700", 1.4)],
)
def test_contrast_with_white_follows_wcag(colour: str, ratio: float) -> None:
    """The published WCAG 2 ratios of white on these colours (white, black, pure blue, the lightest AA grey)."""
    assert contrast_with_white(colour) == pytest.approx(ratio, abs=0.05)


def test_a_readable_brand_colour_is_kept_in_lower_case(tmp_path: Path) -> None:
    config = load(tmp_path, {"help_center": {"brand": {"primary_color": "#7B1FA2", "name": "Acme Support"}}})
    assert (config.help_center.brand.primary_color, config.help_center.brand.name) == ("#7b1fa2", "Acme Support")


@pytest.mark.parametrize(
    ("intercom", "base_url"),
    [
        ({}, "https://api.intercom.io"),
        ({"region": "eu"}, "https://api.eu.intercom.io"),
        ({"region": "au"}, "https://api.au.intercom.io"),
        ({"region": "eu", "api_url": "http://127.0.0.1:9/"}, "http://127.0.0.1:9/"),
    ],
)
def test_the_intercom_base_url_follows_the_region_unless_given(
    tmp_path: Path, intercom: dict[str, Any], base_url: str
) -> None:
    config = load(tmp_path, {"intercom": intercom})
    assert config.intercom.base_url == URL(base_url)
    assert config.intercom.enabled is False


CONNECTOR_ON = {"enabled": True, "access_token": "t", "admin_id": "1"}


@pytest.mark.parametrize(
    ("overrides", "boots"),
    [
        ({}, False),  # the demo and imported stores: their conversations are not the workspace's
        ({"intercom": CONNECTOR_ON}, True),
        ({"intercom": CONNECTOR_ON, "messenger": {"boot": {"enabled": False}}}, False),
        ({"messenger": {"boot": {"enabled": True}}}, True),  # tickets synced by the operator's own means
    ],
)
def test_the_messenger_boots_with_the_connector_unless_told(
    tmp_path: Path, overrides: dict[str, Any], boots: bool
) -> None:
    assert load(tmp_path, overrides).messenger_boots is boots


def test_the_messenger_script_is_intercoms_for_the_workspace_unless_given(tmp_path: Path) -> None:
    assert load(tmp_path).messenger_script_url == URL("https://widget.intercom.io/widget/ws1a2b3c")
    mirror = {"messenger": {"boot": {"script_url": "https://127.0.0.1:8443/widget.js"}}}
    assert load(tmp_path, mirror).messenger_script_url == URL("https://127.0.0.1:8443/widget.js")


@pytest.mark.parametrize("ttl", [0, 59, 3601])
def test_a_messenger_token_lifetime_out_of_bounds_is_refused(tmp_path: Path, ttl: int) -> None:
    error = config_error(tmp_path, {"messenger": {"boot": {"token_ttl": ttl}}})
    assert "messenger.boot.token_ttl" in str(error)


def test_pass_headers_are_kept_lower_case(tmp_path: Path) -> None:
    """upstream.pass_headers: names compared as the header model compares them, whatever case the file uses."""
    config = load(tmp_path, {"upstream": {"pass_headers": ["X-Tenant", "x-request-start"]}})
    assert config.upstream.pass_headers == frozenset({"x-tenant", "x-request-start"})
