"""Revoke every token of one device (it must bootstrap again), optionally blocking it too."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from tokens.management.confirm import add_yes_argument, confirm_or_abort
from tokens.models import Device, IssuedToken
from tokens.revocation import block_device, revoke_device_tokens


class Command(BaseCommand):
    help = "Revoke all tokens of a device; every gateway process refuses them within seconds."

    def add_arguments(self, parser) -> None:
        parser.add_argument("device_id")
        parser.add_argument("--block", action="store_true", help="Also block the device, so it cannot bootstrap again.")
        add_yes_argument(parser)

    def handle(self, *args, device_id: str, block: bool, yes: bool, **options) -> None:
        device = Device.objects.filter(device_id=device_id).first()
        if device is None:
            raise CommandError(f"No device with device_id {device_id!r}.")
        live = IssuedToken.objects.filter(device=device, revoked_at__isnull=True).count()
        action = "Block device" if block else "Revoke all tokens of device"
        confirm_or_abort(self, f"{action} {device.device_id!r} ({device.status}, {live} unrevoked tokens).", yes)
        actor = "command:revoke_device"
        if block:
            block_device(device=device, actor=actor)
            self.stdout.write(self.style.SUCCESS(f"Device {device.device_id!r} blocked and its tokens revoked."))
        else:
            result = revoke_device_tokens(device=device, actor=actor)
            self.stdout.write(self.style.SUCCESS(f"Revoked {result.revoked_tokens} tokens of device {device.device_id!r}."))
