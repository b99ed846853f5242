"""Block devices: refused on every endpoint until unblocked, their tokens revoked (revoke_device --block does the same)."""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from proxyproject.lib.confirm import add_yes_argument


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Block devices: refused everywhere within seconds and unable to enroll again until unblock_device."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_ids", nargs="+", metavar="DEVICE_ID")
        add_yes_argument(parser)

    def handle(self, *args: Any, device_ids: list[str], yes: bool, **options: Any) -> None:
        call_command("revoke_device", *device_ids, block=True, yes=yes, stdout=self.stdout, stderr=self.stderr)
