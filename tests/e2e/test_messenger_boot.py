""" "Send us a message" boots the Messenger, in Debian's chromium, against a fake Messenger script on loopback.

The fake stands where ``https://widget.intercom.io/widget/<app_id>`` would (``messenger.boot.script_url``
points at a second TLS server on 127.0.0.1, with the test certificate the browser trusts by its pin). Like
Intercom's script it takes over the ``Intercom`` stub's queue; it records every call, and on ``boot`` it sends
a ping with the token to ``api_base`` the way the Messenger does, so the call crosses the gateway's Messenger
proxy. Ben first opens a ticket he is not in (the Join form: no Messenger, the strict policy), joins, and then
the button boots the Messenger with a token the test verifies with the secret and asks for that conversation.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import jwt
import pytest
from aiohttp import web
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, expect
from yarl import URL

from gateway.edge.secure import CONTENT_SECURITY_POLICY
from gateway.policy.messengerboot import messenger_sources
from gateway.run.tls import server_context
from tests.conftest import SECRET, WORKSPACE, CertFiles, Gateway, RecordingUpstream, StartGateway
from tests.e2e.test_browser import ARTIFACTS, BEN_ID, CHROMIUM, DESKTOP, EVERYONE_IN, Flow, browser, sign_in

__all__ = ["browser"]  # the fixture, shared with the flow tests

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's chromium is not installed at {CHROMIUM}")

TOKEN_TTL = 300
BLOCKING = ("serious", "critical")
# Intercom's script, as far as the page can tell: it runs the stub's queue, then answers calls itself.
FAKE_MESSENGER_JS = """
(function () {
  var queued = (window.Intercom && window.Intercom.q) || [];
  var fake = {calls: [], pings: []};
  window.__fakeMessenger = fake;
  window.Intercom = function (name, value) {
    fake.calls.push([name, value === undefined ? null : value]);
    if (name === 'boot') {
      var body = 'app_id=' + encodeURIComponent(value.app_id) + '&user_data=' +
        encodeURIComponent(JSON.stringify({intercom_user_jwt: value.intercom_user_jwt}));
      fetch(value.api_base + '/messenger/web/ping', {
        method: 'POST', body: body, headers: {'Content-Type': 'application/x-www-form-urlencoded'},
      }).then(function (response) { fake.pings.push([response.status, response.headers.get('X-Request-Id')]); });
    }
  };
  for (var i = 0; i < queued.length; i++) { window.Intercom.apply(null, queued[i]); }
})();
"""


class FakeMessenger:
    """The loopback server of the Messenger's script; ``fetched`` lists the paths asked for."""

    def __init__(self) -> None:
        self.fetched: list[str] = []
        self.url = URL()

    async def script(self, request: web.Request) -> web.Response:
        self.fetched.append(request.path)
        return web.Response(text=FAKE_MESSENGER_JS, content_type="text/javascript")


@pytest.fixture
async def fake_messenger(cert_files: CertFiles) -> AsyncIterator[FakeMessenger]:
    fake = FakeMessenger()
    app = web.Application()
    app.router.add_get("/widget/{app_id}", fake.script)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(cert_files.cert, cert_files.key))
    await site.start()
    port = runner.addresses[0][1]
    fake.url = URL.build(scheme="https", host="127.0.0.1", port=port, path=f"/widget/{WORKSPACE}")
    yield fake
    await runner.cleanup()


def directives(policy: str) -> dict[str, list[str]]:
    """A Content-Security-Policy, directive by directive."""
    return {name: sources for name, *sources in (part.split() for part in policy.split(";"))}


def expected_policy(script_url: URL) -> dict[str, list[str]]:
    """The gateway's own policy, each directive extended by the EU Messenger's sources (checked against
    Intercom's article in tests/policy/test_messengerboot.py); a new directive starts from default-src."""
    policy = directives(CONTENT_SECURITY_POLICY)
    for name, sources in messenger_sources("eu", script_url).items():
        kept = policy.setdefault(name, ["'self'"])
        kept += [source for source in sources if source not in kept]
    return policy


async def booting_gateway(start_gateway: StartGateway, upstream: RecordingUpstream, script_url: URL) -> Gateway:
    return await start_gateway(
        store={"seed_demo": True},
        portal={"access": EVERYONE_IN},
        intercom={"region": "eu"},
        messenger={
            "upstream": str(upstream.url),
            "boot": {"enabled": True, "script_url": str(script_url), "token_ttl": TOKEN_TTL},
        },
    )


async def ticket_ben_is_not_in(flow: Flow) -> str:
    listed = await flow.fetch_json("/api/v1/tickets?scope=all")
    for ticket in listed["tickets"]:
        detail = await flow.fetch_json(f"/api/v1/tickets/{ticket['ticket_id']}")
        if not detail["participant"]:
            return str(ticket["ticket_id"])
    raise AssertionError("Ben takes part in every ticket on the first page")


