"""The pooled upstream client: httpx's API over an aiohttp transport, one client per event loop.

Why not httpx's own transport: measured on this machine with a bare pass-through on one core (fake
upstream and load on the other; 256 concurrent streams of 36 events), httpx 0.28's default
transport carried 27-37 streams/s with a 4.7-5.3 s median first byte, while httpx over this
transport carried 175-192 streams/s (first byte 317-357 ms), on par with the httpx-aiohttp package
(82-208/s) and close to bare aiohttp (101-249/s); non-streaming at 64 connections: 134-190 req/s
for httpx's transport, 554-1,453 for this one. The figures are in the gateway issue's report. This
transport is ours rather than that package's so that its exceptions mean what the proxy needs: a
failure before the response is told apart from a read failure, and a connect error is never
reported as a timeout.

aiohttp is told not to add headers of its own (User-Agent, Accept, Content-Type) and not to
decompress: the request is forwarded as the client sent it and the response read as sent.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import AsyncIterator, Sequence

import aiohttp
import httpx
from django.conf import settings

from proxyproject.lib.errors import GatewayError, UpstreamTimeout, UpstreamUnreachable

_SKIPPED_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def _connect_failure(exc: Exception) -> httpx.TransportError:
    """An aiohttp failure before any response byte, as the httpx exception of the same meaning."""
    if isinstance(exc, (aiohttp.ConnectionTimeoutError, asyncio.TimeoutError)) and not isinstance(
        exc, aiohttp.SocketTimeoutError
    ):
        return httpx.ConnectTimeout(str(exc) or "connect timed out")
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(str(exc) or "no response in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(exc))
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError("Server disconnected without sending a response.")
    if isinstance(exc, aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(f"Malformed upstream response: {exc.message}")
    if isinstance(exc, aiohttp.ClientOSError):
        return httpx.WriteError(str(exc))
    return httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}")


def _read_failure(exc: Exception) -> httpx.TransportError:
    if isinstance(exc, asyncio.TimeoutError):
        return httpx.ReadTimeout(str(exc) or "upstream stopped sending")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(f"Upstream body ended early: {exc}")
    return httpx.ReadError(f"{type(exc).__name__}: {exc}")


class _AiohttpBody(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _read_failure(exc) from exc

    async def aclose(self) -> None:
        """A body read to its end gives the connection back to the pool; one abandoned half-way
        (client gone, upstream broken) closes it, which also stops the upstream generating."""
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over one aiohttp session (its connection pool), created on first use
    because a session belongs to the event loop it was created on."""

    def __init__(self, *, max_connections: int, keepalive_seconds: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, keepalive_timeout=self._keepalive_seconds, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=_SKIPPED_AUTO_HEADERS,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None, connect=timeouts.get("pool"), sock_connect=timeouts.get("connect"), sock_read=timeouts.get("read")
        )
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]
        body = request.content
        try:
            response = await self._get_session().request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                compress=None,
                timeout=timeout,
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _connect_failure(exc) from exc
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_AiohttpBody(response),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode("latin-1")},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


_transports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AiohttpTransport] = weakref.WeakKeyDictionary()
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


class _NoCookies(httpx.Cookies):
    """Cookies the upstream sets must not be kept and sent on behalf of other devices; not even
    looked at, since httpx's cookie extraction costs measurable time on every response."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


def get_upstream_transport() -> AiohttpTransport:
    """This event loop's connection pool (created on first use)."""
    loop = asyncio.get_running_loop()
    transport = _transports.get(loop)
    if transport is None:
        transport = AiohttpTransport(max_connections=settings.UPSTREAM_MAX_CONNECTIONS)
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
