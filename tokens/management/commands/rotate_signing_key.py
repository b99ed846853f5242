"""Make a new signing key the signer. Nobody is logged out: older keys keep verifying until the
tokens they signed have expired, then the scheduled task retires them."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tokens.signing_keys import retire_expired_signing_keys, rotate_signing_key


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Rotate the JWT signing key (older keys keep verifying until their tokens expire)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--retire-expired", action="store_true", help="Also retire verify-only keys whose tokens have all expired."
        )

    def handle(self, *args: Any, retire_expired: bool, **options: Any) -> None:
        key = rotate_signing_key(actor="command:rotate_signing_key")
        self.stdout.write(self.style.SUCCESS(f"New signing key {key.kid} is active."))
        if retire_expired:
            retired = retire_expired_signing_keys()
            self.stdout.write(f"Retired: {', '.join(retired) if retired else 'none'}.")
