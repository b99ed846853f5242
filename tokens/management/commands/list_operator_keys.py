"""The operator API keys as a table: scope, prefix, last use, revocation; never a secret."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from proxyproject.lib.console import format_table
from tokens.models import OperatorApiKey


def _moment(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "List operator API keys (revoked ones with --all)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--all", action="store_true", help="Include revoked keys.")

    def handle(self, *args: Any, all: bool, **options: Any) -> None:
        keys = OperatorApiKey.objects.select_related("organization").order_by("-created_at")
        if not all:
            keys = keys.filter(revoked_at__isnull=True)
        rows = [
            (
                key.name,
                f"{key.prefix}…",
                key.organization.name if key.organization else "platform",
                _moment(key.created_at),
                _moment(key.last_used_at),
                _moment(key.revoked_at),
            )
            for key in keys
        ]
        self.stdout.write(format_table(["name", "prefix", "scope", "created (UTC)", "last used", "revoked"], rows))
