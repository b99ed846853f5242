"""The gateway's upstream transport against scripted servers on real sockets: what it writes, when it
reuses a connection, and which httpx failure each way of breaking off becomes (the proxy's retry and
its error envelope depend on that mapping)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess

import httpx
import pytest

from gateway.upstream_http import UpstreamTransport
from tests.gateway.scripted_upstream import OK, exchange, request, serve  # noqa: F401  (serve: the scripted-server fixture)


async def test_the_request_is_written_exactly_as_built_and_the_answer_read_as_sent(serve):
    async def answer(reader, writer):
        await scripted.read_request(reader)
        writer.write(OK)
        await writer.drain()

    scripted = await serve(answer)
    transport = UpstreamTransport(max_connections=4)
    response, body = await exchange(transport, request(scripted.port))
    await transport.aclose()
    assert scripted.received == [
        f"POST /v1/messages?beta=true HTTP/1.1\r\nhost: 127.0.0.1:{scripted.port}\r\ncontent-length: 7\r\n"
        "X-Api-Key: k\r\n\r\n"
        '{"a":1}'.encode()
    ]
    assert (response.status_code, response.reason_phrase, response.headers.raw, body) == (
        200,
        "OK",
        [(b"content-length", b"2"), (b"X-Up", b"a")],
        b"ok",
    )


async def test_a_finished_exchange_leaves_its_connection_for_the_next(serve):
    async def answer_each(reader, writer):
        while await scripted.next_request(reader):
            writer.write(OK)
            await writer.drain()

    scripted = await serve(answer_each)
    transport = UpstreamTransport(max_connections=4)
    for _ in range(3):
        await exchange(transport, request(scripted.port))
    await exchange(transport, request(scripted.port, method="GET", body=b""))
    await transport.aclose()
    assert (scripted.connections, len(scripted.received)) == (1, 4)


async def test_a_body_abandoned_half_way_closes_its_connection(serve):
    closed = asyncio.Event()

    async def half_a_body(reader, writer):
        await scripted.answer_until_closed(reader, writer, b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        closed.set()

    scripted = await serve(half_a_body)
    transport = UpstreamTransport(max_connections=4)
    sent = request(scripted.port)
    sent.read()
    response = await transport.handle_async_request(sent)
    assert await response.aiter_raw().__anext__() == b"half"
    await response.aclose()
    await asyncio.wait_for(closed.wait(), 10)
    await transport.aclose()


async def test_a_connection_closed_before_any_response_is_a_protocol_error_the_proxy_retries(serve):
    async def hang_up(reader, writer):
        await scripted.read_request(reader)

    scripted = await serve(hang_up)
    transport = UpstreamTransport(max_connections=4)
    sent = request(scripted.port)
    sent.read()
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        await transport.handle_async_request(sent)
    await transport.aclose()


async def test_a_body_cut_short_is_a_protocol_error(serve):
    async def cut(reader, writer):
        await scripted.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await writer.drain()

    scripted = await serve(cut)
    transport = UpstreamTransport(max_connections=4)
    with pytest.raises(httpx.RemoteProtocolError, match="ended early"):
        await exchange(transport, request(scripted.port))
    await transport.aclose()


async def test_a_garbled_answer_is_a_protocol_error(serve):
    async def garble(reader, writer):
        await scripted.read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await reader.read()

    scripted = await serve(garble)
    transport = UpstreamTransport(max_connections=4)
    sent = request(scripted.port)
    sent.read()
    with pytest.raises(httpx.RemoteProtocolError, match="Malformed upstream response"):
        await transport.handle_async_request(sent)
    await transport.aclose()


async def test_no_answer_within_the_read_timeout_is_a_read_timeout(serve):
    async def silent(reader, writer):
        await scripted.read_request(reader)
        await reader.read()

    scripted = await serve(silent)
    transport = UpstreamTransport(max_connections=4)
    sent = request(scripted.port, read=0.2)
    sent.read()
    with pytest.raises(httpx.ReadTimeout):
        await transport.handle_async_request(sent)
    await transport.aclose()


async def test_a_reused_connection_times_out_by_its_new_exchanges_read_timeout(serve):
    async def first_answered_then_silence(reader, writer):
        await scripted.next_request(reader)
        writer.write(OK)
        await writer.drain()
        await scripted.next_request(reader)
        await reader.read()

    scripted = await serve(first_answered_then_silence)
    transport = UpstreamTransport(max_connections=1)
    await exchange(transport, request(scripted.port, read=60))  # leaves the connection's timer set 60 s out
    sent = request(scripted.port, read=0.2)
    sent.read()
    with pytest.raises(httpx.ReadTimeout):
        await asyncio.wait_for(transport.handle_async_request(sent), 10)
    await transport.aclose()
    assert scripted.connections == 1


async def test_a_body_that_stops_arriving_is_a_read_timeout_after_the_read_timeout(serve):
    async def two_chunks_then_silence(reader, writer):
        await scripted.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"3\r\ntwo\r\n")
        await writer.drain()
        await reader.read()

    scripted = await serve(two_chunks_then_silence)
    transport = UpstreamTransport(max_connections=4)
    sent = request(scripted.port, read=0.3)
    sent.read()
    response = await transport.handle_async_request(sent)
    received = []
    loop = asyncio.get_running_loop()
    with pytest.raises(httpx.ReadTimeout):
        async for chunk in response.aiter_raw():
            received.append(chunk)
            last_at = loop.time()
    waited = loop.time() - last_at
    await response.aclose()
    await transport.aclose()
    assert received == [b"one", b"two"]
    assert 0.25 <= waited < 2.0, waited


async def test_a_body_whose_chunks_keep_coming_outlives_the_read_timeout(serve):
    """The read timeout counts from the last chunk, not from the first wait: each chunk moves the
    deadline of the connection's one timer forward."""

    async def a_chunk_every_tenth_of_a_second(reader, writer):
        await scripted.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(8):
            await asyncio.sleep(0.1)
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    scripted = await serve(a_chunk_every_tenth_of_a_second)
    transport = UpstreamTransport(max_connections=4)
    response, body = await exchange(transport, request(scripted.port, read=0.3))
    await transport.aclose()
    assert (response.status_code, body) == (200, b"x" * 8)


