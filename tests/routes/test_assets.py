"""routes/assets.py: the gateway's static files, and the gateway's own error page for any other name."""

from __future__ import annotations

import pytest

from routes.assets import STATIC_DIR
from tests.conftest import DOMAIN, Gateway


async def test_a_static_file_is_served_with_validators(gateway: Gateway) -> None:
    async with gateway.client.get(gateway.url / "_gateway/static/gateway.css", headers={"Host": DOMAIN}) as response:
        assert response.status == 200
        assert response.content_type == "text/css"
        assert await response.read() == (STATIC_DIR / "gateway.css").read_bytes()
        etag = response.headers["ETag"]
    headers = {"Host": DOMAIN, "If-None-Match": etag}
    async with gateway.client.get(gateway.url / "_gateway/static/gateway.css", headers=headers) as response:
        assert response.status == 304


@pytest.mark.parametrize("path", ["/_gateway/static/absent.css", "/_gateway/static/", "/_gateway/static/a/b.css"])
async def test_an_absent_static_file_gets_the_gateways_404_page(gateway: Gateway, path: str) -> None:
    """Not aiohttp's empty 404 (nor upstream's answer): the error page, with the request id to quote."""
    async with gateway.client.get(gateway.url.with_path(path), headers={"Host": DOMAIN}) as response:
        page = await response.text()
        assert response.status == 404
        assert response.content_type == "text/html"
        assert "Page not found" in page
        assert response.headers["X-Request-Id"] in page
    headers = {"Host": DOMAIN, "Accept": "application/json"}
    async with gateway.client.get(gateway.url.with_path(path), headers=headers) as response:
        assert response.status == 404
        assert (await response.json())["error"]["request_id"] == response.headers["X-Request-Id"]


async def test_another_method_on_a_static_file_is_a_405_not_the_upstream(gateway: Gateway) -> None:
    async with gateway.client.post(gateway.url / "_gateway/static/gateway.css", headers={"Host": DOMAIN}) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET,HEAD"
