"""An upstream (or whatever answers in its place) controls the size of its answer's head. The parser
buffers a header value until it ends, so a header that never ends would grow the worker for the
whole read timeout, and a complete head of megabytes would be relayed to the client. The transport
refuses an answer whose status line, header fields or trailers pass 64 KiB or 256 fields, as a
protocol error, and closes that connection."""

from __future__ import annotations

import httpx
import pytest

from gateway.upstream_http import UpstreamTransport
from tests.gateway.scripted_upstream import exchange, request, serve  # noqa: F401  (serve: the scripted-server fixture)

MEGABYTE = 1024 * 1024
TOO_LARGE = "Upstream response headers over 65536 bytes or 256 fields"


async def _answer_with(serve, head: bytes, endless: bytes = b""):  # noqa: F811
    """A server answering `head`, then writing `endless` until the client hangs up; it records how
    many bytes it managed to send."""
    sent = {"bytes": 0}

    async def answer(reader, writer):
        await scripted.read_request(reader)
        writer.write(head)
        sent["bytes"] += len(head)
        try:
            while endless:
                writer.write(endless)
                await writer.drain()
                sent["bytes"] += len(endless)
                if sent["bytes"] > 16 * MEGABYTE:  # the client read all that: stop, and let it time out
                    await reader.read()
                    return
            await writer.drain()
            await reader.read()
        except ConnectionError:
            return

    scripted = await serve(answer)
    return scripted, sent


async def test_a_response_header_that_never_ends_is_cut_off_at_the_limit(serve):  # noqa: F811
    scripted, sent = await _answer_with(serve, b"HTTP/1.1 200 OK\r\nX-Pad: ", endless=b"a" * 65536)
    transport = UpstreamTransport(max_connections=4)
    with pytest.raises(httpx.RemoteProtocolError, match=TOO_LARGE):
        await exchange(transport, request(scripted.port, read=3.0))
    await transport.aclose()
    assert sent["bytes"] < 16 * MEGABYTE


async def test_a_megabyte_response_header_is_refused(serve):  # noqa: F811
    head = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * MEGABYTE + b"\r\ncontent-length: 2\r\n\r\nok"
    scripted, _ = await _answer_with(serve, head)
    transport = UpstreamTransport(max_connections=4)
    with pytest.raises(httpx.RemoteProtocolError, match=TOO_LARGE):
        await exchange(transport, request(scripted.port))
    await transport.aclose()


async def test_five_thousand_small_response_headers_are_refused(serve):  # noqa: F811
    head = b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 5000 + b"content-length: 2\r\n\r\nok"
    scripted, _ = await _answer_with(serve, head)
    transport = UpstreamTransport(max_connections=4)
    with pytest.raises(httpx.RemoteProtocolError, match=TOO_LARGE):
        await exchange(transport, request(scripted.port))
    await transport.aclose()


async def test_a_chunked_trailer_that_never_ends_is_cut_off_at_the_limit(serve):  # noqa: F811
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: "
    scripted, sent = await _answer_with(serve, head, endless=b"a" * 65536)
    transport = UpstreamTransport(max_connections=4)
    sent_request = request(scripted.port, read=3.0)
    sent_request.read()
    response = await transport.handle_async_request(sent_request)
    received = []
    with pytest.raises(httpx.RemoteProtocolError, match=TOO_LARGE):
        async for chunk in response.aiter_raw():
            received.append(chunk)
    await response.aclose()
    await transport.aclose()
    assert b"".join(received) == b"ok"
    assert sent["bytes"] < 16 * MEGABYTE
