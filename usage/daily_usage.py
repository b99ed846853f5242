"""DailyUsage rows of one UTC day, rebuilt from its raw records in the transaction that rebuilds
its day bucket (`usage.rollups.rollup_bucket`), so a day whose bucket is complete has them complete.

They are summed from the records rather than from the day's rollups because the rollups have no
person; three grouped queries over one day's records cost less than the rollup statement itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from usage.counts import COUNT_FIELDS
from usage.models import DailyUsage
from usage.reports import GroupBy, UsageFilter, UsageTotals, usage_totals_by_value

DAY = dt.timedelta(days=1)
DIMENSIONS: tuple[GroupBy, ...] = ("model", "device", "person")
"""The DailyDimension values, which are the names reports group the records by."""


def daily_usage_key(value: object) -> str:
    """A person's pk in decimal, "" for no person; a model or device id as it is."""
    return "" if value is None else str(value)


def daily_usage_totals(row: DailyUsage | Mapping[str, Any]) -> UsageTotals:
    """A row, or a dict of its fields' sums (None where nothing was summed)."""
    values = vars(row) if isinstance(row, DailyUsage) else row
    return UsageTotals(
        requests=values["requests"] or 0,
        errors=values["errors"] or 0,
        unpriced_requests=values["unpriced_requests"] or 0,
        estimated_requests=values["estimated_requests"] or 0,
        cost=values["cost"] or Decimal(0),
        counts={name: values[name] or 0 for name in COUNT_FIELDS},
    )


def rebuild_daily_usage(day: dt.datetime) -> int:
    """Replace the day's rows (day is a UTC midnight); returns how many were written. The caller
    holds the transaction."""
    day_filter = UsageFilter(day, day + DAY)
    rows = [
        DailyUsage(
            day=day,
            dimension=dimension,
            key=daily_usage_key(value),
            requests=totals.requests,
            errors=totals.errors,
            unpriced_requests=totals.unpriced_requests,
            estimated_requests=totals.estimated_requests,
            cost=totals.cost,
            **totals.counts,
        )
        for dimension in DIMENSIONS
        for value, totals in usage_totals_by_value(day_filter, dimension)
    ]
    DailyUsage.objects.filter(day=day).delete()
    DailyUsage.objects.bulk_create(rows, batch_size=2000)
    return len(rows)
