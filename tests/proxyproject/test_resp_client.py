"""The lean Redis client of the request path: replies parsed however the bytes arrive, each reply to
its own command under pipelining and cancellation, scripts loaded once, and failures that read as
redis-py's (a refused connection, a Redis that never answers, a restart)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxyproject.lib.redis import cluster_configured
from proxyproject.lib.resp_client import LeanScript, ReplyParser, RespClient, encode_command, get_resp_client
from tests.servers import free_port

REPLIES = b"+OK\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*3\r\n:1\r\n*2\r\n$1\r\na\r\n$0\r\n\r\n*-1\r\n-ERR wrong\r\n"


def parsed(reply: object) -> object:
    return str(reply) if isinstance(reply, ResponseError) else reply


EXPECTED = [b"OK", 42, b"hello", None, [1, [b"a", b""], None], "ERR wrong"]


def test_replies_split_at_any_byte_parse_the_same():
    for cut in range(1, len(REPLIES)):
        parser = ReplyParser()
        replies = parser.feed(REPLIES[:cut]) + parser.feed(REPLIES[cut:])
        assert [parsed(reply) for reply in replies] == EXPECTED, cut


def test_commands_are_encoded_as_bulk_strings():
    assert encode_command(("SET", b"k\r\n", 7)) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n7\r\n"


@pytest.fixture
def single_redis(redis_required) -> str:
    if cluster_configured():
        pytest.skip("the lean client serves a single Redis; a Cluster keeps redis-py's")
    return redis_required


async def test_two_hundred_pipelined_commands_each_get_their_own_reply(single_redis):
    client = RespClient(single_redis)
    key = f"resp-test:{free_port()}"
    replies = await asyncio.gather(*(client.execute("RPUSH", key, str(n)) for n in range(200)))
    assert sorted(replies) == list(range(1, 201))
    assert await client.execute("LRANGE", key, 0, 4) == [b"0", b"1", b"2", b"3", b"4"]
    assert await client.execute("DEL", key) == 1
    client.close()


async def test_a_cancelled_command_does_not_shift_the_replies_of_the_next(single_redis):
    client = RespClient(single_redis)
    await client.execute("PING")
    waiting = asyncio.ensure_future(client.execute("ECHO", "first"))
    await asyncio.sleep(0)
    waiting.cancel()
    assert await client.execute("ECHO", "second") == b"second"
    client.close()


async def test_a_script_redis_does_not_hold_is_sent_once_then_run_by_sha(single_redis):
    client = RespClient(single_redis)
    script = LeanScript(f"return {free_port()}")
    redis.Redis.from_url(single_redis).script_flush()
    assert await client.run_script(script, [], []) == int(script.source.split()[1])
    assert await client.execute("SCRIPT", "EXISTS", script.sha) == [1]
    client.close()


async def test_an_error_reply_of_a_script_is_raised_as_response_error(single_redis):
    client = RespClient(single_redis)
    with pytest.raises(ResponseError):
        await client.run_script(LeanScript("return redis.call('NOSUCHCOMMAND')"), [], [])
    assert await client.execute("PING") == b"PONG"
    client.close()


async def test_the_database_of_the_url_is_selected(single_redis):
    url = single_redis.rsplit("/", 1)[0] + "/3"
    key = f"resp-test-db:{free_port()}"
    client = RespClient(url)
    await client.execute("SET", key, "in-3")
    assert redis.Redis.from_url(url).get(key) == b"in-3"
    assert redis.Redis.from_url(single_redis.rsplit("/", 1)[0] + "/0").get(key) is None
    await client.execute("DEL", key)
    client.close()


async def test_a_refused_connection_raises_connection_error(settings):
    settings.REDIS_CONNECT_TIMEOUT = 0.5
    client = RespClient(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisConnectionError):
        await client.execute("PING")


@pytest.fixture
def silent_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


async def test_a_redis_that_never_answers_times_out_every_waiting_command(settings, silent_port):
    settings.REDIS_SOCKET_TIMEOUT = 0.2
    client = RespClient(f"redis://127.0.0.1:{silent_port}/0")
    answers = await asyncio.gather(client.execute("PING"), client.execute("PING"), return_exceptions=True)
    assert [type(answer) for answer in answers] == [RedisTimeoutError, RedisTimeoutError]


async def test_the_lean_client_serves_only_a_single_redis_over_plain_tcp(settings):
    settings.REDIS_URL = ""
    assert get_resp_client() is None
    settings.REDIS_URL = "rediss://127.0.0.1:6380/0"
    assert get_resp_client() is None
    settings.REDIS_URL = "redis+cluster://127.0.0.1:7000/0"
    assert get_resp_client() is None
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    settings.REDIS_CLUSTER = False
    first = get_resp_client()
    assert first is not None and get_resp_client() is first
    settings.REDIS_URL = "redis://127.0.0.1:6379/1"
    assert get_resp_client() is not first
