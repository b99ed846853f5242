"""What the admin's usage dashboard shows: totals, series over time drawn as SVG, top devices and
models, spend today and this month, budgets past an alert threshold, and the circuit breaker's state.

The breaker belongs to `gateway`, a layer above this one: the gateway registers the function that
reads its state (`register_breaker_state`), so this module never imports it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from asgiref.sync import async_to_sync
from django.utils.safestring import SafeString

from usage.budget_alerts import budget_subject_url, current_budget_alerts
from usage.charts import Series, stacked_bar_chart
from usage.models import BudgetAlert
from usage.reports import GroupBy, UsageGroup, UsageTotals
from usage.rollup_reports import fleet_totals, usage_breakdown

UTC = dt.UTC
PERIODS: dict[str, tuple[dt.timedelta, GroupBy]] = {
    "24h": (dt.timedelta(hours=24), "hour"),
    "7d": (dt.timedelta(days=7), "day"),
    "30d": (dt.timedelta(days=30), "day"),
}
DEFAULT_PERIOD = "24h"
TOP = 10


@dataclass
class Dashboard:
    period: str
    since: dt.datetime
    until: dt.datetime
    totals: UsageTotals
    charts: dict[str, SafeString]
    top_devices: list[UsageGroup]
    top_models: list[UsageGroup]
    top_people: list[UsageGroup]
    spend_today: Decimal
    spend_month: Decimal
    breaker: dict[str, Any] | None
    breaker_error: str | None
    budgets: list[BudgetAlert]

    @property
    def tiles(self) -> list[tuple[str, str, str]]:
        """(id, value, label) of each headline number."""
        totals = self.totals
        return [
            ("requests", f"{totals.requests:,}", "requests"),
            ("errors", f"{totals.error_rate:.1%}", f"error rate ({totals.errors:,} errors)"),
            ("tokens", f"{totals.total_tokens:,}", "tokens"),
            ("spend", f"${totals.cost:,.4f}", "spend in period"),
            ("today", f"${self.spend_today:,.4f}", "spend today (UTC)"),
            ("month", f"${self.spend_month:,.4f}", "spend this month"),
            ("unpriced", f"{totals.unpriced_requests:,}", "unpriced: unknown model"),
            ("estimated", f"{totals.estimated_requests:,}", "priced at an assumed or fallback rate"),
        ]

    @property
    def budget_rows(self) -> list[BudgetRow]:
        return [
            BudgetRow(
                subject=f"{alert.get_scope_display()} {alert.subject}",
                url=budget_subject_url(alert),
                period=alert.period,
                threshold=f"{alert.threshold_percent}%",
                spent=f"${alert.spent:.2f} / ${alert.cap:.2f}",
            )
            for alert in self.budgets
        ]

    @property
    def device_rows(self) -> list[TableRow]:
        return table_rows(self.top_devices)

    @property
    def model_rows(self) -> list[TableRow]:
        return table_rows(self.top_models)

    @property
    def person_rows(self) -> list[TableRow]:
        return table_rows(self.top_people)


@dataclass(frozen=True)
class BudgetRow:
    subject: str
    url: str | None
    period: str
    threshold: str
    spent: str


@dataclass(frozen=True)
class TableRow:
    key: str
    requests: str
    errors: str
    tokens: str
    cost: str


def table_rows(groups: list[UsageGroup]) -> list[TableRow]:
    return [
        TableRow(
            key=group.key or "(none)",
            requests=f"{group.totals.requests:,}",
            errors=f"{group.totals.errors:,}",
            tokens=f"{group.totals.total_tokens:,}",
            cost=f"{group.totals.cost:.6f}"
            + (f" (+{group.totals.unpriced_requests:,} unpriced)" if group.totals.unpriced_requests else ""),
        )
        for group in groups
    ]


def bucket_keys(since: dt.datetime, until: dt.datetime, group_by: GroupBy) -> list[str]:
    """Every bucket of the period in order, so quiet hours show as empty bars rather than vanish."""
    step = dt.timedelta(hours=1) if group_by == "hour" else dt.timedelta(days=1)
    moment = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if group_by == "day":
        moment = moment.replace(hour=0)
    keys = []
    while moment < until:
        keys.append(moment.strftime("%Y-%m-%dT%H:00:00Z" if group_by == "hour" else "%Y-%m-%d"))
        moment += step
    return keys


def _short(key: str, group_by: GroupBy) -> str:
    return key[11:16] if group_by == "hour" else key[5:]


def usage_charts(since: dt.datetime, until: dt.datetime, group_by: GroupBy, groups: list[UsageGroup]) -> dict[str, SafeString]:
    """Requests, tokens and spend per bucket of [since, until), from the period's groups by hour or day."""
    by_key = {group.key: group.totals for group in groups}
    keys = bucket_keys(since, until, group_by)
    rows = [by_key.get(key, UsageTotals()) for key in keys]
    labels = [_short(key, group_by) for key in keys]
    return {
        "requests": stacked_bar_chart(
            labels,
            [
                Series("ok", "#417690", [r.requests - r.errors for r in rows]),
                Series("errors", "#ba2121", [r.errors for r in rows]),
            ],
            title="Requests",
        ),
        "tokens": stacked_bar_chart(
            labels,
            [
                Series("input", "#79aec8", [r.counts["input_tokens"] for r in rows]),
                Series("cache read", "#9ccc65", [r.counts["cache_read_tokens"] for r in rows]),
                Series(
                    "cache write",
                    "#ffb74d",
                    [r.counts["cache_write_5m_tokens"] + r.counts["cache_write_1h_tokens"] for r in rows],
                ),
                Series("output", "#264b5d", [r.counts["output_tokens"] for r in rows]),
            ],
            title="Tokens",
        ),
        "spend": stacked_bar_chart(
            labels,
            [Series("USD", "#8e6bb8", [float(r.cost) for r in rows])],
            title="Spend (USD)",
            value_format=lambda value: f"${value:,.4f}",
        ),
    }


BreakerState = Callable[[], Awaitable[dict[str, Any]]]
_breaker_state: list[BreakerState] = []


def register_breaker_state(read_state: BreakerState) -> None:
    """The gateway's breaker state (the body of `GET /admin/circuit-breaker`) for the dashboard."""
    _breaker_state[:] = [read_state]


def _breaker() -> tuple[dict[str, Any] | None, str | None]:
    if not _breaker_state:
        return None, "no circuit breaker registered"
    try:
        return async_to_sync(_breaker_state[0])(), None
    except Exception as exc:  # Redis away: the rest of the dashboard is still worth showing
        return None, f"{type(exc).__name__}: {exc}"


def build_dashboard(period: str, now: dt.datetime) -> Dashboard:
    period = period if period in PERIODS else DEFAULT_PERIOD
    length, group_by = PERIODS[period]
    until = now.astimezone(UTC)
    since = until - length
    day_start = until.replace(hour=0, minute=0, second=0, microsecond=0)
    breaker, breaker_error = _breaker()
    breakdown = usage_breakdown(since, until, group_by, top=TOP)
    return Dashboard(
        period=period,
        since=since,
        until=until,
        totals=breakdown.totals,
        charts=usage_charts(since, until, group_by, breakdown.over_time),
        top_devices=breakdown.devices,
        top_models=breakdown.models,
        top_people=breakdown.people,
        spend_today=fleet_totals(day_start, until).cost,
        spend_month=fleet_totals(day_start.replace(day=1), until).cost,
        breaker=breaker,
        breaker_error=breaker_error,
        budgets=current_budget_alerts(until),
    )
