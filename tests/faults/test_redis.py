"""A Redis of the test's own, restarted under the gateway's clients: the first command on each dead
pooled connection is retried on a new one, so a restart costs no request its 503."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest
import redis

import proxyproject.lib.redis
from tests.servers import free_port
from tests.support import poll_until


class OwnRedis:
    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poll_until(self._answers, 10, "redis-server to start")

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis(settings) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    server = OwnRedis(free_port())
    server.start()
    settings.REDIS_URL = f"redis://127.0.0.1:{server.port}/0"
    proxyproject.lib.redis._clients.clear()
    proxyproject.lib.redis._sync_client = None
    yield server
    server.stop()
    proxyproject.lib.redis._clients.clear()
    proxyproject.lib.redis._sync_client = None


async def test_async_client_survives_a_redis_restart(own_redis):
    client = proxyproject.lib.redis.get_async_redis()
    assert await client.set("before-restart", "1")
    own_redis.stop()
    own_redis.start()
    assert await client.get("before-restart") is None  # a new, empty server; no ConnectionError
    await client.aclose()


def test_sync_client_survives_a_redis_restart(own_redis):
    client = proxyproject.lib.redis.get_sync_redis()
    assert client.set("before-restart", "1")
    own_redis.stop()
    own_redis.start()
    assert client.get("before-restart") is None


async def test_lean_client_survives_a_redis_restart(own_redis):
    from proxyproject.lib.resp_client import get_resp_client

    client = get_resp_client()
    assert await client.execute("SET", "before-restart", "1") == b"OK"
    own_redis.stop()
    own_redis.start()
    assert await client.execute("GET", "before-restart") is None
    client.close()
