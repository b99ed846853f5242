"""The dashboard's totals and breakdowns, read from day rollups for the whole days that have them
and from raw records for the rest.

Thirty days of a busy fleet are over half a million records, and each of the dashboard's breakdowns
would read them all again (1.9 s at ten million records). A day's rollups are a few thousand rows
and give the same sums, but only for a day whose bucket was rebuilt after it ended
(`RolledUpBucket`): that rebuild saw every record stored by then. Days that lack one (today, a day
the rollup task has not reached, every day in a test that never rolls up) are read raw, so the
figures are the raw ones whatever the rollups hold. A record stored after its day's last rebuild
(the writer down for hours) is missed until `rollup_usage` runs for that day again, which the
README asks for after an outage.

Hourly breakdowns (the 24-hour view) stay raw: a day's rollup cannot be split by hour.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal

from django.db.models import QuerySet, Sum

from usage.models import RolledUpBucket, RollupPeriod, UsageRollup
from usage.reports import (
    COUNT_FIELDS,
    GroupBy,
    UsageFilter,
    UsageGroup,
    UsageTotals,
    group_key,
    sort_groups,
    sum_totals,
    usage_groups,
    usage_totals,
)

DAY = dt.timedelta(days=1)
_ROLLUP_SUMS = {
    "requests": Sum("requests"),
    "errors": Sum("errors"),
    "unpriced_requests": Sum("unpriced_requests"),
    "estimated_requests": Sum("estimated_requests"),
    "cost_sum": Sum("cost"),
    **{f"{name}_sum": Sum(name) for name in COUNT_FIELDS},
}
_ROLLUP_KEY = {"day": "bucket_start", "model": "model", "device": "device_ref"}


def _day_floor(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def complete_days(since: dt.datetime, until: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    """The longest run of whole UTC days inside [since, until) whose day bucket was rebuilt after
    the day ended, as [start, end); None when there is none."""
    first = _day_floor(since)
    if first < since:
        first += DAY
    last = _day_floor(until)
    if first >= last:
        return None
    rolled = RolledUpBucket.objects.filter(period=RollupPeriod.DAY, bucket_start__gte=first, bucket_start__lt=last)
    complete = sorted(start for start, rolled_at in rolled.values_list("bucket_start", "rolled_at") if rolled_at >= start + DAY)
    best: tuple[dt.datetime, dt.datetime] | None = None
    run_start = None
    for index, start in enumerate(complete):
        if run_start is None or start != complete[index - 1] + DAY:
            run_start = start
        if best is None or start + DAY - run_start > best[1] - best[0]:
            best = (run_start, start + DAY)
    return best


def _raw_parts(usage_filter: UsageFilter, span: tuple[dt.datetime, dt.datetime]) -> list[UsageFilter]:
    parts = [replace(usage_filter, until=span[0]), replace(usage_filter, since=span[1])]
    return [part for part in parts if part.since < part.until]


def _rollups(usage_filter: UsageFilter, span: tuple[dt.datetime, dt.datetime]) -> QuerySet[UsageRollup]:
    rollups = UsageRollup.objects.filter(period=RollupPeriod.DAY, bucket_start__gte=span[0], bucket_start__lt=span[1])
    if usage_filter.device_pk is not None:
        rollups = rollups.filter(device_pk=usage_filter.device_pk)
    if usage_filter.device_ref is not None:
        rollups = rollups.filter(device_ref=usage_filter.device_ref)
    if usage_filter.org_pk is not None:
        rollups = rollups.filter(org_pk=usage_filter.org_pk)
    if usage_filter.model is not None:
        rollups = rollups.filter(model=usage_filter.model)
    return rollups


def _totals_of(row: dict) -> UsageTotals:
    return UsageTotals(
        requests=row["requests"] or 0,
        errors=row["errors"] or 0,
        unpriced_requests=row["unpriced_requests"] or 0,
        estimated_requests=row["estimated_requests"] or 0,
        cost=row["cost_sum"] or Decimal(0),
        counts={name: row[f"{name}_sum"] or 0 for name in COUNT_FIELDS},
    )


def _span_for(usage_filter: UsageFilter) -> tuple[dt.datetime, dt.datetime] | None:
    return None if usage_filter.request_id is not None else complete_days(usage_filter.since, usage_filter.until)


def totals_with_rollups(usage_filter: UsageFilter) -> UsageTotals:
    """What `usage_totals` answers, from day rollups where they are complete."""
    span = _span_for(usage_filter)
    if span is None:
        return usage_totals(usage_filter)
    rolled = _totals_of(_rollups(usage_filter, span).aggregate(**_ROLLUP_SUMS))
    return sum_totals([rolled, *(usage_totals(part) for part in _raw_parts(usage_filter, span))])


def groups_with_rollups(usage_filter: UsageFilter, group_by: GroupBy, *, limit: int | None = None) -> list[UsageGroup]:
    """What `usage_groups` answers, from day rollups where they are complete."""
    span = _span_for(usage_filter) if group_by != "hour" else None
    if span is None:
        return usage_groups(usage_filter, group_by, limit=limit)
    field = _ROLLUP_KEY[group_by]
    rows = _rollups(usage_filter, span).values(field).annotate(**_ROLLUP_SUMS).order_by()
    merged: dict[str, list[UsageTotals]] = {}
    for row in rows:
        merged.setdefault(group_key(group_by, row[field]), []).append(_totals_of(row))
    for part in _raw_parts(usage_filter, span):
        for group in usage_groups(part, group_by):
            merged.setdefault(group.key, []).append(group.totals)
    groups = sort_groups([UsageGroup(key, sum_totals(totals)) for key, totals in merged.items()], group_by)
    return groups if limit is None else groups[:limit]
