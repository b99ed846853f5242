"""System checks for usage and spend (ids asserted by tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Warning, register

MONTH_DAYS = 31


@register()
def check_retention_covers_a_month(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """Monthly caps are reconciled from raw records: pruning them sooner forgets part of the month."""
    if settings.USAGE_RETENTION_DAYS < MONTH_DAYS:
        return [
            Warning(
                f"USAGE_RETENTION_DAYS={settings.USAGE_RETENTION_DAYS} keeps less than a month of raw usage records, so monthly "
                "spend counters rebuilt from the database (after a restart, or a Redis flush) undercount.",
                hint=f"Set USAGE_RETENTION_DAYS to at least {MONTH_DAYS}.",
                id="usage.W001",
            )
        ]
    return []


HEARTBEATS_PER_ORPHAN_WINDOW = 3


@register()
def check_orphan_window_spans_heartbeats(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """A gateway process sends its streams' heartbeat once per flush interval: a window shorter than a
    few of them records live streams as crashed (their final records replace those later)."""
    shortest = HEARTBEATS_PER_ORPHAN_WINDOW * settings.USAGE_FLUSH_INTERVAL
    if settings.USAGE_ORPHAN_STREAM_SECONDS < shortest:
        return [
            Warning(
                f"USAGE_ORPHAN_STREAM_SECONDS={settings.USAGE_ORPHAN_STREAM_SECONDS:g} is shorter than "
                f"{HEARTBEATS_PER_ORPHAN_WINDOW} heartbeats (USAGE_FLUSH_INTERVAL={settings.USAGE_FLUSH_INTERVAL:g} s): streams "
                "still being relayed may be recorded as interrupted (gateway_crashed) until their final record arrives.",
                hint=f"Set USAGE_ORPHAN_STREAM_SECONDS to at least {shortest:g}.",
                id="usage.W002",
            )
        ]
    return []
