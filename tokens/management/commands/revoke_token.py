"""Revoke one token by its jti (from the admin's issued tokens or the audit trail), and so its grant."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from proxyproject.lib.confirm import add_yes_argument, confirm_or_abort
from tokens.models import IssuedToken
from tokens.revocation import revoke_token


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Revoke one token by jti, with the other token of its grant (the wrapper and refresh token issued together)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("jti")
        add_yes_argument(parser)

    def handle(self, *args: Any, jti: str, yes: bool, **options: Any) -> None:
        issued = IssuedToken.objects.select_related("device").filter(jti=jti).first()
        if issued is None:
            raise CommandError(f"No token with jti {jti!r}.")
        expires = f"{issued.expires_at:%Y-%m-%d %H:%M}Z"
        plan = (
            f"Revoke {issued.kind} token {jti} of device {issued.device.device_id!r} (expires {expires}), "
            "with the other token of its grant."
        )
        confirm_or_abort(self, plan, yes)
        revoke_token(jti=jti, actor="command:revoke_token")
        self.stdout.write(self.style.SUCCESS(f"Token {jti} revoked."))