async def test_send_us_a_message_boots_the_messenger_and_opens_the_conversation(
    start_gateway: StartGateway,
    browser: Browser,
    upstream: RecordingUpstream,
    fake_messenger: FakeMessenger,
) -> None:
    gateway = await booting_gateway(start_gateway, upstream, fake_messenger.url)
    folder = ARTIFACTS.parent / "messenger"
    folder.mkdir(parents=True, exist_ok=True)
    page = await sign_in(gateway, browser, DESKTOP)
    flow = Flow(page, DESKTOP, folder)
    await page.goto("/")
    ticket_id = await ticket_ben_is_not_in(flow)

    # Not in the conversation: the Join form, no Messenger, and the policy every other page has.
    response = await page.goto(f"/tickets/{ticket_id}")
    assert response is not None
    assert (await response.all_headers())["content-security-policy"] == CONTENT_SECURITY_POLICY
    await expect(page.get_by_role("link", name="Send us a message")).to_have_count(0)
    await expect(page.locator('script[src$="/messenger.js"]')).to_have_count(0)
    await flow.checkpoint("not-in-the-conversation")

    # Joined: the button carries the boot, and the page's policy lets exactly the region's Messenger in.
    async with page.expect_response(lambda answer: "joined=1" in answer.url) as joined:
        await page.get_by_role("button", name="Join conversation").click()
    headers = await (await joined.value).all_headers()
    assert directives(headers["content-security-policy"]) == expected_policy(fake_messenger.url)
    button = page.get_by_role("link", name="Send us a message")
    conversation = (await button.get_attribute("href") or "").removeprefix("/conversations/")
    assert conversation.isdigit(), await button.get_attribute("href")
    assert fake_messenger.fetched == [], "the Messenger's script loaded before the visitor asked for it"
    await flow.checkpoint("joined")

    await button.click()
    await page.wait_for_function("() => window.__fakeMessenger && window.__fakeMessenger.pings.length === 1")
    fake: dict[str, Any] = await page.evaluate("() => window.__fakeMessenger")
    assert page.url.endswith(f"/tickets/{ticket_id}?joined=1"), "the click left the page"
    assert fake_messenger.fetched == [f"/widget/{WORKSPACE}"]
    assert [name for name, _ in fake["calls"]] == ["boot", "showConversation"]
    settings, shown = fake["calls"][0][1], fake["calls"][1][1]
    assert shown == conversation
    token = settings.pop("intercom_user_jwt")
    assert settings == {"app_id": WORKSPACE, "api_base": str(gateway.url)}
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"require": ["exp", "iat", "user_id"]})
    assert claims["user_id"] == BEN_ID
    assert claims["exp"] - claims["iat"] == TOKEN_TTL
    assert claims["exp"] > time.time()

    # The Messenger's ping came back through the gateway's proxy (the company-update policy's), token and all,
    # and the audit log of the page and the ping holds no token.
    ((status, ping_id),) = fake["pings"]
    assert status == 200
    (ping,) = [seen for seen in upstream.requests if seen.path == "/messenger/web/ping"]
    assert json.loads(dict(parse_qsl(ping.body.decode()))["user_data"]) == {"intercom_user_jwt": token}
    assert (await gateway.audit_for(ping_id))["path"] == "/messenger/web/ping"
    audit = json.dumps(gateway.audit_records())
    assert token not in audit
    assert token.split(".")[1] not in audit  # not even the claims

    # A second click opens the conversation again without booting twice.
    await button.click()
    await page.wait_for_function("() => window.__fakeMessenger.calls.length === 3")
    assert [name for name, _ in await page.evaluate("() => window.__fakeMessenger.calls")][2:] == ["showConversation"]
    await flow.checkpoint("messenger-booted")
    results = await Axe().run(page)
    blocking = [violation["id"] for violation in results.response["violations"] if violation["impact"] in BLOCKING]
    assert blocking == []
    await page.context.close()


@pytest.mark.parametrize("javascript", [False, True], ids=["without-javascript", "token-expired"])
async def test_the_button_follows_its_link_without_javascript_or_once_the_token_expired(
    start_gateway: StartGateway,
    browser: Browser,
    upstream: RecordingUpstream,
    fake_messenger: FakeMessenger,
    javascript: bool,
) -> None:
    gateway = await booting_gateway(start_gateway, upstream, fake_messenger.url)
    page = await sign_in(gateway, browser, DESKTOP, javascript=javascript)
    if javascript:
        await page.clock.install()
    await page.goto("/tickets/1014")  # a thread of support and Ben
    button = page.get_by_role("link", name="Send us a message")
    href = await button.get_attribute("href")
    assert href is not None
    assert href.startswith("/conversations/")
    if javascript:
        await page.clock.fast_forward((TOKEN_TTL + 1) * 1000)
    await button.click()
    await page.wait_for_url(f"**{href}")
    assert fake_messenger.fetched == []
    assert [seen.path for seen in upstream.requests][-1:] == [href]
    await page.context.close()
