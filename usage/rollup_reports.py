"""Usage totals and breakdowns for the dashboard and GET /admin/usage, read from day rollups for
the whole days that have them and from raw records for the rest.

Thirty days of a busy fleet are over half a million records, and each of the dashboard's breakdowns
read them all again (1.9 s at ten million records). A day's rollups are a few thousand rows
and give the same sums, but only for a day whose bucket was rebuilt after it ended
(`RolledUpBucket`): that rebuild saw every record stored by then. Days that lack one (today, a day
the rollup task has not reached, every day in a test that never rolls up) are read raw, so the
figures are the raw ones whatever the rollups hold. A record stored after its day's last rebuild
(the writer down for hours) is missed until `rollup_usage` runs for that day again, which the
README asks for after an outage.

The dashboard's breakdown and the fleet's totals read DailyUsage instead (a day's sums by model,
by device and by person, rebuilt with its day bucket): 30 days of (device, model) rollups are
~150,000 rows to sum per view at ten million records, and have no person.

Hourly breakdowns (the 24-hour view) stay raw: a day's rollup cannot be split by hour.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import QuerySet, Sum

from usage.counts import COUNT_FIELDS
from usage.daily_usage import daily_usage_key, daily_usage_totals
from usage.models import DailyDimension, DailyUsage, RolledUpBucket, RollupPeriod, UsageRollup
from usage.reports import (
    GroupBy,
    UsageFilter,
    UsageGroup,
    UsageTotals,
    group_key,
    rank_person_groups,
    sort_groups,
    sum_totals,
    top_person_pks,
    usage_groups,
    usage_groups_by_time_and_model,
    usage_totals,
    usage_totals_by_value,
)

DAY = dt.timedelta(days=1)
ROLLED_CACHE_SECONDS = 3600
_ROLLUP_SUMS = {
    "requests": Sum("requests"),
    "errors": Sum("errors"),
    "unpriced_requests": Sum("unpriced_requests"),
    "estimated_requests": Sum("estimated_requests"),
    "cost_sum": Sum("cost"),
    **{f"{name}_sum": Sum(name) for name in COUNT_FIELDS},
}


def _day_floor(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class CompleteDays:
    """[start, end) of whole days read from rollups, and the latest rebuild among them."""

    start: dt.datetime
    end: dt.datetime
    rolled_at: dt.datetime


def complete_days(since: dt.datetime, until: dt.datetime, *, daily_usage: bool = False) -> CompleteDays | None:
    """The longest run of whole UTC days inside [since, until) whose day bucket was rebuilt after
    the day ended (and with its DailyUsage rows, when `daily_usage`); None when there is none."""
    first = _day_floor(since)
    if first < since:
        first += DAY
    last = _day_floor(until)
    if first >= last:
        return None
    rolled = RolledUpBucket.objects.filter(period=RollupPeriod.DAY, bucket_start__gte=first, bucket_start__lt=last)
    if daily_usage:
        rolled = rolled.filter(daily_usage=True)
    rebuilt = dict(rolled.values_list("bucket_start", "rolled_at"))
    complete = sorted(start for start, rolled_at in rebuilt.items() if rolled_at >= start + DAY)
    if not complete:
        return None
    run_start = complete[0]
    best = (run_start, run_start + DAY)
    for previous, start in zip(complete, complete[1:]):
        if start != previous + DAY:
            run_start = start
        if start + DAY - run_start > best[1] - best[0]:
            best = (run_start, start + DAY)
    return CompleteDays(best[0], best[1], max(rebuilt[start] for start in complete if best[0] <= start < best[1]))


def _raw_parts(usage_filter: UsageFilter, span: CompleteDays) -> list[UsageFilter]:
    parts = [replace(usage_filter, until=span.start), replace(usage_filter, since=span.end)]
    return [part for part in parts if part.since < part.until]


def _rollups(usage_filter: UsageFilter, span: CompleteDays) -> QuerySet[UsageRollup]:
    return UsageRollup.objects.filter(
        period=RollupPeriod.DAY, bucket_start__gte=span.start, bucket_start__lt=span.end, **usage_filter.dimensions()
    )


def _totals_of(row: Mapping[str, Any]) -> UsageTotals:
    return UsageTotals(
        requests=row["requests"] or 0,
        errors=row["errors"] or 0,
        unpriced_requests=row["unpriced_requests"] or 0,
        estimated_requests=row["estimated_requests"] or 0,
        cost=row["cost_sum"] or Decimal(0),
        counts={name: row[f"{name}_sum"] or 0 for name in COUNT_FIELDS},
    )


def _span_for(usage_filter: UsageFilter) -> CompleteDays | None:
    """Rollups have no request id and no person: a report naming either reads the records."""
    if usage_filter.request_id is not None or usage_filter.person_pks is not None:
        return None
    return complete_days(usage_filter.since, usage_filter.until)


@contextlib.contextmanager
def _without_jit() -> Iterator[None]:
    """The rollup table's size makes PostgreSQL's planner compile these sums (JIT): 60 ms of
    compiling for a 90 ms query, on every view. Off for these reads only."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL jit = off")
        yield


