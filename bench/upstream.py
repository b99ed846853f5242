"""The benchmark's upstream: the bundled fake Anthropic API's replies, served by a lean server.

The bundled fake (aiohttp, a request log, prompt caching, fault parsing on every request) answers
about 2,000 requests/s on a core of this machine, under what a lean Python proxy reaches: measured
through it, every proxy would look alike. So the benchmark computes each distinct reply once with
the fake's own functions (same JSON, same SSE events and usage) and serves it from a raw asyncio
protocol on uvloop with httptools' parser, pacing streams by the same `x-fake-stream` header.
Only ids change per response (`request-id`, message id). `--server bundled` runs the full fake
instead, for comparison.

    python -m bench.upstream --port 4010 --api-key sk-bench [--server lean|bundled]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

import httptools
import orjson
import uvloop

from fake_anthropic.errors import FakeApiError, error_body
from fake_anthropic.faults import DEFAULT_STREAM_SHAPE, STREAM_SHAPE_HEADER, parse_stream_shape
from fake_anthropic.messages import check_messages_request, message_object, plan_reply, stream_events
from fake_anthropic.usage import PromptCache, build_usage, split_prompt_tokens

MESSAGES_PATH = b"/v1/messages"
MAX_CACHED_REPLIES = 1024
ID_SLOT = b"\x00id\x00"  # where each response's message id goes in a cached reply
ORGANIZATION_ID = "00000000-0000-4000-8000-0000000b3e4c"


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply ready to send: JSON body pieces, or SSE events, split around the message id."""

    streaming: bool
    body_parts: list[bytes]  # non-streaming body, split at ID_SLOT
    event_parts: list[list[bytes]]  # one entry per SSE event, each split at ID_SLOT
    first_byte_delay: float
    event_interval: float


def split_at_id(data: bytes, message_id: str) -> list[bytes]:
    return data.replace(message_id.encode(), ID_SLOT).split(ID_SLOT)


