"""Revoke every token of one or more devices (they must bootstrap again), optionally blocking them.

Many devices at once (ids as arguments, or one per line from --from-file) show a progress bar and
end with a table of what was done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count

from proxyproject.lib.confirm import add_yes_argument, confirm_or_abort
from proxyproject.lib.console import format_table, progress
from tokens.models import Device, IssuedToken
from tokens.revocation import block_device, revoke_device_tokens


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Revoke all tokens of devices; every gateway process refuses them within seconds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_ids", nargs="*", metavar="DEVICE_ID")
        parser.add_argument("--from-file", type=Path, help="Read device ids from this file, one per line.")
        parser.add_argument("--block", action="store_true", help="Also block the devices, so they cannot bootstrap again.")
        add_yes_argument(parser)

    def handle(self, *args: Any, device_ids: list[str], from_file: Path | None, block: bool, yes: bool, **options: Any) -> None:
        wanted = list(dict.fromkeys(device_ids + self._read_ids(from_file)))
        if not wanted:
            raise CommandError("Name at least one DEVICE_ID (or --from-file).")
        devices = {device.device_id: device for device in Device.objects.filter(device_id__in=wanted)}
        missing = [device_id for device_id in wanted if device_id not in devices]
        if missing:
            raise CommandError(f"No device with device_id {', '.join(repr(m) for m in missing[:10])}; nothing was changed.")
        live_by_device = dict(
            IssuedToken.objects.filter(device__in=devices.values(), revoked_at__isnull=True)
            .values_list("device__device_id")
            .annotate(count=Count("id"))
            .values_list("device__device_id", "count")
        )
        live = sum(live_by_device.values())
        if len(wanted) == 1:
            device = devices[wanted[0]]
            action = "Block device" if block else "Revoke all tokens of device"
            plan = f"{action} {device.device_id!r} ({device.status}, {live} unrevoked tokens)."
        else:
            plan = f"{'Block' if block else 'Revoke all tokens of'} {len(wanted)} devices ({live} unrevoked tokens)."
        confirm_or_abort(self, plan, yes)
        actor = "command:revoke_device"
        rows = []
        for device_id in progress(wanted, len(wanted), "Revoking", stream=self.stderr) if len(wanted) > 1 else wanted:
            device = devices[device_id]
            if block:
                block_device(device=device, actor=actor)
                revoked = live_by_device.get(device_id, 0)
            else:
                revoked = revoke_device_tokens(device=device, actor=actor).revoked_tokens
            rows.append((device_id, device.status, revoked))
        if len(rows) == 1:
            device_id, _, revoked = rows[0]
            done = (
                f"Device {device_id!r} blocked and its tokens revoked."
                if block
                else f"Revoked {revoked} tokens of device {device_id!r}."
            )
            self.stdout.write(self.style.SUCCESS(done))
            return
        self.stdout.write(format_table(["device", "status", "tokens revoked"], rows))
        self.stdout.write(self.style.SUCCESS(f"{len(rows)} devices done, {sum(r[2] for r in rows)} tokens revoked."))

    @staticmethod
    def _read_ids(path: Path | None) -> list[str]:
        if path is None:
            return []
        try:
            return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}") from None
