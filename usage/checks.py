"""System checks for usage and spend (ids asserted by tests)."""
from __future__ import annotations

from django.conf import settings
from django.core.checks import CheckMessage, Warning, register

MONTH_DAYS = 31


@register()
def check_retention_covers_a_month(app_configs, **kwargs) -> list[CheckMessage]:
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
