"""What the ticket page hands Intercom's Messenger, and what its Content-Security-Policy lets the Messenger load.

The "Send us a message" button boots the Messenger (``Intercom('boot', settings)``) for the signed-in visitor
with an ``intercom_user_jwt`` the gateway signs with the Messenger secret, ``api_base`` at the gateway's own
Messenger proxy, and then opens the ticket's conversation (``Intercom('showConversation', id)``).

The sources are those of Intercom's help article "Using Intercom with Content Security Policy" (source
allowlisting): the ones every workspace needs, and the regional ones only for the workspace's own region, as
the article asks ("add the regional CDN domains only for your workspace's hosting region").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from yarl import URL

from gateway.config import GatewayConfig, IntercomRegion
from gateway.policy.identity import Identity, sign_token

Sources = Mapping[str, tuple[str, ...]]

_EVERY_REGION: Sources = {
    "script-src": ("https://app.intercom.io", "https://widget.intercom.io", "https://js.intercomcdn.com"),
    "connect-src": (
        "https://via.intercom.io",
        "https://api-ping.intercom.io",
        "https://*.intercom-messenger.com",
        "wss://*.intercom-messenger.com",
        "https://uploads.intercomusercontent.com",
    ),
    "child-src": (
        "https://intercom-sheets.com",
        "https://www.intercom-reporting.com",
        "https://www.youtube.com",
        "https://player.vimeo.com",
        "https://fast.wistia.net",
    ),
    "font-src": ("https://js.intercomcdn.com", "https://fonts.intercomcdn.com"),
    "form-action": ("https://intercom.help",),
    "media-src": ("https://js.intercomcdn.com",),
    "img-src": (
        "blob:",
        "data:",
        "https://js.intercomcdn.com",
        "https://uploads.intercomusercontent.com",
        "https://gifs.intercomcdn.com",
        "https://video-messages.intercomcdn.com",
    ),
    # SECURITY: the Messenger styles itself with inline styles (the article asks for this); scripts stay limited
    # to the gateway and Intercom's three hosts, so an injected style can restyle the page but never run code.
    "style-src": ("'unsafe-inline'",),
}
_US_ATTACHMENTS = tuple(f"https://*.intercom-attachments-{number}.com" for number in range(1, 10))
_REGIONAL: Mapping[IntercomRegion, Sources] = {
    "us": {
        "connect-src": (
            "https://api.intercom.io",
            "https://api-iam.intercom.io",
            "https://nexus-websocket-a.intercom.io",
            "wss://nexus-websocket-a.intercom.io",
            "https://nexus-websocket-b.intercom.io",
            "wss://nexus-websocket-b.intercom.io",
            "https://uploads.intercomcdn.com",
        ),
        "form-action": ("https://api-iam.intercom.io",),
        "media-src": ("https://downloads.intercomcdn.com",),
        "img-src": (
            "https://downloads.intercomcdn.com",
            "https://static.intercomassets.com",
            "https://messenger-apps.intercom.io",
            *_US_ATTACHMENTS,
        ),
    },
    "eu": {
        "connect-src": (
            "https://api.eu.intercom.io",
            "https://api-iam.eu.intercom.io",
            "https://nexus-europe-websocket.intercom.io",
            "wss://nexus-europe-websocket.intercom.io",
            "https://uploads.intercomcdn.eu",
            "https://uploads.eu.intercomcdn.com",
        ),
        "form-action": ("https://api-iam.eu.intercom.io",),
        "media-src": ("https://downloads.intercomcdn.eu",),
        "img-src": (
            "https://downloads.intercomcdn.eu",
            "https://static.intercomassets.eu",
            "https://messenger-apps.eu.intercom.io",
            "https://*.intercom-attachments.eu",
        ),
    },
    "au": {
        "connect-src": (
            "https://api.au.intercom.io",
            "https://api-iam.au.intercom.io",
            "https://nexus-australia-websocket.intercom.io",
            "wss://nexus-australia-websocket.intercom.io",
            "https://uploads.au.intercomcdn.com",
        ),
        "form-action": ("https://api-iam.au.intercom.io",),
        "media-src": ("https://downloads.au.intercomcdn.com",),
        "img-src": (
            "https://downloads.au.intercomcdn.com",
            "https://static.au.intercomassets.com",
            "https://messenger-apps.au.intercom.io",
            "https://*.au.intercom-attachments.com",
        ),
    },
}


def messenger_sources(region: IntercomRegion, script_url: URL) -> dict[str, tuple[str, ...]]:
    """The sources the Messenger needs in ``region``, by directive, and the origin its script is loaded from."""
    regional = _REGIONAL[region]
    sources = {name: every + regional.get(name, ()) for name, every in _EVERY_REGION.items()}
    script_origin = str(script_url.origin())
    if script_origin not in sources["script-src"]:
        # A script_url of its own (a mirror, or the tests' loopback fake) is the one more host scripts may come from.
        sources["script-src"] += (script_origin,)
    return sources


@dataclass(frozen=True)
class Boot:
    """What the page's script needs: ``Intercom('boot')``'s settings, the conversation to show, the script's URL."""

    app_id: str
    api_base: str
    intercom_user_jwt: str
    token_ttl: int
    conversation_id: int
    script_url: str


def boot(config: GatewayConfig, identity: Identity, conversation_id: int, api_base: URL, now: float) -> Boot:
    """The Messenger boot for ``identity`` on a ticket whose conversation is ``conversation_id``, signed at ``now``."""
    ttl = config.messenger.boot.token_ttl
    # Signed with the Messenger secret (Intercom verifies it, and so does the gateway's Messenger proxy); the
    # claims are the verified identity's own, with a short expiry, as Intercom's "Messenger security" asks.
    token = sign_token(
        config.identity.jwt.signing_secret, user_id=identity.user_id, now=now, ttl=ttl, email=identity.email
    )
    return Boot(
        app_id=config.workspace_id,
        api_base=str(api_base),
        intercom_user_jwt=token,
        token_ttl=ttl,
        conversation_id=conversation_id,
        script_url=str(config.messenger_script_url),
    )
