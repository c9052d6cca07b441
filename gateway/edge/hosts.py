"""Which Host a request may name: the custom domain (and the names ops add), nothing else.

Pages, sign-in redirects and the X-Forwarded-Host sent upstream are all
built from the request's host, so a request for any other host is refused
before it reaches them: 421 for a host we do not serve, 400 for a Host that
is missing, doubled or malformed, or a target that names a host itself.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.config import GatewayConfig
from gateway.errors import BadRequest
from gateway.namespace import NAMESPACES

if TYPE_CHECKING:
    from gateway.edge.pipeline import Stage

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_HOST = re.compile(r"(?P<name>[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[(?P<ipv6>[0-9a-f:.]+)\])(?::[0-9]{1,5})?")


def served_hosts(config: GatewayConfig) -> frozenset[str]:
    """The host names the gateway answers for: the domain, ``listen.allowed_hosts``, loopback in dev."""
    names = {config.domain, *(name.lower() for name in config.listen.allowed_hosts)}
    if config.identity.dev_login or config.domain in LOOPBACK_NAMES:
        names |= LOOPBACK_NAMES
    return frozenset(names)


def host_name(value: str) -> str | None:
    """The host name in a Host header value, lower case, without port or IPv6 brackets; None if malformed."""
    match = _HOST.fullmatch(value.strip().lower())
    if match is None:
        return None
    return match["ipv6"] or match["name"]


def host_stage(served: frozenset[str]) -> Stage:
    """Refuse requests for hosts not in ``served`` before anything is built from their Host."""

    def stage(request: web.Request) -> None:
        # SECURITY: an absolute-form target (``GET https://other/x``) or ``*`` names a host of its own
        # and is no path to forward; browsers send origin-form to an origin server, so only that is taken.
        if not request.raw_path.startswith("/"):
            raise BadRequest("The request target must be a path.")
        hosts = request.headers.getall("Host", ())
        if len(hosts) != 1:
            raise BadRequest("A request needs exactly one Host header.")
        name = host_name(hosts[0])
        if name is None:
            raise BadRequest("The Host header is not a host name.")
        # SECURITY: Host header injection (cache poisoning, password-reset and redirect poisoning):
        # only our own names get content; probes (which address a pod by IP) are exempt, on the path exactly
        # as decoded, and answer nothing built from the Host.
        if name not in served and not request.app[NAMESPACES].of(request.path).any_host:
            raise web.HTTPMisdirectedRequest()

    return stage
