"""A scripted upstream on a real socket, for the gateway's upstream transport: each test says what the
server writes back, byte for byte (`tests/gateway/test_upstream_http.py`,
`tests/security/test_upstream_response_desync.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from gateway.upstream_http import UpstreamTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nX-Up: a\r\n\r\nok"


class ScriptedServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
        request = head + (await reader.readexactly(length) if length else b"")
        self.received.append(request)
        return request

    async def next_request(self, reader: asyncio.StreamReader) -> bool:
        """Read the next request; False once the client has closed the connection instead."""
        try:
            await self.read_request(reader)
        except asyncio.IncompleteReadError:
            return False
        return True

    async def answer_until_closed(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: bytes) -> None:
        """Read a request, write `reply`, and return once the client's transport closes its end."""
        await self.read_request(reader)
        writer.write(reply)
        await writer.drain()
        await reader.read()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[ScriptedServer]]]:
    servers: list[ScriptedServer] = []

    async def start(handler: Handler) -> ScriptedServer:
        scripted = ScriptedServer(handler)
        scripted.server = await asyncio.start_server(scripted._serve, "127.0.0.1", 0)
        servers.append(scripted)
        return scripted

    yield start
    for scripted in servers:
        assert scripted.server is not None
        scripted.server.close()


def request(port: int, method: str = "POST", body: bytes = b'{"a":1}', read: float = 5.0) -> httpx.Request:
    headers = [(b"host", f"127.0.0.1:{port}".encode()), (b"X-Api-Key", b"k")]
    if body:
        headers.insert(1, (b"content-length", str(len(body)).encode()))
    return httpx.Request(
        method,
        f"http://127.0.0.1:{port}/v1/messages?beta=true",
        headers=headers,
        stream=httpx.ByteStream(body),
        extensions={"timeout": {"connect": 5.0, "read": read, "write": read, "pool": 5.0}},
    )


async def exchange(transport: UpstreamTransport, sent: httpx.Request) -> tuple[httpx.Response, bytes]:
    sent.read()
    response = await transport.handle_async_request(sent)
    try:
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()
    return response, body
