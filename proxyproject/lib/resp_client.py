"""A lean Redis client for the commands every proxied request sends (the rate-limit script).

redis-py's asyncio client spends about 100 µs of CPU per command on this machine (its blocking
pool, retry and health-check wrappers, response callbacks); the same EVALSHA on one pipelined
connection costs about 20 µs (`python -m bench.redis_client`). Every request of a gateway on
PostgreSQL + Redis sends one such command, on one core that serves thousands a second.

One connection per event loop carries every command, pipelined: Redis answers in order, so each
reply resolves the oldest command still waiting. Failures read as redis-py's, so callers keep one
error path: a connection that cannot be made or breaks raises `redis.exceptions.ConnectionError`
(and the command is retried once on a new connection, as the shared client does after a Redis
restart), a reply later than REDIS_SOCKET_TIMEOUT raises `TimeoutError` and closes the connection
(a late reply would answer the wrong command, so every command waiting on it fails too), an error
reply raises `ResponseError`. Scripts run by SHA; a Redis that does not know one yet (a restart, a
new server) gets the script's text once.

Only a single Redis reached by `redis://` or `unix://`: a Cluster routes each command by slot and
TLS needs redis-py's certificate options, so `get_resp_client()` answers None there and callers use
redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxyproject.lib.backends import shared_state_backend
from proxyproject.lib.redis import cluster_configured

Reply = int | bytes | None | list[Any] | ResponseError


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


def encode_command(args: tuple[object, ...]) -> bytes:
    """A command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int | float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"a Redis argument must be bytes, str or a number, not {type(arg).__name__}")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class ReplyParser:
    """Incremental RESP2 parser: feed bytes, take whole replies."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Reply]:
        self._buffer += data
        replies: list[Reply] = []
        position = 0
        while position < len(self._buffer):
            try:
                reply, position = self._parse(position)
            except _Incomplete:
                break
            replies.append(reply)
        del self._buffer[:position]
        return replies

    def _line(self, position: int) -> tuple[bytes, int]:
        end = self._buffer.find(b"\r\n", position)
        if end < 0:
            raise _Incomplete
        return bytes(self._buffer[position:end]), end + 2

    def _parse(self, position: int) -> tuple[Reply, int]:
        kind = self._buffer[position : position + 1]
        line, position = self._line(position + 1)
        if kind == b"+":
            return line, position
        if kind == b"-":
            return ResponseError(line.decode(errors="replace")), position
        if kind == b":":
            return int(line), position
        if kind == b"$":
            length = int(line)
            if length < 0:
                return None, position
            if len(self._buffer) < position + length + 2:
                raise _Incomplete
            return bytes(self._buffer[position : position + length]), position + length + 2
        if kind == b"*":
            count = int(line)
            if count < 0:
                return None, position
            items: list[Any] = []
            for _ in range(count):
                item, position = self._parse(position)
                items.append(item)
            return items, position
        raise RedisConnectionError(f"unexpected reply from Redis: {bytes(kind)!r}")


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = ReplyParser()
        self.waiting: deque[asyncio.Future[Reply]] = deque()
        self.broken: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            replies = self.parser.feed(data)
        except (RedisConnectionError, ValueError) as exc:
            self.fail(RedisConnectionError(f"unreadable reply from Redis: {exc}"))
            return
        for reply in replies:
            if not self.waiting:
                self.fail(RedisConnectionError("a reply from Redis that no command asked for"))
                return
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"Redis closed the connection: {exc!r}" if exc else "Redis closed the connection"))

    def fail(self, error: Exception) -> None:
        """No reply can be trusted to match its command any more: close, and fail every waiter."""
        if self.broken is None:
            self.broken = error
        if self.transport is not None:
            self.transport.abort()
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def send(self, payload: bytes) -> asyncio.Future[Reply]:
        if self.broken is not None:
            raise self.broken
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        assert self.transport is not None
        self.transport.write(payload)
        return waiter


@dataclass(frozen=True)
class LeanScript:
    """A Lua script and its SHA-1, computed once."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


class RespClient:
    """One event loop's connection to one Redis."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._options = parse_url(url)
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        options = self._options
        try:
            if "path" in options:
                opening = loop.create_unix_connection(_Connection, options["path"])
            else:
                opening = loop.create_connection(_Connection, options.get("host", "localhost"), options.get("port", 6379))
            _, connection = await asyncio.wait_for(opening, settings.REDIS_CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc!r}") from exc
        setup: list[tuple[object, ...]] = []
        if options.get("password"):
            credentials = (options["username"], options["password"]) if options.get("username") else (options["password"],)
            setup.append(("AUTH", *credentials))
        if options.get("db"):
            setup.append(("SELECT", options["db"]))
        for command in setup:
            reply = await self._await(connection, connection.send(encode_command(command)))
            if isinstance(reply, ResponseError):
                connection.fail(RedisConnectionError(f"Redis refused {command[0]}: {reply}"))
                raise RedisConnectionError(f"Redis refused {command[0]}: {reply}")
        return connection

    async def _connected(self) -> _Connection:
        connection = self._connection
        if connection is not None and connection.broken is None:
            return connection
        connecting = self._connecting
        if connecting is None:
            connecting = self._connecting = asyncio.get_running_loop().create_task(self._open())
        try:
            connection = await asyncio.shield(connecting)  # one connect however many commands wait
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None
        self._connection = connection
        return connection

    @staticmethod
    async def _await(connection: _Connection, waiter: asyncio.Future[Reply]) -> Reply:
        loop = asyncio.get_running_loop()

        def late() -> None:
            if not waiter.done():
                connection.fail(RedisTimeoutError("Timeout reading from Redis"))

        timer = loop.call_later(settings.REDIS_SOCKET_TIMEOUT, late)
        try:
            return await waiter
        finally:
            timer.cancel()

    async def execute(self, *args: object) -> Reply:
        """One command's reply; an error reply is returned as a ResponseError, not raised."""
        payload = encode_command(args)
        for attempt in (1, 2):
            connection = await self._connected()
            try:
                return await self._await(connection, connection.send(payload))
            except RedisTimeoutError:
                raise
            except RedisConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def run_script(self, script: LeanScript, keys: Sequence[str], args: Sequence[object]) -> Any:
        """EVALSHA, and EVAL once when this Redis does not hold the script yet."""
        reply = await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
            reply = await self.execute("EVAL", script.source, len(keys), *keys, *args)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def close(self) -> None:
        if self._connection is not None:
            self._connection.fail(RedisConnectionError("client closed"))
            self._connection = None


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RespClient] = weakref.WeakKeyDictionary()


def get_resp_client() -> RespClient | None:
    """This loop's lean client of REDIS_URL, or None without Redis, on a Cluster or over TLS."""
    if shared_state_backend() == "local" or cluster_configured():
        return None
    url = settings.REDIS_URL
    if not url.startswith(("redis://", "unix://")):
        return None
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.url != url:
        if client is not None:
            client.close()
        client = _clients[loop] = RespClient(url)
    return client
