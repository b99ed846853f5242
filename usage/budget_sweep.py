"""The rollup task's pass over budget alerts: every threshold the database's recorded spend has
reached in the current periods gets its alert (the unique constraint keeps it to one), and alerts
whose queueing failed are queued again. It catches what settle-time detection cannot: a process
that died in between, batches (settled without their caps) and counters raised by reconciliation."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

from django.utils import timezone

from tokens.models import Device, Organization
from tokens.policy import own_alert_thresholds, resolve_policy, settings_alert_thresholds
from usage.budget_alerts import Crossing, record_budget_alerts, thresholds_reached
from usage.budget_tasks import dispatch_budget_alert
from usage.models import BudgetAlert
from usage.periods import PERIODS, period_start
from usage.spend import recorded_cost_by, to_nanos

REDISPATCH_AFTER = dt.timedelta(minutes=1)
_CAP_FIELDS = {"day": "daily_spend_cap_usd", "week": "weekly_spend_cap_usd", "month": "monthly_spend_cap_usd"}
_DEVICE_CAPS = {"day": "device_daily_cap_usd", "week": "device_weekly_cap_usd", "month": "device_monthly_cap_usd"}


def _reached(
    scope: str, pk: int, period: str, start: dt.datetime, cap: Decimal | None, spent: Decimal, thresholds: tuple[int, ...]
) -> list[Crossing]:
    if cap is None:
        return []
    return [
        Crossing(scope, pk, period, start, percent, cap, spent)
        for percent in thresholds_reached(cap_nanos=to_nanos(cap), spent_nanos=to_nanos(spent), thresholds=thresholds)
    ]


def budget_crossings_recorded(now: float) -> list[Crossing]:
    """Every threshold reached in the current day, week and month by recorded spend."""
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    crossings: list[Crossing] = []
    for period in PERIODS:
        start = period_start(period, moment)
        device_spend = recorded_cost_by("device_pk", start)
        for device in Device.objects.filter(pk__in=device_spend).select_related("organization"):
            policy = resolve_policy(device, device.organization)
            cap = getattr(policy, _DEVICE_CAPS[period])
            crossings += _reached(
                "device", device.pk, period, start, cap, device_spend[device.pk], policy.device_alert_thresholds
            )
        org_spend = recorded_cost_by("org_pk", start)
        for organization in Organization.objects.filter(pk__in=org_spend):
            cap = getattr(organization, _CAP_FIELDS[period])
            thresholds = own_alert_thresholds(organization) or settings_alert_thresholds()
            crossings += _reached("org", organization.pk, period, start, cap, org_spend[organization.pk], thresholds)
    return crossings


def _unrecorded(crossings: list[Crossing]) -> list[Crossing]:
    starts = {crossing.period_start for crossing in crossings}
    recorded = set(
        BudgetAlert.objects.filter(period_start__in=starts).values_list(
            "scope", "subject_pk", "period", "period_start", "threshold_percent"
        )
    )
    return [c for c in crossings if (c.scope, c.subject_pk, c.period, c.period_start, c.threshold_percent) not in recorded]


def sweep_budget_alerts(now: float | None = None) -> int:
    """Record the alerts settle-time detection missed and queue any left undispatched; returns how
    many alerts it created."""
    created = record_budget_alerts(_unrecorded(budget_crossings_recorded(time.time() if now is None else now)))
    stale = BudgetAlert.objects.filter(dispatched_at__isnull=True, occurred_at__lt=timezone.now() - REDISPATCH_AFTER)
    for alert_id in stale.values_list("pk", flat=True):
        dispatch_budget_alert(alert_id)
    return len(created)
