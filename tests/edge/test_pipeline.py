"""The pipeline (gateway/edge/pipeline.py): its stages run in order, a refusal ends the chain with its own page,
and the app registers the security stages in the order that makes them hold."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import Awaitable

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.edge.guard import access_stage, identity_stage
from gateway.edge.pipeline import PIPELINE
from gateway.errors import Forbidden
from gateway.policy.identity import sign_token
from tests.conftest import DOMAIN, SECRET, Gateway, MakeConfig, StartGateway, audit_records, raw_exchange

# Outermost first. SECURITY: each stage relies on the ones before it: nothing is built from a Host before the
# host check, no path is decided on before the path check, access reads identity, and no body is waited for
# before access has refused whoever it refuses.
ORDER = ["host", "path", "forwarded", "identity", "page_context", "access", "body"]


async def test_the_app_runs_its_stages_in_this_order(gateway: Gateway) -> None:
    """What create_app registers: the pipeline's one middleware, its stages in ORDER, the shared ones as such."""
    app = gateway.running.app
    pipeline = app[PIPELINE]
    assert list(app.middlewares) == [pipeline.middleware]
    assert list(pipeline.stages) == ORDER
    assert pipeline.stages["identity"] is identity_stage
    assert pipeline.stages["access"] is access_stage


async def test_stages_run_in_order_and_a_refusal_ends_the_chain_with_its_own_page(make_config: MakeConfig) -> None:
    """Each stage runs after the one before it has finished (waiting included); the first to refuse answers
    with its own page, audited with its status, and neither a later stage nor the handler runs."""
    ran: list[str] = []

    def first(request: web.Request) -> None:
        ran.append("first")

    async def waited() -> None:
        await asyncio.sleep(0)
        ran.append("waited")

    def waits(request: web.Request) -> Awaitable[None]:
        ran.append("waits")
        return waited()

    def refuses(request: web.Request) -> None:
        ran.append("refuses")
        raise Forbidden("This stage says no.", title="Stopped by a stage")

    def after(request: web.Request) -> None:
        ran.append("after")

    config = make_config()
    app = create_app(config)
    pipeline = dataclasses.replace(
        app[PIPELINE], stages={"first": first, "waits": waits, "refuses": refuses, "after": after}
    )
    app.middlewares[0] = pipeline.middleware  # the real app, pages and audit, with these stages
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.get("/articles/1", headers={"Host": DOMAIN, "Accept": "text/html"})
        page = await response.text()
    assert response.status == 403
    assert "Stopped by a stage" in page
    assert "This stage says no." in page
    assert ran == ["first", "waits", "waited", "refuses"]
    [record] = audit_records(config.audit.path)
    assert (record["path"], record["status"]) == ("/articles/1", 403)


async def test_the_host_check_comes_before_identity(gateway: Gateway) -> None:
    """A valid token sent to a host we do not serve is refused before anyone is identified from it."""
    token = sign_token(SECRET, user_id="u1", email="u1@example.com", now=time.time(), ttl=600)
    async with gateway.client.get(
        gateway.url / "tickets", headers={"Host": "evil.example.net", "Cookie": f"portal-jwt={token}"}
    ) as response:
        assert response.status == 421
        request_id = response.headers["X-Request-Id"]
    record = await gateway.audit_for(request_id)
    assert record["identity"]["result"] == "none"  # what an entry says when the identity stage never ran


async def test_the_path_check_comes_before_access(gateway: Gateway) -> None:
    """A portal path servers read two ways is refused as such (400), not sent to sign in as a portal page."""
    async with gateway.client.get(
        gateway.url.with_path("/tickets/a%2Fb", encoded=True), headers={"Host": DOMAIN}, allow_redirects=False
    ) as response:
        assert response.status == 400


async def test_access_comes_before_the_body_is_waited_for(
    start_gateway: StartGateway, client_ssl: ssl.SSLContext
) -> None:
    """A visitor the portal refuses is answered at once, not after the gateway has waited for their body."""
    gateway = await start_gateway(requests={"body_timeout": 60})
    head = f"POST /tickets/1/join HTTP/1.1\r\nHost: {DOMAIN}\r\nContent-Length: 100\r\n\r\n".encode()
    answer = await raw_exchange(gateway, head, client_ssl)  # the body never comes
    assert answer.statuses in ([401], [302])
