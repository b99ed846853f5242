"""The device fleet as a table: status, organization, version, last seen, spend against caps."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from proxyproject.lib.console import format_table
from tokens.models import Device, DeviceStatus
from tokens.policy import resolve_policy
from usage.reports import spend_summary_for_devices


def _money(amount: Decimal, cap: Decimal | None) -> str:
    return f"${amount:.2f}/{'$' + format(cap, '.2f') if cap is not None else '-'}"


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "List devices with their status and spend today and this month against their caps."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--status", choices=[choice.value for choice in DeviceStatus], help="Only devices in this state.")
        parser.add_argument("--limit", type=int, default=200, help="At most this many devices, most recently seen first.")

    def handle(self, *args: Any, status: str | None, limit: int, **options: Any) -> None:
        devices = Device.objects.select_related("organization", "person").order_by("-last_seen_at", "device_id")
        if status:
            devices = devices.filter(status=status)
        page = list(devices[:limit])
        spend = spend_summary_for_devices([device.pk for device in page])
        rows = []
        for device in page:
            policy = resolve_policy(device, device.organization, device.person)
            rows.append(
                (
                    device.device_id,
                    device.status,
                    device.organization.name if device.organization else "",
                    device.app_version,
                    device.last_seen_at.strftime("%Y-%m-%d %H:%M") if device.last_seen_at else "never",
                    _money(spend[device.pk].today, policy.device_daily_cap_usd),
                    _money(spend[device.pk].month, policy.device_monthly_cap_usd),
                )
            )
        self.stdout.write(
            format_table(["device", "status", "organization", "version", "last seen (UTC)", "today/cap", "month/cap"], rows)
        )
