"""The shared async Redis client for hot-path state (rate limits, spend, breaker, revocation).

One client per event loop: redis.asyncio connections belong to the loop that opened them, and test
servers, Celery tasks and ASGI workers each run their own loop. `None` means no REDIS_URL: callers
fall back to their per-process backend.

Every command has a short timeout (`REDIS_SOCKET_TIMEOUT`, `REDIS_CONNECT_TIMEOUT`), and a command
that meets a connection error is retried once on a new connection: after a Redis restart every
pooled connection is dead, and without the retry each one cost a request its 503 on first use
although Redis was back. The retry can repeat a command whose reply was lost (a rate-limit hit
counted twice): the error is on the strict side, never a request let through unchecked.
"""

from __future__ import annotations

import asyncio
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from proxyproject.lib.backends import shared_state_backend

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()
_sync_client: redis.Redis | None = None


def get_async_redis() -> aioredis.Redis | None:
    if shared_state_backend() == "local":
        return None
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        # A blocking pool: under a burst of thousands of streams a request waits briefly for a free
        # connection instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=settings.REDIS_MAX_CONNECTIONS,
            timeout=settings.REDIS_POOL_TIMEOUT,
            socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            health_check_interval=30,
            retry=AsyncRetry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )
        client = aioredis.Redis(connection_pool=pool)
        _clients[loop] = client
    return client


def get_sync_redis() -> redis.Redis | None:
    """For admin actions, commands and Celery tasks, which run outside an event loop."""
    global _sync_client
    if shared_state_backend() == "local":
        return None
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )
    return _sync_client


def redis_key(*parts: object) -> str:
    """Every key carries REDIS_KEY_PREFIX, so deployments (and test runs) sharing a server never collide."""
    return ":".join([settings.REDIS_KEY_PREFIX, *(str(part) for part in parts)])


def require_async_redis() -> aioredis.Redis:
    """The client for a Redis backend, which the selector (`proxyproject.lib.backends`) chooses only
    when REDIS_URL is set."""
    client = get_async_redis()
    if client is None:
        raise RuntimeError("a Redis backend was used without REDIS_URL")
    return client
