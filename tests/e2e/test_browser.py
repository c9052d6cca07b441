"""The tickets portal end to end in a real browser: Playwright driving Debian's chromium.

Ben (``u-ben``, member of Acme and Globex in the demo store) signs in through the
JWT cookie, sees the home card, opens the portal, switches tabs, filters by
state, searches a word only in public replies (found, highlighted in the
Preview column) and a word only in internal notes (not found), opens a ticket
someone else raised, joins its conversation and finds it in his tickets space.
The same flow runs at a desktop size and at 375x667. Every page on the way is
checked for what a person (or a screen reader) needs: no horizontal scroll, a
label for every form control, no inline script, no console errors; and the
Content-Security-Policy is shown to make the browser refuse an inline script.

Playwright never downloads a browser here: it drives ``/usr/bin/chromium``,
which ``make test`` installs from Debian's packages when it is missing.
Screenshots of each step go to ``test-artifacts/browser/<viewport>/``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.async_api import Browser, ConsoleMessage, Locator, Page, ViewportSize, async_playwright, expect

from gateway.policy.identity import sign_token
from gateway.store.demo import INTERNAL_WORD, PEOPLE, PUBLIC_WORD
from tests.conftest import SECRET, CertFiles, Gateway, StartGateway

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
# How this machine runs chromium: headless, and no background connections to a network it cannot reach.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
EVERYONE_IN: dict[str, Any] = {"match": "any", "rules": [{"attribute": "person.user_id", "op": "exists"}]}
BEN_ID = "u-ben"
BEN = next(name for user_id, name, _, _ in PEOPLE if user_id == BEN_ID)
BEN_EMAIL = next(email for user_id, _, email, _ in PEOPLE if user_id == BEN_ID)
CHO = next(name for user_id, name, _, _ in PEOPLE if user_id == "u-cho")  # at Globex, one of Ben's companies
STATE_LABEL = "In progress"  # two internal states share this customer-facing label
TIMEOUT_MS = 10_000
COUNT = re.compile(r"^(\d+) tickets?\b")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"Debian's chromium is not installed at {CHROMIUM}: `make test` installs it "
    "(apt-get install chromium); Playwright's own browser download is never used",
)

DESKTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=375, height=667)
NARROWEST = ViewportSize(width=360, height=640)  # the narrowest screen the portal promises to fit
VIEWPORTS = [
    pytest.param(DESKTOP, id="desktop"),
    pytest.param(PHONE, id="phone-375x667"),
    pytest.param(NARROWEST, id="phone-360x640"),
]

# Every check that holds on every page; returns a list of problems, empty when the page is fine.
PAGE_PROBLEMS_JS = """
(width) => {
  const problems = [];
  const scrollWidth = document.documentElement.scrollWidth;
  if (scrollWidth > width) problems.push(`horizontal scroll: scrollWidth ${scrollWidth} > viewport ${width}`);
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    const named = [...el.labels].some((label) => label.textContent.trim() !== '');
    if (!named) problems.push(`form control without a label: ${el.outerHTML}`);
  }
  for (const el of document.querySelectorAll('script:not([src])')) {
    problems.push(`inline script: ${el.outerHTML.slice(0, 120)}`);
  }
  for (const el of document.querySelectorAll('*')) {
    for (const attribute of el.attributes) {
      if (attribute.name.startsWith('on')) problems.push(`inline handler ${attribute.name} on <${el.localName}>`);
    }
  }
  return problems;
}
"""

# Inserts an inline script: it must not run, and the browser must report the CSP violation.
INLINE_SCRIPT_PROBE_JS = """
async () => {
  const violation = new Promise((resolve) => {
    document.addEventListener('securitypolicyviolation', (event) => resolve(event.effectiveDirective), {once: true});
    setTimeout(() => resolve(null), 3000);
  });
  const script = document.createElement('script');
  script.textContent = 'window.__inlineScriptRan = true';
  document.body.append(script);
  return {ran: window.__inlineScriptRan === true, directive: await violation};
}
"""

FETCH_JSON_JS = """
async (path) => {
  const response = await fetch(path, {headers: {Accept: 'application/json'}});
  return {status: response.status, body: await response.json()};
}
"""


def spki_sha256(cert_path: Path) -> str:
    """Base64 SHA-256 of the certificate's SubjectPublicKeyInfo, as --ignore-certificate-errors-spki-list takes it."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


