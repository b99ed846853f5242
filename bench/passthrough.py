"""The bare Django + ninja async pass-through: the framework's floor that the gateway is compared to.

One ninja operation forwards POST /v1/messages to the upstream with the master key and relays the
answer (JSON, or SSE chunk by chunk as it arrives), with one shared keep-alive client per process.
No authentication, policy, metrics or usage: whatever the gateway costs beyond this is its own.

    DJANGO_SETTINGS_MODULE=bench.passthrough_settings uvicorn bench.passthrough:application
"""
from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.passthrough_settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_application = get_asgi_application()

import aiohttp  # noqa: E402
import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from ninja import NinjaAPI  # noqa: E402

from gateway.upstream import get_upstream_client  # noqa: E402

# Never forwarded: hop-by-hop, recomputed, or the client's own credentials.
DROPPED_REQUEST_HEADERS = frozenset({
    "host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade",
    "authorization", "x-api-key", "cookie",
})
RELAYED_RESPONSE_HEADERS = ("request-id", "content-encoding", "cache-control")


@dataclass(slots=True)
class Upstream:
    """An upstream answer: status, the headers we relay, and either a body or a chunk stream."""

    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes | None
    chunks: AsyncIterator[bytes] | None


def default_httpx_client() -> httpx.AsyncClient:
    """httpx with its own transport (httpcore), pooled as widely as the gateway's client."""
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.UPSTREAM_READ_TIMEOUT, connect=settings.UPSTREAM_CONNECT_TIMEOUT),
        limits=httpx.Limits(max_connections=settings.UPSTREAM_MAX_CONNECTIONS,
                            max_keepalive_connections=settings.UPSTREAM_MAX_CONNECTIONS),
    )
    del client.headers["accept-encoding"]  # relay the client's encoding, never ask for our own
    return client


class HttpxForwarder:
    """Through an httpx client: its default transport, or the gateway's own client (httpx over
    the gateway's aiohttp transport, `gateway.upstream.get_upstream_client`)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def forward(self, url: str, headers: dict[str, str], body: bytes) -> Upstream:
        response = await self.client.send(self.client.build_request("POST", url, headers=headers, content=body), stream=True)
        content_type = response.headers.get("content-type", "application/json")
        relayed = {name: response.headers[name] for name in RELAYED_RESPONSE_HEADERS if name in response.headers}
        if not content_type.startswith("text/event-stream"):
            try:
                return Upstream(response.status_code, content_type, relayed, await response.aread(), None)
            finally:
                await response.aclose()

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()

        return Upstream(response.status_code, content_type, relayed, None, chunks())

    async def close(self) -> None:
        await self.client.aclose()


class AiohttpForwarder:
    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=settings.UPSTREAM_MAX_CONNECTIONS),
            timeout=aiohttp.ClientTimeout(sock_read=settings.UPSTREAM_READ_TIMEOUT, sock_connect=settings.UPSTREAM_CONNECT_TIMEOUT),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
        )

    async def forward(self, url: str, headers: dict[str, str], body: bytes) -> Upstream:
        response = await self.session.post(url, headers=headers, data=body)
        content_type = response.headers.get("content-type", "application/json")
        relayed = {name: response.headers[name] for name in RELAYED_RESPONSE_HEADERS if name in response.headers}
        if not content_type.startswith("text/event-stream"):
            try:
                return Upstream(response.status, content_type, relayed, await response.read(), None)
            finally:
                response.release()

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
            finally:
                response.release()

        return Upstream(response.status, content_type, relayed, None, chunks())

    async def close(self) -> None:
        await self.session.close()


Forwarder = HttpxForwarder | AiohttpForwarder
_forwarder: Forwarder | None = None


def shared_forwarder() -> Forwarder:
    """One client per process, made on first use inside the server's event loop."""
    global _forwarder
    if _forwarder is None:
        transport = settings.BENCH_PASSTHROUGH_TRANSPORT
        if transport == "aiohttp":
            _forwarder = AiohttpForwarder()
        elif transport == "gateway":
            _forwarder = HttpxForwarder(get_upstream_client())
        else:
            _forwarder = HttpxForwarder(default_httpx_client())
    return _forwarder


def upstream_headers(request: HttpRequest) -> dict[str, str]:
    headers = {name.lower(): value for name, value in request.headers.items() if name.lower() not in DROPPED_REQUEST_HEADERS}
    headers[settings.UPSTREAM_AUTH_HEADER] = (
        settings.ANTHROPIC_API_KEY if settings.UPSTREAM_AUTH_HEADER == "x-api-key" else f"Bearer {settings.ANTHROPIC_API_KEY}"
    )
    return headers


api = NinjaAPI(title="bench pass-through", urls_namespace="bench-passthrough", docs_url=None, openapi_url=None)


@api.post("/v1/messages", auth=None)
async def messages(request: HttpRequest) -> HttpResponse:
    upstream = await shared_forwarder().forward(settings.ANTHROPIC_BASE_URL + "/v1/messages", upstream_headers(request), request.body)
    if upstream.chunks is None:
        response: HttpResponse | StreamingHttpResponse = HttpResponse(upstream.body, status=upstream.status, content_type=upstream.content_type)
        response["content-length"] = str(len(upstream.body))
    else:
        response = StreamingHttpResponse(upstream.chunks, status=upstream.status, content_type=upstream.content_type)
    for name, value in upstream.headers.items():
        response[name] = value
    return response


urlpatterns = [path("", api.urls)]

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


async def application(scope: dict, receive: Receive, send: Send) -> None:
    """Django for HTTP; the lifespan closes the shared client (uvicorn; daphne has no lifespan)."""
    if scope["type"] != "lifespan":
        await django_application(scope, receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _forwarder is not None:
                await _forwarder.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
