"""Raw usage records older than USAGE_RETENTION_DAYS go; their rollups stay.

On PostgreSQL whole months go first, by dropping their partitions (`usage.partitions`): a lock of a
few milliseconds per month instead of deleting and vacuuming its rows. What is left older than the
cutoff (the part of the cutoff's month before it, stray records in the default partition; on SQLite,
everything) is deleted a chunk per transaction, so no delete holds a lock for long either. The same
run makes the coming months' partitions.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from usage.models import UsageRecord
from usage.partitions import drop_months_before, ensure_upcoming_partitions, usage_table_is_partitioned
from usage.rollups import retention_cutoff

DELETE_CHUNK = 5000


@dataclass(frozen=True)
class ChunkedDeletion:
    records: int
    longest_chunk_s: float


def delete_in_chunks(records: QuerySet[UsageRecord], *, chunk: int = DELETE_CHUNK) -> ChunkedDeletion:
    """Delete `records` oldest first, one transaction per chunk."""
    deleted, longest = 0, 0.0
    while ids := list(records.order_by("occurred_at").values_list("pk", flat=True)[:chunk]):
        started = time.monotonic()
        with transaction.atomic():
            deleted += records.filter(pk__in=ids).delete()[0]
        longest = max(longest, time.monotonic() - started)
    return ChunkedDeletion(deleted, longest)


def prune_usage_records(*, now: dt.datetime | None = None, chunk: int = DELETE_CHUNK) -> int:
    """Returns the records removed."""
    now = now or timezone.now()
    cutoff = retention_cutoff(now)
    deleted = 0
    if usage_table_is_partitioned():
        ensure_upcoming_partitions(now=now)
        months = drop_months_before(cutoff)
        deleted += months.records
        if months.blocked:  # deleting the busy month row by row instead would be the long work this avoids
            return deleted
    return deleted + delete_in_chunks(UsageRecord.objects.filter(occurred_at__lt=cutoff), chunk=chunk).records
