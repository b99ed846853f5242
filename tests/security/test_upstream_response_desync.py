"""An upstream connection is kept alive and reused by the next request, which may be another
device's. Bytes that follow an answer (a second answer in the same packet, or one sent later while the
connection sits idle) would be read as the next request's answer: one device would receive what was
sent for another, or a forged answer. The transport keeps the answer it asked for, stops there and
closes that connection, so the next request goes out on a fresh one."""

from __future__ import annotations

import asyncio

from gateway.upstream_http import UpstreamTransport
from tests.gateway.scripted_upstream import OK, exchange, request, serve  # noqa: F401  (serve: the scripted-server fixture)

FORGED = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged"


async def test_a_second_answer_in_the_same_packet_never_reaches_the_next_request(serve):  # noqa: F811
    async def answer_with_a_stowaway(reader, writer):
        while await scripted.next_request(reader):
            writer.write(OK + FORGED)
            await writer.drain()

    scripted = await serve(answer_with_a_stowaway)
    transport = UpstreamTransport(max_connections=4)
    first, first_body = await exchange(transport, request(scripted.port))
    second, second_body = await exchange(transport, request(scripted.port))
    await transport.aclose()
    assert (first.status_code, first.headers.raw, first_body) == (200, [(b"content-length", b"2"), (b"X-Up", b"a")], b"ok")
    assert (second.status_code, second_body) == (200, b"ok")
    assert scripted.connections == 2


async def test_an_answer_sent_to_an_idle_connection_never_reaches_the_next_request(serve):  # noqa: F811
    stowaway_sent = asyncio.Event()

    async def answer_then_push_unasked(reader, writer):
        if not await scripted.next_request(reader):
            return
        writer.write(OK)
        await writer.drain()
        if scripted.connections == 1:
            await asyncio.sleep(0.05)
            writer.write(FORGED)
            await writer.drain()
            stowaway_sent.set()
        if not await scripted.next_request(reader):
            return
        writer.write(OK)
        await writer.drain()

    scripted = await serve(answer_then_push_unasked)
    transport = UpstreamTransport(max_connections=4)
    await exchange(transport, request(scripted.port))
    await stowaway_sent.wait()
    await asyncio.sleep(0.05)
    second, second_body = await exchange(transport, request(scripted.port))
    await transport.aclose()
    assert (second.status_code, second_body) == (200, b"ok")
    assert scripted.connections == 2
