"""Rotate a master key without a failed request: the new key takes every new request within
seconds, requests in flight finish on the old one, and Celery retires it once it carries none."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.management.upstream_key_input import add_secret_arguments, read_secret
from gateway.upstream_keys import UpstreamKeyError, rotate_upstream_key


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Replace an active upstream key by a new one (from standard input or --from-env); the old key drains."
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The active key to replace.")
        parser.add_argument("--new-name", help="Name of the new key (default: the old name with today's date).")
        parser.add_argument("--weight", type=int, help="Weight of the new key (default: the old key's).")
        add_secret_arguments(parser)

    def handle(
        self, *args: Any, name: str, new_name: str | None, weight: int | None, from_env: str | None, **options: Any
    ) -> None:
        secret = read_secret(from_env=from_env, stdin=options.get("stdin") or sys.stdin)
        try:
            rotation = rotate_upstream_key(
                name=name,
                secret=secret,
                new_name=new_name,
                weight=weight,
                actor="command:rotate_upstream_key",
                verify=not options["no_verify"],
            )
        except UpstreamKeyError as exc:
            raise CommandError(str(exc)) from exc
        new, old = rotation.new, rotation.old
        self.stdout.write(self.style.SUCCESS(f"Upstream key {new.name!r} ({new.masked_secret}) is active."))
        self.stdout.write(
            f"Key {old.name!r} ({old.masked_secret}) is draining: requests in flight finish on it, new ones use {new.name!r}. "
            f"It is retired once idle (at the latest after the drain grace period); revoke it at Anthropic after that."
        )