def plan_lean_reply(body: bytes, shape_header: str | None, cache: PromptCache) -> Reply:
    """The reply the bundled fake would give to this body and stream shape; raises FakeApiError."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise FakeApiError(400, "There was an error parsing the body of your request.") from None
    check_messages_request(request)
    streaming = request.get("stream") is True
    shape = parse_stream_shape(shape_header) if streaming and shape_header else DEFAULT_STREAM_SHAPE
    reply = plan_reply(request, text_deltas=shape.text_deltas)
    usage = build_usage(split_prompt_tokens(request, cache), reply.output_tokens)
    if not streaming:
        body_bytes = orjson.dumps(message_object(reply, usage))
        return Reply(False, split_at_id(body_bytes, reply.message_id), [], 0.0, 0.0)
    events = [split_at_id(event, reply.message_id) for event in stream_events(reply, usage).events]
    return Reply(True, [], events, shape.first_byte_delay, shape.event_interval)


class ReplyCache:
    """Replies by (body, shape header): a benchmark sends a few distinct requests many times."""

    def __init__(self) -> None:
        self._replies: dict[tuple[bytes, str | None], Reply] = {}
        self._prompt_cache = PromptCache()

    def get(self, body: bytes, shape_header: str | None) -> Reply:
        key = (body, shape_header)
        reply = self._replies.get(key)
        if reply is None:
            reply = plan_lean_reply(body, shape_header, self._prompt_cache)
            if len(self._replies) >= MAX_CACHED_REPLIES:
                self._replies.clear()
            self._replies[key] = reply
        return reply


class Counter:
    def __init__(self) -> None:
        self._next = itertools.count(1)

    def request_id(self) -> tuple[bytes, bytes]:
        number = next(self._next)
        return f"req_011Cbench{number:012d}".encode(), f"msg_01bench{number:014d}".encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class LeanUpstream(asyncio.Protocol):
    """One client connection: parse with httptools, answer from the reply cache."""

    def __init__(self, api_key: bytes, replies: ReplyCache, counter: Counter) -> None:
        self.api_key = api_key
        self.replies = replies
        self.counter = counter
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        request_id, message_id = self.counter.request_id()
        keep_alive = self.parser.should_keep_alive()
        try:
            self._check(self.parser.get_method(), self.url)
            shape = self.headers.get(STREAM_SHAPE_HEADER.encode())
            reply = self.replies.get(self.body, shape.decode() if shape is not None else None)
        except FakeApiError as error:
            self._send_error(error, request_id, keep_alive)
            return
        finally:
            self._reset()
        if not reply.streaming:
            body = message_id.join(reply.body_parts)
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nrequest-id: %b\r\n"
                b"anthropic-organization-id: %b\r\ncontent-length: %d\r\n\r\n%b"
                % (request_id, ORGANIZATION_ID.encode(), len(body), body)
            )
            if not keep_alive:
                self.transport.close()
            return
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
            b"request-id: %b\r\nanthropic-organization-id: %b\r\ntransfer-encoding: chunked\r\n\r\n"
            % (request_id, ORGANIZATION_ID.encode())
        )
        events = [message_id.join(parts) for parts in reply.event_parts]
        stream = StreamSender(self, head, events, reply.event_interval, keep_alive)
        if reply.first_byte_delay:
            self.timer = self.loop.call_later(reply.first_byte_delay, stream.send_next)
        else:
            stream.send_next()

    def _check(self, method: bytes, url: bytes) -> None:
        presented = self.headers.get(b"x-api-key")
        if presented is None:
            scheme, _, token = self.headers.get(b"authorization", b"").partition(b" ")
            presented = token.strip() if scheme.lower() == b"bearer" else None
        if presented is None:
            raise FakeApiError(401, "x-api-key header is required")
        if presented != self.api_key:
            raise FakeApiError(401)
        if method != b"POST" or url.split(b"?", 1)[0] != MESSAGES_PATH:
            raise FakeApiError(404, "the benchmark upstream answers POST /v1/messages only")

    def _send_error(self, error: FakeApiError, request_id: bytes, keep_alive: bool) -> None:
        body = error_body(error, request_id.decode())
        self.transport.write(
            b"HTTP/1.1 %d Error\r\ncontent-type: application/json\r\nrequest-id: %b\r\ncontent-length: %d\r\n\r\n%b"
            % (error.status, request_id, len(body), body)
        )
        if not keep_alive:
            self.transport.close()


class StreamSender:
    """Writes one SSE reply event by event on timers (no task per stream)."""

    def __init__(self, connection: LeanUpstream, head: bytes, events: list[bytes], interval: float, keep_alive: bool) -> None:
        self.connection = connection
        self.pending = head
        self.events = events
        self.position = 0
        self.interval = interval
        self.keep_alive = keep_alive

    def send_next(self) -> None:
        connection = self.connection
        connection.timer = None
        transport = connection.transport
        if transport is None or transport.is_closing():
            return
        if not self.interval:
            transport.write(self.pending + b"".join(chunk(event) for event in self.events) + b"0\r\n\r\n")
            self._finish(transport)
            return
        transport.write(self.pending + chunk(self.events[self.position]))
        self.pending = b""
        self.position += 1
        if self.position < len(self.events):
            connection.timer = connection.loop.call_later(self.interval, self.send_next)
            return
        transport.write(b"0\r\n\r\n")
        self._finish(transport)

    def _finish(self, transport: asyncio.Transport) -> None:
        if not self.keep_alive:
            transport.close()


async def start_lean_server(host: str, port: int, api_key: str) -> asyncio.Server:
    """Listen on the running loop (port 0: any free port); the caller closes the server."""
    loop = asyncio.get_running_loop()
    replies, counter, key = ReplyCache(), Counter(), api_key.encode()
    return await loop.create_server(lambda: LeanUpstream(key, replies, counter), host, port, backlog=4096)


async def serve_lean(host: str, port: int, api_key: str, announce: Callable[[str], None]) -> None:
    loop = asyncio.get_running_loop()
    server = await start_lean_server(host, port, api_key)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    announce(f"benchmark upstream listening on http://{host}:{port}")
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description="The benchmark's upstream.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--server", choices=("lean", "bundled"), default="lean")
    arguments = parser.parse_args(argv)
    uvloop.install()
    if arguments.server == "bundled":
        from fake_anthropic.__main__ import main as run_bundled_fake

        run_bundled_fake(["--host", arguments.host, "--port", str(arguments.port), "--api-key", arguments.api_key])
        return
    asyncio.run(
        serve_lean(arguments.host, arguments.port, arguments.api_key, lambda line: print(line, file=sys.stderr, flush=True))
    )


if __name__ == "__main__":
    main()
