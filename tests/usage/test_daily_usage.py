"""The dashboard's 30-day view reads complete days from DailyUsage (by model, device and person)
and the rest from the records, and shows exactly what a direct computation over the records gives."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from usage.daily_usage import rebuild_daily_usage
from usage.dashboard import TOP, build_dashboard, usage_charts
from usage.models import DailyDimension, DailyUsage, RolledUpBucket, UsageRecord
from usage.reports import UsageFilter, usage_groups, usage_totals, usage_totals_by_value
from usage.rollup_reports import complete_days, fleet_totals
from usage.rollups import rollup_usage

pytestmark = pytest.mark.usefixtures("prices")


def shown(groups) -> list[tuple[str, dict]]:
    return [(group.key, group.totals.as_dict()) for group in groups]


def dashboard_figures(now: dt.datetime) -> dict:
    board = build_dashboard("30d", now)
    return {
        "totals": board.totals.as_dict(),
        "charts": board.charts,
        "devices": shown(board.top_devices),
        "models": shown(board.top_models),
        "people": shown(board.top_people),
        "today": board.spend_today,
        "month": board.spend_month,
    }


def figures_from_records(now: dt.datetime) -> dict:
    """What the dashboard must show, computed straight from the records."""
    since = now - dt.timedelta(days=30)
    window = UsageFilter(since, now)
    day_start = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "totals": usage_totals(window).as_dict(),
        "charts": usage_charts(since, now, "day", usage_groups(window, "day")),
        "devices": shown(usage_groups(window, "device", limit=TOP)),
        "models": shown(usage_groups(window, "model", limit=TOP)),
        "people": shown(usage_groups(window, "person", limit=TOP)),
        "today": usage_totals(UsageFilter(day_start, now)).cost,
        "month": usage_totals(UsageFilter(day_start.replace(day=1), now)).cost,
    }


def test_the_30_day_dashboard_from_daily_usage_shows_what_the_records_give(ten_days_of_usage):
    now = timezone.now()
    rollup_usage(now - dt.timedelta(days=12), now)
    assert complete_days(now - dt.timedelta(days=30), now, daily_usage=True) is not None
    assert UsageRecord.objects.exclude(person_pk=None).exists() and UsageRecord.objects.filter(person_pk=None).exists()

    assert dashboard_figures(now) == figures_from_records(now)


def test_the_dashboard_reads_complete_days_from_daily_usage_not_from_the_records(ten_days_of_usage):
    now = timezone.now()
    rollup_usage(now - dt.timedelta(days=12), now)
    expected = figures_from_records(now)
    UsageRecord.objects.filter(occurred_at__lt=now - dt.timedelta(days=2)).update(output_tokens=0, person_pk=None)

    assert dashboard_figures(now) == expected


def test_days_rolled_up_before_daily_usage_existed_are_read_from_the_records(ten_days_of_usage):
    now = timezone.now()
    rollup_usage(now - dt.timedelta(days=12), now)
    RolledUpBucket.objects.update(daily_usage=False)
    DailyUsage.objects.update(requests=0, cost=0)

    assert complete_days(now - dt.timedelta(days=30), now, daily_usage=True) is None
    assert complete_days(now - dt.timedelta(days=30), now) is not None
    assert dashboard_figures(now) == figures_from_records(now)


def test_a_days_daily_usage_rows_are_its_records_by_model_device_and_person(ten_days_of_usage):
    day = UsageRecord.objects.order_by("occurred_at").first().occurred_at.astimezone(dt.UTC)
    day = day.replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
    day_filter = UsageFilter(day, day + dt.timedelta(days=1))

    written = rebuild_daily_usage(day)

    stored = {(row.dimension, row.key): row.requests for row in DailyUsage.objects.filter(day=day)}
    expected = {
        (dimension, "" if value is None else str(value)): totals.requests
        for dimension, group_by in (("model", "model"), ("device", "device"), ("person", "person"))
        for value, totals in usage_totals_by_value(day_filter, group_by)
    }
    assert len(stored) == written == len(expected) > 3
    assert stored == expected
    assert sum(requests for (dimension, _), requests in stored.items() if dimension == DailyDimension.PERSON) == (
        usage_totals(day_filter).requests
    )


def test_fleet_totals_add_the_complete_days_to_the_raw_stretches(ten_days_of_usage):
    now = timezone.now()
    rollup_usage(now - dt.timedelta(days=12), now)
    since = now - dt.timedelta(days=7, hours=5)

    assert fleet_totals(since, now).as_dict() == usage_totals(UsageFilter(since, now)).as_dict()