@pytest.fixture
async def browser(cert_files: CertFiles) -> AsyncIterator[Browser]:
    """Debian's chromium, trusting exactly the test gateway's certificate.

    The browser trusts the test certificate by its public key pin, not by
    switching TLS checks off (``ignore_https_errors`` would accept any
    certificate at all): ``--ignore-certificate-errors-spki-list`` accepts a
    chain that contains a key with that SHA-256, and chromium honours it only
    with an explicit ``--user-data-dir``, which Playwright always passes (a
    fresh temporary profile for each launch). An NSS database would need
    ``certutil`` and a private HOME; the pin needs neither.
    """
    pin = spki_sha256(cert_files.cert)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=[*CHROMIUM_FLAGS, f"--ignore-certificate-errors-spki-list={pin}"]
        )
        try:
            yield launched
        finally:
            await launched.close()


class Flow:
    """One visitor's page, with the per-page checks and numbered screenshots of each step."""

    def __init__(self, page: Page, viewport: ViewportSize, folder: Path) -> None:
        self.page = page
        self.viewport = viewport
        self.folder = folder
        self.step = 0
        self.console_errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console_errors.append(f"page error: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.console_errors.append(f"{message.type}: {message.text}")

    async def checkpoint(self, name: str) -> None:
        """Screenshot the page, then check it: no horizontal scroll, labels, no inline script, no console errors."""
        self.step += 1
        await self.page.screenshot(path=self.folder / f"{self.step:02d}-{name}.png", full_page=True)
        problems: list[str] = await self.page.evaluate(PAGE_PROBLEMS_JS, self.viewport["width"])
        assert problems == [], f"{name} ({self.page.url}): {problems}"
        assert self.console_errors == [], f"{name} ({self.page.url}): console: {self.console_errors}"

    async def count(self) -> int:
        """The total the list states ("N tickets ..."; the other status region is the live notice)."""
        text = (await self.page.locator(".count").inner_text()).strip()
        match = COUNT.match(text)
        assert match, f"unexpected count line {text!r}"
        return int(match[1])

    async def column(self, label: str) -> list[str]:
        """The text of one column on this page of the list, by the cells' data-label."""
        cells = self.page.locator(f'table.tickets tbody td[data-label="{label}"]')
        return [text.strip() for text in await cells.all_inner_texts()]

    async def reveal(self, control: Locator) -> None:
        """Open the disclosures a filter control sits in, as a visitor would: on a phone "Filters", then
        "More filters" (on a wide screen the first stands open by itself)."""
        for summary in ("Filters", "More filters"):
            if await control.is_visible():
                return
            button = self.page.locator("summary", has_text=re.compile(rf"^{summary}\b"))
            if await button.is_visible():
                await button.click()
        await expect(control).to_be_visible()

    async def fetch_json(self, path: str) -> dict[str, Any]:
        """GET ``path`` from inside the page (same origin, the visitor's own cookie); must answer 200."""
        answer: dict[str, Any] = await self.page.evaluate(FETCH_JSON_JS, path)
        assert answer["status"] == 200, f"GET {path}: {answer}"
        body: dict[str, Any] = answer["body"]
        return body

    async def search(self, word: str) -> None:
        await self.page.get_by_label("Search tickets", exact=True).fill(word)
        await self.page.get_by_role("button", name="Search", exact=True).click()
        await self.page.wait_for_url(re.compile(rf"[?&]q={re.escape(word)}(&|$)"))


async def sign_in(gateway: Gateway, browser: Browser, viewport: ViewportSize, *, javascript: bool = True) -> Page:
    """A fresh context with Ben's portal cookie, as the customer's web app would have set it."""
    context = await browser.new_context(viewport=viewport, base_url=str(gateway.url), java_script_enabled=javascript)
    context.set_default_timeout(TIMEOUT_MS)
    token = sign_token(SECRET, user_id=BEN_ID, now=time.time(), ttl=600, email=BEN_EMAIL, name=BEN)
    await context.add_cookies(
        [
            {
                "name": gateway.config.identity.jwt.cookie,
                "value": token,
                "url": str(gateway.url),
                "secure": True,
                "httpOnly": True,
                "sameSite": "Lax",
            }
        ]
    )
    return await context.new_page()


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_portal_flow_in_chromium(
    start_gateway: StartGateway, browser: Browser, viewport: ViewportSize, request: pytest.FixtureRequest
) -> None:
    gateway = await start_gateway(store={"seed_demo": True}, portal={"access": EVERYONE_IN})
    folder = ARTIFACTS / request.node.callspec.id
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    page = await sign_in(gateway, browser, viewport)
    flow = Flow(page, viewport, folder)
    portal_path = gateway.config.portal.path

    # Home: the tickets card, served with a policy that allows no inline script.
    response = await page.goto("/")
    assert response is not None
    assert response.status == 200
    policy = (await response.all_headers()).get("content-security-policy", "")
    assert "script-src 'self'" in policy, f"CSP header missing or without script-src 'self': {policy!r}"
    assert "unsafe-inline" not in policy
    card = page.get_by_role("link", name="Your tickets")
    await expect(card).to_be_visible()
    await flow.checkpoint("home")

    # The card opens the portal.
    await card.click()
    await page.wait_for_url(re.compile(rf"{re.escape(portal_path)}$"))
    await expect(page.get_by_role("heading", name="Tickets", exact=True)).to_be_visible()
    await expect(page.get_by_role("navigation", name="Account").get_by_text(BEN)).to_be_visible()
    await flow.checkpoint("portal")

    # Tabs: the URL and aria-current follow the click; "Created by me" is a strict subset.
    tabs = page.get_by_role("navigation", name="Ticket scope")
    all_tab = tabs.get_by_role("link", name="All", exact=True)
    mine_tab = tabs.get_by_role("link", name="Created by me", exact=True)
    await mine_tab.click()
    await page.wait_for_url(re.compile(r"[?&]scope=mine(&|$)"))
    await expect(mine_tab).to_have_attribute("aria-current", "page")
    await expect(all_tab).not_to_have_attribute("aria-current", "page")
    mine_count = await flow.count()
    assert mine_count > 0, "no tickets under 'Created by me'"
    # All Ben's own: no column and no filter that would say his name on every row.
    assert await flow.column("Created by") == []
    await expect(page.get_by_label("Created by", exact=True)).to_have_count(0)
    await flow.checkpoint("tab-created-by-me")

    await all_tab.click()
    await page.wait_for_url(re.compile(r"[?&]scope=all(&|$)"))
    await expect(all_tab).to_have_attribute("aria-current", "page")
    await expect(mine_tab).not_to_have_attribute("aria-current", "page")
    all_count = await flow.count()
    assert all_count > mine_count > 0, f"All {all_count} vs Created by me {mine_count}"
    assert set(await flow.column("Created by")) - {BEN}, "the All tab shows only Ben's own tickets"
    await flow.checkpoint("tab-all")

    # State filter: the dropdown and Apply; every row shows that customer-facing label, and the choice stays.
    state = page.get_by_label("State", exact=True)
    await flow.reveal(state)
    await state.select_option(label=STATE_LABEL)
    await page.get_by_role("button", name="Apply filters").click()
    # The form sends every field; the gateway lands it on the clean URL, the state by its slug.
    await page.wait_for_url(re.compile(rf"{re.escape(portal_path)}\?scope=all&state=in-progress$"))
    labels = await flow.column("State")
    assert labels, f"no tickets in state {STATE_LABEL!r}"
    assert set(labels) == {STATE_LABEL}, f"filtered on {STATE_LABEL!r}, rows show {sorted(set(labels))}"
    assert 0 < await flow.count() < all_count
    assert await state.evaluate("(select) => select.selectedOptions[0].textContent.trim()") == STATE_LABEL
    await flow.checkpoint("filter-state")

    # Search a word that only public replies hold: found, highlighted in the Preview column.
    # The filter shows as a chip; removing it is one link.
    chip = page.get_by_role("list", name="Active filters").get_by_role("link", name=re.compile(f"State: {STATE_LABEL}"))
    await chip.click()
    await page.wait_for_url(re.compile(r"[?&]scope=all$"))
    await flow.search(PUBLIC_WORD)
    found = await flow.count()
    assert found > 0, f"{PUBLIC_WORD!r} (in public replies) found nothing"
    await expect(page.locator("table.tickets thead th", has_text="Preview")).to_have_count(1)
    previews = page.locator('table.tickets tbody td[data-label="Preview"]')
    rows = await previews.count()
    assert rows == min(found, gateway.config.portal.page_size)
    marks = previews.locator("mark")
    await expect(marks).to_have_count(rows)  # one highlighted term in each row's snippet
    assert {text.lower() for text in await marks.all_inner_texts()} == {PUBLIC_WORD}
    first_preview = await previews.first.inner_html()
    assert re.search(rf"<mark>{PUBLIC_WORD}</mark>", first_preview, re.IGNORECASE), first_preview
    await flow.checkpoint("search-public-word")

    # A word only internal notes hold: nothing, said in words.
    await flow.search(INTERNAL_WORD)
    assert await flow.count() == 0, f"{INTERNAL_WORD!r} (only in internal notes) was found"
    await expect(page.get_by_role("heading", name=re.compile("^No tickets"))).to_be_visible()
    await expect(page.locator("table.tickets")).to_have_count(0)
    await expect(page.locator("mark")).to_have_count(0)
    await flow.checkpoint("search-internal-word")

    # Open a ticket someone else raised in one of Ben's companies: he is not in its conversation yet.
    await expect(page.get_by_role("heading", name=f"No tickets match “{INTERNAL_WORD}”")).to_be_visible()
    await page.get_by_role("link", name="Clear search").click()
    await page.wait_for_url(re.compile(r"[?&]scope=all$"))
    space_before = await flow.fetch_json("/api/v1/me/tickets-space")
    joined_before = {ticket["ticket_id"] for ticket in space_before["tickets"]}
    assert space_before["pages"]["total_pages"] == 1, "Ben's tickets space no longer fits one page"
    row = page.locator("table.tickets tbody tr").filter(
        has=page.locator('td[data-label="Created by"]').filter(has_not_text=BEN)
    )
    # One link per row: the title.
    await expect(row.first.locator("a")).to_have_count(1)
    ticket_id = (await row.first.locator('td[data-label="ID"]').inner_text()).strip().lstrip("#")
    assert ticket_id not in joined_before, f"#{ticket_id} was in Ben's tickets space before he joined"
    await row.first.locator('td[data-label="Title"] a').click()
    await page.wait_for_url(re.compile(rf"{re.escape(portal_path)}/{ticket_id}$"))
    await expect(page.get_by_text(f"#{ticket_id}", exact=True).first).to_be_visible()
    join = page.get_by_role("button", name="Join conversation")
    await expect(join).to_be_visible()
    await expect(page.get_by_role("link", name="Send us a message")).to_have_count(0)
    await flow.checkpoint("ticket-before-join")

    # Join: a POST with the CSRF token, back on the detail page as a participant.
    await join.click()
    await page.wait_for_url(re.compile(rf"{re.escape(portal_path)}/{ticket_id}\?joined=1$"))
    await expect(page.get_by_role("status").filter(has_text="You joined")).to_contain_text(
        "You joined this conversation"
    )
    await expect(page.get_by_role("link", name="Send us a message")).to_be_visible()
    await expect(page.get_by_role("button", name="Join conversation")).to_have_count(0)
    await flow.checkpoint("ticket-joined")

    space_after = await flow.fetch_json("/api/v1/me/tickets-space")
    joined_after = {ticket["ticket_id"] for ticket in space_after["tickets"]}
    assert space_after["total_count"] == space_before["total_count"] + 1, (space_before, space_after)
    assert ticket_id in joined_after, f"#{ticket_id} is not in the tickets space after joining"
    assert joined_after - joined_before == {ticket_id}

    # The policy at work: an inline script inserted into the page does not run, and the browser says why.
    probe: dict[str, Any] = await page.evaluate(INLINE_SCRIPT_PROBE_JS)
    assert probe == {"ran": False, "directive": "script-src-elem"}, probe
    assert any("Content Security Policy" in text for text in flow.console_errors), flow.console_errors
    await page.context.close()


async def test_creator_filter_in_chromium(start_gateway: StartGateway, browser: Browser) -> None:
    """The "Created by" dropdown names the people and filters the list by the one chosen."""
    gateway = await start_gateway(store={"seed_demo": True}, portal={"access": EVERYONE_IN})
    folder = ARTIFACTS / "creator-filter"
    folder.mkdir(parents=True, exist_ok=True)
    page = await sign_in(gateway, browser, DESKTOP)
    flow = Flow(page, DESKTOP, folder)
    await page.goto(f"{gateway.config.portal.path}?scope=all")
    creator = page.get_by_label("Created by", exact=True)
    await flow.reveal(creator)
    options = [text.strip() for text in await creator.locator("option").all_inner_texts()]
    await flow.checkpoint("list")
    assert options[0] == "Anyone"
    assert all(options[1:]), f"'Created by' has options without a name: {options}"
    assert {BEN, CHO} <= set(options), options
    await creator.select_option(label=CHO)
    await page.get_by_role("button", name="Apply filters").click()
    await page.wait_for_url(re.compile(r"[?&]creator=\d+(&|$)"))
    creators = await flow.column("Created by")
    assert creators, f"no tickets created by {CHO}"
    assert set(creators) == {CHO}, f"filtered on {CHO!r}, rows show {sorted(set(creators))}"
    assert await creator.evaluate("(select) => select.selectedOptions[0].textContent.trim()") == CHO
    await flow.checkpoint("filter-creator")
    await page.context.close()


async def test_the_header_names_the_visitor_on_the_home_page_and_a_404_page_in_chromium(
    start_gateway: StartGateway, browser: Browser
) -> None:
    """Who is signed in and Sign out on every page, a missing one too; signing out leaves a Sign in link."""
    gateway = await start_gateway(
        store={"seed_demo": True},
        portal={"access": EVERYONE_IN},
        identity={"login_url": "https://app.example.com/login"},
    )
    folder = ARTIFACTS / "account-header"
    folder.mkdir(parents=True, exist_ok=True)
    page = await sign_in(gateway, browser, PHONE)
    flow = Flow(page, PHONE, folder)
    account = page.get_by_role("navigation", name="Account")

    await page.goto("/")
    await expect(page.get_by_role("link", name="Your tickets")).to_be_visible()
    await expect(account).to_have_text(re.compile(rf"^\s*Signed in as {BEN}\s+Sign out\s*$"))
    await flow.checkpoint("home")

    missing = await page.goto(f"{gateway.config.portal.path}/99999")
    assert missing is not None
    assert missing.status == 404
    # The one console error expected here: the browser reports the 404 itself.
    flow.console_errors = [text for text in flow.console_errors if "status of 404" not in text]
    await expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    await expect(account).to_have_text(re.compile(rf"^\s*Signed in as {BEN}\s+Sign out\s*$"))
    await flow.checkpoint("not-found")

    await account.get_by_role("link", name="Sign out").click()
    await page.wait_for_url(f"{gateway.url}/")
    await expect(account.get_by_role("link", name="Sign in")).to_be_visible()
    await expect(account).not_to_contain_text(BEN)
    await flow.checkpoint("signed-out")
    await page.context.close()
