"""gateway/policy/messengerboot.py: the Messenger's CSP sources for a region, and the boot the ticket page hands it.

The oracle is Intercom's help article "Using Intercom with Content Security Policy" written out here by hand:
every source it lists, and the ones it names per region (which it asks to allow only in the workspace's region).
"""

from __future__ import annotations

from typing import Any, get_args

import jwt
import pytest
from yarl import URL

from gateway.config import GatewayConfig, IntercomRegion
from gateway.policy.identity import Identity
from gateway.policy.messengerboot import boot, messenger_sources
from tests.conftest import SECRET, WORKSPACE

REGIONS: tuple[IntercomRegion, ...] = get_args(IntercomRegion)
INTERCOM_SCRIPTS = ["https://app.intercom.io", "https://widget.intercom.io", "https://js.intercomcdn.com"]
# Hosts the article lists that belong to one region only.
REGIONAL_HOSTS: dict[IntercomRegion, set[str]] = {
    "us": {
        "https://api.intercom.io",
        "https://api-iam.intercom.io",
        "https://nexus-websocket-a.intercom.io",
        "wss://nexus-websocket-b.intercom.io",
        "https://uploads.intercomcdn.com",
        "https://downloads.intercomcdn.com",
        "https://static.intercomassets.com",
        "https://messenger-apps.intercom.io",
        "https://*.intercom-attachments-7.com",
    },
    "eu": {
        "https://api.eu.intercom.io",
        "https://api-iam.eu.intercom.io",
        "wss://nexus-europe-websocket.intercom.io",
        "https://uploads.intercomcdn.eu",
        "https://uploads.eu.intercomcdn.com",
        "https://downloads.intercomcdn.eu",
        "https://static.intercomassets.eu",
        "https://messenger-apps.eu.intercom.io",
        "https://*.intercom-attachments.eu",
    },
    "au": {
        "https://api.au.intercom.io",
        "https://api-iam.au.intercom.io",
        "wss://nexus-australia-websocket.intercom.io",
        "https://uploads.au.intercomcdn.com",
        "https://downloads.au.intercomcdn.com",
        "https://static.au.intercomassets.com",
        "https://messenger-apps.au.intercom.io",
        "https://*.au.intercom-attachments.com",
    },
}
# Sources the article lists for every workspace, by directive (child-src: the frames the Messenger opens).
EVERY_REGION = {
    "connect-src": {"https://via.intercom.io", "https://api-ping.intercom.io", "wss://*.intercom-messenger.com"},
    "child-src": {"https://intercom-sheets.com", "https://www.youtube.com", "https://fast.wistia.net"},
    "font-src": {"https://js.intercomcdn.com", "https://fonts.intercomcdn.com"},
    "form-action": {"https://intercom.help"},
    "img-src": {"blob:", "data:", "https://gifs.intercomcdn.com", "https://uploads.intercomusercontent.com"},
    "media-src": {"https://js.intercomcdn.com"},
    "style-src": {"'unsafe-inline'"},
}
DEFAULT_SCRIPT = URL(f"https://widget.intercom.io/widget/{WORKSPACE}")


def every_source(sources: dict[str, tuple[str, ...]]) -> set[str]:
    return {source for values in sources.values() for source in values}


@pytest.mark.parametrize("region", REGIONS)
def test_the_sources_are_the_articles_for_the_region_and_no_other_regions(region: IntercomRegion) -> None:
    sources = messenger_sources(region, DEFAULT_SCRIPT)
    assert list(sources["script-src"]) == INTERCOM_SCRIPTS
    for directive, expected in EVERY_REGION.items():
        assert expected <= set(sources[directive]), directive
    found = every_source(sources)
    assert REGIONAL_HOSTS[region] <= found
    for other in REGIONS:
        if other != region:
            assert found & REGIONAL_HOSTS[other] == set(), f"{region} allows {other}'s hosts"
    # Nothing the Messenger does not need: no wildcard scheme, no script keyword.
    assert not {"https:", "http:", "*", "'unsafe-eval'"} & found
    assert "'unsafe-inline'" not in sources["script-src"]


def test_a_script_url_of_its_own_adds_exactly_its_origin_to_script_src() -> None:
    sources = messenger_sources("eu", URL("https://127.0.0.1:4443/fake/widget.js?v=1"))
    assert list(sources["script-src"]) == [*INTERCOM_SCRIPTS, "https://127.0.0.1:4443"]
    assert sources == {**messenger_sources("eu", DEFAULT_SCRIPT), "script-src": sources["script-src"]}


@pytest.mark.parametrize("email", ["ann@acme.example.com", None])
def test_the_boot_carries_a_short_token_of_the_visitor_signed_with_the_messenger_secret(
    make_config: Any, email: str | None
) -> None:
    config: GatewayConfig = make_config(messenger={"boot": {"token_ttl": 300}})
    now = 1_700_000_000.0
    identity = Identity(user_id="u-ann", method="jwt", email=email, claims={"companies": ["acme"]})
    settings = boot(config, identity, 4321, URL("https://help.example.com"), now)
    claims = jwt.decode(
        settings.intercom_user_jwt, SECRET, algorithms=["HS256"], options={"verify_exp": False, "require": ["exp"]}
    )
    # Only what identifies the visitor: a company claim would let the Messenger change their memberships.
    assert claims == {"user_id": "u-ann", "iat": int(now), "exp": int(now) + 300, **({"email": email} if email else {})}
    assert (settings.app_id, settings.api_base, settings.token_ttl) == (WORKSPACE, "https://help.example.com", 300)
    assert (settings.conversation_id, settings.script_url) == (4321, str(DEFAULT_SCRIPT))
