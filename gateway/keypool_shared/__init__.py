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
with no clock compared across hosts. Without Redis nothing is shared (`local`).

This package, not `gateway.keypool`, holds the backends: the key services (`gateway.upstream_keys`)
announce changes through it, and the pool imports those services.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from gateway.keypool_shared.base import PoolSharing
from gateway.keypool_shared.local import LocalPoolSharing
from gateway.keypool_shared.redis import IN_FLIGHT_REPORT_SECONDS, RedisPoolSharing, process_name
from proxyproject.lib.backends import select_backend

__all__ = [
    "IN_FLIGHT_REPORT_SECONDS",
    "LocalPoolSharing",
    "PoolSharing",
    "RedisPoolSharing",
    "bump_pool_version",
    "count_in_flight",
    "local_pool_version",
    "process_name",
    "read_shared_pool_version",
    "report_in_flight",
    "shared_in_flight_counts",
    "start_in_flight_reporter",
]

_local_version = 0
_version_lock = threading.Lock()
_local_sharing: PoolSharing = LocalPoolSharing()
_redis_sharing: PoolSharing = RedisPoolSharing()


def pool_sharing() -> PoolSharing:
    """Redis when REDIS_URL is set, else nothing shared."""
    return select_backend(local=_local_sharing, redis=_redis_sharing)


def local_pool_version() -> int:
    return _local_version


def bump_pool_version() -> None:
    """Call once a change to the keys is committed: this process reloads its pool on its next
    request, every other one within UPSTREAM_KEY_POOL_CACHE_SECONDS."""
    global _local_version
    with _version_lock:
        _local_version += 1
    pool_sharing().announce_change()


async def read_shared_pool_version() -> bytes | None:
    """The shared version, or None when there is no Redis or it cannot be read (then the caller
    reads the database instead)."""
    return await pool_sharing().read_version()


def count_in_flight(key_id: int, delta: int) -> None:
    """A request started (+1) or ended (-1) on the key in this process."""
    pool_sharing().count_in_flight(key_id, delta)


def start_in_flight_reporter() -> None:
    """With Redis, this loop's counts reach the other processes within IN_FLIGHT_REPORT_SECONDS."""
    pool_sharing().start_reporting()


async def report_in_flight() -> None:
    await pool_sharing().report_in_flight()


def shared_in_flight_counts(key_ids: Iterable[int]) -> dict[int, int] | None:
    """Requests in flight on each key across every gateway process; None without Redis (or when
    it cannot be read): nobody can tell, so callers fall back to the grace period."""
    return pool_sharing().in_flight_counts(key_ids)
