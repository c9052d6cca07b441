"""``/_gateway/static/{filename}``: the gateway's own CSS and icon, by name; any other name is its 404 page."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.namespace import STATIC_PREFIX
from routes.fallback import namespace_fallback

STATIC_DIR = Path(__file__).parent / "static"


def static_files(directory: Path) -> Handler:
    """A handler for the files directly in ``directory``, listed once at start."""
    # SECURITY: only names listed here are served, so no path (``..``, a symlink, an absolute name) leaves it.
    files = {path.name: path for path in directory.iterdir() if path.is_file()}

    async def static(request: web.Request) -> web.FileResponse:
        """One file (aiohttp's FileResponse: ETag, Last-Modified, ranges); an unknown name raises the 404 that
        the error middleware turns into the gateway's page (aiohttp's own static route answers an empty 404)."""
        path = files.get(request.match_info["filename"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    return static


def add_routes(app: web.Application) -> None:
    """Register the static files (GET and HEAD); the rest of their namespace is the gateway's 404 (or a 405)."""
    app.router.add_get(STATIC_PREFIX + "/{filename}", static_files(STATIC_DIR), name="static")
    app.router.add_route(
        "*", STATIC_PREFIX + "{tail:(/.*)?}", namespace_fallback(STATIC_PREFIX + "/"), name="static_other"
    )
