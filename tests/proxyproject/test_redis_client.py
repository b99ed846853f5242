"""The shared Redis client survives more concurrent callers than it has connections."""

from __future__ import annotations

import asyncio

from proxyproject.lib.redis import get_async_redis, redis_key


async def test_a_burst_beyond_the_pool_size_waits_instead_of_failing(redis_required, settings):
    client = get_async_redis()
    max_connections = settings.REDIS_MAX_CONNECTIONS
    key = redis_key("test", "burst")
    results = await asyncio.gather(*(client.incr(key) for _ in range(max_connections * 2)))
    await client.delete(key)
    assert sorted(results) == list(range(1, max_connections * 2 + 1))
