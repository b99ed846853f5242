"""Spend caps that hold under concurrency and across instances.

Before a request goes upstream the gateway reserves its cost bound against every cap that applies
(device, person and organization, each per UTC day, ISO week and month; a person's counters are
shared by all the devices they signed in on, as an organization's are by its devices). Checking all of them and reserving
in all of them is one atomic step: one Lua script on Redis, or one critical section of plain dict
operations in process; on a Redis Cluster each subject's counters are one atomic step, and the
subjects' steps are made all-or-nothing by releasing (`usage.spend.redis`). The step reserves the whole bound when every cap has room for it, else the
least room left when that still covers the request's minimum (`gateway.policy` then lowers the
request's max_tokens to what was granted), else nothing and the request is refused. When usage lands the reservation is replaced by the
actual cost (`settle_spend`); a request that fails before any usage releases it. A reservation that
is never settled (its process died) stops counting after SPEND_RESERVATION_TTL_SECONDS.

Amounts are kept as integer nano-dollars (rounded up), so Redis and Lua never see a float.
Settled totals are reconciled from the database by the rollup task and at start-up
(`reconcile_spend_counters`): a counter only ever rises to the database's figure, so records still
in the write queue are never forgotten.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.db.models import Sum

from proxyproject.lib.backends import select_backend
from proxyproject.lib.errors import SpendCapReached
from proxyproject.lib.logging import log_event
from proxyproject.lib.process_state import register_process_state
from tokens.identity import DeviceIdentity
from usage import budget_alerts  # the module, not its names: it imports `usage.spend.base` in turn
from usage.models import UsageRecord
from usage.periods import PERIODS, period_start
from usage.spend.base import MAX_RESERVATION_NANOS, CapCheck, Counter, ReserveOutcome, SpendBackend, from_nanos, to_nanos
from usage.spend.local import LocalSpendBackend
from usage.spend.redis import RedisSpendBackend

__all__ = [
    "PERIODS",
    "CapCheck",
    "Counter",
    "LocalSpendBackend",
    "RedisSpendBackend",
    "ReserveOutcome",
    "SpendBackend",
    "SpendLedger",
    "SpendReservation",
    "cap_checks",
    "cap_refusal",
    "counter_for",
    "current_spend",
    "database_totals",
    "from_nanos",
    "load_spend_counters",
    "period_start",
    "reconcile_spend_counters",
    "release_spend",
    "reserve_spend",
    "settle_spend",
    "spend_backend",
    "to_nanos",
]

logger = logging.getLogger("usage.spend")
_PERIOD_GRACE_SECONDS = 2 * 86400
_PERIOD_NAMES = {"day": "Daily", "week": "Weekly", "month": "Monthly"}
_SCOPE_NAMES = {"device": "device", "org": "organization", "person": "person"}


@dataclass(frozen=True, slots=True)
class SpendReservation:
    request_id: str
    amount: Decimal
    nanos: int
    counters: tuple[Counter, ...]
    checks: tuple[CapCheck, ...] = ()  # the caps behind the counters, for budget alerts at settle (none for batches)


def _week_bucket(moment: dt.datetime) -> tuple[str, float]:
    """ISO weeks: Monday 00:00 UTC to the next Monday."""
    monday = dt.datetime(moment.year, moment.month, moment.day, tzinfo=dt.UTC) - dt.timedelta(days=moment.weekday())
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}", (monday + dt.timedelta(days=7)).timestamp()


def _bucket(period: str, moment: dt.datetime) -> tuple[str, float]:
    if period == "day":
        return _day_bucket(moment)
    if period == "week":
        return _week_bucket(moment)
    return _month_bucket(moment)


def _day_bucket(moment: dt.datetime) -> tuple[str, float]:
    end = dt.datetime(moment.year, moment.month, moment.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    return moment.strftime("%Y-%m-%d"), end.timestamp()


def _month_bucket(moment: dt.datetime) -> tuple[str, float]:
    days = calendar.monthrange(moment.year, moment.month)[1]
    end = dt.datetime(moment.year, moment.month, 1, tzinfo=dt.UTC) + dt.timedelta(days=days)
    return moment.strftime("%Y-%m"), end.timestamp()


def counter_for(scope: str, pk: int, period: str, moment: dt.datetime) -> Counter:
    bucket, ends_at = _bucket(period, moment)
    return Counter(f"{scope}:{pk}:{period}:{bucket}", ends_at + _PERIOD_GRACE_SECONDS)


def cap_checks(identity: DeviceIdentity, now: float) -> list[CapCheck]:
    """The caps that apply to this device now; empty when it, its person and its organization have none."""
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    policy = identity.policy
    device_thresholds, org_thresholds = policy.device_alert_thresholds, policy.org_alert_thresholds
    wanted = [
        ("device", identity.device_pk, "day", policy.device_daily_cap_usd, device_thresholds),
        ("device", identity.device_pk, "week", policy.device_weekly_cap_usd, device_thresholds),
        ("device", identity.device_pk, "month", policy.device_monthly_cap_usd, device_thresholds),
    ]
    if identity.person_id is not None:
        wanted += [
            # A person's caps are enforced; budget alerts are kept to devices and organizations.
            ("person", identity.person_id, "day", policy.person_daily_cap_usd, ()),
            ("person", identity.person_id, "week", policy.person_weekly_cap_usd, ()),
            ("person", identity.person_id, "month", policy.person_monthly_cap_usd, ()),
        ]
    if identity.org_id is not None:
        wanted += [
            ("org", identity.org_id, "day", policy.org_daily_cap_usd, org_thresholds),
            ("org", identity.org_id, "week", policy.org_weekly_cap_usd, org_thresholds),
            ("org", identity.org_id, "month", policy.org_monthly_cap_usd, org_thresholds),
        ]
    checks = []
    for scope, pk, period, cap, thresholds in wanted:
        if cap is not None:
            counter = counter_for(scope, pk, period, moment)
            checks.append(
                CapCheck(
                    counter,
                    to_nanos(cap),
                    scope,
                    period,
                    counter.expires_at - _PERIOD_GRACE_SECONDS,
                    subject_pk=pk,
                    starts_at=period_start(period, moment).timestamp(),
                    alert_thresholds=thresholds,
                )
            )
    return checks


def _usd(amount: Decimal) -> str:
    return f"${amount.quantize(Decimal('0.01'), rounding=ROUND_CEILING)}"


def cap_refusal(check: CapCheck, outcome: ReserveOutcome, needed_nanos: int) -> SpendCapReached:
    """What the client is told: which cap, what it holds, and what this request needed."""
    cap, spent, reserved, needed = (from_nanos(n) for n in (check.cap_nanos, outcome.settled, outcome.reserved, needed_nanos))
    remaining = max(cap - spent - reserved, Decimal(0))
    in_flight = f", ${reserved.quantize(Decimal('0.01'))} reserved by requests in flight" if reserved else ""
    message = (
        f"{_PERIOD_NAMES[check.period]} spend cap {_usd(cap)} for this {_SCOPE_NAMES[check.scope]}: "
        f"{_usd(spent)} spent{in_flight}, this request needs at least {_usd(needed)}."
    )
    details: dict[str, object] = {
        "scope": check.scope,
        "period": check.period,
        "cap": format(cap.normalize(), "f"),
        "spent": format(spent.normalize(), "f"),
        "reserved_in_flight": format(reserved.normalize(), "f"),
        "remaining": format(remaining.normalize(), "f"),
        "request_estimate": format(needed.normalize(), "f"),
        "resets_at": dt.datetime.fromtimestamp(check.resets_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return SpendCapReached(message, details=details)


_local_backend: SpendBackend = LocalSpendBackend(totals_loader=lambda: database_totals())
_redis_backend: SpendBackend = RedisSpendBackend()


def spend_backend() -> SpendBackend:
    return select_backend(local=_local_backend, redis=_redis_backend)


def forget_local_spend() -> None:
    """Fresh in-process counters, loaded from the database before their first reservation (as a
    restarted process's are); counters kept in Redis are shared state and stay."""
    global _local_backend
    _local_backend = LocalSpendBackend(totals_loader=lambda: database_totals())


register_process_state("spend counters", forget_local_spend)


@dataclass
class SpendLedger:
    """The cap rules over a backend, with the clock injectable for tests of expiry and periods."""

    backend: SpendBackend | None = None
    clock: Callable[[], float] = time.time

    def _backend(self) -> SpendBackend:
        return self.backend or spend_backend()

    async def reserve(
        self,
        identity: DeviceIdentity,
        amount: Decimal,
        request_id: str,
        *,
        minimum: Decimal | None = None,
        soft: bool = False,
        ttl_seconds: float | None = None,
    ) -> SpendReservation | None:
        now = self.clock()
        checks = cap_checks(identity, now)
        if not checks:
            return None
        nanos = to_nanos(amount)
        floor = -1 if soft else (nanos if minimum is None else min(to_nanos(minimum), nanos))
        ttl = settings.SPEND_RESERVATION_TTL_SECONDS if ttl_seconds is None else ttl_seconds
        held = min(nanos, MAX_RESERVATION_NANOS)  # the floor is not lowered: strict still refuses the whole bound
        outcome = await self._backend().reserve(checks, held, request_id, now, ttl, floor=floor)
        if outcome.granted is None:
            failed = checks[outcome.failed or 0]
            log_event(
                logger,
                "Spend cap reached",
                device_pk=identity.device_pk,
                org_id=identity.org_id,
                counter=failed.counter.name,
                request_id=request_id,
                amount=str(amount),
            )
            raise cap_refusal(failed, outcome, floor)
        return SpendReservation(
            request_id, from_nanos(outcome.granted), outcome.granted, tuple(c.counter for c in checks), tuple(checks)
        )

    async def settle(self, reservation: SpendReservation, actual: Decimal | None) -> None:
        """None (the model had no price) keeps the reserved worst case as spent, so caps stay safe.
        A budget threshold this settle crosses is recorded as an alert (`usage.budget_alerts`)."""
        nanos = reservation.nanos if actual is None else to_nanos(actual)
        settled = await self._backend().finish(reservation.counters, reservation.request_id, nanos, self.clock())
        crossings = budget_alerts.crossings_at_settle(reservation.checks, settled, nanos)
        if crossings:
            await _record_alerts(crossings, reservation.request_id)

    async def release(self, reservation: SpendReservation) -> None:
        await self._backend().finish(reservation.counters, reservation.request_id, None, self.clock())


async def _record_alerts(crossings: list[budget_alerts.Crossing], request_id: str) -> None:
    try:
        await sync_to_async(budget_alerts.record_budget_alerts)(crossings)
    except Exception as exc:  # the database is away: the rollup task's sweep records them later
        log_event(
            logger,
            "Budget alerts not recorded at settle",
            logging.WARNING,
            requestId=request_id,
            error=f"{type(exc).__name__}: {exc}",
        )


_ledger = SpendLedger()


async def reserve_spend(
    identity: DeviceIdentity,
    amount: Decimal,
    request_id: str,
    *,
    minimum: Decimal | None = None,
    soft: bool = False,
    ttl_seconds: float | None = None,
) -> SpendReservation | None:
    """Reserve `amount` against every cap of the device and its organization; None when there are
    no caps (nothing is stored then). With `minimum`, as much as fits when that is at least the
    minimum (the reservation's `amount` says how much); `soft` reserves `amount` whatever the caps
    hold. Raises SpendCapReached (429, x-should-retry false) when not even the minimum fits in one
    of them. The reservation lapses after SPEND_RESERVATION_TTL_SECONDS unless `ttl_seconds` says
    otherwise (a batch is held for its whole lifetime)."""
    return await _ledger.reserve(identity, amount, request_id, minimum=minimum, soft=soft, ttl_seconds=ttl_seconds)


async def settle_spend(reservation: SpendReservation, actual: Decimal | None) -> None:
    await _ledger.settle(reservation, actual)


async def release_spend(reservation: SpendReservation) -> None:
    await _ledger.release(reservation)


def recorded_cost_by(field_name: str, since: dt.datetime) -> dict[int, Decimal]:
    """Recorded cost since `since` per device (`device_pk`) or organization (`org_pk`)."""
    rows = (
        UsageRecord.objects.filter(occurred_at__gte=since, **{f"{field_name}__isnull": False}, cost__isnull=False)
        .values(field_name)
        .annotate(total=Sum("cost"))
    )
    return {row[field_name]: row["total"] or Decimal(0) for row in rows}


def database_totals(now: float | None = None) -> dict[Counter, int]:
    """This day's, week's and month's recorded cost per device, organization and person, as counters."""
    moment = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
    totals: dict[Counter, int] = {}
    for scope, field_name in (("device", "device_pk"), ("org", "org_pk"), ("person", "person_pk")):
        for period in PERIODS:
            for pk, total in recorded_cost_by(field_name, period_start(period, moment)).items():
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
    counter = counter_for(scope, pk, period, dt.datetime.fromtimestamp(moment_ts, dt.UTC))
    settled, reserved = spend_backend().snapshot(counter, moment_ts)
    return from_nanos(settled), from_nanos(reserved)
