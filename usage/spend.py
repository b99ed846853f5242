"""Spend caps that hold under concurrency and across instances.

Before a request goes upstream the gateway reserves its worst-case cost against every cap that
applies (device daily and monthly, organization daily and monthly; UTC day and month). Checking all
of them and reserving in all of them is one atomic step: one Lua script on Redis, or one critical
section of plain dict operations in process. When usage lands the reservation is replaced by the
actual cost (`settle_spend`); a request that fails before any usage releases it. A reservation that
is never settled (its process died) stops counting after SPEND_RESERVATION_TTL_SECONDS.

Amounts are kept as integer nano-dollars (rounded up), so Redis and Lua never see a float.
Settled totals are reconciled from the database by the rollup task and at start-up
(`reconcile_spend_counters`): a counter only ever rises to the database's figure, so records still
in the write queue are never forgotten.
"""
from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Callable, Protocol

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.db.models import Sum

from gateway.errors import SpendCapReached
from proxyproject.logging import log_event
from proxyproject.redis import get_async_redis, get_sync_redis, redis_key
from tokens.identity import DeviceIdentity
from usage.models import UsageRecord

logger = logging.getLogger("usage.spend")
NANO = Decimal("1e-9")
_PERIOD_GRACE_SECONDS = 2 * 86400


def to_nanos(amount: Decimal) -> int:
    return int((Decimal(amount) / NANO).to_integral_value(rounding=ROUND_CEILING))


def from_nanos(units: int) -> Decimal:
    return (Decimal(units) * NANO).quantize(NANO)


@dataclass(frozen=True, slots=True)
class Counter:
    """One cap's running total, e.g. `device:12:day:2026-11-25`; it lives until `expires_at` (epoch s)."""

    name: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class CapCheck:
    counter: Counter
    cap_nanos: int
    description: str


@dataclass(frozen=True, slots=True)
class SpendReservation:
    request_id: str
    amount: Decimal
    nanos: int
    counters: tuple[Counter, ...]


