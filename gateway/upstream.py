"""The pooled upstream client: httpx's request and response types over the gateway's own HTTP/1.1
transport (`gateway.upstream_http`), one connection pool per event loop.

Why not httpx's own transport: measured on this machine with a bare pass-through on one core (fake
upstream and load on the other; 256 concurrent streams of 36 events), httpx 0.28's default
transport carried 27-37 streams/s with a 4.7-5.3 s median first byte, against 175-192 streams/s
over aiohttp's client (non-streaming at 64 connections: 134-190 req/s against 554-1,453); the
figures are in the gateway issue's report. aiohttp's client in turn cost about a fifth of the
gateway's CPU per request, which the gateway's own transport saves (see its docstring). Either way
the transport is the gateway's, so that its exceptions mean what the proxy needs: a failure before
the response is told apart from a read failure, and a connect error is never reported as a timeout.

Nothing is added to the request (no User-Agent, Accept or Content-Type of the client's own) and
nothing is decompressed: the request is forwarded as the client sent it and the response read as sent.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Sequence

import httpx
from django.conf import settings

from gateway.upstream_http import UpstreamTransport
from proxyproject.lib.errors import GatewayError, UpstreamTimeout, UpstreamUnreachable

_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})

_transports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, UpstreamTransport] = weakref.WeakKeyDictionary()
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


class _NoCookies(httpx.Cookies):
    """Cookies the upstream sets must not be kept and sent on behalf of other devices; not even
    looked at, since httpx's cookie extraction costs measurable time on every response."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


def get_upstream_transport() -> UpstreamTransport:
    """This event loop's connection pool (created on first use)."""
    loop = asyncio.get_running_loop()
    transport = _transports.get(loop)
    if transport is None:
        transport = UpstreamTransport(max_connections=settings.UPSTREAM_MAX_CONNECTIONS)
        _transports[loop] = transport
    return transport


def get_upstream_client() -> httpx.AsyncClient:
    """An httpx client over this loop's pool, for callers that want the full client API."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            transport=get_upstream_transport(),
            timeout=upstream_timeouts(),
            cookies=_NoCookies(),
            follow_redirects=False,
            trust_env=False,
        )
        _clients[loop] = client
    return client


async def send_upstream(request: httpx.Request) -> httpx.Response:
    """Send through the pool's transport, the response body left to stream.

    The proxy forwards exactly one request per call with no redirects, auth flows or cookies, so
    it skips AsyncClient.send's layers for them (a tenth of a worker's time on the hot path in a
    py-spy profile); requests and responses keep httpx's types."""
    response = await get_upstream_transport().handle_async_request(request)
    response.request = request
    return response


async def close_upstream_client() -> None:
    """Lifespan shutdown: close this loop's pool."""
    loop = asyncio.get_running_loop()
    _clients.pop(loop, None)
    transport = _transports.pop(loop, None)
    if transport is not None:
        await transport.aclose()


def upstream_timeouts() -> httpx.Timeout:
    return _timeouts(settings.UPSTREAM_CONNECT_TIMEOUT, settings.UPSTREAM_READ_TIMEOUT)


@functools.lru_cache(maxsize=8)
def _timeouts(connect: float, read: float) -> httpx.Timeout:
    """Built once per setting values: a Timeout per request was a measurable share of building it."""
    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


_URL_CACHE_LIMIT = 256
_parsed_urls: dict[str, httpx.URL] = {}


def upstream_url(path: str, query: bytes) -> httpx.URL:
    """The same path and raw query string on ANTHROPIC_BASE_URL.

    Parsed URLs are kept: parsing one costs about 30 µs, a fifth of httpx's share of a request,
    and a fleet calls a handful of distinct paths. The cache is emptied when it holds
    _URL_CACHE_LIMIT URLs, so clients varying their query strings cannot grow it."""
    text = settings.ANTHROPIC_BASE_URL + path + ("?" + query.decode("latin-1") if query else "")
    url = _parsed_urls.get(text)
    if url is None:
        if len(_parsed_urls) >= _URL_CACHE_LIMIT:
            _parsed_urls.clear()
        url = _parsed_urls[text] = httpx.URL(text)
    return url


def build_upstream_request(
    method: str, path: str, query: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
) -> httpx.Request:
    """The upstream request, with the Host and Content-Length headers httpx itself would add.

    The body is given as a stream with those headers already set, which skips httpx's content
    encoding and header defaulting (half the cost of building the request)."""
    url = upstream_url(path, query)
    framing = [(b"host", url.netloc)]
    if body or method in _METHODS_WITH_BODY:
        framing.append((b"content-length", str(len(body)).encode()))
    request = httpx.Request(
        method,
        url,
        headers=framing + list(headers),
        stream=httpx.ByteStream(body),
        extensions={"timeout": upstream_timeouts().as_dict()},
    )
    request.read()
    return request


def retryable_before_response(exc: httpx.TransportError) -> bool:
    """Failures that happen before the upstream answered, where a second attempt is safe: the
    connection could not be made, or it died before any response. Not a timeout waiting for the
    answer: the upstream may be generating it, and a retry would double a long wait."""
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.WriteError))


def gateway_error_for(exc: httpx.TransportError, *, mid_stream: bool = False) -> GatewayError:
    """The one mapping of upstream client failures to the gateway's errors."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
        return UpstreamTimeout("The upstream API stopped sending mid-stream." if mid_stream else None)
    return UpstreamUnreachable("The upstream connection broke mid-stream." if mid_stream else None)
