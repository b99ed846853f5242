"""Unblock people: they may sign in again; their old tokens stay revoked."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from proxyproject.lib.confirm import add_yes_argument, confirm_or_abort
from tokens.models import Person
from tokens.revocation import unblock_person


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Unblock a person (by email): they may sign in again on their devices."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email", help="The person's email (OIDC_PERSON_CLAIM), any case.")
        add_yes_argument(parser)

    def handle(self, *args: Any, email: str, yes: bool, **options: Any) -> None:
        people = list(Person.objects.filter(email__iexact=email, blocked=True))
        if not people:
            raise CommandError(f"No blocked person with the email {email!r}.")
        confirm_or_abort(self, f"Unblock {email!r}.", yes)
        for person in people:
            unblock_person(person=person, actor="command:unblock_person")
        self.stdout.write(self.style.SUCCESS(f"Unblocked {email}."))
