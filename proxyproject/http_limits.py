"""HTTP limits enforced by the server itself, before any request reaches the ASGI application.

uvicorn's httptools protocol accepts headers of any size and number and waits forever for a client
that stops sending its headers or its body: one connection could grow a worker by hundreds of
megabytes, and a few thousand stalled ones (slowloris) hold it without ever authenticating. This
subclass adds the missing limits on the parser's own callbacks, so they cover `/v1` and every
Django path alike and cost a counter per header on the hot path:

- request target longer than HTTP_MAX_REQUEST_LINE_BYTES -> 414;
- more than HTTP_MAX_HEADERS headers, or request target plus header names and values larger than
  HTTP_MAX_HEADER_BYTES -> 431. httptools buffers a header value until it ends, so bytes that
  arrive while the headers are still incomplete are counted per read too: a worker never holds
  more than the limit plus one socket read of a refused request;
- headers not complete within HTTP_HEADER_TIMEOUT_SECONDS of the connection opening, or of the
  first byte after an idle keep-alive period -> connection closed;
- no request-body bytes for HTTP_BODY_IDLE_TIMEOUT_SECONDS while the application waits for them
  -> connection closed (not while the server itself paused reading: that is flow control).

Keep-alive idle time is uvicorn's own `timeout_keep_alive` (proxyproject/server.py sets it). Nothing
here runs once a request's body is complete, so long responses (SSE streams) are never cut.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from http import HTTPStatus

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxyproject.lib.errors import GatewayError, RequestHeadersTooLarge, RequestLineTooLong, error_body, new_request_id


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_request_line_bytes: int
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_idle_timeout: float


def refusal(error: GatewayError) -> bytes:
    """A complete HTTP/1.1 response carrying the gateway's error envelope; the connection closes after it."""
    request_id = new_request_id()
    body = error_body(error, request_id)
    head = [
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        f"request-id: {request_id}",
        *(f"{name}: {value}" for name, value in error.response_headers().items()),
        "connection: close",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


@functools.cache
def configured_limits() -> HttpLimits:
    """Read once per worker, at its first connection (the application, hence Django's settings, is loaded by then)."""
    from django.conf import settings

    return HttpLimits(
        max_request_line_bytes=settings.HTTP_MAX_REQUEST_LINE_BYTES,
        max_header_bytes=settings.HTTP_MAX_HEADER_BYTES,
        max_headers=settings.HTTP_MAX_HEADERS,
        header_timeout=settings.HTTP_HEADER_TIMEOUT_SECONDS,
        body_idle_timeout=settings.HTTP_BODY_IDLE_TIMEOUT_SECONDS,
    )


class LimitExceeded(Exception):
    """Raised from a parser callback to stop parsing; carries the error that refuses the request."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__()
        self.error = error


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with size limits on the request head and timeouts on slow clients."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.limits = configured_limits()
        self.awaiting_headers = True
        self.message_began = False  # during the current read
        self.request_line_bytes = 0
        self.header_bytes = 0  # request target + header names and values, counted by the parser's callbacks
        self.unparsed_header_bytes = 0  # whole reads that ended with the headers still incomplete
        self.header_count = 0
        self.header_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.last_body_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_header_timer()
        self.cancel_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.timeout_keep_alive_task is not None:
            # The first bytes after an idle keep-alive period: the next request's headers are due.
            self.start_header_timer()
        self._unset_keepalive_if_required()
        self.message_began = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, LimitExceeded):
                self.refuse(exc.__context__.error)
                return
            self.parser_failed()
            return
        except httptools.HttpParserError:
            self.parser_failed()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self.awaiting_headers and not self.message_began:
            # This whole read belongs to a request head that is still incomplete.
            self.unparsed_header_bytes += len(data)
            if self.unparsed_header_bytes > self.limits.max_header_bytes:
                self.refuse(RequestHeadersTooLarge())

    def handle_websocket_upgrade(self) -> None:
        """The websocket protocol takes the connection over; none of these timers concern it."""
        self.cancel_header_timer()
        self.cancel_body_timer()
        super().handle_websocket_upgrade()

    def parser_failed(self) -> None:
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    def refuse(self, error: GatewayError) -> None:
        self.cancel_header_timer()
        if not self.transport.is_closing():
            self.transport.write(refusal(error))
            self.transport.close()

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.message_began = True
        self.awaiting_headers = True
        self.request_line_bytes = self.header_bytes = self.unparsed_header_bytes = self.header_count = 0
        if self.header_timer is None:
            self.start_header_timer()

    def on_url(self, url: bytes) -> None:
        self.request_line_bytes += len(url)
        if self.request_line_bytes > self.limits.max_request_line_bytes:
            raise LimitExceeded(RequestLineTooLong())
        self.header_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        self.header_bytes += len(name) + len(value)
        if self.header_count > self.limits.max_headers or self.header_bytes > self.limits.max_header_bytes:
            raise LimitExceeded(RequestHeadersTooLarge())
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.awaiting_headers = False
        self.cancel_header_timer()
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self.last_body_at = self.loop.time()
            self.body_timer = self.loop.call_later(self.limits.body_idle_timeout, self.body_idle_check)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.last_body_at = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.cancel_body_timer()
        super().on_message_complete()

    # Timers

    def start_header_timer(self) -> None:
        self.cancel_header_timer()
        self.header_timer = self.loop.call_later(self.limits.header_timeout, self.header_timeout_expired)

    def cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def header_timeout_expired(self) -> None:
        self.header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def cancel_body_timer(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def body_idle_check(self) -> None:
        """Closes a connection whose client stopped sending the body; re-arms while bytes still flow."""
        now = self.loop.time()
        if self.flow.read_paused:
            self.last_body_at = now  # the server stopped reading, not the client
        remaining = self.last_body_at + self.limits.body_idle_timeout - now
        if remaining > 0:
            self.body_timer = self.loop.call_later(remaining, self.body_idle_check)
            return
        self.body_timer = None
        if not self.transport.is_closing():
            self.transport.close()
