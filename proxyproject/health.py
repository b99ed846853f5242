"""Liveness (`/healthz`) and readiness (`/healthz?deep=1`) checks.

The plain check answers without touching any dependency, so a load balancer never takes an
instance out because the database blinked; the deep check exercises what `/v1` needs, the way `/v1`
does it (the database through the same fresh-connection read, Redis through the hot path's own
client; the gateway registers the circuit breaker), all at once within `HEALTH_CHECK_TIMEOUT`
seconds, and answers 503 naming the failed part whenever `/v1` would fail.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from proxyproject.celery import app as celery_app
from proxyproject.lib.database import read_database
from proxyproject.lib.health_checks import DEEP_CHECKS, register_deep_check
from proxyproject.lib.redis import get_async_redis


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    latency_ms: float
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        result: dict[str, object] = {"status": "ok" if self.ok else "down", "latency_ms": round(self.latency_ms, 2)}
        if self.detail:
            result["detail"] = self.detail
        return result


def utc_timestamp() -> str:
    """ISO 8601 in UTC with milliseconds and `Z`, the shape the seed shows."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _check_database_as_v1_reads_it() -> None:
    await read_database(_check_database)


async def _check_redis() -> str | None:
    client = get_async_redis()
    if client is None:
        return "not configured (limits are per process)"
    await client.ping()
    return None


def _check_cache() -> None:
    key = f"healthz:{uuid.uuid4().hex}"
    cache.set(key, "1", 5)
    if cache.get(key) != "1":
        raise RuntimeError("cache did not return the value just written")
    cache.delete(key)


def _check_broker() -> None:
    if settings.CELERY_BROKER_URL == "filesystem://":
        folder = settings.CELERY_BROKER_DIR
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".healthz-{uuid.uuid4().hex}"
        probe.write_text("1")
        probe.unlink()
        return
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


async def _timed(check: Callable[[], Awaitable[str | None]]) -> CheckResult:
    """A check raises when its dependency is down; it may return a short state to report when up."""
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(check(), timeout=settings.HEALTH_CHECK_TIMEOUT)
    except TimeoutError:
        return CheckResult(False, (time.perf_counter() - started) * 1000, f"no answer within {settings.HEALTH_CHECK_TIMEOUT} s")
    except Exception as exc:  # a health check reports any failure instead of raising it
        return CheckResult(False, (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}")
    return CheckResult(True, (time.perf_counter() - started) * 1000, detail or "")


def register_platform_checks() -> None:
    """Run by the platform's app config before the apps' own checks, so the report lists these first."""
    register_deep_check("database", _check_database_as_v1_reads_it)
    register_deep_check("redis", _check_redis)
    register_deep_check("cache", sync_to_async(_check_cache, thread_sensitive=False))
    register_deep_check("broker", sync_to_async(_check_broker, thread_sensitive=False))


async def run_health_checks(deep: bool) -> tuple[int, dict[str, object]]:
    """Return (HTTP status, body) for /healthz."""
    if not deep:
        return 200, {"status": "ok", "timestamp": utc_timestamp()}
    outcomes = await asyncio.gather(*(_timed(check) for check in DEEP_CHECKS.values()))
    results = dict(zip(DEEP_CHECKS, outcomes))
    healthy = all(result.ok for result in results.values())
    body = {
        "status": "ok" if healthy else "degraded",
        "timestamp": utc_timestamp(),
        "checks": {name: result.as_dict() for name, result in results.items()},
    }
    return (200 if healthy else 503), body
