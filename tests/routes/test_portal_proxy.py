"""The tickets portal in proxy mode: the gateway guards, then forwards the portal upstream.

Every test runs the real gateway (``gateway.run.server.start``) over TLS on loopback, on a store
written and an oracle built by ``tests.routes.portalkit`` (the expected answers never come from the gateway).
"""

from __future__ import annotations

from pathlib import Path

from yarl import URL

from gateway.store.demo import PUBLIC_WORD
from tests.conftest import RecordingUpstream, StartGateway
from tests.routes.portalkit import (
    ACME_ONLY,
    ANN,
    CHO,
    LOGIN,
    open_portal,
)


async def test_proxy_mode_guards_then_forwards_the_portal(
    start_gateway: StartGateway, tmp_path: Path, upstream: RecordingUpstream
) -> None:
    portal = await open_portal(
        start_gateway, tmp_path, portal={"mode": "proxy", "access": ACME_ONLY}, identity={"login_url": LOGIN}
    )

    def reached(path: str) -> int:
        return sum(1 for request in upstream.requests if request.path == path)

    for path in ("/tickets", "/tickets/1001"):
        anonymous = await portal.call("GET", path, auth="none", params={"q": "x"})
        assert anonymous.status == 302
        assert anonymous.headers["Location"].startswith(LOGIN + "?")
        denied = await portal.call("GET", path, user=CHO)  # signed in, outside the audience
        assert denied.status == 403
        assert reached(path) == 0, f"{path} went upstream without passing the checks"

        allowed = await portal.call(
            "GET", path, params={"q": PUBLIC_WORD, "state": "2"}, headers={"X-Portal-User-Id": "u-cho"}
        )
        assert allowed.status == 200
        assert allowed.json()["path"] == path
        assert reached(path) == 1
        seen = upstream.last
        assert seen.headers["X-Portal-User-Id"] == ANN
        assert dict(URL("/?" + seen.query_string).query) == {"q": PUBLIC_WORD, "state": "2"}

    count = len(upstream.requests)
    home = await portal.call("GET", "/", auth="none")
    assert home.status == 200
    assert "How can we help?" in home.text
    assert len(upstream.requests) == count, "the home page is the gateway's own"
