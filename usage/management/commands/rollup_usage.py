"""Rebuild usage rollups for any period: idempotent, so safe to re-run after a fix or an outage."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from proxyproject.lib.console import format_table, progress
from usage.rollups import rollup_usage


def parse_moment(value: str) -> dt.datetime:
    """`2026-11-25` (midnight UTC) or an ISO 8601 date-time (UTC when no offset is given)."""
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"{value!r} is not a date (2026-11-25) or date-time (2026-11-25T13:00).")
        moment = dt.datetime(day.year, day.month, day.day)
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=dt.UTC)


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Rebuild hourly and daily usage rollups between --since and --until (default: the last 24 hours)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="Start, inclusive: 2026-11-01 or 2026-11-01T13:00 (UTC).")
        parser.add_argument("--until", help="End, exclusive (default: now).")

    def handle(self, *args: Any, since: str | None, until: str | None, **options: Any) -> None:
        end = parse_moment(until) if until else timezone.now()
        start = parse_moment(since) if since else end - dt.timedelta(hours=24)
        if start >= end:
            raise CommandError("--since must be before --until.")
        self.stdout.write(f"Rolling up usage from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")
        self.stderr.ending = ""  # the progress bar redraws one line with carriage returns
        summary = rollup_usage(start, end, each=lambda buckets, total: progress(buckets, total, "buckets", stream=self.stderr))
        self.stdout.write(
            format_table(["period", "rows"], [["hour", f"{summary.rows['hour']:,}"], ["day", f"{summary.rows['day']:,}"]])
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Rebuilt {summary.buckets:,} buckets from {summary.records:,} records in {summary.seconds:.2f} s."
            )
        )
        if summary.skipped_buckets:
            self.stdout.write(
                self.style.WARNING(
                    f"Skipped {summary.skipped_buckets:,} buckets older than USAGE_RETENTION_DAYS: their raw records may be pruned."
                )
            )
