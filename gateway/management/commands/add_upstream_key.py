"""Add a master key to the upstream pool; every gateway process starts using it within seconds."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.management.upstream_key_input import add_secret_arguments, read_secret
from gateway.upstream_keys import UpstreamKeyError, add_upstream_key


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Add an upstream (Anthropic) API key to the pool. The secret comes from standard input or --from-env."
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="A name for the key, e.g. prod-2026-01 (shown in logs and usage records).")
        parser.add_argument("--weight", type=int, default=1, help="Share of new requests relative to the other active keys.")
        add_secret_arguments(parser)

    def handle(self, *args: Any, name: str, weight: int, from_env: str | None, **options: Any) -> None:
        secret = read_secret(from_env=from_env, stdin=options.get("stdin") or sys.stdin)
        try:
            key = add_upstream_key(
                name=name, secret=secret, weight=weight, actor="command:add_upstream_key", verify=not options["no_verify"]
            )
        except UpstreamKeyError as exc:
            raise CommandError(str(exc)) from exc
        summary = f"Added upstream key {key.name!r} ({key.masked_secret}, weight {key.weight}): active."
        self.stdout.write(self.style.SUCCESS(summary))
