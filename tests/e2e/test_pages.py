"""Every page of the portal in Debian's chromium at four sizes: axe-core finds nothing serious, the layout holds.

Pages: home, list, list with a search (the Preview column), an empty search, a ticket, 401, 403, 404, 502 and
the dev login; sizes 1280x800, 768x1024, 375x667 and 320x568. On each: no axe-core violation of impact
serious or critical (``axe-playwright-python`` injects its bundled axe.min.js through the DevTools protocol,
which the pages' CSP does not govern; no network), no horizontal scroll, a label on every control, no inline
script. On the list: a phone shows the first ticket's title above the fold, and a state badge never wraps,
beside the Preview column too. Screenshots go to ``test-artifacts/pages/<size>/<page>.png``; the README's come
from there (docs/screenshots/).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, ViewportSize

from gateway.policy.identity import sign_token
from gateway.store.demo import INTERNAL_WORD, PUBLIC_WORD
from tests.conftest import SECRET, Gateway, StartGateway
from tests.e2e.test_browser import ARTIFACTS, CHROMIUM, PAGE_PROBLEMS_JS, TIMEOUT_MS, browser
from tests.proxy.test_proxy import free_port

__all__ = ["browser"]  # the fixture, shared with the flow tests

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's chromium is not installed at {CHROMIUM}")

FOLDER = ARTIFACTS.parent / "pages"
SIZES = {
    "desktop-1280x800": ViewportSize(width=1280, height=800),
    "tablet-768x1024": ViewportSize(width=768, height=1024),
    "phone-375x667": ViewportSize(width=375, height=667),
    "phone-320x568": ViewportSize(width=320, height=568),
}
BLOCKING = ("serious", "critical")
BEN, CHO = "u-ben", "u-cho"  # Ben is let in; Cho is not (the access rule below names Ben alone)
ONLY_BEN: dict[str, Any] = {"match": "all", "rules": [{"attribute": "person.user_id", "op": "in", "value": [BEN]}]}

# Each page: who asks (None: no one signed in), the path, the status it answers.
PAGES: dict[str, tuple[str | None, str, int]] = {
    "home": (BEN, "/", 200),
    "list": (BEN, "/tickets?scope=all", 200),
    "list-search": (BEN, f"/tickets?scope=all&q={PUBLIC_WORD}", 200),
    "list-empty-search": (BEN, f"/tickets?scope=all&q={INTERNAL_WORD}", 200),
    "detail": (BEN, "/tickets/1014", 200),  # a thread of support and Ben
    "401": (None, "/tickets", 401),
    "403": (CHO, "/tickets", 403),
    "404": (BEN, "/tickets/99999", 404),
    "502": (BEN, "/articles", 502),
    "dev-login": (None, "/dev/login", 200),
}

# Where each state badge breaks into more than one line box, or stands taller than one line.
WRAPPED_BADGES_JS = """
() => [...document.querySelectorAll('.state')].filter((badge) => {
  const line = parseFloat(getComputedStyle(badge).lineHeight);
  return badge.getClientRects().length !== 1 || badge.getBoundingClientRect().height > 1.5 * line;
}).map((badge) => badge.textContent)
"""
FIRST_TITLE_BOTTOM_JS = "() => document.querySelector('table.tickets .col-title a').getBoundingClientRect().bottom"


async def visitor_page(gateway: Gateway, browser: Browser, viewport: ViewportSize, user_id: str | None) -> Page:
    context = await browser.new_context(viewport=viewport, base_url=str(gateway.url))
    context.set_default_timeout(TIMEOUT_MS)
    if user_id is not None:
        token = sign_token(SECRET, user_id=user_id, now=time.time(), ttl=600)
        name, url = gateway.config.identity.jwt.cookie, str(gateway.url)
        await context.add_cookies(
            [{"name": name, "value": token, "url": url, "secure": True, "httpOnly": True, "sameSite": "Lax"}]
        )
    return await context.new_page()


@pytest.mark.parametrize("size", list(SIZES))
async def test_every_page_passes_axe_and_fits(start_gateway: StartGateway, browser: Browser, size: str) -> None:
    viewport = SIZES[size]
    settings: dict[str, Any] = {
        "store": {"seed_demo": True},
        "portal": {"access": ONLY_BEN},
        "upstream": {"url": f"http://127.0.0.1:{free_port()}"},  # nothing listens: the hosted help center is down
    }
    gateway = await start_gateway(**settings)
    # Demo mode has the dev login, and sends a visitor with no credentials there rather than to the 401 page.
    demo = await start_gateway(**settings, identity={"dev_login": True})
    folder = FOLDER / size
    folder.mkdir(parents=True, exist_ok=True)
    axe = Axe()
    pages: dict[tuple[bool, str | None], Page] = {}
    for name, (user_id, path, status) in PAGES.items():
        in_demo = name == "dev-login"
        if (in_demo, user_id) not in pages:
            pages[in_demo, user_id] = await visitor_page(demo if in_demo else gateway, browser, viewport, user_id)
        page = pages[in_demo, user_id]
        response = await page.goto(path)
        assert response is not None
        assert response.status == status, name
        await page.screenshot(path=folder / f"{name}.png", full_page=True)
        await page.screenshot(path=folder / f"{name}-first-screen.png")  # what shows before any scrolling
        problems: list[str] = await page.evaluate(PAGE_PROBLEMS_JS, viewport["width"])
        assert problems == [], f"{name} at {size}: {problems}"
        results = await axe.run(page)
        blocking = [
            (violation["id"], violation["impact"], [node["target"] for node in violation["nodes"]])
            for violation in results.response["violations"]
            if violation["impact"] in BLOCKING
        ]
        assert blocking == [], f"{name} at {size}: {blocking}"
        if name.startswith("list") and name != "list-empty-search":
            assert await page.evaluate(WRAPPED_BADGES_JS) == [], f"{name} at {size}: a state badge wraps"
        if name == "list" and viewport["width"] < 400:
            bottom = await page.evaluate(FIRST_TITLE_BOTTOM_JS)
            assert bottom <= viewport["height"], f"the first ticket's title ends at {bottom}px, below the fold"
    for page in pages.values():
        await page.context.close()


async def test_a_replys_exact_time_shows_on_hover_and_keyboard_focus(
    start_gateway: StartGateway, browser: Browser
) -> None:
    """The thread's times carry the exact time for the mouse (title) and show it on keyboard focus."""
    gateway = await start_gateway(store={"seed_demo": True}, portal={"access": ONLY_BEN})
    page = await visitor_page(gateway, browser, SIZES["desktop-1280x800"], BEN)
    _, path, _ = PAGES["detail"]
    await page.goto(path)
    times = page.locator(".conversation time")
    assert await times.count() > 0
    first = times.first
    exact = await first.get_attribute("title")
    assert exact is not None
    assert exact.endswith("UTC")
    after = "(el) => getComputedStyle(el, '::after').content"
    assert await first.evaluate(after) in ("none", "normal", "")
    for _ in range(50):  # Tab through the page until the first reply's time has the keyboard focus
        await page.keyboard.press("Tab")
        if await first.evaluate("(el) => el === document.activeElement"):
            break
    else:
        raise AssertionError("Tab never reaches the reply's time")
    assert await first.evaluate(after) == f'" ({exact})"'
    await page.context.close()
