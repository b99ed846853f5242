"""The upstream's HTTP/1.1 client: keep-alive connections per event loop, the request written as
the proxy built it, the response parsed by httptools (llhttp, the parser uvicorn already uses).

Why not aiohttp's client under httpx's API: a JSON request at 64 connections spent about a fifth of
the gateway's CPU inside aiohttp's `ClientSession._request` and httpx's response plumbing (URL and
header objects, timers, tracing hooks, a cookie jar), for an exchange whose framing the proxy has
already decided (`build_upstream_request` sets Host and Content-Length; nothing is added,
nothing decompressed). Measured by `python -m bench.cpu` (CPU per request, see the README).

Failures keep the meaning `gateway.upstream` gives them, as httpx exceptions: a connection that
cannot be made is ConnectError (ConnectTimeout when it takes longer than the connect timeout, or
when no pooled connection comes free within it); a connection that closes or garbles before any
response is RemoteProtocolError (the proxy retries those once on another key); no response within
the read timeout is ReadTimeout; a body cut short is RemoteProtocolError, a body that stops
arriving ReadTimeout. A body read to its end gives its connection back to the pool; one abandoned
half-way closes it, which also stops the upstream generating.

llhttp itself puts no bound on a response's head: httptools buffers a header value until it ends,
so an upstream (or anything answering in its place) sending a header that never ends would grow
the worker until the read timeout, and a complete one of megabytes would be relayed to the client.
The answer's status line, header fields and trailers are limited here as the server limits a
request's (`proxyproject.http_limits`): by the parser's callbacks, and per read while they are
incomplete (reads that carried no body byte), so a worker holds at most the limit plus one read.
Over the limit, or with more than `_MAX_HEADERS` fields, the answer is a RemoteProtocolError.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator

import httptools
import httpx

_READ_BUFFER_HIGH = 256 * 1024  # body bytes waiting for the relay before the socket stops being read
_READ_BUFFER_LOW = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})
_MAX_HEAD_BYTES = 64 * 1024  # an Anthropic answer's head is about 2 KiB
_MAX_HEADERS = 256
Origin = tuple[bytes, bytes, int]


class _UnsolicitedResponse(Exception):
    """The upstream began an answer no request asked for."""


class _HeadTooLarge(Exception):
    """The answer's head (or its trailers) passed `_MAX_HEAD_BYTES` or `_MAX_HEADERS`."""


