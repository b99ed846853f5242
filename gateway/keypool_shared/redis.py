"""The key pool's shared backend: the version in one Redis counter, in-flight counts as per-process
reports (see `gateway.keypool_shared` for why reports rather than a shared counter)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
import weakref
from collections.abc import Iterable

from proxyproject.lib.logging import log_event
from proxyproject.lib.redis import REDIS_ERRORS, SyncRedis, get_async_redis, get_sync_redis, redis_key, slot_tag

logger = logging.getLogger("gateway.keypool")

IN_FLIGHT_REPORT_SECONDS = 1.0
IN_FLIGHT_STALE_SECONDS = 5.0
REPORTERS_TTL_SECONDS = 3600
REDIS_WARNING_INTERVAL = 30.0


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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _sum_reports(client: SyncRedis, key_id: int) -> int:
    """The live reports of every process that reported the key; an expired one counts nothing
    and its process leaves the set."""
    reporters = sorted(_text(member) for member in client.smembers(_reporters_key(key_id)))
    if not reporters:
        return 0
    values = client.mget([_in_flight_key(key_id, process) for process in reporters])
    gone = [process for process, value in zip(reporters, values) if value is None]
    if gone:
        client.srem(_reporters_key(key_id), *gone)
    return sum(max(0, int(value)) for value in values if value is not None)


class RedisPoolSharing:
    """Every gateway process sharing the Redis server (and REDIS_KEY_PREFIX) sees one version and
    the sum of every process's in-flight counts."""

    def __init__(self) -> None:
        self._in_flight: dict[int, int] = {}
        self._reported: set[int] = set()
        self._reporters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = weakref.WeakKeyDictionary()
        self._last_redis_warning = 0.0

    def _warn_redis(self, event: str, exc: Exception) -> None:
        """At most one line per REDIS_WARNING_INTERVAL: while Redis is down every request would log."""
        now = time.monotonic()
        if now - self._last_redis_warning >= REDIS_WARNING_INTERVAL:
            self._last_redis_warning = now
            log_event(logger, event, logging.WARNING, error=str(exc))

    def announce_change(self) -> None:
        client = get_sync_redis()
        if client is None:
            return
        try:
            client.incr(_version_key())
        except REDIS_ERRORS as exc:
            # Committed anyway; other processes then see the change when their pool ages out (POOL_MAX_AGE_SECONDS).
            log_event(logger, "Upstream key change not announced to other processes", logging.ERROR, error=str(exc))

    async def read_version(self) -> bytes | None:
        client = get_async_redis()
        if client is None:
            return None
        try:
            version = await client.get(_version_key())
        except REDIS_ERRORS as exc:
            self._warn_redis("Upstream key pool: Redis unavailable, reading the database", exc)
            return None
        return _text(version).encode() if version else b"0"

    def count_in_flight(self, key_id: int, delta: int) -> None:
        left = self._in_flight.get(key_id, 0) + delta
        if left > 0:
            self._in_flight[key_id] = left
        else:
            self._in_flight.pop(key_id, None)

    def start_reporting(self) -> None:
        """This loop's counts reach the other processes within IN_FLIGHT_REPORT_SECONDS."""
        loop = asyncio.get_running_loop()
        reporter = self._reporters.get(loop)
        if (reporter is None or reporter.done()) and get_async_redis() is not None:
            self._reporters[loop] = loop.create_task(self._report_while_needed(), name="upstream-key-in-flight")

    async def _report_while_needed(self) -> None:
        """Report every IN_FLIGHT_REPORT_SECONDS until this process has nothing on any key and has said so."""
        while self._in_flight or self._reported:
            await asyncio.sleep(IN_FLIGHT_REPORT_SECONDS)
            await self.report_in_flight()

    async def report_in_flight(self) -> None:
        """This process's counts now, one pipeline for every key; a key it no longer uses is removed."""
        client = get_async_redis()
        if client is None:
            return
        counts, process = dict(self._in_flight), process_name()
        try:
            async with client.pipeline(transaction=False) as pipe:
                for key_id, count in counts.items():
                    pipe.set(_in_flight_key(key_id, process), count, px=int(IN_FLIGHT_STALE_SECONDS * 1000))
                    pipe.sadd(_reporters_key(key_id), process)
                    pipe.expire(_reporters_key(key_id), REPORTERS_TTL_SECONDS)
                for key_id in self._reported - counts.keys():
                    pipe.delete(_in_flight_key(key_id, process))
                    pipe.srem(_reporters_key(key_id), process)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            self._warn_redis("Upstream key in-flight count not shared", exc)
            return
        self._reported = set(counts)

    def in_flight_counts(self, key_ids: Iterable[int]) -> dict[int, int] | None:
        ids = list(key_ids)
        client = get_sync_redis()
        if client is None:
            return None
        if not ids:
            return {}
        try:
            return {key_id: _sum_reports(client, key_id) for key_id in ids}
        except REDIS_ERRORS as exc:
            log_event(logger, "Upstream key in-flight counts unreadable", logging.WARNING, error=str(exc))
            return None
