"""Write every queued usage record now (Redis queue and local spool), e.g. after a database outage."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from usage.writer import drain_usage_queue


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Write all queued usage records to the database now."

    def handle(self, *args: Any, **options: Any) -> None:
        stored = drain_usage_queue()
        self.stdout.write(self.style.SUCCESS(f"Stored {stored:,} usage records."))
