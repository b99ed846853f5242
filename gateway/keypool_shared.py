"""What gateway processes share about the upstream key pool: a version that any change to the keys
bumps, and a count of requests in flight on each key.

The version is a number in this process (so a change made here is seen here at once) and, with
Redis, a counter every process polls every UPSTREAM_KEY_POOL_CACHE_SECONDS, so a change made
anywhere (a command, the admin, Celery, another gateway) reaches every process within that time.

The in-flight count of a key, with Redis, is one counter per key that every gateway process
increments when a request starts on the key and decrements when its answer has been relayed (or
the client left). It tells the drain task when a draining key carries nothing any more. A process
that dies mid-request leaves its increments behind; the counter's TTL, renewed by every increment,
bounds how long, and the drain grace period retires the key meanwhile regardless.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from redis.exceptions import RedisError

from proxyproject.logging import log_event
from proxyproject.redis import get_async_redis, get_sync_redis, redis_key

logger = logging.getLogger("gateway.keypool")

IN_FLIGHT_TTL_SECONDS = 3600
REDIS_WARNING_INTERVAL = 30.0

# KEYS: the counter. Floors at zero: a decrement that finds the counter expired (or never
# incremented, Redis having been down at the start) must not leave a negative count behind.
_DECREMENT = """
local left = redis.call('DECR', KEYS[1])
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
return left
"""

_local_version = 0
_version_lock = threading.Lock()
_last_redis_warning = 0.0


def _version_key() -> str:
    return redis_key("upstream-keys", "version")


def _in_flight_key(key_id: int) -> str:
    return redis_key("upstream-keys", "in-flight", key_id)


def _warn_redis(event: str, exc: RedisError) -> None:
    """At most one line per REDIS_WARNING_INTERVAL: while Redis is down every request would log."""
    global _last_redis_warning
    now = time.monotonic()
    if now - _last_redis_warning >= REDIS_WARNING_INTERVAL:
        _last_redis_warning = now
        log_event(logger, event, logging.WARNING, error=str(exc))


def local_pool_version() -> int:
    return _local_version


def bump_pool_version() -> None:
    """Call once a change to the keys is committed: this process reloads its pool on its next
    request, every other one within UPSTREAM_KEY_POOL_CACHE_SECONDS."""
    global _local_version
    with _version_lock:
        _local_version += 1
    client = get_sync_redis()
    if client is None:
        return
    try:
        client.incr(_version_key())
    except RedisError as exc:
        # Committed anyway; other processes then see the change when their pool ages out (POOL_MAX_AGE_SECONDS).
        log_event(logger, "Upstream key change not announced to other processes", logging.ERROR, error=str(exc))


async def read_shared_pool_version() -> bytes | None:
    """The shared version, or None when there is no Redis or it cannot be read (then the caller
    reads the database instead)."""
    client = get_async_redis()
    if client is None:
        return None
    try:
        return await client.get(_version_key()) or b"0"
    except RedisError as exc:
        _warn_redis("Upstream key pool: Redis unavailable, reading the database", exc)
        return None


async def add_shared_in_flight(key_id: int, delta: int) -> None:
    client = get_async_redis()
    if client is None:
        return
    try:
        if delta > 0:
            async with client.pipeline(transaction=False) as pipe:
                pipe.incrby(_in_flight_key(key_id), delta)
                pipe.expire(_in_flight_key(key_id), IN_FLIGHT_TTL_SECONDS)
                await pipe.execute()
        else:
            await client.eval(_DECREMENT, 1, _in_flight_key(key_id))
    except RedisError as exc:
        _warn_redis("Upstream key in-flight count not shared", exc)


def shared_in_flight_counts(key_ids: Iterable[int]) -> dict[int, int] | None:
    """Requests in flight on each key across every gateway process; None without Redis (or when
    it cannot be read): nobody can tell, so callers fall back to the grace period."""
    ids = list(key_ids)
    client = get_sync_redis()
    if client is None:
        return None
    if not ids:
        return {}
    try:
        values = client.mget([_in_flight_key(key_id) for key_id in ids])
    except RedisError as exc:
        log_event(logger, "Upstream key in-flight counts unreadable", logging.WARNING, error=str(exc))
        return None
    return {key_id: max(0, int(value or 0)) for key_id, value in zip(ids, values)}
