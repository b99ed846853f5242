"""Reprice recorded usage after a retroactive price change: costs, rollups and spend counters."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from proxyproject.lib.console import format_table
from usage.management.commands.rollup_usage import parse_moment
from usage.repricing import reprice_usage


class Command(BaseCommand):
    help = "Recompute the cost of usage recorded since --since from the current prices; --dry-run reports the difference only."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, help="Start, inclusive: 2026-11-01 or 2026-11-01T13:00 (UTC).")
        parser.add_argument("--until", help="End, exclusive (default: now).")
        parser.add_argument("--dry-run", action="store_true", help="Compute and report the difference; write nothing.")

    def handle(self, *args: Any, since: str, until: str | None, dry_run: bool, **options: Any) -> None:
        start = parse_moment(since)
        end = parse_moment(until) if until else timezone.now()
        if start >= end:
            raise CommandError("--since must be before --until.")
        report = reprice_usage(since=start, until=end, dry_run=dry_run)
        for line in report.summary_lines():
            self.stdout.write(line)
        if report.by_model:
            rows = [[model or "(none)", f"{delta:+.10f}"] for model, delta in sorted(report.by_model.items())]
            self.stdout.write(format_table(["model", "difference (USD)"], rows))
