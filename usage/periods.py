"""The spend periods (UTC day, ISO week from Monday, calendar month) and where each begins."""

from __future__ import annotations

import datetime as dt

PERIODS = ("day", "week", "month")


def period_start(period: str, moment: dt.datetime) -> dt.datetime:
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)
