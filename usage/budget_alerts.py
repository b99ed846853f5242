"""Budget alerts: when spend crosses a threshold (a percentage of a spend cap) of a device or an
organization, an alert is recorded once per period and handed to delivery (`usage.budget_delivery`).

Two places detect a crossing, neither on the admission path. The settle step (`usage.spend`) gets
each counter's settled total back from the same atomic step that added the request's cost, so
exactly one settle sees a counter move across each threshold. The rollup task's sweep
(`usage.budget_sweep`) compares what the database has recorded with every cap, so a crossing is
not missed when a process died between the two, or when a batch or a reconciliation moved the
totals. Both insert the alert; the table's unique constraint on (scope, subject, period, period
start, threshold) lets exactly one insert win, across every gateway and worker process, on
PostgreSQL and SQLite alike, whatever backend keeps the counters.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from proxyproject.lib.logging import log_event
from tokens.models import Device, Organization
from usage.budget_tasks import dispatch_budget_alert
from usage.models import BudgetAlert
from usage.periods import PERIODS, period_start
from usage.spend.base import CapCheck, from_nanos

logger = logging.getLogger("usage.budget_alerts")


@dataclass(frozen=True, slots=True)
class Crossing:
    scope: str
    subject_pk: int
    period: str
    period_start: dt.datetime
    threshold_percent: int
    cap: Decimal
    spent: Decimal


def thresholds_reached(*, cap_nanos: int, spent_nanos: int, thresholds: tuple[int, ...]) -> list[int]:
    """A cap of zero has no thresholds: nothing can be spent under it to warn about."""
    if cap_nanos <= 0:
        return []
    return [percent for percent in thresholds if spent_nanos * 100 >= cap_nanos * percent]


def crossings_at_settle(checks: tuple[CapCheck, ...], settled_after: tuple[int, ...], added_nanos: int) -> list[Crossing]:
    """The thresholds this settle moved each counter across: reached after it, not before it."""
    crossings = []
    for check, after in zip(checks, settled_after):
        before = after - added_nanos
        already = set(thresholds_reached(cap_nanos=check.cap_nanos, spent_nanos=before, thresholds=check.alert_thresholds))
        for percent in thresholds_reached(cap_nanos=check.cap_nanos, spent_nanos=after, thresholds=check.alert_thresholds):
            if percent not in already:
                crossings.append(
                    Crossing(
                        scope=check.scope,
                        subject_pk=check.subject_pk,
                        period=check.period,
                        period_start=dt.datetime.fromtimestamp(check.starts_at, dt.UTC),
                        threshold_percent=percent,
                        cap=from_nanos(check.cap_nanos),
                        spent=from_nanos(after),
                    )
                )
    return crossings


def _subject(crossing: Crossing) -> tuple[str, Device | None, Organization | None]:
    if crossing.scope == "device":
        device = Device.objects.select_related("organization").filter(pk=crossing.subject_pk).first()
        return (device.device_id, device, device.organization) if device else (f"device #{crossing.subject_pk}", None, None)
    organization = Organization.objects.filter(pk=crossing.subject_pk).first()
    return (organization.name if organization else f"organization #{crossing.subject_pk}"), None, organization


def record_budget_alerts(crossings: list[Crossing], *, now: dt.datetime | None = None) -> list[BudgetAlert]:
    """Insert each crossing's alert unless one is already recorded; each new one is dispatched once
    its transaction commits. Returns the alerts this call created."""
    created = []
    for crossing in crossings:
        subject, device, organization = _subject(crossing)
        try:
            with transaction.atomic():
                alert = BudgetAlert.objects.create(
                    uuid=uuid.uuid4(),
                    scope=crossing.scope,
                    subject_pk=crossing.subject_pk,
                    subject=subject,
                    device=device,
                    organization=organization,
                    period=crossing.period,
                    period_start=crossing.period_start,
                    threshold_percent=crossing.threshold_percent,
                    cap=crossing.cap,
                    spent=crossing.spent.quantize(Decimal("1e-9")),
                    occurred_at=now or timezone.now(),
                )
        except IntegrityError:
            continue  # another settle or the sweep recorded it first
        log_event(
            logger,
            "Budget threshold crossed",
            scope=alert.scope,
            subject=alert.subject,
            period=alert.period,
            threshold=alert.threshold_percent,
            cap=str(alert.cap),
            spent=str(alert.spent),
        )
        transaction.on_commit(functools.partial(dispatch_budget_alert, alert.pk))
        created.append(alert)
    return created


def current_budget_alerts(now: dt.datetime) -> list[BudgetAlert]:
    """Each device's and organization's highest threshold passed per period in the current day,
    week and month, highest first: what the admin index lists as needing attention."""
    current = Q()
    for period in PERIODS:
        current |= Q(period=period, period_start=period_start(period, now))
    highest: dict[tuple[str, int, str], BudgetAlert] = {}
    for alert in BudgetAlert.objects.filter(current).order_by("threshold_percent"):
        highest[(alert.scope, alert.subject_pk, alert.period)] = alert
    return sorted(highest.values(), key=lambda alert: (-alert.threshold_percent, alert.subject))


def budget_subject_url(alert: BudgetAlert) -> str | None:
    """The device's or organization's admin page; None once it is deleted."""
    if alert.device_id is not None:
        return reverse("admin:tokens_device_change", args=[alert.device_id])
    if alert.scope == "org" and alert.organization_id is not None:
        return reverse("admin:tokens_organization_change", args=[alert.organization_id])
    return None
