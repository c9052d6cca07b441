"""``help_center.brand`` through the real gateway: the name in header and titles, the colour as a stylesheet the
CSP allows, the logo and the icon served by the gateway, and the default brand."""

from __future__ import annotations

from pathlib import Path

from yarl import URL

from gateway.edge.secure import CONTENT_SECURITY_POLICY
from routes.brand import BRAND_CSS, DEFAULT_FAVICON, FAVICON, LOGO
from tests.conftest import Gateway, StartGateway
from tests.routes.portalkit import parse_html

LOGO_SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"><rect width="32" height="32"/></svg>'
ICON_PNG = b"\x89PNG\r\n\x1a\n not really a png, only its bytes matter here"


async def get(gateway: Gateway, href: str) -> tuple[int, str, bytes]:
    async with gateway.client.get(gateway.url.join(URL(href))) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


async def test_a_configured_brand_names_colours_and_marks_every_page(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    (tmp_path / "logo.svg").write_text(LOGO_SVG)
    (tmp_path / "icon.png").write_bytes(ICON_PNG)
    brand = {"name": "Acme Support", "primary_color": "#7B1FA2", "logo": f"file:{tmp_path}/logo.svg"}
    gateway = await start_gateway(help_center={"brand": {**brand, "favicon": str(tmp_path / "icon.png")}})
    for path in ("/", "/tickets/no-such-ticket"):
        async with gateway.client.get(gateway.url.with_path(path)) as response:
            page = parse_html(await response.text())
            # The colour comes as a stylesheet: the policy that forbids inline style is the same as before.
            assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
        assert page.find("title").text().endswith("Acme Support"), path
        assert page.find("a", "brand").text() == "Acme Support", path
        assert page.maybe("style") is None, path
        assert [element.tag for element in page.iter() if "style" in element.attrs] == [], path
    sheets = [link.attrs["href"] for link in page.find_all("link", rel="stylesheet")]
    assert [URL(href).path for href in sheets] == ["/_gateway/static/gateway.css", BRAND_CSS]
    assert await get(gateway, sheets[1]) == (200, "text/css; charset=utf-8", b":root {\n  --accent: #7b1fa2;\n}\n")
    logo = page.find("a", "brand").find("img", "brand-logo")
    assert logo.attrs["alt"] == ""  # the name beside it says it already
    assert URL(logo.attrs["src"]).path == LOGO
    assert await get(gateway, logo.attrs["src"]) == (200, "image/svg+xml", LOGO_SVG.encode())
    icon = page.find("link", rel="icon").attrs["href"]
    assert URL(icon).path == FAVICON
    assert await get(gateway, icon) == (200, "image/png", ICON_PNG)
    assert await get(gateway, "/favicon.ico") == (200, "image/png", ICON_PNG)


async def test_the_default_brand_is_the_help_center_in_blue_with_the_gateways_icon(gateway: Gateway) -> None:
    async with gateway.client.get(gateway.url.with_path("/")) as response:
        page = parse_html(await response.text())
    assert page.find("a", "brand").text() == "Help Center"
    assert page.find("a", "brand").maybe("img") is None
    css = page.find_all("link", rel="stylesheet")[1].attrs["href"]
    assert await get(gateway, css) == (200, "text/css; charset=utf-8", b":root {\n  --accent: #0b57d0;\n}\n")
    assert (await get(gateway, LOGO))[0] == 404
    assert await get(gateway, FAVICON) == (200, "image/svg+xml", DEFAULT_FAVICON.read_bytes())


async def test_a_logo_on_this_domain_is_linked_not_served(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(help_center={"brand": {"logo": "/assets/acme.svg"}})
    async with gateway.client.get(gateway.url.with_path("/")) as response:
        page = parse_html(await response.text())
    assert page.find("img", "brand-logo").attrs["src"] == "/assets/acme.svg"