async def test_a_refused_connection_is_a_connect_error():
    with socket.socket() as bound:  # a port that is taken but not listening refuses connections
        bound.bind(("127.0.0.1", 0))
        transport = UpstreamTransport(max_connections=4)
        sent = request(bound.getsockname()[1])
        sent.read()
        with pytest.raises(httpx.ConnectError):
            await transport.handle_async_request(sent)


async def test_a_body_delimited_by_the_connection_closing_is_read_whole(serve):
    async def until_close(reader, writer):
        await scripted.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it")
        await writer.drain()

    scripted = await serve(until_close)
    transport = UpstreamTransport(max_connections=4)
    _, body = await exchange(transport, request(scripted.port))
    await transport.aclose()
    assert body == b"all of it"


async def test_a_head_answer_ends_at_its_headers_and_its_connection_is_not_reused(serve):
    async def head_then_ok(reader, writer):
        while await scripted.next_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n")
            await writer.drain()

    scripted = await serve(head_then_ok)
    transport = UpstreamTransport(max_connections=4)
    response, body = await exchange(transport, request(scripted.port, method="HEAD", body=b""))
    await exchange(transport, request(scripted.port, method="HEAD", body=b""))
    await transport.aclose()
    assert (response.status_code, body, scripted.connections) == (200, b"", 2)


async def test_requests_beyond_the_connection_limit_wait_for_a_free_one(serve):
    release = asyncio.Event()

    async def slow_then_ok(reader, writer):
        while await scripted.next_request(reader):
            await release.wait()
            writer.write(OK)
            await writer.drain()

    scripted = await serve(slow_then_ok)
    transport = UpstreamTransport(max_connections=1)
    first = asyncio.ensure_future(exchange(transport, request(scripted.port)))
    second = asyncio.ensure_future(exchange(transport, request(scripted.port)))
    while not scripted.received:
        await asyncio.sleep(0.01)
    assert not second.done()
    release.set()
    results = await asyncio.gather(first, second)
    await transport.aclose()
    assert ([body for _, body in results], scripted.connections) == ([b"ok", b"ok"], 1)


@pytest.fixture
def certificate(tmp_path) -> tuple[str, str]:
    """A self-signed certificate for `localhost`, made by the openssl command line."""
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1"]
        + ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_an_https_upstream_is_reached_over_tls_with_its_name_verified(certificate):
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    received: list[bytes] = []

    async def answer(reader, writer):
        received.append(await reader.readuntil(b"\r\n\r\n") + await reader.readexactly(7))
        writer.write(OK)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    transport = UpstreamTransport(max_connections=4)
    transport.pool.ssl_context = ssl.create_default_context(cafile=cert)  # trusts only the test's certificate
    sent = httpx.Request(
        "POST",
        f"https://localhost:{port}/v1/messages",
        headers=[(b"host", f"localhost:{port}".encode()), (b"content-length", b"7")],
        stream=httpx.ByteStream(b'{"a":1}'),
        extensions={"timeout": {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}},
    )
    try:
        _, body = await exchange(transport, sent)
        assert (body, received[0].split(b"\r\n")[0]) == (b"ok", b"POST /v1/messages HTTP/1.1")
        untrusted = UpstreamTransport(max_connections=4)  # the system's authorities do not know it
        with pytest.raises(httpx.ConnectError):
            await exchange(untrusted, sent)
    finally:
        await transport.aclose()
        server.close()


async def test_an_interim_100_continue_is_skipped_for_the_answer_after_it(serve):
    async def continue_then_ok(reader, writer):
        while await scripted.next_request(reader):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
            await writer.drain()

    scripted = await serve(continue_then_ok)
    transport = UpstreamTransport(max_connections=4)
    answers = [await exchange(transport, request(scripted.port)) for _ in range(2)]
    await transport.aclose()
    assert [(response.status_code, response.headers.raw, body) for response, body in answers] == [
        (200, [(b"content-length", b"2"), (b"X-Up", b"a")], b"ok")
    ] * 2
    assert scripted.connections == 1
