"""Fill the usage tables with years of realistic records and their rollups, for benchmarks."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from proxyproject.lib.console import format_table
from usage.rollups import rollup_usage
from usage.synthetic import SyntheticPlan, analyze_rollup_tables, existing_synthetic_records, generate_usage

SQLITE_LIMIT = 200_000
"""Beyond this, SQLite takes minutes per million and the figures would say nothing about production."""


class Command(BaseCommand):
    requires_system_checks: list[str] = []
    help = "Make N realistic usage records spread over --days (COPY on PostgreSQL), then their rollups."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--records", type=int, default=10_000_000)
        parser.add_argument("--days", type=int, default=730)
        parser.add_argument("--devices", type=int, default=2_000)
        parser.add_argument("--organizations", type=int, default=40)
        parser.add_argument("--seed", type=int, default=19)
        parser.add_argument("--no-rollups", action="store_true", help="Leave the rollups to `rollup_usage`.")
        parser.add_argument("--yes", action="store_true", help="Add to a database that already holds generated records.")

    def handle(self, *args: Any, records: int, days: int, devices: int, organizations: int, seed: int, **options: Any) -> None:
        if min(records, days, devices, organizations) < 1:
            raise CommandError("--records, --days, --devices and --organizations must be at least 1.")
        if connection.vendor != "postgresql" and records > SQLITE_LIMIT:
            raise CommandError(f"{records:,} records need PostgreSQL; on {connection.vendor} at most {SQLITE_LIMIT:,}.")
        existing = existing_synthetic_records()
        if existing and not options["yes"]:
            raise CommandError(f"The database already holds {existing:,} generated usage records; add --yes to add more.")
        plan = SyntheticPlan(records=records, days=days, devices=devices, organizations=organizations, seed=seed)
        self.stdout.write(
            f"Generating {records:,} usage records over {days} days for {devices:,} devices in {organizations} organizations"
        )
        started = time.monotonic()
        step = max(records // 20, 1)
        reported = [0]

        def report(stored: int) -> None:
            if stored - reported[0] >= step or stored == records:
                reported[0] = stored
                rate = stored / max(time.monotonic() - started, 1e-9)
                self.stderr.write(f"  {stored:,} records ({rate:,.0f}/s)")

        generated = generate_usage(plan, progress=report)
        loaded = time.monotonic() - started
        rows = [["records", f"{generated.records:,}", f"{loaded:.1f}"]]
        if not options["no_rollups"]:
            summary = rollup_usage(generated.since, generated.until, keep_retention=False)
            analyze_rollup_tables()
            rows.append(["rollup rows", f"{summary.rows['hour'] + summary.rows['day']:,}", f"{summary.seconds:.1f}"])
        self.stdout.write(format_table(["made", "count", "seconds"], rows))
        self.stdout.write(
            self.style.SUCCESS(f"Generated run {generated.run}: {generated.since:%Y-%m-%d} to {generated.until:%Y-%m-%d}.")
        )
