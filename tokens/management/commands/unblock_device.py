"""Unblock devices: they may enroll again (with their device secret); their old tokens stay revoked."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from proxyproject.lib.confirm import add_yes_argument, confirm_or_abort
from tokens.models import Device, DeviceStatus
from tokens.revocation import unblock_device


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Unblock blocked devices so they can enroll again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_ids", nargs="+", metavar="DEVICE_ID")
        add_yes_argument(parser)

    def handle(self, *args: Any, device_ids: list[str], yes: bool, **options: Any) -> None:
        devices = list(Device.objects.filter(device_id__in=device_ids))
        found = {device.device_id for device in devices}
        missing = [device_id for device_id in device_ids if device_id not in found]
        if missing:
            raise CommandError(f"No device with device_id {', '.join(repr(m) for m in missing[:10])}; nothing was changed.")
        not_blocked = [device.device_id for device in devices if device.status != DeviceStatus.BLOCKED]
        if not_blocked:
            raise CommandError(f"Not blocked: {', '.join(repr(d) for d in not_blocked[:10])}; nothing was changed.")
        confirm_or_abort(self, f"Unblock {', '.join(repr(d.device_id) for d in devices)}: they may enroll again.", yes)
        for device in devices:
            unblock_device(device=device, actor="command:unblock_device")
        self.stdout.write(self.style.SUCCESS(f"Unblocked {len(devices)} device{'s' if len(devices) != 1 else ''}."))
