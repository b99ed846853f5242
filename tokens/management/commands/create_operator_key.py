"""Create an operator API key from the shell (the admin's "Add operator API key" does the same)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tokens.models import Organization
from tokens.operators import create_operator_api_key


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Create an operator API key and print its secret once (platform-wide, or scoped with --org)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="What the key is for (shown in the admin and in audit records).")
        parser.add_argument("--org", help="Scope the key to this organization (its name): its usage and resources only.")

    def handle(self, *args: Any, name: str, org: str | None, **options: Any) -> None:
        organization = None
        if org is not None:
            organization = Organization.objects.filter(name=org).first()
            if organization is None:
                raise CommandError(f"No organization named {org!r}.")
        key, secret = create_operator_api_key(name=name, created_by=None, organization=organization)
        scope = "the whole platform" if organization is None else f"organization {organization.name!r}"
        self.stderr.write(f"Operator API key {key.name!r} for {scope}; the secret is shown only now:")
        self.stdout.write(secret)
