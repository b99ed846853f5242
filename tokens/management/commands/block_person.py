"""Block people: every device of theirs cut off within seconds, no refresh or sign-in until unblock_person."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from proxyproject.lib.confirm import add_yes_argument, confirm_or_abort
from tokens.models import Person
from tokens.revocation import block_person


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Block a person (by email): every token of every device of theirs revoked; no refresh or sign-in until unblock_person."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email", help="The person's email (OIDC_PERSON_CLAIM), any case.")
        add_yes_argument(parser)

    def handle(self, *args: Any, email: str, yes: bool, **options: Any) -> None:
        people = list(Person.objects.filter(email__iexact=email))
        if not people:
            raise CommandError(f"No person with the email {email!r}.")
        devices = sum(person.devices.count() for person in people)
        confirm_or_abort(self, f"Block {email!r} and cut off their {devices} devices.", yes)
        for person in people:
            result = block_person(person=person, actor="command:block_person")
            self.stdout.write(
                self.style.SUCCESS(f"Blocked {person}: {result.revoked_tokens} tokens of {result.devices} devices revoked.")
            )
