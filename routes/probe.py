"""``GET /_gateway/probe``: what the gateway received and would forward, signed, for ``portal-gateway probe``.

Only for a caller proving it holds the admin token (``gateway/ops/probe.py: probe_authorization``, checked in
constant time); anyone else, and everyone when ``admin.token`` is unset, gets the gateway's own 404, as if the
path were not there.
Nothing of it goes upstream. The audit record is the request's one record, with cookie names only.
"""

from __future__ import annotations

from aiohttp import web

from gateway.config import CONFIG
from gateway.edge.guard import CLOCK
from gateway.errors import BadRequest
from gateway.namespace import PROBE_PATH
from gateway.observe.audit import AUDIT_ENTRY
from gateway.ops.probe import NONCE, SIGNATURE_HEADER, answer, probe_authorization_problem, sign
from gateway.proxy.forward import HELP_CENTER
from routes.admin import ADMIN_TOKEN, admin_credential_checked
from routes.api import not_found


async def probe(request: web.Request) -> web.Response:
    """The signed answer: cookie names and digests of their values, what upstream would get, a sample Set-Cookie."""
    # SECURITY: without the token the endpoint does not exist (404, not 401), so it tells nobody it is here.
    nonce = request.query.get("nonce", "")
    token = request.app[ADMIN_TOKEN]
    authorization = request.headers.get("Authorization", "")
    if not admin_credential_checked(
        request, probe_authorization_problem(authorization, token, nonce, request.app[CLOCK]())
    ):
        raise web.HTTPNotFound()
    if request.method != "GET":
        raise web.HTTPMethodNotAllowed(request.method, ["GET"])
    if not NONCE.fullmatch(nonce):
        raise BadRequest("nonce: 32 lower-case hex digits, fresh for each probe")
    cookies = request.headers.getall("Cookie", ())
    result = answer(cookies, nonce, request.app[HELP_CENTER], workspace_id=request.app[CONFIG].workspace_id)
    # Names only, and only "received": nothing was forwarded or stripped on its way upstream.
    request[AUDIT_ENTRY].cookies.received = tuple(seen.name for seen in result.received)
    body = result.model_dump_json().encode()
    response = web.Response(body=body, content_type="application/json")
    # SECURITY: signed with the admin token, so nothing in front can forge or edit the answer unnoticed.
    response.headers[SIGNATURE_HEADER] = sign(token, body)
    response.headers["Cache-Control"] = "no-store"
    if result.set_cookie is not None:
        response.headers.add("Set-Cookie", result.set_cookie)
    return response


def add_routes(app: web.Application) -> None:
    """The probe endpoint; registered before the catch-all, so that its path never reaches upstream."""
    if app[CONFIG].admin.token is None:
        app.router.add_route("*", PROBE_PATH, not_found, name="probe_absent")
        return
    app.router.add_route("*", PROBE_PATH, probe, name="probe")
