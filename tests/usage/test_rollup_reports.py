"""The dashboard reads whole days from their rollups once they are complete, and gives the same
figures as from the raw records."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db.models import Sum
from django.utils import timezone

from tokens.operators import create_operator_api_key
from usage.dashboard import build_dashboard
from usage.models import RolledUpBucket, UsageRecord, UsageRollup
from usage.reports import UsageFilter
from usage.rollup_reports import complete_days, totals_with_rollups
from usage.rollups import rollup_usage

pytestmark = pytest.mark.usefixtures("prices")


def figures(now: dt.datetime) -> tuple:
    board = build_dashboard("30d", now)
    return (
        board.totals.as_dict(),
        board.charts,
        [(group.key, group.totals.as_dict()) for group in board.top_devices],
        [(group.key, group.totals.as_dict()) for group in board.top_models],
        board.spend_today,
        board.spend_month,
    )


def test_the_dashboard_reads_the_same_figures_from_complete_day_rollups_as_from_records(ten_days_of_usage):
    now = timezone.now()
    from_records = figures(now)
    rollup_usage(now - dt.timedelta(days=12), now)
    assert complete_days(now - dt.timedelta(days=30), now) is not None
    UsageRecord.objects.filter(occurred_at__lt=now - dt.timedelta(days=2)).update(output_tokens=0)  # only rollups know them now

    assert figures(now) == from_records


def test_a_day_rolled_up_before_it_ended_is_read_from_its_records(ten_days_of_usage):
    now = timezone.now()
    rollup_usage(now - dt.timedelta(days=12), now)
    RolledUpBucket.objects.update(rolled_at=now - dt.timedelta(days=20))
    UsageRollup.objects.update(requests=0)
    window = UsageFilter(now - dt.timedelta(days=30), now)

    assert complete_days(window.since, window.until) is None
    assert totals_with_rollups(window).requests == UsageRecord.objects.count() == 1500


def test_complete_days_are_the_longest_run_of_days_rolled_up_after_they_ended():
    day = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    for offset in (0, 1, 3, 4, 5):
        start = day + dt.timedelta(days=offset)
        RolledUpBucket.objects.create(period="day", bucket_start=start, rolled_at=start + dt.timedelta(days=1, minutes=5))
    RolledUpBucket.objects.create(
        period="day", bucket_start=day + dt.timedelta(days=6), rolled_at=day + dt.timedelta(days=6, hours=5)
    )

    found = complete_days(day - dt.timedelta(hours=3), day + dt.timedelta(days=9))
    assert (found.start, found.end) == (day + dt.timedelta(days=3), day + dt.timedelta(days=6))
    assert found.rolled_at == day + dt.timedelta(days=6, minutes=5)


def test_rebuilding_the_days_refreshes_what_the_dashboard_read_from_them(ten_days_of_usage):
    now = timezone.now()
    rollup_usage(now - dt.timedelta(days=12), now)
    before = build_dashboard("30d", now).totals.counts["output_tokens"]
    UsageRecord.objects.filter(occurred_at__lt=now - dt.timedelta(days=2)).update(output_tokens=0)
    rollup_usage(now - dt.timedelta(days=12), now)

    after = build_dashboard("30d", now).totals.counts["output_tokens"]

    assert before > 0
    assert after == UsageRecord.objects.aggregate(total=Sum("output_tokens"))["total"] < before


def test_admin_usage_for_a_device_answers_the_same_from_complete_day_rollups(client, ten_days_of_usage):
    until = timezone.now()
    device = UsageRecord.objects.values_list("device_ref", flat=True).order_by("device_ref")[0]
    _key, secret = create_operator_api_key(name="rollups", created_by=None)

    def report(group_by: str) -> dict:
        query = {"device": device, "group_by": group_by, "until": until.isoformat()}
        answer = client.get("/admin/usage", query, headers={"authorization": f"Bearer {secret}"}).json()
        return {"totals": answer["totals"], "groups": answer["groups"]}

    from_records = {group_by: report(group_by) for group_by in ("day", "model", "device")}
    rollup_usage(until - dt.timedelta(days=12), until)
    UsageRecord.objects.filter(occurred_at__lt=until - dt.timedelta(days=2)).update(input_tokens=0)

    assert {group_by: report(group_by) for group_by in ("day", "model", "device")} == from_records
    assert from_records["day"]["totals"]["input_tokens"] > 0