def totals_with_rollups(usage_filter: UsageFilter) -> UsageTotals:
    """What `usage_totals` answers, from day rollups where they are complete."""
    span = _span_for(usage_filter)
    if span is None:
        return usage_totals(usage_filter)
    with _without_jit():
        rolled = _totals_of(_rollups(usage_filter, span).aggregate(**_ROLLUP_SUMS))
        return sum_totals([rolled, *(usage_totals(part) for part in _raw_parts(usage_filter, span))])


_ROLLUP_KEY = {"day": "bucket_start", "model": "model", "device": "device_ref"}


def groups_with_rollups(usage_filter: UsageFilter, group_by: GroupBy) -> list[UsageGroup]:
    """What `usage_groups` answers, from day rollups where they are complete (not by hour or person:
    a day's rollup cannot be split by hour, and has no person)."""
    span = _span_for(usage_filter) if group_by not in ("hour", "person") else None
    if span is None:
        return usage_groups(usage_filter, group_by)
    field = _ROLLUP_KEY[group_by]
    merged: dict[str, list[UsageTotals]] = {}
    with _without_jit():
        for row in _rollups(usage_filter, span).values(field).annotate(**_ROLLUP_SUMS).order_by():
            merged.setdefault(group_key(group_by, row[field]), []).append(_totals_of(row))
        for part in _raw_parts(usage_filter, span):
            for group in usage_groups(part, group_by):
                merged.setdefault(group.key, []).append(group.totals)
    return sort_groups([UsageGroup(key, sum_totals(parts)) for key, parts in merged.items()], group_by)


_DAILY_SUMS = {
    name: Sum(name) for name in ("requests", "errors", "unpriced_requests", "estimated_requests", "cost", *COUNT_FIELDS)
}


_RANK_FIELDS = ("requests", "unpriced_requests", "cost")
Rank = tuple[int, int, Decimal]
"""A group's requests, unpriced requests and cost: all that orders the top lists. Thousands of device
and person groups are summed, merged and cached per view; only the top ones need every sum."""


def _rank_totals(rank: Rank) -> UsageTotals:
    requests, unpriced_requests, cost = rank
    return UsageTotals(requests=requests, unpriced_requests=unpriced_requests, cost=cost)


def _add_rank(ranks: dict[str, Rank], key: str, totals: UsageTotals) -> None:
    known = ranks.get(key, (0, 0, Decimal(0)))
    ranks[key] = (known[0] + totals.requests, known[1] + totals.unpriced_requests, known[2] + totals.cost)


@dataclass(frozen=True)
class _DailyBreakdown:
    by_time_and_model: list[tuple[str, str, UsageTotals]]
    device_ranks: dict[str, Rank]
    person_ranks: dict[str, Rank]


def _daily_breakdown(span: CompleteDays) -> _DailyBreakdown:
    """The complete days' sums by day and model, and the ranking sums of every device and person,
    from DailyUsage: one query for the model rows as stored (a few per day), one summing the device
    and person rows (30 days x ~3,800 at ten million records). They change only when those days are
    rebuilt, so they are cached under the latest rebuild's time."""
    key = "usage:daily-breakdown:" + hashlib.sha256(repr((span.start, span.end, span.rolled_at)).encode()).hexdigest()
    try:
        cached = cache.get(key)
    except Exception:  # the cache (Redis) away: compute, as without a cache
        cached = None
    if isinstance(cached, _DailyBreakdown):
        return cached
    days = DailyUsage.objects.filter(day__gte=span.start, day__lt=span.end)
    ranks: dict[str, dict[str, Rank]] = {DailyDimension.DEVICE: {}, DailyDimension.PERSON: {}}
    grouped = days.filter(dimension__in=tuple(ranks)).values("dimension", "key")
    sums = {name: Sum(name) for name in _RANK_FIELDS}
    for dimension, value, *rank in grouped.annotate(**sums).order_by().values_list("dimension", "key", *_RANK_FIELDS):
        ranks[dimension][value] = (rank[0], rank[1], rank[2])
    breakdown = _DailyBreakdown(
        by_time_and_model=[
            (group_key("day", row.day), row.key, daily_usage_totals(row)) for row in days.filter(dimension=DailyDimension.MODEL)
        ],
        device_ranks=ranks[DailyDimension.DEVICE],
        person_ranks=ranks[DailyDimension.PERSON],
    )
    with contextlib.suppress(Exception):  # as above: an unreachable cache only costs the next view the queries
        cache.set(key, breakdown, ROLLED_CACHE_SECONDS)
    return breakdown


