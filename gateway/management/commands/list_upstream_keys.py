"""The upstream key pool as a table; secrets masked to their last four characters."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from gateway.keypool_shared import shared_in_flight_counts
from gateway.models import UpstreamKey, UpstreamKeyState
from proxyproject.lib.console import format_table

HEADERS = (
    "name",
    "key",
    "state",
    "weight",
    "in flight",
    "age (days)",
    "last used",
    "requests",
    "401/403",
    "429",
    "5xx",
    "conn",
    "flagged",
)


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "never"


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "List the upstream keys (masked), their state, weight, requests in flight and failures."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--all", dest="include_retired", action="store_true", help="Include retired keys.")

    def handle(self, *args: Any, include_retired: bool, **options: Any) -> None:
        queryset = UpstreamKey.objects.order_by("state", "-created_at")
        if not include_retired:
            queryset = queryset.exclude(state=UpstreamKeyState.RETIRED)
        keys = list(queryset)
        counts = shared_in_flight_counts(key.pk for key in keys)
        now = timezone.now()
        rows = []
        for key in keys:
            age = (now - key.created_at).days
            due = key.state == UpstreamKeyState.ACTIVE and age >= settings.UPSTREAM_KEY_ROTATION_DAYS
            rows.append(
                (
                    key.name,
                    key.masked_secret,
                    key.state,
                    key.weight,
                    "-" if counts is None or key.state == UpstreamKeyState.RETIRED else counts.get(key.pk, 0),
                    f"{age} (rotate)" if due else age,
                    _when(key.last_used_at),
                    key.request_count,
                    key.rejected_count,
                    key.rate_limited_count,
                    key.server_error_count,
                    key.connection_failure_count,
                    key.flagged_reason,
                )
            )
        self.stdout.write(format_table(HEADERS, rows))
        if counts is None:
            self.stdout.write("In-flight counts need Redis (REDIS_URL); each process only knows its own.")
