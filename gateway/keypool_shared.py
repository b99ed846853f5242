"""What gateway processes share about the upstream key pool: a version that any change to the keys
bumps, and a count of requests in flight on each key.

The version is a number in this process (so a change made here is seen here at once) and, with
Redis, a counter every process polls every UPSTREAM_KEY_POOL_CACHE_SECONDS, so a change made
anywhere (a command, the admin, Celery, another gateway) reaches every process within that time.

The in-flight count of a key, with Redis, is the sum of the reports of every gateway process: each
one sets its own count for the key (a Redis key that expires after IN_FLIGHT_STALE_SECONDS) every
IN_FLIGHT_REPORT_SECONDS while it has requests on it, and lists itself in the key's set of
reporters. One pipeline a second for all keys, where a shared counter cost two Redis round trips
per request (a fifth of a worker's time on Redis). It tells the drain task when a draining key
carries nothing any more; the drain task waits IN_FLIGHT_REPORT_SECONDS more before trusting a zero
(see `upstream_keys.drain_settle_seconds`). The report of a process that died expires on its own,
with no clock compared across hosts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Iterable

from redis.exceptions import RedisError

from proxyproject.lib.logging import log_event
from proxyproject.lib.redis import SyncRedis, get_async_redis, get_sync_redis, redis_key, slot_tag

logger = logging.getLogger("gateway.keypool")

IN_FLIGHT_REPORT_SECONDS = 1.0
IN_FLIGHT_STALE_SECONDS = 5.0
REPORTERS_TTL_SECONDS = 3600
REDIS_WARNING_INTERVAL = 30.0

_local_version = 0
_version_lock = threading.Lock()
_last_redis_warning = 0.0


def _version_key() -> str:
    return redis_key("upstream-keys", "version")


def _in_flight_key(key_id: int, process: str) -> str:
    """A key's reports and its reporters share a hash tag: they are read together in one MGET."""
    return redis_key("upstream-keys", slot_tag("in-flight", key_id), process)


def _reporters_key(key_id: int) -> str:
    return redis_key("upstream-keys", slot_tag("in-flight", key_id), "reporters")


_process: tuple[int, str] | None = None


def process_name() -> str:
    """This process in the in-flight reports: host, pid and a random part (pids are reused)."""
    global _process
    if _process is None or _process[0] != os.getpid():
        _process = (os.getpid(), f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}")
    return _process[1]


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


_in_flight: dict[int, int] = {}
_reported: set[int] = set()
_reporters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = weakref.WeakKeyDictionary()


def count_in_flight(key_id: int, delta: int) -> None:
    """A request started (+1) or ended (-1) on the key in this process."""
    left = _in_flight.get(key_id, 0) + delta
    if left > 0:
        _in_flight[key_id] = left
    else:
        _in_flight.pop(key_id, None)


def start_in_flight_reporter() -> None:
    """With Redis, this loop's counts reach the other processes within IN_FLIGHT_REPORT_SECONDS."""
    loop = asyncio.get_running_loop()
    reporter = _reporters.get(loop)
    if (reporter is None or reporter.done()) and get_async_redis() is not None:
        _reporters[loop] = loop.create_task(_report_while_needed(), name="upstream-key-in-flight")


async def _report_while_needed() -> None:
    """Report every IN_FLIGHT_REPORT_SECONDS until this process has nothing on any key and has said so."""
    while _in_flight or _reported:
        await asyncio.sleep(IN_FLIGHT_REPORT_SECONDS)
        await report_in_flight()


async def report_in_flight() -> None:
    """This process's counts now, one pipeline for every key; a key it no longer uses is removed."""
    global _reported
    client = get_async_redis()
    if client is None:
        return
    counts, process = dict(_in_flight), process_name()
    try:
        async with client.pipeline(transaction=False) as pipe:
            for key_id, count in counts.items():
                pipe.set(_in_flight_key(key_id, process), count, px=int(IN_FLIGHT_STALE_SECONDS * 1000))
                pipe.sadd(_reporters_key(key_id), process)
                pipe.expire(_reporters_key(key_id), REPORTERS_TTL_SECONDS)
            for key_id in _reported - counts.keys():
                pipe.delete(_in_flight_key(key_id, process))
                pipe.srem(_reporters_key(key_id), process)
            await pipe.execute()
    except RedisError as exc:
        _warn_redis("Upstream key in-flight count not shared", exc)
        return
    _reported = set(counts)


def _sum_reports(client: SyncRedis, key_id: int) -> int:
    """The live reports of every process that reported the key; an expired one counts nothing
    and its process leaves the set."""
    reporters = sorted(member.decode() for member in client.smembers(_reporters_key(key_id)))
    if not reporters:
        return 0
    values = client.mget([_in_flight_key(key_id, process) for process in reporters])
    gone = [process for process, value in zip(reporters, values) if value is None]
    if gone:
        client.srem(_reporters_key(key_id), *gone)
    return sum(max(0, int(value)) for value in values if value is not None)


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
        return {key_id: _sum_reports(client, key_id) for key_id in ids}
    except RedisError as exc:
        log_event(logger, "Upstream key in-flight counts unreadable", logging.WARNING, error=str(exc))
        return None
