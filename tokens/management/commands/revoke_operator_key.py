"""Revoke an operator API key by its name or prefix; refused at once by every process (no cache)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q

from proxyproject.lib.confirm import add_yes_argument, confirm_or_abort
from tokens.models import OperatorApiKey
from tokens.operators import revoke_operator_api_key


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Revoke an operator API key (name, or the prefix list_operator_keys shows)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key", metavar="NAME_OR_PREFIX")
        add_yes_argument(parser)

    def handle(self, *args: Any, key: str, yes: bool, **options: Any) -> None:
        prefix = key.rstrip("…")
        matches = list(OperatorApiKey.objects.filter(Q(name=key) | Q(prefix=prefix), revoked_at__isnull=True))
        if not matches:
            raise CommandError(f"No unrevoked operator API key named {key!r} or with that prefix.")
        if len(matches) > 1:
            raise CommandError(f"{len(matches)} keys match {key!r}; name one by its prefix (list_operator_keys).")
        found = matches[0]
        confirm_or_abort(self, f"Revoke operator API key {found.name!r} ({found.prefix}…).", yes)
        revoke_operator_api_key(key=found)
        self.stdout.write(self.style.SUCCESS(f"Revoked operator API key {found.name!r}."))
