"""nginx configurations for the benchmark: the static upstream, and what ops would build instead of the gateway.

Both run as unprivileged-looking throwaway instances (``-p`` a temporary
prefix, ``daemon off``) on 127.0.0.1 only; nothing of the system nginx is used
but its binary.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# What every row ends up serving: a small help-center article.
ARTICLE = "<!doctype html><title>Article</title><h1>Resetting your password</h1>" + "<p>Lorem ipsum dolor.</p>" * 40
COOKIE_ECHO = "/_bench/cookies"

_COMMON = """
daemon off;
pid {prefix}/{name}.pid;
error_log {prefix}/{name}-error.log warn;
worker_rlimit_nofile 30000;
events {{ worker_connections 12000; }}
"""


def binary() -> str:
    """Debian's nginx: on the PATH, or in /usr/sbin, which a non-root PATH may leave out."""
    return shutil.which("nginx") or "/usr/sbin/nginx"


def preamble(prefix: Path, name: str) -> str:
    """The top of each throwaway configuration: in the foreground, its pid and error log under ``prefix``."""
    return _COMMON.format(prefix=prefix, name=name)


def upstream_conf(prefix: Path, port: int) -> str:
    """The fast static upstream: one worker, plain HTTP, an article everywhere and a cookie echo for the checks."""
    return (
        preamble(prefix, "upstream")
        + f"""
worker_processes 1;
http {{
    access_log off;
    keepalive_requests 10000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = {COOKIE_ECHO} {{ default_type text/plain; return 200 "$http_cookie"; }}
        location / {{ default_type text/html; return 200 "{ARTICLE}"; }}
    }}
}}
"""
    )


def edge_conf(
    prefix: Path, *, proxy_port: int, auth_port: int, upstream_port: int, verifier_port: int, workspace: str
) -> str:
    """Rows (b) and (c): nginx terminating TLS with a ``map`` that forwards the two cookies, without and with
    ``auth_request`` to the verifier. One worker per core, keep-alive upstream, a buffered access log."""
    session, device = f"intercom-session-{workspace}", f"intercom-device-id-{workspace}"
    proxy = """
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header Cookie $forward_cookie;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto https;"""
    tls = f"""
        ssl_certificate {prefix}/cert.pem;
        ssl_certificate_key {prefix}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;"""
    return (
        preamble(prefix, "edge")
        + f"""
worker_processes auto;
http {{
    access_log {prefix}/edge-access.log combined buffer=256k flush=1s;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    upstream origin {{ server 127.0.0.1:{upstream_port}; keepalive 64; keepalive_requests 10000000; }}
    upstream verifier {{ server 127.0.0.1:{verifier_port}; keepalive 64; keepalive_requests 10000000; }}
    map $http_cookie $forward_session {{ default ""; "~(?:^|;)\\s*(?<c>{session}=[^;]*)" $c; }}
    map $http_cookie $forward_device {{ default ""; "~(?:^|;)\\s*(?<c>{device}=[^;]*)" $c; }}
    map "$forward_session;$forward_device" $forward_cookie {{
        "~^;(?<c>.*)$" $c;
        "~^(?<c>.*);$" $c;
        default "$forward_session; $forward_device";
    }}
    server {{
        listen 127.0.0.1:{proxy_port} ssl backlog=4096;{tls}
        location / {{{proxy}
        }}
    }}
    server {{
        listen 127.0.0.1:{auth_port} ssl backlog=4096;{tls}
        location / {{
            auth_request /_auth;
            auth_request_set $portal_user $upstream_http_x_portal_user_id;
            proxy_set_header X-Portal-User-Id $portal_user;{proxy}
        }}
        location = /_auth {{
            internal;
            proxy_pass http://verifier;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}
    }}
}}
"""
    )
