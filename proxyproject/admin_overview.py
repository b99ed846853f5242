"""What the admin index shows first: the last 24 hours in numbers and what needs an operator now
(the breaker open, upstream keys flagged out of rotation, devices waiting for approval, budgets past
an alert threshold in the current period), each with the link that deals with it. The wiring layer builds it because it reads all three apps."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.urls import reverse

from gateway.api import current_breaker_body
from gateway.models import UpstreamKey, UpstreamKeyState
from proxyproject.lib.logging import log_event
from tokens.models import Device, DeviceStatus
from usage.budget_alerts import budget_subject_url, current_budget_alerts
from usage.reports import UsageFilter, UsageTotals, usage_totals

logger = logging.getLogger("proxyproject.admin_overview")
OVERVIEW_HOURS = 24
BUDGETS_LISTED = 5
_PERIOD_NAMES = {"day": "daily", "week": "weekly", "month": "monthly"}


@dataclass(frozen=True, slots=True)
class Attention:
    text: str
    url: str


@dataclass(frozen=True, slots=True)
class AdminOverview:
    last_24h: UsageTotals
    breaker_state: str  # closed, open, half_open, or unknown when it cannot be read
    attention: list[Attention]


def _breaker_state() -> str:
    try:
        return str(async_to_sync(current_breaker_body)()["state"])
    except Exception as exc:  # Redis away: the rest of the overview is still worth showing
        log_event(logger, "Breaker state unavailable for the admin index", logging.WARNING, error=repr(exc))
        return "unknown"


def _budgets_past_a_threshold(now: dt.datetime) -> list[Attention]:
    alerts = current_budget_alerts(now)
    shown = [
        Attention(
            f"{'Device' if alert.scope == 'device' else 'Organization'} {alert.subject} is past "
            f"{alert.threshold_percent}% of its {_PERIOD_NAMES.get(alert.period, alert.period)} cap",
            budget_subject_url(alert) or reverse("admin:usage_budgetalert_changelist"),
        )
        for alert in alerts[:BUDGETS_LISTED]
    ]
    if len(alerts) > BUDGETS_LISTED:
        more = len(alerts) - BUDGETS_LISTED
        shown.append(
            Attention(
                f"{more} more budget{'s' if more != 1 else ''} past a threshold", reverse("admin:usage_budgetalert_changelist")
            )
        )
    return shown


def build_admin_overview(now: dt.datetime) -> AdminOverview:
    attention = []
    breaker_state = _breaker_state()
    if breaker_state != "closed":
        attention.append(Attention(f"Circuit breaker is {breaker_state}", reverse("admin:usage_dashboard")))
    flagged = list(
        UpstreamKey.objects.filter(flagged_at__isnull=False)
        .exclude(state=UpstreamKeyState.RETIRED)
        .values_list("name", flat=True)
    )
    if flagged:
        url = reverse("admin:gateway_upstreamkey_changelist") + "?flagged_at__isnull=False"
        attention.append(Attention(f"Upstream keys out of rotation: {', '.join(flagged)}", url))
    pending = Device.objects.filter(status=DeviceStatus.PENDING).count()
    if pending:
        url = reverse("admin:tokens_device_changelist") + f"?status__exact={DeviceStatus.PENDING}"
        attention.append(Attention(f"{pending} device{'s' if pending != 1 else ''} waiting for approval", url))
    attention += _budgets_past_a_threshold(now)
    totals = usage_totals(UsageFilter(now - dt.timedelta(hours=OVERVIEW_HOURS), now))
    return AdminOverview(totals, breaker_state, attention)
