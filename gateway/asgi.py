"""`/v1/*` as its own ASGI route, in front of Django.

Django's ASGI handler costs every request two hops to a worker thread (the `request_started`
signal's sync receivers, and `response.close`), a spooled temporary file for the body and the
whole middleware chain (sessions, CSRF, auth, messages), none of which the proxy uses: its caller
is a device with a bearer token, never a browser. So the proxy takes raw ASGI messages and Django
keeps every other path (admin, /bootstrap, /healthz, /admin/circuit-breaker, ...).
"""

from __future__ import annotations

from gateway.channel import ASGIApp, Receive, Scope, Send
from gateway.proxy import proxy_request


def is_proxy_path(path: str) -> bool:
    """`/v1` and everything that could be read as under it (`/v1/...`, `/v1\\...`, `/v1.`): the proxy
    answers such paths itself, refusing those not in canonical form, rather than leaving look-alikes
    to Django's 404 page."""
    return path.startswith("/v1") and (len(path) == 3 or not path[3].isalnum())


def mount_proxy(django_app: ASGIApp) -> ASGIApp:
    """An ASGI app sending `/v1/*` to the proxy and everything else to Django."""

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_proxy_path(scope["path"]):
            await proxy_request(scope, receive, send)
        else:
            await django_app(scope, receive, send)

    return route
