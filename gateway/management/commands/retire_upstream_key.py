"""Take a master key out of the pool at once (requests already on it finish)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.keypool_shared import shared_in_flight_counts
from gateway.models import UpstreamKey
from gateway.upstream_keys import UpstreamKeyError, retire_upstream_key
from proxyproject.lib.confirm import add_yes_argument, confirm_or_abort


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # warnings about serving (no Redis, no upstream key) are `manage.py check`'s
    help = "Retire an upstream key now: no new request uses it, and its secret is wiped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--force", action="store_true", help="Retire it even if it is the last usable key (every request then gets 503)."
        )
        add_yes_argument(parser)

    def handle(self, *args: Any, name: str, force: bool, yes: bool, **options: Any) -> None:
        key = UpstreamKey.objects.filter(name=name).first()
        if key is None:
            raise CommandError(f"No upstream key named {name!r}. See: manage.py list_upstream_keys")
        counts = shared_in_flight_counts([key.pk])
        in_flight = "unknown without Redis" if counts is None else str(counts[key.pk])
        plan = f"Retire upstream key {key.name!r} ({key.masked_secret}, {key.state}, in flight: {in_flight})."
        confirm_or_abort(self, plan, yes)
        try:
            retire_upstream_key(name=name, actor="command:retire_upstream_key", allow_empty_pool=force)
        except UpstreamKeyError as exc:
            raise CommandError(str(exc)) from exc
        done = f"Upstream key {key.name!r} retired; its secret is wiped. Revoke it at Anthropic too."
        self.stdout.write(self.style.SUCCESS(done))
