"""Revoke every token of every device of one organization."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from proxyproject.lib.confirm import add_yes_argument, confirm_or_abort
from tokens.models import Organization
from tokens.revocation import revoke_organization_tokens


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Revoke all tokens of an organization's devices."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The organization's name.")
        add_yes_argument(parser)

    def handle(self, *args: Any, name: str, yes: bool, **options: Any) -> None:
        organization = Organization.objects.filter(name=name).first()
        if organization is None:
            raise CommandError(f"No organization named {name!r}.")
        confirm_or_abort(self, f"Revoke every token of the {organization.devices.count()} devices of organization {name!r}.", yes)
        result = revoke_organization_tokens(organization=organization, actor="command:revoke_org")
        self.stdout.write(self.style.SUCCESS(f"Revoked {result.revoked_tokens} tokens of {result.devices} devices."))