def _day_bucket(moment: dt.datetime) -> tuple[str, float]:
    end = dt.datetime(moment.year, moment.month, moment.day, tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
    return moment.strftime("%Y-%m-%d"), end.timestamp()


def _month_bucket(moment: dt.datetime) -> tuple[str, float]:
    days = calendar.monthrange(moment.year, moment.month)[1]
    end = dt.datetime(moment.year, moment.month, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=days)
    return moment.strftime("%Y-%m"), end.timestamp()


def counter_for(scope: str, pk: int, period: str, moment: dt.datetime) -> Counter:
    bucket, ends_at = _day_bucket(moment) if period == "day" else _month_bucket(moment)
    return Counter(f"{scope}:{pk}:{period}:{bucket}", ends_at + _PERIOD_GRACE_SECONDS)


def cap_checks(identity: DeviceIdentity, now: float) -> list[CapCheck]:
    """The caps that apply to this device now; empty when it and its organization have none."""
    moment = dt.datetime.fromtimestamp(now, dt.timezone.utc)
    policy = identity.policy
    wanted = [
        ("device", identity.device_pk, "day", policy.device_daily_cap_usd, "Daily spend cap of ${} reached for this device."),
        ("device", identity.device_pk, "month", policy.device_monthly_cap_usd, "Monthly spend cap of ${} reached for this device."),
    ]
    if identity.org_id is not None:
        wanted += [
            ("org", identity.org_id, "day", policy.org_daily_cap_usd, "Daily spend cap of ${} reached for this organization."),
            ("org", identity.org_id, "month", policy.org_monthly_cap_usd, "Monthly spend cap of ${} reached for this organization."),
        ]
    return [
        CapCheck(counter_for(scope, pk, period, moment), to_nanos(cap), message.format(cap))
        for scope, pk, period, cap, message in wanted
        if cap is not None
    ]


class SpendBackend(Protocol):
    async def reserve(self, checks: list[CapCheck], nanos: int, request_id: str, now: float) -> int | None:
        """Reserve in every counter, or in none and return the index of the first cap it would exceed."""

    async def finish(self, counters: tuple[Counter, ...], request_id: str, actual_nanos: int | None, now: float) -> None:
        """Drop the reservation; add `actual_nanos` to the settled totals unless None (released)."""

    def raise_settled_to(self, totals: dict[Counter, int]) -> None:
        """Reconciliation: each counter's settled total becomes at least the database's figure."""

    def snapshot(self, counter: Counter, now: float) -> tuple[int, int]:
        """(settled, live reserved) nanos."""


RESERVE_SCRIPT = """
-- KEYS: one hash per counter. ARGV: nanos, request id, now ms, reservation expiry ms, then per
-- counter: cap nanos, counter expiry (epoch s). A hash holds `settled`, `reserved`, `r:<id>` amounts
-- and `x:<id>` expiries; expired reservations are dropped before the check.
local nanos, id, now, expires = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
for i, key in ipairs(KEYS) do
  local fields = redis.call('HGETALL', key)
  for j = 1, #fields, 2 do
    local name = fields[j]
    if string.sub(name, 1, 2) == 'x:' and tonumber(fields[j + 1]) <= now then
      local rid = string.sub(name, 3)
      local amount = redis.call('HGET', key, 'r:' .. rid)
      if amount then redis.call('HINCRBY', key, 'reserved', -tonumber(amount)) end
      redis.call('HDEL', key, 'r:' .. rid, name)
    end
  end
end
if redis.call('HEXISTS', KEYS[1], 'r:' .. id) == 1 then
  return 0
end
for i, key in ipairs(KEYS) do
  local cap = tonumber(ARGV[3 + 2 * i])
  local used = tonumber(redis.call('HGET', key, 'settled') or '0') + tonumber(redis.call('HGET', key, 'reserved') or '0')
  if used + tonumber(nanos) > cap then
    return i
  end
end
for i, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 'reserved', nanos)
  redis.call('HSET', key, 'r:' .. id, nanos, 'x:' .. id, expires)
  redis.call('EXPIREAT', key, ARGV[4 + 2 * i])
end
return 0
"""

FINISH_SCRIPT = """
-- KEYS: the reservation's counters. ARGV: request id, actual nanos or '' (release), then per counter its expiry.
for i, key in ipairs(KEYS) do
  local amount = redis.call('HGET', key, 'r:' .. ARGV[1])
  if amount then
    redis.call('HINCRBY', key, 'reserved', -tonumber(amount))
    redis.call('HDEL', key, 'r:' .. ARGV[1], 'x:' .. ARGV[1])
  end
  if ARGV[2] ~= '' then
    redis.call('HINCRBY', key, 'settled', ARGV[2])
    redis.call('EXPIREAT', key, ARGV[2 + i])
  end
end
return 0
"""

RAISE_SCRIPT = """
-- KEYS: counters. ARGV: per counter, database total nanos and expiry.
for i, key in ipairs(KEYS) do
  local total = tonumber(ARGV[2 * i - 1])
  if tonumber(redis.call('HGET', key, 'settled') or '0') < total then
    redis.call('HSET', key, 'settled', ARGV[2 * i - 1])
    redis.call('EXPIREAT', key, ARGV[2 * i])
  end
end
return 0
"""


def _key(counter: Counter) -> str:
    return redis_key("spend", counter.name)


class RedisSpendBackend:
    async def reserve(self, checks: list[CapCheck], nanos: int, request_id: str, now: float) -> int | None:
        client = get_async_redis()
        expires_ms = int((now + settings.SPEND_RESERVATION_TTL_SECONDS) * 1000)
        argv: list[object] = [nanos, request_id, int(now * 1000), expires_ms]
        for check in checks:
            argv += [check.cap_nanos, int(check.counter.expires_at)]
        failed = int(await client.eval(RESERVE_SCRIPT, len(checks), *[_key(c.counter) for c in checks], *argv))
        return failed - 1 if failed else None

    async def finish(self, counters: tuple[Counter, ...], request_id: str, actual_nanos: int | None, now: float) -> None:
        client = get_async_redis()
        argv: list[object] = [request_id, "" if actual_nanos is None else actual_nanos, *[int(c.expires_at) for c in counters]]
        await client.eval(FINISH_SCRIPT, len(counters), *[_key(c) for c in counters], *argv)

    def raise_settled_to(self, totals: dict[Counter, int]) -> None:
        client = get_sync_redis()
        items = list(totals.items())
        for start in range(0, len(items), 200):
            chunk = items[start : start + 200]
            argv: list[object] = []
            for counter, total in chunk:
                argv += [total, int(counter.expires_at)]
            client.eval(RAISE_SCRIPT, len(chunk), *[_key(counter) for counter, _ in chunk], *argv)

    def snapshot(self, counter: Counter, now: float) -> tuple[int, int]:
        fields = {k.decode(): v.decode() for k, v in get_sync_redis().hgetall(_key(counter)).items()}
        now_ms = now * 1000
        live = sum(
            int(value) for name, value in fields.items()
            if name.startswith("r:") and float(fields.get("x:" + name[2:], "0")) > now_ms
        )
        return int(fields.get("settled", 0)), live


@dataclass
class _LocalCounter:
    expires_at: float
    settled: int = 0
    reservations: dict[str, tuple[int, float]] = field(default_factory=dict)

    def live_reserved(self, now: float) -> int:
        expired = [rid for rid, (_, until) in self.reservations.items() if until <= now]
        for rid in expired:
            del self.reservations[rid]
        return sum(amount for amount, _ in self.reservations.values())


TotalsLoader = Callable[[], dict[Counter, int]]
LOCAL_RECONCILE_SECONDS = 60.0


def _load_totals_and_close(loader: TotalsLoader) -> dict[Counter, int]:
    try:
        return loader()
    finally:
        close_old_connections()


class LocalSpendBackend:
    """Per process. Each operation is one critical section of dict work with no await inside, so it
    is atomic for the event loop; the lock only guards against the threads of commands and Celery.

    Nothing outside this process can reach its counters (the rollup task runs in Celery's), so with
    a `totals_loader` it raises them to the database's figures itself: before its first reservation
    (a restarted process does not start from zero), then in the background once a minute (what
    other processes spent arrives that way). One query per minute per process, never per request.
    """

    def __init__(self, totals_loader: TotalsLoader | None = None) -> None:
        self.lock = threading.Lock()
        self.counters: dict[str, _LocalCounter] = {}
        self.totals_loader = totals_loader
        self.loaded_at: float | None = None
        self.refresh: asyncio.Task | None = None

    async def _load_from_database(self) -> None:
        try:
            totals = await sync_to_async(_load_totals_and_close, thread_sensitive=False)(self.totals_loader)
        except Exception as exc:  # database away: enforce on what this process knows, retry in a minute
            log_event(logger, "Spend counters not refreshed from the database", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
        else:
            self.raise_settled_to(totals)
        self.loaded_at = time.monotonic()

    async def keep_in_step_with_database(self) -> None:
        if self.totals_loader is None:
            return
        if self.loaded_at is None:
            await self._load_from_database()
        elif time.monotonic() - self.loaded_at >= LOCAL_RECONCILE_SECONDS and (self.refresh is None or self.refresh.done()):
            self.refresh = asyncio.get_running_loop().create_task(self._load_from_database())

    def _counter(self, counter: Counter, now: float) -> _LocalCounter:
        if len(self.counters) > 10_000:
            for name in [name for name, c in self.counters.items() if c.expires_at <= now]:
                del self.counters[name]
        return self.counters.setdefault(counter.name, _LocalCounter(counter.expires_at))

    async def reserve(self, checks: list[CapCheck], nanos: int, request_id: str, now: float) -> int | None:
        await self.keep_in_step_with_database()
        with self.lock:
            states = [self._counter(check.counter, now) for check in checks]
            if request_id in states[0].reservations:
                return None
            for index, (check, state) in enumerate(zip(checks, states)):
                if state.settled + state.live_reserved(now) + nanos > check.cap_nanos:
                    return index
            for state in states:
                state.reservations[request_id] = (nanos, now + settings.SPEND_RESERVATION_TTL_SECONDS)
            return None

    async def finish(self, counters: tuple[Counter, ...], request_id: str, actual_nanos: int | None, now: float) -> None:
        with self.lock:
            for counter in counters:
                state = self._counter(counter, now)
                state.reservations.pop(request_id, None)
                if actual_nanos is not None:
                    state.settled += actual_nanos

    def raise_settled_to(self, totals: dict[Counter, int]) -> None:
        now = time.time()
        with self.lock:
            for counter, total in totals.items():
                state = self._counter(counter, now)
                state.settled = max(state.settled, total)
        self.loaded_at = time.monotonic()

    def snapshot(self, counter: Counter, now: float) -> tuple[int, int]:
        with self.lock:
            state = self.counters.get(counter.name)
            return (0, 0) if state is None else (state.settled, state.live_reserved(now))


_local_backend = LocalSpendBackend(totals_loader=lambda: database_totals())
_redis_backend = RedisSpendBackend()


def spend_backend() -> SpendBackend:
    return _redis_backend if settings.REDIS_URL else _local_backend


@dataclass
class SpendLedger:
    """The cap rules over a backend, with the clock injectable for tests of expiry and periods."""

    backend: SpendBackend | None = None
    clock: Callable[[], float] = time.time

    def _backend(self) -> SpendBackend:
        return self.backend or spend_backend()

    async def reserve(self, identity: DeviceIdentity, amount: Decimal, request_id: str) -> SpendReservation | None:
        now = self.clock()
        checks = cap_checks(identity, now)
        if not checks:
            return None
        nanos = to_nanos(amount)
        failed = await self._backend().reserve(checks, nanos, request_id, now)
        if failed is not None:
            log_event(logger, "Spend cap reached", device_pk=identity.device_pk, org_id=identity.org_id,
                      counter=checks[failed].counter.name, request_id=request_id, amount=str(amount))
            raise SpendCapReached(checks[failed].description)
        return SpendReservation(request_id, Decimal(amount), nanos, tuple(check.counter for check in checks))

    async def settle(self, reservation: SpendReservation, actual: Decimal | None) -> None:
        """None (the model had no price) keeps the reserved worst case as spent, so caps stay safe."""
        nanos = reservation.nanos if actual is None else to_nanos(actual)
        await self._backend().finish(reservation.counters, reservation.request_id, nanos, self.clock())

    async def release(self, reservation: SpendReservation) -> None:
        await self._backend().finish(reservation.counters, reservation.request_id, None, self.clock())


_ledger = SpendLedger()


async def reserve_spend(identity: DeviceIdentity, amount: Decimal, request_id: str) -> SpendReservation | None:
    """Reserve `amount` against every cap of the device and its organization; None when there are
    no caps (nothing is stored then). Raises SpendCapReached (429, x-should-retry false) when it does
    not fit in one of them."""
    return await _ledger.reserve(identity, amount, request_id)


async def settle_spend(reservation: SpendReservation, actual: Decimal | None) -> None:
    await _ledger.settle(reservation, actual)


async def release_spend(reservation: SpendReservation) -> None:
    await _ledger.release(reservation)


def _sum_by(field_name: str, since: dt.datetime) -> dict[int, Decimal]:
    rows = (
        UsageRecord.objects.filter(occurred_at__gte=since, **{f"{field_name}__isnull": False}, cost__isnull=False)
        .values(field_name)
        .annotate(total=Sum("cost"))
    )
    return {row[field_name]: row["total"] or Decimal(0) for row in rows}


def database_totals(now: float | None = None) -> dict[Counter, int]:
    """Today's and this month's recorded cost per device and organization, as counters."""
    moment = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.timezone.utc)
    day_start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    totals: dict[Counter, int] = {}
    for scope, field_name in (("device", "device_pk"), ("org", "org_pk")):
        for period, since in (("day", day_start), ("month", month_start)):
            for pk, total in _sum_by(field_name, since).items():
                totals[counter_for(scope, pk, period, moment)] = to_nanos(total)
    return totals


def reconcile_spend_counters(now: float | None = None) -> int:
    """Raise every current counter to what the database has recorded; returns the counters checked."""
    totals = database_totals(now)
    spend_backend().raise_settled_to(totals)
    return len(totals)


def _reconcile_and_close() -> int:
    try:
        return reconcile_spend_counters()
    finally:
        close_old_connections()


async def load_spend_counters() -> None:
    """Start-up: a fresh process's in-process counters begin at what is already recorded."""
    try:
        count = await sync_to_async(_reconcile_and_close, thread_sensitive=False)()
    except Exception as exc:  # the database may be down at start-up; the rollup task reconciles later
        log_event(logger, "Spend counters not loaded at start-up", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
        return
    log_event(logger, "Spend counters loaded", counters=count)


def current_spend(scope: str, pk: int, period: str, now: float | None = None) -> tuple[Decimal, Decimal]:
    """(settled, reserved) USD of one counter now, for operators' views."""
    moment_ts = time.time() if now is None else now
    counter = counter_for(scope, pk, period, dt.datetime.fromtimestamp(moment_ts, dt.timezone.utc))
    settled, reserved = spend_backend().snapshot(counter, moment_ts)
    return from_nanos(settled), from_nanos(reserved)
