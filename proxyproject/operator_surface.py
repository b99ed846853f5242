"""What of the platform's own surface only operators see in production: the API docs (the schema
maps every route and parameter an attacker could try) and the deep health check's details (which
dependency is down, its error text, its latency).

An operator is a staff session or an operator API key (`tokens.operators.authenticate_operator`).
API_DOCS_PUBLIC and HEALTH_DETAILS_PUBLIC (both on by default with debug on) show them to anyone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control

from proxyproject.lib.errors import AuthenticationFailed, GatewayError, PermissionDenied, error_response
from tokens.operators import authenticate_operator

DocsView = Callable[..., HttpResponse]


async def is_operator(request: HttpRequest) -> bool:
    try:
        await authenticate_operator(request)
    except (AuthenticationFailed, PermissionDenied):
        return False
    return True


def docs_for_operators(view: DocsView) -> Callable[..., Any]:
    """NinjaAPI's `docs_decorator`: wraps both the docs page and the OpenAPI schema.

    Not ninja operations, so errors are answered here: a browser without any credential is sent to
    the admin login (and back); anything else gets the error envelope the API uses."""

    @functools.wraps(view)
    async def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        public = settings.API_DOCS_PUBLIC
        if not public:
            try:
                await authenticate_operator(request)
            except GatewayError as error:
                browser = "text/html" in request.headers.get("accept", "") and "authorization" not in request.headers
                if isinstance(error, AuthenticationFailed) and browser:
                    return redirect_to_login(request.get_full_path())
                return error_response(error)
        response = await sync_to_async(view)(request, *args, **kwargs)
        if not public:
            patch_cache_control(response, private=True, no_store=True)
        return response

    return guarded


def health_summary(body: dict[str, object]) -> dict[str, object]:
    """The deep check's answer without its details: what a load balancer needs (the status code
    and `status`), nothing about which dependency failed or why."""
    return {"status": body["status"], "timestamp": body["timestamp"]}


async def sees_health_details(request: HttpRequest) -> bool:
    return settings.HEALTH_DETAILS_PUBLIC or await is_operator(request)