def _daily_totals_of(span: CompleteDays | None, dimension: str, keys: list[str]) -> dict[str, UsageTotals]:
    """Every sum of the named devices or people over the complete days."""
    if span is None or not keys:
        return {}
    days = DailyUsage.objects.filter(dimension=dimension, key__in=keys, day__gte=span.start, day__lt=span.end)
    return {row["key"]: daily_usage_totals(row) for row in days.values("key").annotate(**_DAILY_SUMS).order_by()}


def fleet_totals(since: dt.datetime, until: dt.datetime) -> UsageTotals:
    """Every record's totals in [since, until), as `usage_totals` answers them: the complete days
    from their DailyUsage model rows (a few a day), the rest from the records."""
    usage_filter = UsageFilter(since, until)
    span = complete_days(since, until, daily_usage=True)
    if span is None:
        return usage_totals(usage_filter)
    days = DailyUsage.objects.filter(dimension=DailyDimension.MODEL, day__gte=span.start, day__lt=span.end)
    rolled = daily_usage_totals(days.aggregate(**_DAILY_SUMS))
    return sum_totals([rolled, *(usage_totals(part) for part in _raw_parts(usage_filter, span))])


@dataclass
class UsageBreakdown:
    totals: UsageTotals
    over_time: list[UsageGroup]
    devices: list[UsageGroup]
    models: list[UsageGroup]
    people: list[UsageGroup]


def usage_breakdown(since: dt.datetime, until: dt.datetime, over_time: GroupBy, *, top: int) -> UsageBreakdown:
    """The whole fleet's totals, series by day or hour, and `top` devices, models and people in
    [since, until), as `usage_totals` and `usage_groups` answer them: complete days from DailyUsage
    (by day), the rest from the records, three queries per raw stretch (by time and model, by
    device, by person)."""
    usage_filter = UsageFilter(since, until)
    span = complete_days(since, until, daily_usage=True) if over_time == "day" else None
    by_time_and_model: list[tuple[str, str, UsageTotals]] = []
    device_ranks: dict[str, Rank] = {}
    person_ranks: dict[str, Rank] = {}
    raw_devices: dict[str, list[UsageTotals]] = {}
    raw_people: dict[str, list[UsageTotals]] = {}
    with _without_jit():
        if span is not None:
            daily = _daily_breakdown(span)
            by_time_and_model += daily.by_time_and_model
            device_ranks.update(daily.device_ranks)
            person_ranks.update(daily.person_ranks)
        for part in _raw_parts(usage_filter, span) if span is not None else [usage_filter]:
            by_time_and_model += usage_groups_by_time_and_model(part, over_time)
            dimensions: tuple[tuple[GroupBy, dict[str, Rank], dict[str, list[UsageTotals]]], ...] = (
                ("device", device_ranks, raw_devices),
                ("person", person_ranks, raw_people),
            )
            for dimension, ranks, raw in dimensions:
                for value, totals in usage_totals_by_value(part, dimension):
                    key = daily_usage_key(value)
                    _add_rank(ranks, key, totals)
                    raw.setdefault(key, []).append(totals)
        top_devices = [
            group.key
            for group in sort_groups([UsageGroup(key, _rank_totals(rank)) for key, rank in device_ranks.items()], "device")[:top]
        ]
        top_people = [
            daily_usage_key(pk)
            for pk in top_person_pks(((_person_pk(key), _rank_totals(rank)) for key, rank in person_ranks.items()), limit=top)
        ]
        daily_devices = _daily_totals_of(span, DailyDimension.DEVICE, top_devices)
        daily_people = _daily_totals_of(span, DailyDimension.PERSON, top_people)

    def full(key: str, daily: dict[str, UsageTotals], raw: dict[str, list[UsageTotals]]) -> UsageTotals:
        return sum_totals([daily.get(key, UsageTotals()), *raw.get(key, [])])

    by_time: dict[str, list[UsageTotals]] = {}
    by_model: dict[str, list[UsageTotals]] = {}
    for time_key, model, totals in by_time_and_model:
        by_time.setdefault(time_key, []).append(totals)
        by_model.setdefault(model, []).append(totals)

    def groups(merged: dict[str, list[UsageTotals]], group_by: GroupBy) -> list[UsageGroup]:
        return sort_groups([UsageGroup(key, sum_totals(parts)) for key, parts in merged.items()], group_by)

    return UsageBreakdown(
        totals=sum_totals(totals for _, _, totals in by_time_and_model),
        over_time=groups(by_time, over_time),
        devices=sort_groups([UsageGroup(key, full(key, daily_devices, raw_devices)) for key in top_devices], "device"),
        models=groups(by_model, "model")[:top],
        people=rank_person_groups(((_person_pk(key), full(key, daily_people, raw_people)) for key in top_people), limit=top),
    )


def _person_pk(key: str) -> int | None:
    return int(key) if key else None
