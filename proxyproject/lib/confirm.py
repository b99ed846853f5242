"""Destructive commands print what they will do and act only with --yes or a typed "yes"."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser


def add_yes_argument(parser: CommandParser) -> None:
    parser.add_argument("--yes", action="store_true", help="Act without asking for confirmation.")


def confirm_or_abort(command: BaseCommand, plan: str, assume_yes: bool) -> None:
    command.stdout.write(plan)
    if assume_yes:
        return
    try:
        answer = input("Proceed? Type 'yes' to confirm: ")
    except EOFError:
        answer = ""
    if answer.strip().lower() != "yes":
        raise CommandError("Aborted: nothing was changed.")
