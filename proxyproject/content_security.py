"""Content-Security-Policy on every HTML page the gateway serves (the admin, its usage dashboard and
live feed, the API docs).

A small middleware rather than django-csp: the policy is one constant string with no per-view
variations and no nonces (no page has an inline script or style; their code is in static files),
so a dependency would add settings without adding anything this does not do. A page that one day
needs an inline script should move it to a static file rather than weaken this policy.
"""

from __future__ import annotations

from collections.abc import Callable

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import sync_and_async_middleware

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # Django's admin stylesheets draw their icons as data: SVGs.
        "img-src 'self' data:",
        "font-src 'self'",
        # 'self' covers ws:/wss: to the same host and port for the live feed (CSP level 3).
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


def add_content_security_policy(response: HttpResponse) -> HttpResponse:
    if settings.CONTENT_SECURITY_POLICY_ENABLED and response.get("Content-Type", "").startswith("text/html"):
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    return response


@sync_and_async_middleware
def ContentSecurityPolicyMiddleware(get_response: Callable) -> Callable:  # noqa: N802  (a middleware path names it like a class)
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            return add_content_security_policy(await get_response(request))
    else:

        def middleware(request: HttpRequest) -> HttpResponse:
            return add_content_security_policy(get_response(request))

    return middleware
