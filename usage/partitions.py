"""Monthly range partitions of the usage records table on PostgreSQL.

Retention then drops a whole month at once (a short catalog lock, not millions of row deletes and
the vacuum behind them), and a month's queries read one or two partitions. SQLite keeps one table.

Each partition holds one UTC calendar month and is named for it (`usage_usagerecord_y2026m12`); a
DEFAULT partition takes records outside every month made so far (a clock far off, a backfill), and
making a month's partition moves that month's records out of it. Partitions are made ahead of time
by the daily retention task, so the default normally stays empty.

A partitioned table's unique constraints must include the partition key, so the table is unique
on (request_id, occurred_at); `usage.records` keeps the writer idempotent by request id on top.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from dataclasses import dataclass

from django.db import OperationalError, connection, transaction
from psycopg import errors

from proxyproject.lib.logging import log_event
from usage.models import UsageRecord

logger = logging.getLogger("usage.partitions")
TABLE = UsageRecord._meta.db_table
DEFAULT_PARTITION = f"{TABLE}_default"
MONTHS_AHEAD = 2
DETACH_LOCK_TIMEOUT = "5s"
"""Dropping a month waits at most this long for the table's lock (queries running on it), so a
long report delays retention rather than every insert queueing behind the drop."""
_MONTH_NAME = re.compile(rf"^{TABLE}_y(\d{{4}})m(\d{{2}})$")


@dataclass(frozen=True, order=True)
class MonthPartition:
    start: dt.datetime

    @property
    def end(self) -> dt.datetime:
        return next_month(self.start)

    @property
    def name(self) -> str:
        return f"{TABLE}_y{self.start:%Y}m{self.start:%m}"


def month_start(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(start: dt.datetime) -> dt.datetime:
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def months_between(first: dt.datetime, last: dt.datetime) -> list[MonthPartition]:
    """Every month from the one holding `first` to the one holding `last`, both included."""
    months, start = [], month_start(first)
    while start <= last:
        months.append(MonthPartition(start))
        start = next_month(start)
    return months


def usage_table_is_partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [TABLE])
        row = cursor.fetchone()
    return row is not None and row[0] == "p"


def month_partitions() -> list[MonthPartition]:
    """The monthly partitions that exist, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT child.relname FROM pg_inherits JOIN pg_class child ON child.oid = pg_inherits.inhrelid "
            "WHERE pg_inherits.inhparent = to_regclass(%s)",
            [TABLE],
        )
        names = [row[0] for row in cursor.fetchall()]
    months = []
    for name in names:
        found = _MONTH_NAME.match(name)
        if found:
            months.append(MonthPartition(dt.datetime(int(found[1]), int(found[2]), 1, tzinfo=dt.UTC)))
    return sorted(months)


def create_month_partition(month: MonthPartition) -> None:
    """Make one month's partition, moving the month's records out of the default partition if any
    landed there (the default is detached meanwhile: PostgreSQL refuses a new bound that rows of the
    default already fall in)."""
    quote = connection.ops.quote_name
    bounds = f"FOR VALUES FROM ('{month.start.isoformat()}') TO ('{month.end.isoformat()}')"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT EXISTS (SELECT 1 FROM {quote(DEFAULT_PARTITION)} WHERE occurred_at >= %s AND occurred_at < %s)",
            [month.start, month.end],
        )
        strays = cursor.fetchone()[0]
        if strays:
            cursor.execute(f"ALTER TABLE {quote(TABLE)} DETACH PARTITION {quote(DEFAULT_PARTITION)}")
        cursor.execute(f"CREATE TABLE {quote(month.name)} PARTITION OF {quote(TABLE)} {bounds}")
        if strays:
            cursor.execute(
                f"WITH moved AS (DELETE FROM {quote(DEFAULT_PARTITION)} WHERE occurred_at >= %s AND occurred_at < %s RETURNING *) "
                f"INSERT INTO {quote(month.name)} SELECT * FROM moved",
                [month.start, month.end],
            )
            cursor.execute(f"ALTER TABLE {quote(TABLE)} ATTACH PARTITION {quote(DEFAULT_PARTITION)} DEFAULT")


def ensure_month_partitions(*, first: dt.datetime, last: dt.datetime) -> list[MonthPartition]:
    """Make every missing month from `first` to `last`; returns the months made."""
    existing = set(month_partitions())
    made = [month for month in months_between(first, last) if month not in existing]
    for month in made:
        create_month_partition(month)
    return made


def ensure_upcoming_partitions(*, now: dt.datetime) -> list[MonthPartition]:
    """This month and the next MONTHS_AHEAD, so records land in their month, not the default."""
    last = month_start(now)
    for _ in range(MONTHS_AHEAD):
        last = next_month(last)
    return ensure_month_partitions(first=now, last=last)


@dataclass(frozen=True)
class DroppedMonth:
    month: MonthPartition
    records: int
    seconds_locked: float


@dataclass(frozen=True)
class MonthsDropped:
    months: list[DroppedMonth]
    blocked: bool
    """A month older than the cutoff is still there: its lock did not come within DETACH_LOCK_TIMEOUT."""

    @property
    def records(self) -> int:
        return sum(month.records for month in self.months)


def drop_months_before(cutoff: dt.datetime) -> MonthsDropped:
    """Drop every month that ends at or before `cutoff`, one short transaction each: count, detach,
    drop. Each waits at most DETACH_LOCK_TIMEOUT for the table's lock; if one does not get it, the
    rest wait for the next run."""
    quote = connection.ops.quote_name
    dropped: list[DroppedMonth] = []
    for month in month_partitions():
        if month.end > cutoff:
            break
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SELECT COUNT(*) FROM {quote(month.name)}")
                records = cursor.fetchone()[0]
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # a table with deferred checks pending cannot be dropped
                cursor.execute(f"SET LOCAL lock_timeout = '{DETACH_LOCK_TIMEOUT}'")
                started = time.monotonic()
                cursor.execute(f"ALTER TABLE {quote(TABLE)} DETACH PARTITION {quote(month.name)}")
                cursor.execute(f"DROP TABLE {quote(month.name)}")
        except OperationalError as error:
            if not isinstance(error.__cause__, errors.LockNotAvailable):
                raise
            log_event(logger, "Usage partition drop postponed: table busy", logging.WARNING, partition=month.name)
            return MonthsDropped(dropped, blocked=True)
        dropped.append(DroppedMonth(month, records, time.monotonic() - started))
    return MonthsDropped(dropped, blocked=False)
