"""An upstream (or something on its path) answers `101 Switching Protocols`, which the gateway never
asks for: what follows is no longer HTTP, so nothing of it may be relayed as the answer. The exchange
is a protocol error (a 502 for the client after the proxy's one retry), the connection is closed,
and the event loop is not left an unhandled exception in a protocol callback."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.upstream_http import UpstreamTransport
from tests.gateway.scripted_upstream import request, serve  # noqa: F401  (serve: the scripted-server fixture)


async def test_an_upstream_switching_protocols_is_a_protocol_error_and_its_connection_closed(serve):  # noqa: F811
    closed = asyncio.Event()
    unhandled: list[dict] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unhandled.append(context))

    async def switch_protocols(reader, writer):
        switching = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n\x81\x05hello"
        await scripted.answer_until_closed(reader, writer, switching)
        closed.set()

    scripted = await serve(switch_protocols)
    transport = UpstreamTransport(max_connections=4)
    sent = request(scripted.port, read=2.0)
    sent.read()
    try:
        with pytest.raises(httpx.RemoteProtocolError, match="101"):
            await transport.handle_async_request(sent)
        await asyncio.wait_for(closed.wait(), 5)
    finally:
        loop.set_exception_handler(None)
        await transport.aclose()
    assert unhandled == []
