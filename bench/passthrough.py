"""The bare pass-throughs the gateway is compared to: the framework's floor.

`application`: one ninja operation, behind Django's ASGI handler, forwards POST /v1/messages to the
upstream with the master key and relays the answer (JSON, or SSE chunk by chunk as it arrives).
`asgi_application`: the same forwarding as a raw ASGI app, without Django's handler (the gateway
routes /v1 that way). One shared keep-alive client per process; no authentication, policy,
metrics or usage: whatever the gateway costs beyond these is its own.

    DJANGO_SETTINGS_MODULE=bench.passthrough_settings uvicorn bench.passthrough:application
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
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

# Never forwarded: hop-by-hop, recomputed, the client's own credentials, and its accept-encoding:
# like the gateway (which reads usage from the bytes), the pass-throughs ask for an identity body.
DROPPED_REQUEST_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "authorization",
        "x-api-key",
        "cookie",
        "accept-encoding",
    }
)
RELAYED_RESPONSE_HEADERS = ("request-id", "cache-control")


@dataclass(slots=True)
class Upstream:
    """An upstream answer: status, the headers we relay, and either a body or a chunk stream."""

    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes | None
    chunks: AsyncGenerator[bytes, None] | None


def default_httpx_client() -> httpx.AsyncClient:
    """httpx with its own transport (httpcore), pooled as widely as the gateway's client."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.UPSTREAM_READ_TIMEOUT, connect=settings.UPSTREAM_CONNECT_TIMEOUT),
        limits=httpx.Limits(
            max_connections=settings.UPSTREAM_MAX_CONNECTIONS, max_keepalive_connections=settings.UPSTREAM_MAX_CONNECTIONS
        ),
    )


class HttpxForwarder:
    """Through an httpx client: its default transport, or the gateway's own client (httpx over
    the gateway's HTTP/1.1 transport, `gateway.upstream.get_upstream_client`)."""

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

        async def chunks() -> AsyncGenerator[bytes, None]:
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
            timeout=aiohttp.ClientTimeout(
                sock_read=settings.UPSTREAM_READ_TIMEOUT, sock_connect=settings.UPSTREAM_CONNECT_TIMEOUT
            ),
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

        async def chunks() -> AsyncGenerator[bytes, None]:
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


def master_key_header() -> tuple[str, str]:
    if settings.UPSTREAM_AUTH_HEADER == "x-api-key":
        return "x-api-key", settings.ANTHROPIC_API_KEY
    return "authorization", f"Bearer {settings.ANTHROPIC_API_KEY}"


def upstream_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    headers = {name.lower(): value for name, value in pairs if name.lower() not in DROPPED_REQUEST_HEADERS}
    name, value = master_key_header()
    headers[name] = value
    headers["accept-encoding"] = "identity"
    return headers


def messages_url() -> str:
    return settings.ANTHROPIC_BASE_URL + "/v1/messages"


api = NinjaAPI(title="bench pass-through", urls_namespace="bench-passthrough", docs_url=None, openapi_url=None)


@api.post("/v1/messages", auth=None)
async def messages(request: HttpRequest) -> HttpResponse:
    upstream = await shared_forwarder().forward(messages_url(), upstream_headers(request.headers.items()), request.body)
    if upstream.chunks is None:
        response: HttpResponse | StreamingHttpResponse = HttpResponse(
            upstream.body, status=upstream.status, content_type=upstream.content_type
        )
        response["content-length"] = str(len(upstream.body))
    else:
        response = StreamingHttpResponse(upstream.chunks, status=upstream.status, content_type=upstream.content_type)
    for name, value in upstream.headers.items():
        response[name] = value
    return response


urlpatterns = [path("", api.urls)]

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Startup does nothing (the client is made on first use); shutdown closes the client."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _forwarder is not None:
                await _forwarder.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope: dict, receive: Receive, send: Send) -> None:
    """The ninja pass-through: Django for HTTP (uvicorn's lifespan closes the client; daphne has none)."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
    else:
        await django_application(scope, receive, send)


async def asgi_application(scope: dict, receive: Receive, send: Send) -> None:
    """The bare ASGI pass-through: the same forwarding without Django's handler or ninja, the
    floor of a proxy that, like the gateway, routes /v1 around Django."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
    elif scope["method"] == "POST" and scope["path"] == "/v1/messages":
        await forward_asgi(receive, send, scope["headers"])
    else:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


async def forward_asgi(receive: Receive, send: Send, raw_headers: list[tuple[bytes, bytes]]) -> None:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    headers = upstream_headers((name.decode("latin-1"), value.decode("latin-1")) for name, value in raw_headers)
    upstream = await shared_forwarder().forward(messages_url(), headers, body)
    response_headers = [(b"content-type", upstream.content_type.encode("latin-1"))]
    response_headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in upstream.headers.items()]
    if upstream.chunks is None:
        response_headers.append((b"content-length", str(len(upstream.body)).encode()))
        await send({"type": "http.response.start", "status": upstream.status, "headers": response_headers})
        await send({"type": "http.response.body", "body": upstream.body})
        return
    await send({"type": "http.response.start", "status": upstream.status, "headers": response_headers})
    # A client that leaves mid-stream must close the upstream stream too, as Django's handler does.
    relay = asyncio.ensure_future(relay_chunks(upstream.chunks, send))
    disconnect = asyncio.ensure_future(wait_for_disconnect(receive))
    await asyncio.wait({relay, disconnect}, return_when=asyncio.FIRST_COMPLETED)
    for task in (relay, disconnect):
        task.cancel()
    await asyncio.gather(relay, disconnect, return_exceptions=True)
    await upstream.chunks.aclose()


async def relay_chunks(chunks: AsyncGenerator[bytes, None], send: Send) -> None:
    async for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        continue
