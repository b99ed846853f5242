"""Anthropic SDK clients aimed at the gateway that always present the current wrapper token.

The token is set per request by SDK middleware (which runs once per attempt, inside the SDK's own
retry loop), so a client made at launch keeps working across any number of refreshes. When the
gateway still says the token expired (a laptop that slept through its refresh, a clock a little
off) or was revoked, the middleware renews once and sends the request again. Errors of our own
(device blocked, gateway down) propagate as they are: the SDK neither wraps nor retries them.

Imports `anthropic`, so `proxyclient` imports this module only when an app asks for a client.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
from anthropic import APIRequest, APIResponse, AsyncAPIResponse, AsyncCallNext, CallNext, Middleware

from .errors import RENEWABLE_ERROR_CODES
from .session import ProxySession


class WrapperTokenMiddleware(Middleware):
    def __init__(self, session: ProxySession) -> None:
        self.session = session

    def handle(self, request: APIRequest, call_next: CallNext) -> APIResponse[Any]:
        token = self.session.token()
        response = call_next(with_token(request, token))
        if response.status_code != 401:
            return response
        if not is_renewable_refusal(response.http_response.read()):
            return response
        fresh = self.session.renew_rejected(token)
        return call_next(with_token(request, fresh.wrapper_token))

    async def handle_async(self, request: APIRequest, call_next: AsyncCallNext) -> AsyncAPIResponse[Any]:
        token = await self.session.atoken()
        response = await call_next(with_token(request, token))
        if response.status_code != 401:
            return response
        if not is_renewable_refusal(await response.http_response.aread()):
            return response
        fresh = await self.session.arenew_rejected(token)
        return await call_next(with_token(request, fresh.wrapper_token))


def with_token(request: APIRequest, token: str) -> APIRequest:
    headers = {name: value for name, value in request.headers.items() if name.lower() not in ("authorization", "x-api-key")}
    return request.copy(headers={**headers, "Authorization": f"Bearer {token}"})


def is_renewable_refusal(body: bytes) -> bool:
    try:
        error = json.loads(body).get("error") or {}
        return (error.get("details") or {}).get("error_code") in RENEWABLE_ERROR_CODES
    except (ValueError, AttributeError):
        return False


def anthropic_client(session: ProxySession, **options: Any) -> anthropic.Anthropic:
    """`options` are anthropic.Anthropic's (timeout, max_retries, default_headers, middleware...)."""
    middleware = [WrapperTokenMiddleware(session), *(options.pop("middleware", None) or ())]
    return anthropic.Anthropic(base_url=session.base_url, api_key=session.token(), middleware=middleware, **options)


def async_anthropic_client(session: ProxySession, **options: Any) -> anthropic.AsyncAnthropic:
    """The asyncio twin of `anthropic_client`; construct it where it may block briefly (it may
    bootstrap when there is no token yet), usually right after `ProxyClient.astart()`."""
    middleware = [WrapperTokenMiddleware(session), *(options.pop("middleware", None) or ())]
    return anthropic.AsyncAnthropic(base_url=session.base_url, api_key=session.token(), middleware=middleware, **options)
