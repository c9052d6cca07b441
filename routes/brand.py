"""The brand of the gateway's own pages: its colours as a stylesheet, its logo and its icon (``help_center.brand``).

The colours are served as a small stylesheet rather than written into each page, because the pages'
Content-Security-Policy (``style-src 'self'``) allows no inline style.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp_jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.config import CONFIG, IMAGE_TYPES, BrandConfig
from gateway.namespace import BRAND_PREFIX, FAVICON_PATH

BRAND_CSS = BRAND_PREFIX + "/brand.css"
LOGO = BRAND_PREFIX + "/logo"
FAVICON = BRAND_PREFIX + "/favicon"
DEFAULT_FAVICON = Path(__file__).parent / "static" / "favicon.svg"
# The version in the pages' links changes with the brand, so browsers may keep each version for a day.
CACHE = "public, max-age=86400"


def brand_css(brand: BrandConfig) -> str:
    """The brand's custom properties, read by gateway.css."""
    return f":root {{\n  --accent: {brand.primary_color};\n}}\n"


def _image(path: Path) -> web.FileResponse:
    """A brand image with the type its suffix names (the config allowed only image suffixes)."""
    return web.FileResponse(path, headers={"Content-Type": IMAGE_TYPES[path.suffix.lower()], "Cache-Control": CACHE})


def stylesheet(brand: BrandConfig) -> Handler:
    """``/_gateway/brand/brand.css``: the brand's colours, written once (a reload builds a new app)."""
    css = brand_css(brand)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=css, content_type="text/css", headers={"Cache-Control": CACHE})

    return handler


async def logo(request: web.Request) -> web.FileResponse:
    """The logo file, when ``help_center.brand.logo`` names one."""
    path = request.app[CONFIG].help_center.brand.logo_file
    if path is None:
        raise web.HTTPNotFound()
    return _image(path)


async def favicon(request: web.Request) -> web.FileResponse:
    """The brand's icon, else the gateway's own; also for browsers that ask ``/favicon.ico``."""
    return _image(request.app[CONFIG].help_center.brand.favicon or DEFAULT_FAVICON)


def add_routes(app: web.Application) -> None:
    """The brand's routes, and the brand in every template (``brand``, ``brand_css``, ``brand_logo``)."""
    config = app[CONFIG]
    brand = config.help_center.brand
    version = hashlib.sha256(brand.model_dump_json().encode()).hexdigest()[:12]
    aiohttp_jinja2.get_env(app).globals.update(
        brand=brand,
        brand_css=f"{BRAND_CSS}?v={version}",
        brand_logo=f"{LOGO}?v={version}" if brand.logo_file else brand.logo,
        brand_icon=f"{FAVICON}?v={version}",
    )
    app.router.add_get(BRAND_CSS, stylesheet(brand), name="brand_css")
    app.router.add_get(LOGO, logo, name="brand_logo")
    app.router.add_get(FAVICON, favicon, name="brand_favicon")
    if config.portal.mode == "render":
        # The pages link the icon; browsers still ask the host for /favicon.ico (over a JSON answer, say), and
        # in render mode the pages it would be the icon of are not the hosted help center's.
        app.router.add_get(FAVICON_PATH, favicon, name="favicon")
