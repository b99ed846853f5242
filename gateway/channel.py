"""The response side of one ASGI exchange with the client."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from proxyproject.lib.errors import GatewayError, error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientChannel:
    """The response side of one exchange with the client; remembers when the first byte left."""

    __slots__ = ("_send", "started", "finished", "first_byte_at")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.finished = False  # the last body message was handed to the server
        self.first_byte_at: float | None = None

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def write(self, chunk: bytes) -> None:
        if chunk:
            if self.first_byte_at is None:
                self.first_byte_at = time.perf_counter()
            await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def finish(self, chunk: bytes = b"") -> None:
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()
        self.finished = True
        await self._send({"type": "http.response.body", "body": chunk, "more_body": False})

    async def send_whole(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        headers.append((b"content-length", str(len(body)).encode()))
        await self.start(status, headers)
        await self.finish(body)

    async def send_error(self, error: GatewayError, request_id: str, extra_headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """The gateway's own refusal, in Anthropic's envelope with the error's headers."""
        headers = [(b"content-type", b"application/json"), (b"request-id", request_id.encode())]
        headers.extend((name.encode(), value.encode()) for name, value in error.response_headers().items())
        headers.extend(extra_headers)
        await self.send_whole(error.status, headers, error_body(error, request_id))
