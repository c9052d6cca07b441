"""Sign-in and sign-out, and the demo's dev login page."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from gateway.config import CONFIG
from gateway.edge.guard import CLOCK, GUARD, STORE
from gateway.errors import BadRequest, Forbidden, Link
from gateway.namespace import DEV_LOGIN_PATH, SIGN_IN_PATH, SIGN_OUT_PATH
from gateway.policy.identity import sign_token

DEV_TOKEN_TTL = 8 * 3600
_COOKIE_FLAGS = {"path": "/", "secure": True, "httponly": True, "samesite": "Lax"}


async def signin(request: web.Request) -> web.StreamResponse:
    """Send the visitor to the login page, with a same-origin ``return_to``."""
    login = request.app[GUARD].sign_in_url(request.query.get("return_to"))
    if login is None:
        raise web.HTTPUnauthorized()
    raise web.HTTPFound(login)


async def signout(request: web.Request) -> web.StreamResponse:
    """Clear the portal cookie and go back to a same-origin page."""
    guard = request.app[GUARD]
    response = web.HTTPFound(guard.landing(request.query.get("return_to")))
    response.del_cookie(guard.jwt_cookie, **_COOKIE_FLAGS)  # type: ignore[arg-type]
    raise response


@aiohttp_jinja2.template("dev_login.html")
async def dev_login_page(request: web.Request) -> dict[str, object]:
    """Demo only: the store's contacts, each with a button that signs in as them."""
    return {
        "contacts": await request.app[STORE].contacts(),
        "return_to": request.query.get("return_to", ""),
    }


async def dev_login(request: web.Request) -> web.StreamResponse:
    """Demo only: sign a token for the chosen contact and set the portal cookie."""
    # SECURITY: a cross-site form must not sign a visitor in as someone else.
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise Forbidden(
            "The sign-in form was sent from another site. Open the sign-in page and pick a person there.",
            title="This sign-in came from another site",
            link=Link(DEV_LOGIN_PATH, "Open the sign-in page"),
        )
    form = await request.post()
    user_id = str(form.get("user_id", ""))
    contact = await request.app[STORE].contact_by_user_id(user_id) if user_id else None
    if contact is None or contact.user_id is None:
        raise BadRequest(
            "No person in the store has that user id. Pick one on the sign-in page.",
            title="There is no such person",
            link=Link(DEV_LOGIN_PATH, "Open the sign-in page"),
        )
    guard = request.app[GUARD]
    token = sign_token(
        request.app[CONFIG].identity.jwt.signing_secret,
        user_id=contact.user_id,
        now=request.app[CLOCK](),
        ttl=DEV_TOKEN_TTL,
        email=contact.email,
        name=contact.name,
    )
    response = web.HTTPSeeOther(guard.landing(str(form.get("return_to", ""))))
    response.set_cookie(guard.jwt_cookie, token, max_age=DEV_TOKEN_TTL, **_COOKIE_FLAGS)  # type: ignore[arg-type]
    raise response


def add_routes(app: web.Application) -> None:
    """Register /signin, /signout and, when enabled, the dev login."""
    app.router.add_get(SIGN_IN_PATH, signin, name="signin")
    app.router.add_get(SIGN_OUT_PATH, signout, name="signout")
    if app[CONFIG].identity.dev_login:
        app.router.add_get(DEV_LOGIN_PATH, dev_login_page, name="dev_login")
        app.router.add_post(DEV_LOGIN_PATH, dev_login, name="dev_login_post")