class _Connection(asyncio.Protocol):
    """One connection to the upstream, carrying one exchange at a time."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.lost = False
        # The read timeout's one timer, moved forward lazily (see `wait`), and the future it fails.
        self.read_deadline: float | None = None
        self.read_timer: asyncio.TimerHandle | None = None
        self.awaited: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        """A new exchange. The read timer is kept: an exchange's first wait moves its deadline."""
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head: asyncio.Future[None] | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.delimited_by_close = False
        self.error: httpx.TransportError | None = None
        self.wakeup: asyncio.Future[None] | None = None
        self.informational = False
        self.paused = False
        self.head_only = False
        self.keep_alive = False
        self.head_bytes = 0  # status line and header fields (trailers too), counted by the callbacks
        self.header_count = 0
        self.unparsed_head_bytes = 0  # whole reads that carried no body byte and did not end the answer
        self.body_in_read = False

    # -- the exchange -------------------------------------------------------------------------
    def send(self, loop: asyncio.AbstractEventLoop, payload: bytes, *, head_only: bool) -> None:
        """Start an exchange; `wait_for_head` then waits for its answer."""
        self._reset()
        self.head_only = head_only
        self.head = loop.create_future()
        assert self.transport is not None
        self.transport.write(payload)

    @property
    def reusable(self) -> bool:
        """A HEAD answer's Content-Length announces a body that never comes, which the parser would
        wait for: its connection is not reused."""
        return self.complete and not self.lost and not self.head_only and not self.chunks and self.keep_alive

    def close(self) -> None:
        self.lost = True
        self._stop_read_timer()
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.head is None:  # bytes no request asked for: nothing after them can be trusted
            self.close()
            return
        self.body_in_read = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # not an HttpParserError: it would escape to the event loop
            self._fail(httpx.RemoteProtocolError("The upstream switched protocols (101), which no request asks for."))
            self.close()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _UnsolicitedResponse):
                self.close()
                return
            if isinstance(exc.__context__, _HeadTooLarge):
                self._head_too_large()
                return
            self._fail(httpx.RemoteProtocolError(f"Malformed upstream response: {exc}"))
            self.close()
            return
        if self.body_in_read or self.complete:
            self.unparsed_head_bytes = 0
            return
        self.unparsed_head_bytes += len(data)
        if self.unparsed_head_bytes > _MAX_HEAD_BYTES:
            self._head_too_large()

    def _head_too_large(self) -> None:
        self._fail(httpx.RemoteProtocolError(f"Upstream response headers over {_MAX_HEAD_BYTES} bytes or {_MAX_HEADERS} fields."))
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.head is not None and not self.head.done():
            self._fail(httpx.RemoteProtocolError("Server disconnected without sending a response."))
        elif not self.complete:
            if self.delimited_by_close and exc is None:
                self.complete = True
                self._wake()
            else:
                self._fail(httpx.RemoteProtocolError(f"Upstream body ended early: {exc or 'connection closed'}"))

    def pause_writing(self) -> None:
        """The request is written whole (it is in memory already); the kernel takes it at its pace."""

    def resume_writing(self) -> None:
        """See pause_writing."""

    # -- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        """A second answer to one request (bytes after the answer, in its packet or later): served to
        the next request on this connection, it would be another device's answer. The parse stops
        here, the answer already read stands, and the connection is closed."""
        if self.complete:
            raise _UnsolicitedResponse

    def on_status(self, reason: bytes) -> None:
        self._count_head(len(reason))
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        self._count_head(len(name) + len(value))
        self.headers.append((name, value))

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > _MAX_HEAD_BYTES or self.header_count > _MAX_HEADERS:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            self.informational = True
            self.headers, self.reason = [], b""
            return
        self.status = status
        self.informational = False
        if self.head_only:
            self.complete = True
        self.delimited_by_close = (
            not self.head_only
            and status not in _NO_BODY_STATUSES
            and not any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self.headers)
        )
        if self.head is not None and not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.body_in_read = True
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _READ_BUFFER_HIGH and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # the parser forgets once the next message begins
        self._wake()

    # -- waiting ------------------------------------------------------------------------------
    def _fail(self, error: httpx.TransportError) -> None:
        if self.error is None:
            self.error = error
        if self.head is not None and not self.head.done():
            self.head.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        if self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(None)

    def take(self) -> bytes:
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.paused and self.buffered < _READ_BUFFER_LOW and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return chunk

    async def wait_for_head(self, timeout: float | None) -> None:
        """Until the response's head has come; TimeoutError after `timeout` seconds. On the
        connection's read timer, as `wait` is, and the timer outlives the exchange: on a busy
        connection no request arms or cancels one (`asyncio.timeout` here took about 2% of a
        worker's CPU at 64 connections, py-spy)."""
        assert self.head is not None
        await self._await_within(self.head, timeout)

    async def wait(self, timeout: float | None) -> None:
        """Until the parser has news (a chunk, the end, an error); TimeoutError after `timeout`
        seconds without any. A stream waits here between every two events, and a timer armed and
        cancelled per wait (`asyncio.timeout`) cost about 7% of a streaming worker's CPU (py-spy, 256
        streams): the connection keeps one timer instead, and a wait only moves its deadline; the
        timer, when it fires early, re-arms itself for the deadline."""
        self.wakeup = wakeup = asyncio.get_running_loop().create_future()
        try:
            await self._await_within(wakeup, timeout)
        finally:
            self.wakeup = None

    async def _await_within(self, future: asyncio.Future[None], timeout: float | None) -> None:
        if timeout is None:
            self.read_deadline = None
        else:
            loop = future.get_loop()
            self.read_deadline = deadline = loop.time() + timeout
            timer = self.read_timer
            if timer is None or timer.when() > deadline:  # none, or set for a longer timeout
                if timer is not None:
                    timer.cancel()
                self.read_timer = loop.call_at(deadline, self._read_deadline_reached)
        self.awaited = future
        try:
            await future
        finally:
            self.awaited = None

    def _read_deadline_reached(self) -> None:
        self.read_timer = None
        awaited, deadline = self.awaited, self.read_deadline
        if awaited is None or awaited.done() or deadline is None:
            return  # nobody waits: the next wait arms the timer again
        loop = awaited.get_loop()
        if loop.time() >= deadline:
            awaited.set_exception(TimeoutError())
        else:
            self.read_timer = loop.call_at(deadline, self._read_deadline_reached)

    def _stop_read_timer(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None


class _Body(httpx.AsyncByteStream):
    def __init__(self, pool: ConnectionPool, connection: _Connection, read_timeout: float | None) -> None:
        self._pool = pool
        self._connection = connection
        self._read_timeout = read_timeout
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            if connection.chunks:
                yield connection.take()
            elif connection.complete:
                return
            elif connection.error is not None:
                raise connection.error
            else:
                try:
                    await connection.wait(self._read_timeout)
                except TimeoutError:
                    raise httpx.ReadTimeout("upstream stopped sending") from None

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.release(self._connection)


class ConnectionPool:
    """One event loop's connections to the upstream: idle ones reused newest first, at most
    `max_connections` open; a request finding none free waits for one (within its pool timeout)."""

    def __init__(self, *, max_connections: int, keepalive_seconds: float) -> None:
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.ssl_context: ssl.SSLContext | None = None  # the system's authorities, made on the first https connection

    async def acquire(self, origin: Origin, connect_timeout: float | None, pool_timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        while True:
            idle = self._idle.get(origin)
            while idle:
                connection = idle.pop()
                if not connection.lost and loop.time() - connection.idle_since < self._keepalive_seconds:
                    return connection
                self._discard(connection)
            if self._open < self._max_connections:
                break
            await self._wait_for_a_free_connection(loop, pool_timeout)
        self._open += 1
        try:
            return await self._connect(loop, origin, connect_timeout)
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    async def _wait_for_a_free_connection(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        waiter = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise httpx.ConnectTimeout("no upstream connection came free in time") from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def _connect(self, loop: asyncio.AbstractEventLoop, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        secure = scheme == b"https"
        if secure and self.ssl_context is None:
            self.ssl_context = ssl.create_default_context()
        hostname = host.decode("ascii")
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(origin),
                    hostname.strip("[]"),
                    port,
                    ssl=self.ssl_context if secure else None,
                    server_hostname=hostname.strip("[]") if secure else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connect to {hostname}:{port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"Cannot connect to host {hostname}:{port}: {exc}") from exc
        return connection

    def release(self, connection: _Connection) -> None:
        if connection.reusable:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(connection.origin, []).append(connection)
            self._wake_one()
        else:
            self._discard(connection)

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()


def _request_head(request: httpx.Request) -> bytes:
    """The request line and the headers exactly as the proxy built them (names keep their case)."""
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class UpstreamTransport(httpx.AsyncBaseTransport):
    """httpx's transport interface over the pool, so the proxy keeps httpx's request and response."""

    def __init__(self, *, max_connections: int, keepalive_seconds: float = 30.0) -> None:
        self.pool = ConnectionPool(max_connections=max_connections, keepalive_seconds=keepalive_seconds)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port or (443 if url.raw_scheme == b"https" else 80))
        connection = await self.pool.acquire(origin, timeouts.get("connect"), timeouts.get("pool"))
        try:
            connection.send(
                asyncio.get_running_loop(), _request_head(request) + request.content, head_only=request.method == "HEAD"
            )
            try:
                await connection.wait_for_head(read_timeout)
            except TimeoutError:
                raise httpx.ReadTimeout("no response in time") from None
        except BaseException:
            connection.close()
            self.pool.release(connection)
            raise
        return httpx.Response(
            connection.status,
            headers=connection.headers,
            stream=_Body(self.pool, connection, read_timeout),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": connection.reason},
        )

    async def aclose(self) -> None:
        self.pool.close()
