"""The shared async Redis client for hot-path state (rate limits, spend, breaker, revocation).

One client per event loop: redis.asyncio connections belong to the loop that opened them, and test
servers, Celery tasks and ASGI workers each run their own loop. `None` means no REDIS_URL: callers
fall back to their per-process backend.

Every command has a short timeout (`REDIS_SOCKET_TIMEOUT`, `REDIS_CONNECT_TIMEOUT`), and a command
that meets a connection error is retried once on a new connection: after a Redis restart every
pooled connection is dead, and without the retry each one cost a request its 503 on first use
although Redis was back. The retry can repeat a command whose reply was lost (a rate-limit hit
counted twice): the error is on the strict side, never a request let through unchecked.

On a Redis Cluster (`REDIS_CLUSTER`, or a `redis+cluster://` URL) the clients are redis-py's
`RedisCluster`. Every script then declares every key it touches and the keys of one call share a hash
tag (`slot_tag`), so each call lands on one slot; `tests/proxyproject/test_redis_slots.py` holds the
scripts to that. The async cluster client lets REDIS_MAX_CONNECTIONS commands run at once and makes
the rest wait, as the blocking pool does; its pipelines (device state, in-flight reports) are outside
that count and fail with MaxConnectionsError past REDIS_MAX_CONNECTIONS connections to one node.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from proxyproject.lib.backends import shared_state_backend

AsyncRedis = aioredis.Redis | aioredis.RedisCluster
SyncRedis = redis.Redis | redis.RedisCluster

# What a Redis that fails raises: redis-py's RedisError and, on a cluster, its RedisClusterException
# (raised when no node answers to learn the slot map from), which is not a RedisError. Every step that
# copes with Redis being away catches both.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException)

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRedis] = weakref.WeakKeyDictionary()
_sync_client: SyncRedis | None = None
_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0] in _CLUSTER_SCHEMES


def cluster_configured() -> bool:
    return bool(settings.REDIS_CLUSTER) or is_cluster_url(settings.REDIS_URL)


def client_url(url: str) -> str:
    """The URL as redis-py reads it: a cluster scheme names the cluster, not a protocol of its own."""
    scheme, separator, rest = url.partition("://")
    return f"{_CLUSTER_SCHEMES.get(scheme, scheme)}{separator}{rest}"


def slot_tag(*parts: object) -> str:
    """A hash tag: keys that one script or one command uses together carry the same tag, so a Redis
    Cluster keeps them in one slot. Only the first `{...}` of a key counts, so REDIS_KEY_PREFIX never
    holds braces."""
    return "{" + ":".join(str(part) for part in parts) + "}"


# Tries after the first when a node does not answer, each after relearning the slot map: enough to
# follow a failover that is already done; a master that stays silent costs a request at most about
# (1 + this) × REDIS_SOCKET_TIMEOUT before its 503, where redis-py's 10 would hold it for 20 s or more.
CLUSTER_COMMAND_RETRIES = 3


class _AsyncRedisCluster(aioredis.RedisCluster):
    """Two changes to redis-py's client. It retries a silent node CLUSTER_COMMAND_RETRIES times. And a
    command beyond REDIS_MAX_CONNECTIONS waits up to REDIS_POOL_TIMEOUT for one to finish, as with the
    blocking pool of a single Redis, where the cluster client would refuse it (MaxConnectionsError):
    no node can then hold more connections than the limit. (8.1 also needed the slot map learnt before
    the first command, which commands arriving together on a new client raced; 8.2 makes them wait
    for the first initialization itself.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._commands_in_flight = asyncio.Semaphore(settings.REDIS_MAX_CONNECTIONS)
        self.retry.update_retries(CLUSTER_COMMAND_RETRIES)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._commands_in_flight.locked():
            try:
                await asyncio.wait_for(self._commands_in_flight.acquire(), settings.REDIS_POOL_TIMEOUT)
            except TimeoutError as exc:
                raise RedisConnectionError("no Redis connection free within REDIS_POOL_TIMEOUT") from exc
        else:
            await self._commands_in_flight.acquire()  # free: no timer needed on the common path
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._commands_in_flight.release()


def _async_cluster_client() -> aioredis.RedisCluster:
    """The cluster client keeps its own retry, which also refreshes the slot map after a failover
    (a `retry=` of ours made redis-py 8.1 close connections it had just opened), and relearns the slot
    map at most once a second (8.2's default `topology_refresh_min_interval`)."""
    return _AsyncRedisCluster.from_url(
        client_url(settings.REDIS_URL),
        max_connections=settings.REDIS_MAX_CONNECTIONS,
        socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        health_check_interval=30,
    )


def get_async_redis() -> AsyncRedis | None:
    if shared_state_backend() == "local":
        return None
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None and cluster_configured():
        client = _clients[loop] = _async_cluster_client()
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


def get_sync_redis() -> SyncRedis | None:
    """For admin actions, commands and Celery tasks, which run outside an event loop."""
    global _sync_client
    if shared_state_backend() == "local":
        return None
    if _sync_client is None and cluster_configured():
        _sync_client = redis.RedisCluster.from_url(
            client_url(settings.REDIS_URL),
            socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 1),
        )
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


def require_async_redis() -> AsyncRedis:
    """The client for a Redis backend, which the selector (`proxyproject.lib.backends`) chooses only
    when REDIS_URL is set."""
    client = get_async_redis()
    if client is None:
        raise RuntimeError("a Redis backend was used without REDIS_URL")
    return client
