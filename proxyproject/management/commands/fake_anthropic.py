"""`manage.py fake_anthropic`: the bundled fake Anthropic API in the foreground, for demos and `make run`.

Keys come from `--api-key` (repeatable) and from FAKE_ANTHROPIC_API_KEYS (comma-separated). This
command reads the environment itself: it configures the fake, not the gateway, so the gateway's
settings module has no business knowing about it.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fake_anthropic import KEYS_ENV_VAR, FakeAnthropic, api_keys_from, run_until_signalled


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # a development tool: the gateway's checks are not its own
    help = "Run the fake Anthropic API until Ctrl-C or SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=4010, help="0 picks a free port")
        parser.add_argument("--api-key", action="append", dest="api_keys", metavar="KEY", help="repeatable")

    def handle(self, *args: Any, host: str, port: int, api_keys: list[str] | None, **options: Any) -> None:
        keys = api_keys_from(api_keys, os.environ.get(KEYS_ENV_VAR, ""))
        if not keys:
            raise CommandError(f"no API key: pass --api-key KEY or set {KEYS_ENV_VAR}")

        def announce(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        run_until_signalled(FakeAnthropic(api_keys=keys, host=host, port=port), announce)
